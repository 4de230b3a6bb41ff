@echo off
rem Banalytics box upgrade job for Windows (restart_mode = "command",
rem restart_command = "upgrade-job-start.bat"). The host starts this job and
rem exits with status 75; the job waits for the service to stop, applies the
rem staged module set with the host stopped, and starts the service again.
rem `banalytics-box apply` is journaled: if this job is cut anywhere, the next
rem `apply` or `run` finishes the swap.
setlocal
set SERVICE=BanalyticsBox
if "%BANALYTICS_HOME%"=="" set BANALYTICS_HOME=%~dp0
set BOX="%BANALYTICS_HOME%\bin\banalytics-box.exe"

net stop %SERVICE% >nul 2>&1
:wait
sc query %SERVICE% | find "STOPPED" >nul
if errorlevel 1 (
  timeout /t 1 /nobreak >nul
  goto wait
)
%BOX% --home "%BANALYTICS_HOME%" apply
if errorlevel 1 echo upgrade job: apply failed with %errorlevel%; starting the previous set
net start %SERVICE%
endlocal
