//! The upgrade center's settings: its table in `box.toml`, parsed and
//! checked once, here, into typed values (durations as [`Duration`],
//! sizes as [`ByteSize`], windows as [`Window`]). A refusal names the
//! file, the line and the accepted values.
//!
//! The host acts on a few of these keys (the probation, the restart, the
//! busy leases' `max_defer`): it reads them as [`HostSettings`], parsed by
//! the same functions, never from the raw table.

use std::{num::NonZeroU32, time::Duration};

use banalytics_messages::upgrade::{RestartMode, RestartRequested};
use banalytics_sdk::config::{ConfigError, ConfigSection};
use bytesize::ByteSize;
use serde::{de::Error as _, Deserialize, Deserializer};

use crate::{
    archive,
    downloader::ChecksumPolicy,
    fetch,
    schedule::{ApplyMode, Window, WindowConfig},
};

/// The most downloads allowed at once: more only splits the same link.
pub const MAX_PARALLEL_DOWNLOADS: usize = 16;

/// The longest `status_flush_timeout_ms`: a restart that waits longer for
/// the statuses to leave would keep a staged set from applying for
/// nothing (they are durable and go after the restart).
pub(crate) const MAX_STATUS_FLUSH: Duration = Duration::from_secs(60);

/// The longest `health_grace_s`: a day.
pub(crate) const MAX_HEALTH_GRACE: Duration = Duration::from_secs(86_400);

/// How long a busy lease may defer a restart unless `max_defer` says
/// otherwise: long enough for an alarm clip or a recording segment to
/// finish, short enough that a stuck lease does not keep a box on an old
/// set for a day.
pub(crate) const DEFAULT_MAX_DEFER: Duration = Duration::from_secs(30 * 60);

/// The free space kept for the user's data unless `min_free_space` says
/// otherwise: 512 MiB is a few minutes of camera recordings at typical bit
/// rates, room for the box's logs and databases meanwhile, and small next
/// to the multi-gigabyte cards and disks boxes run on.
pub(crate) const DEFAULT_MIN_FREE_SPACE: ByteSize = ByteSize::mib(512);

/// When the upgrade center synchronises without being asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateType {
    /// Only on `EVT_SYNC_SOFT` or a local `upgrade` (and on a first run).
    #[default]
    Manual,
    /// Also every time the component starts.
    OnBoot,
}

/// The component's keys in `box.toml` (`docs/contracts.md`), typed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// `manual` or `on-boot`.
    #[serde(default)]
    pub software_update_type: UpdateType,
    /// The Maven repository root.
    pub repository_url: String,
    /// `require` (default) or `warn`: an artifact with no SHA-256 anywhere.
    #[serde(default)]
    pub checksum_policy: ChecksumPolicy,
    /// Modules downloaded at once (1 to [`MAX_PARALLEL_DOWNLOADS`],
    /// default 4).
    #[serde(default = "default_parallel")]
    pub max_parallel_downloads: usize,
    /// How long to wait for a connection (`connect_timeout_s`, default 10).
    #[serde(
        rename = "connect_timeout_s",
        default = "default_connect_timeout",
        deserialize_with = "seconds"
    )]
    pub connect_timeout: Duration,
    /// How long without a body byte before a download counts as stalled
    /// (`read_timeout_ms`, default 30000).
    #[serde(
        rename = "read_timeout_ms",
        default = "default_read_timeout",
        deserialize_with = "milliseconds"
    )]
    pub read_timeout: Duration,
    /// Attempts per artifact for transient failures (default 5).
    #[serde(default = "default_attempts")]
    pub download_attempts: u32,
    /// First retry delay, doubled per attempt with jitter
    /// (`retry_backoff_ms`, default 1000).
    #[serde(
        rename = "retry_backoff_ms",
        default = "default_backoff",
        deserialize_with = "milliseconds"
    )]
    pub retry_backoff: Duration,
    /// Largest number of entries in one package.
    #[serde(default = "default_entries")]
    pub max_archive_entries: u64,
    /// Largest extracted size of one package, in bytes.
    #[serde(default = "default_archive_bytes")]
    pub max_archive_bytes: u64,
    /// Largest compression ratio of a package entry.
    #[serde(default = "default_ratio")]
    pub max_archive_ratio: u64,
    /// How the box restarts to apply a staged set: `exit` (default on
    /// Linux), `exec`, or `command` (default on Windows).
    #[serde(default = "RestartMode::platform_default")]
    pub restart_mode: RestartMode,
    /// The program `restart_mode = "command"` runs.
    #[serde(default = "RestartMode::default_command")]
    pub restart_command: Option<String>,
    /// At most this long between a complete staged set and the restart,
    /// waiting for Portal Integration to send the queued statuses
    /// (`status_flush_timeout_ms`, default 10000, at most
    /// [`MAX_STATUS_FLUSH`]).
    #[serde(
        rename = "status_flush_timeout_ms",
        default = "default_flush_timeout",
        deserialize_with = "status_flush"
    )]
    pub status_flush_timeout: Duration,
    /// How long every component must stay in RUN after a new set starts
    /// before it is committed (`health_grace_s`, default 30, at most
    /// [`MAX_HEALTH_GRACE`]).
    #[serde(
        rename = "health_grace_s",
        default = "default_health_grace",
        deserialize_with = "health_grace"
    )]
    pub health_grace: Duration,
    /// Starts a new set gets to commit before the previous set is put back
    /// (default 3, at least 1).
    #[serde(default = "default_boot_attempts", deserialize_with = "boot_attempts")]
    pub max_boot_attempts: u32,
    /// The repository's TUF root, pinned at provisioning (a path relative
    /// to the home, e.g. `config/repository-root.json`): every artifact
    /// must then be a target of metadata signed from it ([`crate::tuf`]).
    #[serde(default)]
    pub trust_root: Option<String>,
    /// Where the TUF metadata is (default `{repository_url}/.tuf/`).
    #[serde(default)]
    pub trust_metadata_url: Option<String>,
    /// Accept an `http://` repository on a host other than loopback (a
    /// warning at every start).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// PEM certificates to trust for the repository besides the webpki
    /// and system roots (relative to the home), as the portal's `ca_file`.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// When a staged set is applied: `immediately` (default), `window` or
    /// `approval`.
    #[serde(default)]
    pub apply: ApplyMode,
    /// The maintenance window of `apply = "window"`.
    #[serde(default, deserialize_with = "window")]
    pub maintenance_window: Option<Window>,
    /// Whether a portal `EVT_SYNC_SOFT` for the staged set approves it
    /// (default false).
    #[serde(default)]
    pub approval_from_portal: bool,
    /// Longest a busy lease defers a restart (default
    /// [`DEFAULT_MAX_DEFER`]); the host reads it ([`HostSettings`]).
    #[serde(default = "default_max_defer", deserialize_with = "max_defer")]
    pub max_defer: Duration,
    /// Cap of all downloads together in bytes per second, written as
    /// `"2 MiB/s"` (default: none).
    #[serde(default, deserialize_with = "rate")]
    pub max_download_rate: Option<NonZeroU32>,
    /// When downloads may run (default: always); a download still running
    /// when it closes pauses and resumes in the next one.
    #[serde(default, deserialize_with = "window")]
    pub download_window: Option<Window>,
    /// Free space kept for the user's data (recordings) on the home's file
    /// system (default [`DEFAULT_MIN_FREE_SPACE`]): a set that would not
    /// leave it is refused before any download, and a download that would
    /// go below it stops and discards its partial file.
    #[serde(default = "default_min_free_space", deserialize_with = "size")]
    pub min_free_space: ByteSize,
}

impl UpgradeConfig {
    /// Parses and checks the upgrade center's table: each key by its type
    /// and range, then the rules between keys, each refusal at its key's
    /// line.
    pub fn parse(section: &ConfigSection) -> Result<UpgradeConfig, ConfigError> {
        let config: UpgradeConfig = section.parse()?;
        if !(1..=MAX_PARALLEL_DOWNLOADS).contains(&config.max_parallel_downloads) {
            return Err(section.error_at(
                "max_parallel_downloads",
                format!(
                    "max_parallel_downloads = {} is not accepted; accepted values: 1 to {MAX_PARALLEL_DOWNLOADS}",
                    config.max_parallel_downloads
                ),
            ));
        }
        // Every URL the box fetches from starts with one of these two.
        let transport_keys = [
            ("repository_url", Some(&config.repository_url)),
            ("trust_metadata_url", config.trust_metadata_url.as_ref()),
        ];
        for (key, url) in transport_keys {
            if let Some(url) = url {
                fetch::check_transport(key, url, config.allow_insecure_http)
                    .map_err(|e| section.error_at(key, e.to_string()))?;
            }
        }
        if config.restart_mode == RestartMode::Command && config.restart_command.is_none() {
            return Err(section.error_at(
                "restart_mode",
                "restart_mode = \"command\" needs restart_command, the program to run",
            ));
        }
        if config.apply == ApplyMode::Window && config.maintenance_window.is_none() {
            return Err(section.error_at(
                "apply",
                "apply = \"window\" needs maintenance_window, e.g. { schedule = \"0 2 * * *\", duration = \"2h\", timezone = \"Europe/Berlin\" }",
            ));
        }
        Ok(config)
    }

    /// The settings the host acts on.
    pub fn host(&self) -> HostSettings {
        HostSettings {
            health_grace: self.health_grace,
            max_boot_attempts: self.max_boot_attempts,
            restart_mode: self.restart_mode,
            restart_command: self.restart_command.clone(),
            max_defer: self.max_defer,
        }
    }
}

/// The keys of the upgrade center's table that the host acts on, parsed
/// by the same functions as [`UpgradeConfig`]. Other keys are not looked
/// at: the launcher, which may be older than the set's core, must not
/// refuse a key only a newer upgrade center knows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HostSettings {
    /// How long every component must stay in RUN before a new set commits.
    #[serde(rename = "health_grace_s", deserialize_with = "health_grace")]
    pub health_grace: Duration,
    /// Starts a new set gets before the previous set is put back.
    #[serde(deserialize_with = "boot_attempts")]
    pub max_boot_attempts: u32,
    /// How to restart to apply a set or after a failed start on probation.
    pub restart_mode: RestartMode,
    /// The program of [`RestartMode::Command`].
    pub restart_command: Option<String>,
    /// Longest a busy lease defers a restart.
    #[serde(deserialize_with = "max_defer")]
    pub max_defer: Duration,
}

impl Default for HostSettings {
    /// The settings of a box without an upgrade center.
    fn default() -> Self {
        HostSettings {
            health_grace: default_health_grace(),
            max_boot_attempts: default_boot_attempts(),
            restart_mode: RestartMode::platform_default(),
            restart_command: RestartMode::default_command(),
            max_defer: DEFAULT_MAX_DEFER,
        }
    }
}

impl HostSettings {
    /// The host's keys of the upgrade center's table `section`.
    pub fn parse(section: &ConfigSection) -> Result<HostSettings, ConfigError> {
        section.parse()
    }

    /// A restart request with these settings' mode.
    pub fn restart_request(&self, reason: String) -> RestartRequested {
        RestartRequested {
            mode: self.restart_mode,
            reason,
        }
    }
}

fn default_parallel() -> usize {
    4
}
fn default_connect_timeout() -> Duration {
    fetch::DEFAULT_CONNECT_TIMEOUT
}
fn default_read_timeout() -> Duration {
    fetch::DEFAULT_READ_TIMEOUT
}
fn default_attempts() -> u32 {
    fetch::DEFAULT_MAX_ATTEMPTS
}
fn default_backoff() -> Duration {
    fetch::DEFAULT_BASE_BACKOFF
}
fn default_entries() -> u64 {
    archive::DEFAULT_MAX_ENTRIES
}
fn default_archive_bytes() -> u64 {
    archive::DEFAULT_MAX_TOTAL_BYTES
}
fn default_ratio() -> u64 {
    archive::DEFAULT_MAX_RATIO
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_health_grace() -> Duration {
    Duration::from_secs_f64(banalytics_home::swap::DEFAULT_HEALTH_GRACE_S)
}
fn default_boot_attempts() -> u32 {
    banalytics_home::swap::DEFAULT_MAX_BOOT_ATTEMPTS
}
fn default_max_defer() -> Duration {
    DEFAULT_MAX_DEFER
}
fn default_min_free_space() -> ByteSize {
    DEFAULT_MIN_FREE_SPACE
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

fn milliseconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn status_flush<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let ms = u64::deserialize(d)?;
    let most = MAX_STATUS_FLUSH.as_millis();
    if u128::from(ms) > most {
        return Err(D::Error::custom(format!(
            "status_flush_timeout_ms = {ms} is not accepted; accepted values: 0 to {most}"
        )));
    }
    Ok(Duration::from_millis(ms))
}

fn health_grace<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = f64::deserialize(d)?;
    let most = MAX_HEALTH_GRACE.as_secs();
    if !(0.0..=most as f64).contains(&s) {
        return Err(D::Error::custom(format!(
            "health_grace_s = {s} is not accepted; accepted values: 0 to {most} (seconds)"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

fn boot_attempts<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(D::Error::custom(
            "max_boot_attempts = 0 is not accepted; accepted values: 1 or more",
        )),
        n => Ok(n),
    }
}

fn max_defer<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<jiff::SignedDuration>()
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(|| {
            D::Error::custom(format!(
                "max_defer = {text:?} is not accepted; accepted: a duration such as \"30m\" or \"2h\""
            ))
        })
}

fn window<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Window>, D::Error> {
    let config = WindowConfig::deserialize(d)?;
    Window::parse(&config).map(Some).map_err(D::Error::custom)
}

/// The byte units a size or a rate is written in. `bytesize` reads more
/// (any case, `K`, `T`, a bare number); these are the texts accepted since
/// the keys exist, so that a value means the same to every version.
const UNITS: [&str; 8] = ["B", "KB", "kB", "KiB", "MB", "MiB", "GB", "GiB"];

/// A number and one of [`UNITS`], in bytes.
fn bytes_of(text: &str) -> Option<ByteSize> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    if split == 0 || !UNITS.contains(&text[split..].trim()) {
        return None;
    }
    text.parse().ok()
}

/// A size or a rate written in a way the box does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a {what}; accepted: {accepted}")]
pub struct NotAccepted {
    /// The text as written.
    pub text: String,
    /// `size` or `rate`.
    pub what: &'static str,
    /// What is accepted, in words.
    pub accepted: &'static str,
}

/// Parses a size such as `"512 MiB"`, `"1.5 GB"` or `"0 B"`.
pub(crate) fn parse_size(text: &str) -> Result<ByteSize, NotAccepted> {
    bytes_of(text).ok_or_else(|| NotAccepted {
        text: text.to_owned(),
        what: "size",
        accepted: "a number and B, KB, KiB, MB, MiB, GB or GiB, such as \"512 MiB\"",
    })
}

/// Parses a rate such as `"2 MiB/s"`, `"500 KiB/s"`, `"1.5MB/s"` or
/// `"800000 B/s"` into bytes per second (1 B/s to 4 GiB/s).
pub fn parse_rate(text: &str) -> Result<NonZeroU32, NotAccepted> {
    text.trim()
        .strip_suffix("/s")
        .and_then(bytes_of)
        .and_then(|b| u32::try_from(b.as_u64()).ok())
        .and_then(NonZeroU32::new)
        .ok_or_else(|| NotAccepted {
            text: text.to_owned(),
            what: "rate",
            accepted:
                "a number and B/s, KB/s, KiB/s, MB/s, MiB/s, GB/s or GiB/s, from 1 B/s to 4 GiB/s",
        })
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
    parse_size(&String::deserialize(d)?)
        .map_err(|e| D::Error::custom(format!("min_free_space = {e}")))
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NonZeroU32>, D::Error> {
    parse_rate(&String::deserialize(d)?)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("max_download_rate = {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(keys: &str) -> ConfigSection {
        ConfigSection::from_snippet(
            "upgrade-center",
            &format!("repository_url = \"http://127.0.0.1:1/repo\"\n{keys}"),
        )
    }

    #[test]
    fn sizes_parse_in_the_units_of_rates() {
        assert_eq!(parse_size("512 MiB"), Ok(ByteSize::mib(512)));
        assert_eq!(parse_size("1.5GB"), Ok(ByteSize::b(1_500_000_000)));
        assert_eq!(parse_size("0 B"), Ok(ByteSize::b(0)));
        assert!(parse_size("512").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2 MiB/s").is_err());
    }

    #[test]
    fn rates_parse_in_bytes_per_second() {
        assert_eq!(parse_rate("2 MiB/s").unwrap().get(), 2 * 1024 * 1024);
        assert_eq!(parse_rate("500KiB/s").unwrap().get(), 500 * 1024);
        assert_eq!(parse_rate("1.5 MB/s").unwrap().get(), 1_500_000);
        assert_eq!(parse_rate("800000 B/s").unwrap().get(), 800_000);
        for bad in ["2 MiB", "fast/s", "0 B/s", "5 GiB/s", "2 mib/s", "-1 B/s"] {
            assert!(parse_rate(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations_and_sizes_are_typed_at_parse() {
        let c = UpgradeConfig::parse(&section(
            "max_defer = \"90s\"\nhealth_grace_s = 1.5\nread_timeout_ms = 250\nmin_free_space = \"1 GiB\"\nmax_download_rate = \"2 MiB/s\"",
        ))
        .unwrap();
        assert_eq!(c.max_defer, Duration::from_secs(90));
        assert_eq!(c.health_grace, Duration::from_millis(1500));
        assert_eq!(c.read_timeout, Duration::from_millis(250));
        assert_eq!(c.min_free_space, ByteSize::gib(1));
        assert_eq!(c.max_download_rate.unwrap().get(), 2 * 1024 * 1024);
        let d = UpgradeConfig::parse(&section("")).unwrap();
        assert_eq!(d.max_defer, DEFAULT_MAX_DEFER);
        assert_eq!(d.min_free_space, DEFAULT_MIN_FREE_SPACE);
        assert_eq!(d.host(), HostSettings::default());
    }

    #[test]
    fn a_refused_value_names_the_file_the_line_and_the_accepted_values() {
        for (keys, line, accepted) in [
            (
                "max_defer = \"soon\"",
                3,
                "accepted: a duration such as \"30m\"",
            ),
            ("health_grace_s = -1.0", 3, "accepted values: 0 to 86400"),
            ("max_boot_attempts = 0", 3, "accepted values: 1 or more"),
            (
                "status_flush_timeout_ms = 60001",
                3,
                "accepted values: 0 to 60000",
            ),
            ("max_parallel_downloads = 17", 3, "accepted values: 1 to 16"),
            (
                "min_free_space = \"lots\"",
                3,
                "accepted: a number and B, KB",
            ),
            (
                "\n\nmax_download_rate = \"fast\"",
                5,
                "from 1 B/s to 4 GiB/s",
            ),
        ] {
            let e = UpgradeConfig::parse(&section(keys)).unwrap_err();
            assert_eq!(
                (e.file.to_str(), e.line),
                (Some("<snippet>"), line),
                "{keys}: {e}"
            );
            assert!(e.message.contains(accepted), "{keys}: {e}");
        }
    }

    #[test]
    fn the_host_reads_its_keys_with_the_upgrade_centers_parser_and_ignores_the_others() {
        let keys = "max_defer = \"10m\"\nhealth_grace_s = 2.0\nmax_boot_attempts = 5\nrestart_mode = \"exec\"\nsome_key_of_a_newer_version = 1";
        let host = HostSettings::parse(&section(keys)).unwrap();
        assert_eq!(host.max_defer, Duration::from_secs(600));
        assert_eq!(host.health_grace, Duration::from_secs(2));
        assert_eq!(host.max_boot_attempts, 5);
        assert_eq!(host.restart_mode, RestartMode::Exec);
        // The upgrade center itself refuses a key it does not know.
        assert!(UpgradeConfig::parse(&section(keys)).is_err());
        let both = "max_defer = \"10m\"\nhealth_grace_s = 2.0\nmax_boot_attempts = 5";
        assert_eq!(
            HostSettings::parse(&section(both)).unwrap(),
            UpgradeConfig::parse(&section(both)).unwrap().host()
        );
        // A value the upgrade center refuses, the host refuses too.
        for bad in [
            "max_defer = \"-5m\"",
            "health_grace_s = 1e9",
            "max_boot_attempts = 0",
        ] {
            assert!(HostSettings::parse(&section(bad)).is_err(), "{bad}");
        }
    }
}
