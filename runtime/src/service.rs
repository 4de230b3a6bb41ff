//! `banalytics-box service install|uninstall|run`: the box as the Windows
//! service `BanalyticsBox` (the name `packaging/upgrade-job-start.bat`
//! stops and starts).
//!
//! - `install` registers this executable with `--home HOME service run`,
//!   start type automatic, the account given (`LocalSystem` by default),
//!   and the recovery actions that are the service control manager's
//!   counterpart of systemd's `Restart=on-failure` and `RestartSec=5`
//!   (`packaging/banalytics-box.service`): a restart [`RESTART_DELAY`]
//!   after the service ends for any reason but a clean stop, a crash or an
//!   exit with a status other than 0 alike ("failure actions on non-crash
//!   failures"), so the restart for an upgrade (status 75) and an error
//!   (status 1) are restarted as on Linux;
//! - `uninstall` stops the service when it runs and deletes it;
//! - `run` is what the service control manager starts: the service
//!   dispatcher, then `run` (the launcher or the host) on the service's
//!   thread, reporting `StartPending`, `Running` (when `run` begins),
//!   `StopPending` (at a stop or shutdown control) and `Stopped` with the
//!   exit status of `run` as the service's exit code (0: `NO_ERROR`,
//!   otherwise service-specific). A stop or shutdown control sets the stop
//!   event of the box process (`crate::platform::stop_box`): the same
//!   drain as SIGTERM on Linux.
//!
//! What is decided here and what the service control manager only carries
//! out are kept apart: [`launch_arguments`], [`recovery`], [`on_control`]
//! and [`exit_code`] are plain functions with unit tests; the calls into
//! the service control manager are the rest.
//!
//! Deliberately absent: a systemd-style watchdog (the service control
//! manager has none; a hung box is found by its components' supervision
//! and the launcher's probation bound, not by the service control manager).

// The service control manager is Windows': on Unix only the plain
// functions below are built, for their tests.
#![cfg_attr(not(windows), allow(dead_code))]

use std::{ffi::OsString, path::Path, time::Duration};

/// The service's name, as `sc` and `net start` know it (and
/// `upgrade-job-start.bat`).
pub const SERVICE_NAME: &str = "BanalyticsBox";

/// The variable `service run` sets in its environment, naming the
/// service: the processes it starts (the launcher's core, the upgrade job)
/// inherit it, and `upgrade-job-start.bat` restarts the box as this
/// service only when the box it replaces was started by it (a box run from
/// a console on a machine where the service is installed for another home
/// is started again as a process, and the service is left alone).
pub const SERVICE_ENV: &str = "BANALYTICS_SERVICE";

/// The name the Services console shows.
pub const DISPLAY_NAME: &str = "Banalytics box";

/// How long after the service ended on failure it is started again:
/// systemd's `RestartSec=5` in `packaging/banalytics-box.service`.
pub const RESTART_DELAY: Duration = Duration::from_secs(5);

/// After a day without a failure the service control manager counts
/// failures from zero again (its recovery actions are per failure count).
pub const FAILURE_RESET: Duration = Duration::from_secs(24 * 3600);

/// How long a stop may take, told to the service control manager with
/// `StopPending`: the host's stop drain (components' `STOP_GRACE`, an
/// isolated child's stop and exit graces) within this bound, with room.
pub const STOP_WAIT_HINT: Duration = Duration::from_secs(30);

/// The `service` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServiceCommand {
    /// Register this executable as the service BanalyticsBox for the home
    /// (start type automatic, restarted on failure).
    Install {
        /// The account the service runs as (e.g. `NT AUTHORITY\LocalService`
        /// or `.\banalytics`) [default: LocalSystem].
        #[arg(long)]
        account: Option<String>,
        /// The account's password, for a user account.
        #[arg(long, env = "BANALYTICS_SERVICE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Stop the service BanalyticsBox when it runs, and delete it.
    Uninstall,
    /// Run as the service (started by the service control manager).
    Run,
}

/// The arguments the service control manager starts the executable with.
pub fn launch_arguments(home: &Path) -> Vec<OsString> {
    vec![
        "--home".into(),
        home.as_os_str().to_owned(),
        "service".into(),
        "run".into(),
    ]
}

/// The arguments a launcher started as the service gives its core: the
/// core is no service (it is the service's child), so `service run`
/// becomes `run`; every other argument is kept.
pub fn core_arguments(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = args.into_iter().collect();
    let service_run = |at: usize| {
        out[at] == "service" && out[at + 1] == "run" && (at == 0 || out[at - 1] != "--home")
    };
    if let Some(at) = (0..out.len().saturating_sub(1)).find(|&at| service_run(at)) {
        out.splice(at..at + 2, [OsString::from("run")]);
    }
    out
}

/// The recovery actions: what the service control manager does after the
/// first, second and later failures (restart each time), and when it
/// forgets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The delay before each restart, for the 1st, 2nd and later failures.
    pub restarts: [Duration; 3],
    /// When the failure count goes back to zero.
    pub reset_after: Duration,
    /// Whether an exit with a status other than 0 counts as a failure (it
    /// does: status 75 asks for a restart, 1 is an error).
    pub on_non_crash_failures: bool,
}

/// The recovery actions `install` sets.
pub fn recovery() -> Recovery {
    Recovery {
        restarts: [RESTART_DELAY; 3],
        reset_after: FAILURE_RESET,
        on_non_crash_failures: true,
    }
}

/// What a control from the service control manager asks of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Stop: report `StopPending` and set the box's stop event.
    Stop,
    /// Answer with no error and do nothing (`Interrogate`).
    Nothing,
    /// Not a control this service accepts.
    NotImplemented,
}

#[cfg(windows)]
pub use scm::{install, run, uninstall};

#[cfg(windows)]
mod scm {
    use std::{
        ffi::OsString,
        sync::{
            atomic::{AtomicU8, Ordering},
            OnceLock,
        },
        time::Duration,
    };

    use windows_service::{
        define_windows_service,
        service::{
            ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
            ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
            ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
        },
        service_control_handler::{self, ServiceControlHandlerResult, ServiceStatusHandle},
        service_dispatcher,
        service_manager::{ServiceManager, ServiceManagerAccess},
    };

    use super::{
        launch_arguments, recovery, Reply, DISPLAY_NAME, SERVICE_ENV, SERVICE_NAME, STOP_WAIT_HINT,
    };
    use crate::{Error, Home, EXIT_FAILURE, EXIT_OK};

    fn scm_error(what: &str, e: windows_service::Error) -> Error {
        Error::Io {
            path: format!("service {SERVICE_NAME}").into(),
            source: std::io::Error::other(format!("{what}: {}", with_cause(&e))),
        }
    }

    /// `e` and its cause (the Win32 error the crate wraps).
    fn with_cause(e: &windows_service::Error) -> String {
        match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }
    }

    /// What the service control manager's control asks ([`Reply`]).
    pub fn on_control(control: ServiceControl) -> Reply {
        match control {
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                Reply::Stop
            }
            ServiceControl::Interrogate => Reply::Nothing,
            _ => Reply::NotImplemented,
        }
    }

    /// The service's exit code for `run`'s exit status: 0 is `NO_ERROR`,
    /// any other status is carried as a service-specific code (so `sc
    /// query` shows 75 for a restart for an upgrade, 1 for an error).
    pub fn exit_code(status: u8) -> ServiceExitCode {
        match status {
            0 => ServiceExitCode::NO_ERROR,
            code => ServiceExitCode::ServiceSpecific(u32::from(code)),
        }
    }

    /// The failure actions for [`recovery`].
    pub(super) fn failure_actions() -> ServiceFailureActions {
        let plan = recovery();
        ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(plan.reset_after),
            reboot_msg: None,
            command: None,
            actions: Some(
                plan.restarts
                    .iter()
                    .map(|&delay| ServiceAction {
                        action_type: ServiceActionType::Restart,
                        delay,
                    })
                    .collect(),
            ),
        }
    }

    /// The service's registration for `home`, run as `account`.
    pub(super) fn service_info(
        exe: std::path::PathBuf,
        home: &std::path::Path,
        account: Option<&str>,
        password: Option<&str>,
    ) -> ServiceInfo {
        ServiceInfo {
            name: SERVICE_NAME.into(),
            display_name: DISPLAY_NAME.into(),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: exe,
            launch_arguments: launch_arguments(home),
            dependencies: vec![],
            account_name: account.map(OsString::from),
            account_password: password.map(OsString::from),
        }
    }

    /// `service install`.
    pub fn install(
        home: &Home,
        account: Option<&str>,
        password: Option<&str>,
    ) -> Result<u8, Error> {
        let exe = std::env::current_exe().map_err(|source| Error::Io {
            path: "the running executable".into(),
            source,
        })?;
        let home = std::path::absolute(home.root()).map_err(|source| Error::Io {
            path: home.root().to_owned(),
            source,
        })?;
        let manager =
            ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CREATE_SERVICE)
                .map_err(|e| scm_error("cannot open the service control manager", e))?;
        let info = service_info(exe, &home, account, password);
        let service = manager
            .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
            .map_err(|e| scm_error("cannot create the service", e))?;
        let _ =
            service.set_description("Banalytics box: the device-side host and software updater");
        println!(
            "installed the service {SERVICE_NAME} for the home {} (start: automatic; `net start {SERVICE_NAME}` starts it now)",
            home.display()
        );
        let recovered = service
            .update_failure_actions(failure_actions())
            .and_then(|()| {
                service.set_failure_actions_on_non_crash_failures(recovery().on_non_crash_failures)
            });
        if let Err(e) = recovered {
            // The service is there and runs; only its restarts are not.
            eprintln!("banalytics-box: {}", recovery_missing(&e));
            return Ok(EXIT_FAILURE);
        }
        Ok(EXIT_OK)
    }

    /// What `install` says when the recovery actions could not be set (Wine
    /// has no `SERVICE_CONFIG_FAILURE_ACTIONS`): how to set them by hand.
    fn recovery_missing(e: &windows_service::Error) -> String {
        let delay_ms = recovery().restarts[0].as_millis();
        format!(
            "the recovery actions of the service could not be set ({}): it is not restarted after a failure; set them with `sc failure {SERVICE_NAME} reset= {} actions= restart/{delay_ms}/restart/{delay_ms}/restart/{delay_ms}` and `sc failureflag {SERVICE_NAME} 1`",
            with_cause(e),
            recovery().reset_after.as_secs()
        )
    }

    /// `service uninstall`.
    pub fn uninstall() -> Result<u8, Error> {
        let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
            .map_err(|e| scm_error("cannot open the service control manager", e))?;
        let service = manager
            .open_service(
                SERVICE_NAME,
                ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
            )
            .map_err(|e| scm_error("cannot open the service", e))?;
        let running = service
            .query_status()
            .map(|s| s.current_state != ServiceState::Stopped)
            .unwrap_or(false);
        if running {
            let _ = service.stop();
            for _ in 0..STOP_WAIT_HINT.as_secs() * 5 {
                match service.query_status() {
                    Ok(s) if s.current_state == ServiceState::Stopped => break,
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
        service
            .delete()
            .map_err(|e| scm_error("cannot delete the service", e))?;
        println!("uninstalled the service {SERVICE_NAME}");
        Ok(EXIT_OK)
    }

    /// The home `service run` was given, for the service's thread.
    static HOME: OnceLock<Home> = OnceLock::new();
    /// The exit status of `run` on the service's thread.
    static EXIT: AtomicU8 = AtomicU8::new(EXIT_FAILURE);

    define_windows_service!(ffi_service_main, service_main);

    /// `service run`: hands the process to the service dispatcher, which
    /// returns when the service stopped; the exit status of `run`.
    pub fn run(home: &Home) -> Result<u8, Error> {
        let _ = HOME.set(home.clone());
        // Before any thread of ours starts (Windows' environment functions
        // are locked anyway).
        std::env::set_var(SERVICE_ENV, SERVICE_NAME);
        service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
            scm_error(
                "cannot connect to the service control manager (`service run` is started by it; use `run` from a console)",
                e,
            )
        })?;
        Ok(EXIT.load(Ordering::SeqCst))
    }

    fn status(state: ServiceState, exit: ServiceExitCode, wait_hint: Duration) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: match state {
                ServiceState::Running => {
                    ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
                }
                _ => ServiceControlAccept::empty(),
            },
            exit_code: exit,
            checkpoint: 0,
            wait_hint,
            process_id: None,
        }
    }

    fn service_main(_arguments: Vec<OsString>) {
        let code = match serve() {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(error = %e, "the service failed");
                EXIT_FAILURE
            }
        };
        EXIT.store(code, Ordering::SeqCst);
    }

    /// The service's life on the dispatcher's thread.
    fn serve() -> Result<u8, Error> {
        let home = HOME
            .get()
            .expect("set before the dispatcher starts")
            .clone();
        let handle: &'static OnceLock<ServiceStatusHandle> = Box::leak(Box::default());
        let handler = move |control| match on_control(control) {
            Reply::Stop => {
                if let Some(h) = handle.get() {
                    let _ = h.set_service_status(status(
                        ServiceState::StopPending,
                        ServiceExitCode::NO_ERROR,
                        STOP_WAIT_HINT,
                    ));
                }
                crate::platform::stop_box();
                ServiceControlHandlerResult::NoError
            }
            Reply::Nothing => ServiceControlHandlerResult::NoError,
            Reply::NotImplemented => ServiceControlHandlerResult::NotImplemented,
        };
        let registered = service_control_handler::register(SERVICE_NAME, handler)
            .map_err(|e| scm_error("cannot register the control handler", e))?;
        let _ = handle.set(registered);
        let report = |s| {
            if let Err(e) = registered.set_service_status(s) {
                tracing::warn!(error = %e, "cannot report the service's state");
            }
        };
        report(status(
            ServiceState::StartPending,
            ServiceExitCode::NO_ERROR,
            Duration::from_secs(30),
        ));
        report(status(
            ServiceState::Running,
            ServiceExitCode::NO_ERROR,
            Duration::ZERO,
        ));
        let code = match crate::host::run(&home) {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(error = %e, "run ended with an error");
                e.exit_code()
            }
        };
        report(status(
            ServiceState::Stopped,
            exit_code(code),
            Duration::ZERO,
        ));
        Ok(code)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stop_and_shutdown_stop_the_box_interrogate_does_nothing() {
            assert_eq!(on_control(ServiceControl::Stop), Reply::Stop);
            assert_eq!(on_control(ServiceControl::Shutdown), Reply::Stop);
            assert_eq!(on_control(ServiceControl::Preshutdown), Reply::Stop);
            assert_eq!(on_control(ServiceControl::Interrogate), Reply::Nothing);
            assert_eq!(on_control(ServiceControl::Pause), Reply::NotImplemented);
        }

        #[test]
        fn the_exit_status_is_the_service_exit_code() {
            assert_eq!(exit_code(0), ServiceExitCode::NO_ERROR);
            assert_eq!(exit_code(75), ServiceExitCode::ServiceSpecific(75));
            assert_eq!(exit_code(1), ServiceExitCode::ServiceSpecific(1));
        }

        #[test]
        fn failure_actions_restart_after_five_seconds_each_time() {
            let actions = failure_actions();
            let restarts = actions.actions.unwrap();
            assert_eq!(restarts.len(), 3);
            for a in restarts {
                assert_eq!(a.action_type, ServiceActionType::Restart);
                assert_eq!(a.delay, Duration::from_secs(5));
            }
            assert_eq!(
                actions.reset_period,
                ServiceFailureResetPeriod::After(Duration::from_secs(86400))
            );
        }

        #[test]
        fn the_registration_starts_service_run_for_the_home_automatically() {
            let info = service_info(
                "C:\\box\\banalytics-box.exe".into(),
                std::path::Path::new("C:\\ProgramData\\Banalytics"),
                Some("NT AUTHORITY\\LocalService"),
                None,
            );
            assert_eq!(info.name, "BanalyticsBox");
            assert_eq!(info.start_type, ServiceStartType::AutoStart);
            assert_eq!(info.service_type, ServiceType::OWN_PROCESS);
            assert_eq!(
                info.launch_arguments,
                ["--home", "C:\\ProgramData\\Banalytics", "service", "run"]
                    .map(OsString::from)
                    .to_vec()
            );
            assert_eq!(
                info.account_name.as_deref(),
                Some(std::ffi::OsStr::new("NT AUTHORITY\\LocalService"))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launcher_started_as_the_service_starts_its_core_with_run() {
        let args = ["--home", "C:\\box", "service", "run"].map(OsString::from);
        assert_eq!(
            core_arguments(args),
            ["--home", "C:\\box", "run"].map(OsString::from).to_vec()
        );
        let odd_home = ["--home", "service", "run"].map(OsString::from);
        assert_eq!(core_arguments(odd_home.clone()), odd_home.to_vec());
        let plain = ["--home", "/b", "run"].map(OsString::from);
        assert_eq!(core_arguments(plain.clone()), plain.to_vec());
    }

    #[test]
    fn recovery_restarts_on_every_failure_including_exit_statuses() {
        let r = recovery();
        assert_eq!(r.restarts, [Duration::from_secs(5); 3]);
        assert!(r.on_non_crash_failures);
    }
}
