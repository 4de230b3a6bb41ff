//! How the host ends for a restart: an exit for the service manager, a
//! re-execution, or an upgrade job started first (`restart_mode`); the
//! program is always `box.toml`'s, never a message's.

use std::path::{Path, PathBuf};

use banalytics_messages::upgrade::{RestartMode, RestartRequested};
use tracing::info;

use crate::{Error, EXIT_RESTART};

use super::Settings;

/// What `run` does when it ends because of a restart request.
#[derive(Debug)]
pub enum Restart {
    /// Exit with [`EXIT_RESTART`].
    Exit,
    /// Re-execute this program with the same arguments.
    Exec,
    /// Start this program, then exit with [`EXIT_RESTART`].
    Command(String),
}

impl Restart {
    /// How to carry out `request`: its mode, with the program of
    /// [`RestartMode::Command`] from `settings` (`box.toml`), never from a
    /// message; without one configured, an exit.
    pub fn for_request(request: &RestartRequested, settings: &Settings) -> Restart {
        match (request.mode, &settings.restart_command) {
            (RestartMode::Exit, _) => Restart::Exit,
            (RestartMode::Exec, _) => Restart::Exec,
            (RestartMode::Command, Some(c)) => Restart::Command(c.clone()),
            (RestartMode::Command, None) => Restart::Exit,
        }
    }

    /// A core started by a launcher restarts by exiting: re-executing
    /// itself would skip the launcher, which re-executes itself instead.
    pub fn under_launcher(self, launched: bool) -> Restart {
        match self {
            Restart::Exec if launched => Restart::Exit,
            how => how,
        }
    }

    /// Carries out the restart after the host stopped; the exit status
    /// when the process should exit (an `exec` that works never returns).
    pub fn carry_out(self, home: &Path) -> Result<u8, Error> {
        match self {
            Restart::Exit => Ok(EXIT_RESTART),
            Restart::Command(cmd) => {
                info!(command = %cmd, "starting the upgrade job");
                let mut job = std::process::Command::new(&cmd);
                job.current_dir(home);
                crate::notify::forget_for_child(&mut job);
                crate::platform::detach(&mut job);
                job.spawn().map_err(|source| Error::Io {
                    path: PathBuf::from(&cmd),
                    source,
                })?;
                Ok(EXIT_RESTART)
            }
            Restart::Exec => {
                let exe = std::env::current_exe().map_err(|source| Error::Io {
                    path: PathBuf::from("/proc/self/exe"),
                    source,
                })?;
                info!(exe = %exe.display(), "re-executing the host");
                let err = crate::platform::exec_self(&exe);
                Err(Error::Io {
                    path: exe,
                    source: err,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_runs_only_the_program_box_toml_configures() {
        let mut settings = Settings {
            restart_mode: RestartMode::Exit,
            restart_command: None,
            ..Settings::default()
        };
        let asked = |mode| RestartRequested {
            mode,
            reason: "staged".into(),
        };
        // A request for a program where none is configured exits.
        assert!(matches!(
            Restart::for_request(&asked(RestartMode::Command), &settings),
            Restart::Exit
        ));
        settings.restart_command = Some("/opt/box/upgrade-job".into());
        assert!(matches!(
            Restart::for_request(&asked(RestartMode::Command), &settings),
            Restart::Command(c) if c == "/opt/box/upgrade-job"
        ));
        // An older request's own `command` changes nothing.
        let old: RestartRequested =
            serde_json::from_str(r#"{"mode":"command","command":"/tmp/evil","reason":"x"}"#)
                .unwrap();
        assert!(matches!(
            Restart::for_request(&old, &settings),
            Restart::Command(c) if c == "/opt/box/upgrade-job"
        ));
    }
}
