//! The component's keys in `config/box.toml`, checked while they are read so
//! that a refusal points at the offending line, and the timings derived from
//! them.
//!
//! ```toml
//! [components.portal]
//! kind = "portal-integration"
//! restart_on_failure = "30s"
//! portal_url = "wss://router.banalytics.live"   # ws:// or wss://; http(s):// is mapped to ws(s)://
//! ping_timeout_s = 30                            # at least 10
//! ca_file = "config/portal-ca.pem"               # optional, relative to the home
//! max_backoff_s = 60                             # 2 ..= 3600
//! outbox_capacity = 1024                         # 1 ..= 65536
//! environment_hash = ""                          # passed through to the portal
//! ```

use std::{path::PathBuf, time::Duration};

use backon::ExponentialBuilder;
use serde::{de::Error as _, Deserialize, Deserializer};
use url::Url;

/// The original's `pingTimeoutSeconds` default.
pub const DEFAULT_PING_TIMEOUT_S: u64 = 30;

/// The smallest `ping_timeout_s`: pings go out every `ping_timeout_s - 5` s,
/// and below 10 s that would be a ping at least every 5 s from every box of
/// a fleet, for a gain no operator needs.
pub const MIN_PING_TIMEOUT_S: u64 = 10;

/// How much earlier than the dead-link deadline the ping goes out (contracts
/// section 3): the pong has 5 s to come back.
pub const PING_LEAD: Duration = Duration::from_secs(5);

/// The default longest wait between two connection attempts.
pub const DEFAULT_MAX_BACKOFF_S: u64 = 60;

/// `max_backoff_s` may not be smaller: the first wait is up to twice
/// [`MIN_RECONNECT_DELAY`].
pub const MIN_MAX_BACKOFF_S: u64 = 2;

/// `max_backoff_s` may not be larger: an hour without the portal is already
/// longer than an operator waits for a box to come back.
pub const MAX_MAX_BACKOFF_S: u64 = 3600;

/// The first reconnect waits between this and twice this; every failed
/// attempt doubles it, up to `max_backoff_s`.
pub const MIN_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Frames to the portal that may wait while the link is down. A
/// synchronisation sends about two statuses per module, so this holds
/// hundreds of synchronisations; at a few hundred bytes per status it stays
/// well under a megabyte. When it is full, publishers wait (see `outbox`).
pub const DEFAULT_OUTBOX_CAPACITY: usize = 1024;

/// The largest `outbox_capacity` accepted: bounds memory at a few tens of
/// megabytes even for large frames.
pub const MAX_OUTBOX_CAPACITY: usize = 65_536;

/// The component's own keys (all but `kind` and `restart_on_failure`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Where the portal is; the link goes to `{portal_url}/portal-integration`.
    pub portal_url: PortalUrl,
    /// Seconds without a pong or any frame after which the link is dead.
    #[serde(default = "default_ping_timeout", deserialize_with = "ping_timeout")]
    pub ping_timeout_s: u64,
    /// A PEM file of CA certificates, relative to the home, trusted in
    /// addition to the built-in (webpki) roots: for a portal behind a
    /// private CA. There is no way to turn certificate checks off.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The longest wait between two connection attempts, in seconds.
    #[serde(default = "default_max_backoff", deserialize_with = "max_backoff")]
    pub max_backoff_s: u64,
    /// Frames to the portal that may wait while the link is down.
    #[serde(
        default = "default_outbox_capacity",
        deserialize_with = "outbox_capacity"
    )]
    pub outbox_capacity: usize,
    /// The `environmentHash` query value. The original box computes it from
    /// its environment; this project passes the configured value through
    /// unchanged (empty by default).
    #[serde(default)]
    pub environment_hash: String,
    /// Accept a `ws://` portal on a host other than loopback (a warning at
    /// every start).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl PortalConfig {
    /// `wss://`, or `ws://` to a loopback host, or any `ws://` with
    /// `allow_insecure_http = true`; otherwise why not.
    pub fn check_transport(&self) -> Result<(), UrlError> {
        let url = self.portal_url.base();
        if self.portal_url.is_tls() || self.allow_insecure_http {
            return Ok(());
        }
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        if loopback {
            Ok(())
        } else {
            Err(UrlError::Insecure { url: url.clone() })
        }
    }
}

fn default_ping_timeout() -> u64 {
    DEFAULT_PING_TIMEOUT_S
}

fn default_max_backoff() -> u64 {
    DEFAULT_MAX_BACKOFF_S
}

fn default_outbox_capacity() -> usize {
    DEFAULT_OUTBOX_CAPACITY
}

fn ping_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v < MIN_PING_TIMEOUT_S {
        return Err(D::Error::custom(format!(
            "ping_timeout_s must be at least {MIN_PING_TIMEOUT_S}, found {v}"
        )));
    }
    Ok(v)
}

fn max_backoff<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if !(MIN_MAX_BACKOFF_S..=MAX_MAX_BACKOFF_S).contains(&v) {
        return Err(D::Error::custom(format!(
            "max_backoff_s must be between {MIN_MAX_BACKOFF_S} and {MAX_MAX_BACKOFF_S}, found {v}"
        )));
    }
    Ok(v)
}

fn outbox_capacity<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if !(1..=MAX_OUTBOX_CAPACITY).contains(&v) {
        return Err(D::Error::custom(format!(
            "outbox_capacity must be between 1 and {MAX_OUTBOX_CAPACITY}, found {v}"
        )));
    }
    Ok(v)
}

/// The portal's base URL: `ws://` or `wss://`, with `http://` and
/// `https://` accepted and mapped to them (the portal is often written down
/// as its web address). No query, fragment or credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalUrl(Url);

impl PortalUrl {
    /// The schemes accepted, in the order the refusal names them.
    pub const ACCEPTED_SCHEMES: [&'static str; 4] = ["wss", "ws", "https", "http"];

    /// Parses and checks a base URL.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let refused = |why| UrlError::Refused {
            url: s.to_owned(),
            why,
        };
        let mut url = Url::parse(s).map_err(|e| refused(UrlRefusal::NotAUrl(e)))?;
        let mapped = match url.scheme() {
            "ws" | "wss" => None,
            "http" => Some("ws"),
            "https" => Some("wss"),
            other => return Err(refused(UrlRefusal::Scheme(other.to_owned()))),
        };
        if let Some(scheme) = mapped {
            url.set_scheme(scheme)
                .map_err(|()| refused(UrlRefusal::CannotUse(scheme)))?;
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(refused(UrlRefusal::NoHost));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(refused(UrlRefusal::Query));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused(UrlRefusal::Credentials));
        }
        Ok(PortalUrl(url))
    }

    /// The base URL as configured (after the http → ws mapping).
    pub fn base(&self) -> &Url {
        &self.0
    }

    /// Whether the link is TLS (`wss://`).
    pub fn is_tls(&self) -> bool {
        self.0.scheme() == "wss"
    }

    /// `{portal_url}/portal-integration?environmentUuid=…&environmentHash=…`,
    /// with both values percent-encoded.
    pub fn endpoint(&self, environment_uuid: &str, environment_hash: &str) -> Url {
        let mut url = self.0.clone();
        url.path_segments_mut()
            .expect("a ws(s) URL with a host has path segments")
            .pop_if_empty()
            .push("portal-integration");
        url.query_pairs_mut()
            .append_pair("environmentUuid", environment_uuid)
            .append_pair("environmentHash", environment_hash);
        url
    }
}

/// A `portal_url` that is refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Not a portal base URL.
    #[error("portal_url {url:?}{why}")]
    Refused {
        /// The text as written.
        url: String,
        /// What is wrong with it.
        why: UrlRefusal,
    },
    /// An unencrypted link to a host that is not loopback, without
    /// `allow_insecure_http`.
    #[error("portal_url = \"{url}\" is not accepted: an unencrypted link to a host that is not loopback; use wss:// (https://), or set allow_insecure_http = true to accept the risk")]
    Insecure {
        /// The base URL (after the http → ws mapping).
        url: Url,
    },
}

/// Why a `portal_url` is not a portal base URL (the rest of
/// [`UrlError::Refused`]'s sentence).
#[derive(Debug, thiserror::Error)]
pub enum UrlRefusal {
    /// The URL parser refused it.
    #[error(" is not a URL: {0}")]
    NotAUrl(url::ParseError),
    /// A scheme other than [`PortalUrl::ACCEPTED_SCHEMES`].
    #[error(" has scheme {0:?}; accepted: {schemes}", schemes = PortalUrl::ACCEPTED_SCHEMES.join(", "))]
    Scheme(String),
    /// The URL crate would not change the scheme.
    #[error(": cannot use scheme {0}")]
    CannotUse(&'static str),
    /// No host.
    #[error(" has no host")]
    NoHost,
    /// A query or a fragment.
    #[error(" must not have a query or fragment: the link sets the query")]
    Query,
    /// A user name or a password.
    #[error(" must not carry credentials")]
    Credentials,
}

impl<'de> Deserialize<'de> for PortalUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PortalUrl::parse(&s).map_err(D::Error::custom)
    }
}

/// The link's clock: when to ping, when a link is dead, how long to wait
/// before reconnecting. Built from the configuration with
/// [`Timing::from_config`]; tests and embedders may build one directly
/// (see [`crate::create_with_timing`]) to go below the configurable minimums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A WebSocket ping goes out this often.
    pub ping_interval: Duration,
    /// No pong or frame for this long: the link is dead. Also bounds a
    /// connection attempt and a single write.
    pub dead_after: Duration,
    /// The first reconnect delay before jitter.
    pub min_backoff: Duration,
    /// The longest reconnect delay, jitter included.
    pub max_backoff: Duration,
}

impl Timing {
    /// Contracts section 3: ping every `ping_timeout_s - 5` s, dead after
    /// `ping_timeout_s`.
    pub fn from_config(config: &PortalConfig) -> Self {
        let dead_after = Duration::from_secs(config.ping_timeout_s);
        Timing {
            ping_interval: dead_after.saturating_sub(PING_LEAD),
            dead_after,
            min_backoff: MIN_RECONNECT_DELAY,
            max_backoff: Duration::from_secs(config.max_backoff_s),
        }
    }

    /// The reconnect schedule: exponential (factor 2) from `min_backoff`,
    /// each delay `d` stretched by a random jitter to `[d, 2d)`, the base
    /// capped at `max_backoff / 2` so that no delay reaches `max_backoff`.
    /// The jitter makes a fleet that lost the portal at once come back
    /// spread out; each attempt's spread is as wide as its delay.
    pub fn backoff(&self) -> ExponentialBuilder {
        let cap = self.max_backoff / 2;
        ExponentialBuilder::default()
            .with_min_delay(self.min_backoff.min(cap))
            .with_max_delay(cap)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;
    use banalytics_sdk::ConfigSection;

    fn parse(snippet: &str) -> Result<PortalConfig, banalytics_sdk::ConfigError> {
        ConfigSection::from_snippet("portal", snippet).parse()
    }

    #[test]
    fn defaults_follow_the_original() {
        let c = parse("kind = \"portal-integration\"\nportal_url = \"wss://router.example\"\n")
            .unwrap();
        assert_eq!(c.ping_timeout_s, 30);
        assert_eq!(c.max_backoff_s, 60);
        assert_eq!(c.outbox_capacity, DEFAULT_OUTBOX_CAPACITY);
        assert_eq!(c.environment_hash, "");
        assert!(c.ca_file.is_none());
        let t = Timing::from_config(&c);
        assert_eq!(t.ping_interval, Duration::from_secs(25));
        assert_eq!(t.dead_after, Duration::from_secs(30));
    }

    #[test]
    fn a_short_ping_timeout_is_refused_at_its_line() {
        let err = parse("portal_url = \"wss://p\"\nping_timeout_s = 5\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.contains("at least 10, found 5"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_refused() {
        let err = parse("portal_url = \"wss://p\"\ninsecure = true\n").unwrap_err();
        assert!(err.message.contains("insecure"), "{err}");
        let err = parse("portal_url = \"wss://p\"\nmax_backoff_s = 1\n").unwrap_err();
        assert!(err.message.contains("between 2 and 3600, found 1"), "{err}");
        let err = parse("portal_url = \"wss://p\"\noutbox_capacity = 0\n").unwrap_err();
        assert!(err.message.contains("outbox_capacity"), "{err}");
    }

    /// A fleet that lost the portal at once: each box runs its own schedule.
    #[test]
    fn a_thousand_boxes_reconnect_spread_out_and_within_max_backoff() {
        const BOXES: usize = 1000;
        const ATTEMPTS: usize = 8;
        let config = parse("portal_url = \"wss://p\"\n").unwrap();
        let timing = Timing::from_config(&config);
        let schedules: Vec<Vec<Duration>> = (0..BOXES)
            .map(|_| timing.backoff().build().take(ATTEMPTS).collect())
            .collect();

        // Bounded: attempt n waits within [b, 2b) with b = min(2^n s, 30 s),
        // so never as long as max_backoff_s (60 s).
        for schedule in &schedules {
            assert_eq!(schedule.len(), ATTEMPTS, "the schedule never ends");
            for (n, delay) in schedule.iter().enumerate() {
                let base = (MIN_RECONNECT_DELAY * 2u32.pow(n as u32)).min(timing.max_backoff / 2);
                assert!(
                    *delay >= base && *delay < base * 2,
                    "attempt {n}: {delay:?} outside [{base:?}, {:?})",
                    base * 2
                );
                assert!(*delay < timing.max_backoff);
            }
        }

        // Spread: the first attempts fill their one-second window evenly
        // (no tenth of it gets more than a fifth of the fleet) ...
        let mut tenths = [0usize; 10];
        for schedule in &schedules {
            let offset = schedule[0] - MIN_RECONNECT_DELAY;
            tenths[(offset.as_millis() / 100) as usize] += 1;
        }
        assert!(
            tenths.iter().all(|&n| n < BOXES / 5),
            "first attempts bunch up: {tenths:?}"
        );
        // ... and after a minute of a portal outage the attempts are spread
        // over tens of seconds, no second holding a tenth of the fleet.
        let mut by_second = std::collections::BTreeMap::<u64, usize>::new();
        for schedule in &schedules {
            let at: Duration = schedule[..6].iter().sum();
            *by_second.entry(at.as_secs()).or_default() += 1;
        }
        let first = *by_second.keys().next().unwrap();
        let last = *by_second.keys().last().unwrap();
        assert!(
            last - first >= 20,
            "6th attempts span only {first}..{last} s"
        );
        let busiest = by_second.values().max().unwrap();
        assert!(
            *busiest < BOXES / 10,
            "{busiest} boxes come back in the same second"
        );
    }

    #[test]
    fn a_ws_portal_that_is_not_loopback_is_refused_without_the_opt_in() {
        let plain = |url: &str, allow: bool| {
            parse(&format!(
                "portal_url = \"{url}\"\nallow_insecure_http = {allow}\n"
            ))
            .unwrap()
            .check_transport()
        };
        assert!(plain("ws://127.0.0.1:9000", false).is_ok());
        assert!(plain("http://localhost:9000", false).is_ok());
        assert!(plain("wss://router.example", false).is_ok());
        let e = plain("ws://router.example", false).unwrap_err().to_string();
        assert!(
            e.contains("not loopback") && e.contains("allow_insecure_http"),
            "{e}"
        );
        assert!(plain("http://192.0.2.1", false).is_err());
        assert!(plain("ws://router.example", true).is_ok());
    }

    #[test]
    fn urls_map_http_to_ws_and_refuse_other_schemes() {
        let u = PortalUrl::parse("https://router.example/base/").unwrap();
        assert!(u.is_tls());
        assert_eq!(
            u.endpoint("e-1", "h&x").as_str(),
            "wss://router.example/base/portal-integration?environmentUuid=e-1&environmentHash=h%26x"
        );
        let u = PortalUrl::parse("ws://127.0.0.1:9000").unwrap();
        assert_eq!(
            u.endpoint("", "").as_str(),
            "ws://127.0.0.1:9000/portal-integration?environmentUuid=&environmentHash="
        );
        let err = PortalUrl::parse("ftp://x").unwrap_err().to_string();
        assert!(err.contains("\"ftp\"") && err.contains("wss, ws"), "{err}");
        assert!(PortalUrl::parse("wss://x/?a=b").is_err());
        assert!(PortalUrl::parse("wss://u:p@x/").is_err());
        let err = parse("portal_url = \"gopher://x\"\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
    }
}
