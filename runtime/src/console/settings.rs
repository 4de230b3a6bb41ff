//! The upgrade center's settings on the console: read from
//! `config/box.toml`, changed with `toml_edit` (comments, order and the
//! other tables kept), checked by the parsers the host runs at start (the
//! host's [`BoxConfig::parse`], then the upgrade center kind's own
//! factory on its table), and written only when both accept the new file.
//! They take effect at the next start.

use std::path::{Path, PathBuf};

use banalytics_home::layout::FileError;
use banalytics_sdk::{component::ComponentInit, ComponentError};
use toml_edit::{value, DocumentMut, InlineTable, Item};

use crate::config::{BoxConfig, CONFIG_FILE};

/// The settings the console changes, as the form sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct UpgradeSettings {
    /// `software_update_type`: `manual`, `on-boot`.
    pub software_update_type: String,
    /// `restart_on_failure` of the upgrade center's table.
    pub restart_on_failure: String,
    /// `apply`: `immediately`, `window`, `approval`.
    pub apply: String,
    /// `maintenance_window.schedule` (empty: no window).
    #[serde(default)]
    pub window_schedule: String,
    /// `maintenance_window.duration`.
    #[serde(default)]
    pub window_duration: String,
    /// `maintenance_window.timezone`.
    #[serde(default)]
    pub window_timezone: String,
    /// `max_download_rate` (empty: none).
    #[serde(default)]
    pub max_download_rate: String,
}

/// The settings now in `text`, and the upgrade center's table name;
/// `None` when no table has the upgrade center's kind.
pub fn current(text: &str) -> Option<(String, UpgradeSettings)> {
    let doc: DocumentMut = text.parse().ok()?;
    let (name, table) = doc
        .get("components")?
        .as_table_like()?
        .iter()
        .find(|(_, t)| {
            t.get("kind").and_then(Item::as_str) == Some(banalytics_upgrade_center::KIND_NAME)
        })?;
    let s = |key: &str, default: &str| {
        table
            .get(key)
            .and_then(Item::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let window = |key: &str| {
        table
            .get("maintenance_window")
            .and_then(|w| w.as_table_like())
            .and_then(|w| w.get(key))
            .and_then(Item::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some((
        name.to_owned(),
        UpgradeSettings {
            software_update_type: s("software_update_type", "manual"),
            restart_on_failure: s("restart_on_failure", "10s"),
            apply: s("apply", "immediately"),
            window_schedule: window("schedule"),
            window_duration: window("duration"),
            window_timezone: window("timezone"),
            max_download_rate: s("max_download_rate", ""),
        },
    ))
}

/// `text` with `new` written into the upgrade center's table `name`:
/// only the keys whose value changes are touched.
pub fn edited(text: &str, name: &str, new: &UpgradeSettings) -> Result<String, EditError> {
    let mut doc: DocumentMut = text.parse()?;
    let (_, old) = current(text).ok_or(EditError::NoTable)?;
    let table = doc["components"][name]
        .as_table_like_mut()
        .ok_or_else(|| EditError::NotATable(name.to_owned()))?;
    for (key, was, now) in [
        (
            "software_update_type",
            &old.software_update_type,
            &new.software_update_type,
        ),
        (
            "restart_on_failure",
            &old.restart_on_failure,
            &new.restart_on_failure,
        ),
        ("apply", &old.apply, &new.apply),
        (
            "max_download_rate",
            &old.max_download_rate,
            &new.max_download_rate,
        ),
    ] {
        let now = now.trim();
        if was.as_str() == now {
            continue;
        }
        if now.is_empty() {
            table.remove(key);
        } else {
            table.insert(key, value(now));
        }
    }
    let window_now = [
        new.window_schedule.trim(),
        new.window_duration.trim(),
        new.window_timezone.trim(),
    ];
    let window_was = [
        old.window_schedule.as_str(),
        old.window_duration.as_str(),
        old.window_timezone.as_str(),
    ];
    if window_now != window_was {
        if window_now.iter().all(|v| v.is_empty()) {
            table.remove("maintenance_window");
        } else {
            let mut w = InlineTable::new();
            for (key, v) in ["schedule", "duration", "timezone"].iter().zip(window_now) {
                if !v.is_empty() {
                    w.insert(*key, v.into());
                }
            }
            table.insert("maintenance_window", value(w));
        }
    }
    Ok(doc.to_string())
}

/// Checks `text` as the host would at start: the host's parser with the
/// kinds it knows (`kinds`), then the upgrade center's factory on its
/// table. The error names the key and the accepted values.
pub fn check(home: &Path, text: &str, kinds: &[String]) -> Result<(), CheckError> {
    let file = home.join(CONFIG_FILE);
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let config = BoxConfig::parse(&file, text, &kinds)?;
    for c in config
        .components
        .iter()
        .filter(|c| c.kind == banalytics_upgrade_center::KIND_NAME)
    {
        let init = ComponentInit {
            name: c.name.clone(),
            id: uuid::Uuid::nil(),
            home: home.to_owned(),
            config: c.section.clone(),
        };
        banalytics_upgrade_center::kind()
            .create(&init)
            .map(drop)
            .map_err(|source| CheckError::Component {
                name: c.name.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Saves `new` into the home's `box.toml` when [`check`] accepts the
/// result; nothing is written otherwise. Answers what was done, or why
/// not (each says it in words, for the console's page).
pub fn save(home: &Path, new: &UpgradeSettings, kinds: &[String]) -> Result<Saved, SaveError> {
    let file = home.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&file).map_err(|source| SaveError::Read {
        file: file.clone(),
        source,
    })?;
    let (name, old) = current(&text).ok_or_else(|| SaveError::NoTable { file: file.clone() })?;
    let new_text = edited(&text, &name, new)?;
    if new_text == text {
        return Ok(Saved::Unchanged);
    }
    check(home, &new_text, kinds).map_err(SaveError::Refused)?;
    banalytics_home::layout::write_atomic(&file, new_text.as_bytes()).map_err(SaveError::Write)?;
    tracing::info!(file = %file.display(), component = %name, old = ?old, new = ?new, "upgrade center settings saved from the console");
    Ok(Saved::To(file))
}

/// What [`save`] did; its `Display` says it for the console's page.
#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    /// The settings are those of the file already.
    Unchanged,
    /// Written to this file.
    To(PathBuf),
}

impl std::fmt::Display for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Saved::Unchanged => f.write_str("nothing changed: these are the settings in box.toml"),
            Saved::To(file) => write!(
                f,
                "saved to {}: the settings take effect at the next start",
                file.display()
            ),
        }
    }
}

/// Why [`save`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// `box.toml` cannot be read.
    #[error("{}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No table has the upgrade center's kind.
    #[error("{} has no software-upgrade-center component: nothing to set", file.display())]
    NoTable {
        /// The file.
        file: PathBuf,
    },
    /// The settings cannot be written into the file's text.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The start parsers refuse the new file.
    #[error("not saved, box.toml is unchanged: {0}")]
    Refused(CheckError),
    /// The new file cannot be written.
    #[error("not saved: {0}")]
    Write(FileError),
}

/// Why [`edited`] cannot write the settings into a text.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// Not TOML.
    #[error("{0}")]
    Toml(#[from] toml_edit::TomlError),
    /// No table has the upgrade center's kind.
    #[error("no software-upgrade-center table")]
    NoTable,
    /// `components.<name>` is not a table.
    #[error("components.{0} is not a table")]
    NotATable(String),
}

/// Why [`check`] refuses a `box.toml`: the message names the key and the
/// accepted values.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The host's parser refuses it.
    #[error("{0}")]
    Config(#[from] banalytics_sdk::config::ConfigError),
    /// The upgrade center's factory refuses its table.
    #[error("components.{name}: {source}")]
    Component {
        /// The component's name.
        name: String,
        /// The factory's refusal.
        source: ComponentError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# the box\n[log]\nlevel = \"info\" # keep\n\n[components.uc]\n# the center\nkind = \"software-upgrade-center\"\nrepository_url = \"http://127.0.0.1:1/repo\"\n\n[components.p]\nkind = \"probe\"\n";

    #[test]
    fn an_edit_changes_only_its_keys_and_keeps_the_comments() {
        let (name, mut s) = current(TEXT).unwrap();
        assert_eq!(name, "uc");
        assert_eq!(s.software_update_type, "manual");
        s.software_update_type = "on-boot".into();
        s.window_schedule = "0 2 * * *".into();
        s.window_duration = "2h".into();
        let out = edited(TEXT, &name, &s).unwrap();
        assert!(
            out.starts_with("# the box\n[log]\nlevel = \"info\" # keep\n"),
            "{out}"
        );
        assert!(out.contains("# the center\nkind"), "{out}");
        assert!(out.contains("software_update_type = \"on-boot\""), "{out}");
        assert!(
            out.contains("maintenance_window = { schedule = \"0 2 * * *\", duration = \"2h\" }"),
            "{out}"
        );
        assert!(
            !out.contains("restart_on_failure"),
            "untouched defaults: {out}"
        );
        assert!(out.ends_with("[components.p]\nkind = \"probe\"\n"), "{out}");
    }

    #[test]
    fn a_bad_value_is_refused_by_the_start_parsers_naming_the_key() {
        let home = Path::new("/b");
        let kinds = vec!["software-upgrade-center".to_owned(), "probe".to_owned()];
        check(home, TEXT, &kinds).unwrap();
        let (name, mut s) = current(TEXT).unwrap();
        s.max_download_rate = "fast".into();
        let err = check(home, &edited(TEXT, &name, &s).unwrap(), &kinds)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_download_rate") && err.contains("accepted"),
            "{err}"
        );
        let (_, mut s) = current(TEXT).unwrap();
        s.software_update_type = "sometimes".into();
        let err = check(home, &edited(TEXT, &name, &s).unwrap(), &kinds)
            .unwrap_err()
            .to_string();
        assert!(err.contains("on-boot"), "{err}");
        let (_, mut s) = current(TEXT).unwrap();
        s.restart_on_failure = "never".into();
        let err = check(home, &edited(TEXT, &name, &s).unwrap(), &kinds)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("restart_on_failure") || err.contains("accepted"),
            "{err}"
        );
    }
}
