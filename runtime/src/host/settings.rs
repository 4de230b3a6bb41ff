//! The upgrade settings the host acts on (probation, restart, busy
//! leases): the upgrade center owns and parses them
//! ([`banalytics_upgrade_center::HostSettings`]); the host finds its section
//! and reads the typed result.

use banalytics_upgrade_center::HostSettings;

use crate::{config::BoxConfig, Error};

/// The upgrade center's settings that the host acts on.
pub type Settings = HostSettings;

/// The settings of `config`'s upgrade center, or the defaults when the box
/// has none.
pub(crate) fn of_config(config: &BoxConfig) -> Result<Settings, Error> {
    let section = config
        .components
        .iter()
        .find(|c| c.kind == banalytics_upgrade_center::KIND_NAME);
    let settings = match section {
        Some(c) => HostSettings::parse(&c.section)?,
        None => HostSettings::default(),
    };
    #[cfg(windows)]
    if let (Some(c), banalytics_messages::upgrade::RestartMode::Exec) =
        (section, settings.restart_mode)
    {
        return Err(Error::Component {
            name: c.name.clone(),
            message: crate::platform::EXEC_REFUSED.to_owned(),
        });
    }
    Ok(settings)
}
