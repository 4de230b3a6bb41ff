//! A component's section of `config/box.toml`, and errors that point into it.
//!
//! The host owns the keys `kind`, `restart_on_failure` and the isolation
//! keys (`isolation`, `memory_limit`, `cpu_limit`); the component
//! owns the rest of its table and deserializes it with
//! [`ConfigSection::parse`] into its own struct, which should say
//! `#[serde(deny_unknown_fields)]` so that a typo is refused at start.
//! Every error carries the file, line and column of the offending key or
//! value.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// Keys of a component table that belong to the host, not the component.
pub const HOST_KEYS: [&str; 5] = [
    "kind",
    "restart_on_failure",
    "isolation",
    "memory_limit",
    "cpu_limit",
];

/// A refused configuration value: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong, naming the accepted values where there is a list.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl ConfigError {
    /// An error at byte `offset` of `text`, the contents of `file`.
    pub fn at(file: &Path, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    /// Converts a `toml` error, which knows its span, into a located error.
    pub fn from_toml(file: &Path, text: &str, err: &toml::de::Error) -> Self {
        let message = err.message().trim_end().to_owned();
        match err.span() {
            Some(span) => ConfigError::at(file, text, span.start, message),
            None => ConfigError {
                file: file.to_owned(),
                line: 0,
                column: 0,
                message,
            },
        }
    }
}

/// One component's table in `box.toml`, kept with the whole file so that
/// errors point at the right line.
#[derive(Clone, Debug)]
pub struct ConfigSection {
    file: Arc<Path>,
    text: Arc<str>,
    name: String,
}

impl ConfigSection {
    /// The table `[components.NAME]` of `text`, read from `file`.
    pub fn new(file: &Path, text: Arc<str>, name: &str) -> Self {
        ConfigSection {
            file: file.into(),
            text,
            name: name.to_owned(),
        }
    }

    /// A section from a TOML snippet holding only the component's own keys,
    /// for tests and for components built outside a box.
    pub fn from_snippet(name: &str, snippet: &str) -> Self {
        let text = format!("[components.{name}]\n{snippet}");
        ConfigSection::new(Path::new("<snippet>"), text.into(), name)
    }

    /// The component instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration file (to hand the section across a plugin boundary).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The whole configuration text the section is a table of.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// An error about the value of this section's `key`, located at that
    /// value (at the table when the key is absent): for a check that runs
    /// after [`Self::parse`], because it needs more than one key.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let offset = DeTable::parse(&self.text).ok().and_then(|root| {
            let section = root
                .get_ref()
                .get("components")?
                .get_ref()
                .as_table()?
                .get(self.name.as_str())?;
            let at = match section.get_ref() {
                DeValue::Table(t) => t.get(key).map(|v| v.span().start),
                _ => None,
            };
            Some(at.unwrap_or(section.span().start))
        });
        match offset {
            Some(offset) => ConfigError::at(&self.file, &self.text, offset, message),
            None => ConfigError {
                file: self.file.to_path_buf(),
                line: 0,
                column: 0,
                message: message.into(),
            },
        }
    }

    /// Deserializes the component's own keys (all but [`HOST_KEYS`]).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let err = |e: toml::de::Error| ConfigError::from_toml(&self.file, &self.text, &e);
        let root = DeTable::parse(&self.text).map_err(err)?;
        let root_span = root.span();
        let section = root
            .get_ref()
            .get("components")
            .and_then(|c| c.get_ref().as_table())
            .and_then(|c| c.get(self.name.as_str()))
            .ok_or_else(|| {
                ConfigError::at(
                    &self.file,
                    &self.text,
                    root_span.start,
                    format!("no table [components.{}]", self.name),
                )
            })?;
        let span = section.span();
        let mut table = match section.get_ref() {
            DeValue::Table(t) => t.clone(),
            other => {
                return Err(ConfigError::at(
                    &self.file,
                    &self.text,
                    span.start,
                    format!(
                        "components.{} must be a table, found {}",
                        self.name,
                        other.type_str()
                    ),
                ))
            }
        };
        for key in HOST_KEYS {
            table.remove(key);
        }
        let de = ValueDeserializer::from(toml::Spanned::new(span, DeValue::Table(table)));
        T::deserialize(de).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        #[allow(dead_code)]
        interval_ms: u64,
    }

    const TEXT: &str = "[log]\nlevel = \"info\"\n\n[components.p]\nkind = \"probe\"\nrestart_on_failure = \"stop\"\ninterval_ms = 5\ncolour = \"red\"\n";

    #[test]
    fn host_keys_are_not_the_components_and_unknown_keys_point_at_their_line() {
        let section = ConfigSection::new(Path::new("box.toml"), TEXT.into(), "p");
        let err = section.parse::<Probe>().unwrap_err();
        assert_eq!((err.line, err.column), (8, 1), "{err}");
        assert!(err.message.contains("colour"), "{err}");
        assert!(
            err.message.contains("interval_ms"),
            "accepted keys named: {err}"
        );
    }

    #[test]
    fn a_later_check_of_a_key_points_at_its_value() {
        let section = ConfigSection::new(Path::new("box.toml"), TEXT.into(), "p");
        let err = section.error_at("interval_ms", "too short");
        assert_eq!((err.line, err.column), (7, 15), "{err}");
        assert_eq!(err.to_string(), "box.toml:7:15: too short");
        // A key that is not there: the table.
        let err = section.error_at("missing", "needed");
        assert_eq!(err.line, 4, "{err}");
    }

    #[test]
    fn a_bad_value_points_at_the_value() {
        let text = TEXT.replace(
            "interval_ms = 5\ncolour = \"red\"\n",
            "interval_ms = \"soon\"\n",
        );
        let err = ConfigSection::new(Path::new("box.toml"), text.into(), "p")
            .parse::<Probe>()
            .unwrap_err();
        assert_eq!(err.line, 7, "{err}");
    }
}
