//! `config/box.toml`: the host's own keys, and the component tables checked
//! against the registered kinds.
//!
//! Everything is checked before anything starts: an unknown key, an unknown
//! kind or a bad value is refused with the file, line and column, and the
//! accepted values.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use banalytics_sdk::{ConfigError, ConfigSection, RestartPolicy};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::isolation::{Isolation, Limits};

/// The configuration file, relative to the home.
pub(crate) const CONFIG_FILE: &str = "config/box.toml";

/// Log verbosity.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation (default).
    #[default]
    Info,
    /// Problems that were handled.
    Warn,
    /// Failures.
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Verbosity.
    #[serde(default)]
    pub level: LogLevel,
    /// Format.
    #[serde(default)]
    pub format: LogFormat,
}

/// One `[components.NAME]` table.
#[derive(Debug, Clone)]
pub struct ComponentConfig {
    /// Instance name.
    pub name: String,
    /// Kind, one of the registered kinds.
    pub kind: String,
    /// `restart_on_failure`.
    pub policy: RestartPolicy,
    /// `isolation` (with `memory_limit` and `cpu_limit`).
    pub isolation: Isolation,
    /// The whole table, for the component's own keys.
    pub section: ConfigSection,
}

/// The parsed `box.toml`.
#[derive(Debug, Clone)]
pub struct BoxConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// `[log]`.
    pub log: LogConfig,
    /// Component instances in file order, which is their start order.
    pub components: Vec<ComponentConfig>,
    /// `[console]`: the box's web console; `None` (no table): off.
    pub console: Option<crate::console::ConsoleConfig>,
}

const TOP_KEYS: &str = "log, console, components";

impl BoxConfig {
    /// Reads `config/box.toml` under `home`. A missing file is an empty
    /// configuration: a host with no components.
    pub fn load(home: &Path, kinds: &[&str]) -> Result<BoxConfig, ConfigError> {
        BoxConfig::load_with(home, Some(kinds))
    }

    /// Reads `config/box.toml` accepting any component kind: for what the
    /// host needs before it knows the plugin kinds (the log settings, the
    /// upgrade settings), with everything else checked as usual.
    pub(crate) fn load_any_kind(home: &Path) -> Result<BoxConfig, ConfigError> {
        BoxConfig::load_with(home, None)
    }

    fn load_with(home: &Path, kinds: Option<&[&str]>) -> Result<BoxConfig, ConfigError> {
        let file = home.join(CONFIG_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => BoxConfig::parse_with(&file, &text, kinds),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BoxConfig {
                file,
                log: LogConfig::default(),
                components: Vec::new(),
                console: None,
            }),
            Err(e) => Err(ConfigError {
                file,
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    /// Parses `text`, the contents of `file`; `kinds` are the accepted
    /// component kinds.
    pub fn parse(file: &Path, text: &str, kinds: &[&str]) -> Result<BoxConfig, ConfigError> {
        BoxConfig::parse_with(file, text, Some(kinds))
    }

    fn parse_with(
        file: &Path,
        text: &str,
        kinds: Option<&[&str]>,
    ) -> Result<BoxConfig, ConfigError> {
        let at = |offset: usize, msg: String| ConfigError::at(file, text, offset, msg);
        let toml_err = |e: toml::de::Error| ConfigError::from_toml(file, text, &e);
        let shared: Arc<str> = text.into();
        let root = DeTable::parse(text).map_err(toml_err)?;
        for (_, value) in root.get_ref().iter() {
            refuse_non_finite(value).map_err(|(offset, msg)| at(offset, msg))?;
        }
        let mut log = LogConfig::default();
        let mut components = Vec::new();
        let mut console = None;
        for (key, value) in root.get_ref().iter() {
            match key.get_ref().as_ref() {
                "console" => {
                    let home = file
                        .parent()
                        .and_then(Path::parent)
                        .unwrap_or(Path::new("."));
                    console = Some(crate::console::config::parse(file, text, home, value)?);
                }
                "log" => {
                    log = LogConfig::deserialize(ValueDeserializer::from(value.clone()))
                        .map_err(toml_err)?;
                }
                "components" => {
                    let table = value.get_ref().as_table().ok_or_else(|| {
                        at(value.span().start, "components must be a table".into())
                    })?;
                    for (name, section) in table.iter() {
                        components.push(component(file, text, &shared, name, section, kinds)?);
                    }
                }
                other => {
                    return Err(at(
                        key.span().start,
                        format!("unknown key {other:?}; accepted keys: {TOP_KEYS}"),
                    ))
                }
            }
        }
        Ok(BoxConfig {
            file: file.to_owned(),
            log,
            components,
            console,
        })
    }
}

/// `nan` and `inf` are TOML floats but no setting of the box means them
/// (`health_grace_s = nan` used to panic the host): refused wherever they
/// are, with their offset.
fn refuse_non_finite(value: &toml::Spanned<DeValue<'_>>) -> Result<(), (usize, String)> {
    match value.get_ref() {
        DeValue::Float(f) => {
            let text = f.as_str();
            let bare = text.trim_start_matches(['+', '-']);
            if bare == "nan" || bare == "inf" {
                return Err((
                    value.span().start,
                    format!("{text} is not accepted: numbers must be finite"),
                ));
            }
            Ok(())
        }
        DeValue::Array(items) => items.iter().try_for_each(refuse_non_finite),
        DeValue::Table(table) => table.iter().try_for_each(|(_, v)| refuse_non_finite(v)),
        _ => Ok(()),
    }
}

fn component(
    file: &Path,
    text: &str,
    shared: &Arc<str>,
    name: &toml::Spanned<std::borrow::Cow<'_, str>>,
    section: &toml::Spanned<DeValue<'_>>,
    kinds: Option<&[&str]>,
) -> Result<ComponentConfig, ConfigError> {
    let at = |offset: usize, msg: String| ConfigError::at(file, text, offset, msg);
    let n: &str = name.get_ref().as_ref();
    if n.is_empty()
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(at(
            name.span().start,
            format!("component name {n:?} is not accepted; accepted: letters, digits, '-' and '_'"),
        ));
    }
    let table = section.get_ref().as_table().ok_or_else(|| {
        at(
            section.span().start,
            format!("components.{n} must be a table"),
        )
    })?;
    if let Some((key, _)) = table.get_key_value("id") {
        return Err(at(
            key.span().start,
            format!("components.{n}.id cannot be configured: the host assigns a component's ID at its first start and keeps it"),
        ));
    }
    let accepted = kinds.map_or_else(|| "any".to_owned(), |k| k.join(", "));
    let kind = match table.get("kind") {
        None => {
            return Err(at(
                name.span().start,
                format!("components.{n} has no kind; accepted kinds: {accepted}"),
            ))
        }
        Some(k) => match k.get_ref().as_str() {
            Some(s) if kinds.is_none_or(|k| k.contains(&s)) => s.to_owned(),
            Some(s) => {
                return Err(at(
                    k.span().start,
                    format!("unknown component kind {s:?}; accepted kinds: {accepted}"),
                ))
            }
            None => {
                return Err(at(
                    k.span().start,
                    format!("kind must be a string; accepted kinds: {accepted}"),
                ))
            }
        },
    };
    let policy = match table.get("restart_on_failure") {
        None => RestartPolicy::default(),
        Some(p) => p
            .get_ref()
            .as_str()
            .ok_or_else(|| {
                format!(
                    "restart_on_failure must be a string; accepted values: {}",
                    RestartPolicy::ACCEPTED.join(", ")
                )
            })
            .and_then(|s| {
                s.parse()
                    .map_err(|e: banalytics_sdk::policy::UnknownPolicy| e.to_string())
            })
            .map_err(|msg| at(p.span().start, msg))?,
    };
    let isolation = isolation(table, &at)?;
    Ok(ComponentConfig {
        name: n.to_owned(),
        kind,
        policy,
        isolation,
        section: ConfigSection::new(file, shared.clone(), n),
    })
}

/// The isolation of the component whose table `section` is (for a plugin
/// kind's factory, which gets the section rather than the parsed file).
pub(crate) fn isolation_of(section: &ConfigSection) -> Result<Isolation, ConfigError> {
    let (file, text) = (section.file(), section.text());
    let at = |offset: usize, msg: String| ConfigError::at(file, text, offset, msg);
    let root = DeTable::parse(text).map_err(|e| ConfigError::from_toml(file, text, &e))?;
    let table = root
        .get_ref()
        .get("components")
        .and_then(|c| c.get_ref().as_table())
        .and_then(|c| c.get(section.name()))
        .and_then(|t| t.get_ref().as_table());
    match table {
        Some(table) => isolation(table, &at),
        None => Ok(Isolation::None),
    }
}

/// `isolation`, `memory_limit` and `cpu_limit` of one component table.
fn isolation(
    table: &DeTable<'_>,
    at: &dyn Fn(usize, String) -> ConfigError,
) -> Result<Isolation, ConfigError> {
    let process = match table.get("isolation") {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            Some("none") => false,
            Some("process") => true,
            _ => {
                return Err(at(
                    v.span().start,
                    format!(
                        "isolation = {} is not accepted; accepted values: none, process",
                        shown(v.get_ref())
                    ),
                ))
            }
        },
    };
    let mut limits = Limits::default();
    for (key, parse, slot) in [
        (
            "memory_limit",
            parse_bytes as fn(&DeValue<'_>) -> Option<u64>,
            &mut limits.memory_bytes,
        ),
        ("cpu_limit", parse_seconds, &mut limits.cpu_seconds),
    ] {
        let Some(v) = table.get(key) else { continue };
        if !process {
            return Err(at(
                v.span().start,
                format!("{key} applies only to an isolated component; add isolation = \"process\""),
            ));
        }
        *slot = Some(parse(v.get_ref()).filter(|n| *n > 0).ok_or_else(|| {
            at(
                v.span().start,
                format!(
                    "{key} = {} is not accepted; accepted: {}",
                    shown(v.get_ref()),
                    if key == "memory_limit" {
                        "a number of bytes, or a string such as \"512MiB\", \"2G\" (K, M, G, KiB, MiB, GiB)"
                    } else {
                        "a number of CPU seconds, or a string such as \"90s\", \"10min\", \"2h\""
                    }
                ),
            )
        })?);
    }
    Ok(if process {
        Isolation::Process(limits)
    } else {
        Isolation::None
    })
}

fn shown(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("{s:?}"),
        DeValue::Integer(i) => i.to_string(),
        other => other.type_str().to_owned(),
    }
}

fn integer(v: &DeValue<'_>) -> Option<u64> {
    match v {
        DeValue::Integer(i) => i.as_str().replace('_', "").parse().ok(),
        _ => None,
    }
}

/// A byte count: an integer, or a number with a unit (K, M, G are powers of
/// 1024, as `ulimit` and systemd's `MemoryMax` read them).
fn parse_bytes(v: &DeValue<'_>) -> Option<u64> {
    if let Some(n) = integer(v) {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// CPU seconds: an integer, or a number with `s`, `min` or `h`.
fn parse_seconds(v: &DeValue<'_>) -> Option<u64> {
    if let Some(n) = integer(v) {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let factor: u64 = match unit.trim() {
        "s" => 1,
        "min" => 60,
        "h" => 3600,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: &[&str] = &["probe", "portal-integration"];

    fn parse(text: &str) -> Result<BoxConfig, ConfigError> {
        BoxConfig::parse(Path::new("/box/config/box.toml"), text, KINDS)
    }

    #[test]
    fn components_keep_file_order_and_default_policy() {
        let c = parse("[components.zeta]\nkind = \"probe\"\n\n[components.alpha]\nkind = \"probe\"\nrestart_on_failure = \"immediate\"\n").unwrap();
        let names: Vec<_> = c.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha"]);
        assert_eq!(c.components[0].policy, RestartPolicy::After10s);
        assert_eq!(c.components[1].policy, RestartPolicy::Immediate);
    }

    #[test]
    fn refuses_an_unknown_top_level_key_with_its_line() {
        let err = parse("[log]\nlevel = \"info\"\n\n[logging]\nx = 1\n").unwrap_err();
        assert_eq!((err.line, err.column), (4, 2), "{err}");
        assert!(
            err.to_string()
                .contains("accepted keys: log, console, components"),
            "{err}"
        );
    }

    #[test]
    fn refuses_non_finite_numbers_with_their_line() {
        for (value, shown) in [
            ("nan", "nan"),
            ("+inf", "+inf"),
            ("-nan", "-nan"),
            ("[1.0, inf]", "inf"),
        ] {
            let err = parse(&format!(
                "[components.p]\nkind = \"probe\"\n\n[components.u]\nkind = \"probe\"\nhealth_grace_s = {value}\n"
            ))
            .unwrap_err();
            assert_eq!(err.line, 6, "{err}");
            assert!(err.to_string().contains("box.toml"), "{err}");
            assert!(
                err.message
                    .contains(&format!("{shown} is not accepted: numbers must be finite")),
                "{err}"
            );
        }
    }

    #[test]
    fn refuses_an_unknown_log_level_naming_the_accepted_ones() {
        let err = parse("[log]\nlevel = \"loud\"\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("trace"), "{err}");
    }

    #[test]
    fn isolation_and_its_limits_are_read_and_refused_with_their_line() {
        let c = parse("[components.a]\nkind = \"probe\"\nisolation = \"process\"\nmemory_limit = \"512MiB\"\ncpu_limit = \"10min\"\n\n[components.b]\nkind = \"probe\"\n").unwrap();
        assert_eq!(
            c.components[0].isolation,
            Isolation::Process(Limits {
                memory_bytes: Some(512 << 20),
                cpu_seconds: Some(600),
            })
        );
        assert_eq!(c.components[1].isolation, Isolation::None);
        let err = parse("[components.a]\nkind = \"probe\"\nisolation = \"thread\"\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(
            err.message.contains("accepted values: none, process"),
            "{err}"
        );
        let err = parse("[components.a]\nkind = \"probe\"\nmemory_limit = 1000\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.contains("isolation = \"process\""), "{err}");
        let err = parse(
            "[components.a]\nkind = \"probe\"\nisolation = \"process\"\ncpu_limit = \"soon\"\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 4, "{err}");
    }

    #[test]
    fn refuses_a_configured_id() {
        let err = parse(
            "[components.p]\nkind = \"probe\"\nid = \"00000000-0000-0000-0000-000000000000\"\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.contains("cannot be configured"), "{err}");
    }
}
