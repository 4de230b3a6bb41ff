@echo off
rem Banalytics box upgrade job for Windows (restart_mode = "command", the
rem Windows default; restart_command = "upgrade-job-start.bat"). It lives
rem beside banalytics-box.exe. The box starts it in its home, outside its
rem Job object (CREATE_BREAKAWAY_FROM_JOB), and exits with status 75. The
rem job waits until that box is gone, applies the staged module set with no
rem box running, and starts the box again the way it was started: as the
rem service named by BANALYTICS_SERVICE, which `banalytics-box service run`
rem sets for the processes it starts (banalytics-box service install
rem registers BanalyticsBox), otherwise the executable itself. Run by hand
rem for a box that runs as the service: set BANALYTICS_SERVICE=BanalyticsBox
rem first. `banalytics-box apply` is journaled: if this job is
rem cut anywhere, the next `apply` or `run` finishes the swap, and `run`
rem applies a staged set by itself at start.
setlocal
if "%BANALYTICS_HOME%"=="" set BANALYTICS_HOME=%CD%
set BOX="%~dp0banalytics-box.exe"
if not exist "%BANALYTICS_HOME%\state" mkdir "%BANALYTICS_HOME%\state"
set LOG="%BANALYTICS_HOME%\state\upgrade-job.log"

if "%BANALYTICS_SERVICE%"=="" goto process
set SERVICE=%BANALYTICS_SERVICE%
sc query %SERVICE% >nul 2>&1
if errorlevel 1 goto process

rem As a service: the service control manager says when it stopped.
net stop %SERVICE% >nul 2>&1
:wait_service
sc query %SERVICE% | find "STOPPED" >nul
if errorlevel 1 (
  ping -n 2 127.0.0.1 >nul
  goto wait_service
)
%BOX% --home "%BANALYTICS_HOME%" apply >>%LOG% 2>&1
if errorlevel 1 echo upgrade job: apply failed with %errorlevel%; starting the previous set>>%LOG%
net start %SERVICE%
goto end

:process
rem Not a service: the box is gone once its home lock is free; until then
rem `apply` answers that another banalytics-box is running (`ping` is
rem the one-second wait that every Windows and Wine has).
set /a TRIES=0
:wait_process
%BOX% --home "%BANALYTICS_HOME%" apply >%LOG% 2>&1
find "another banalytics-box is running" %LOG% >nul
if not errorlevel 1 (
  set /a TRIES+=1
  if %TRIES% geq 120 goto start_box
  ping -n 2 127.0.0.1 >nul
  goto wait_process
)
:start_box
start "" /b %BOX% --home "%BANALYTICS_HOME%" run
:end
endlocal
