//! `restart_on_failure`: what happens to an actor after it fails.

use std::{fmt, str::FromStr, time::Duration};

/// The restart policy of a component, applied to each of its actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Keep the failed actor down, in `ERROR`, until a manual restart.
    Stop,
    /// Restart at once, without a timer.
    Immediate,
    /// Restart after 10 seconds (the default, as in the original box).
    #[default]
    After10s,
    /// Restart after 30 seconds.
    After30s,
    /// Restart after one minute.
    After1min,
}

impl RestartPolicy {
    /// The configuration spellings, in the order the documentation lists them.
    pub const ACCEPTED: [&'static str; 5] = ["stop", "immediate", "10s", "30s", "1min"];

    /// The delay before an automatic restart; `None` for `stop`.
    pub fn delay(self) -> Option<Duration> {
        match self {
            RestartPolicy::Stop => None,
            RestartPolicy::Immediate => Some(Duration::ZERO),
            RestartPolicy::After10s => Some(Duration::from_secs(10)),
            RestartPolicy::After30s => Some(Duration::from_secs(30)),
            RestartPolicy::After1min => Some(Duration::from_secs(60)),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Stop => "stop",
            RestartPolicy::Immediate => "immediate",
            RestartPolicy::After10s => "10s",
            RestartPolicy::After30s => "30s",
            RestartPolicy::After1min => "1min",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A spelling that is not one of [`RestartPolicy::ACCEPTED`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("restart_on_failure = {found:?} is not accepted; accepted values: stop, immediate, 10s, 30s, 1min")]
pub struct UnknownPolicy {
    /// The refused spelling.
    pub found: String,
}

impl FromStr for RestartPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "stop" => RestartPolicy::Stop,
            "immediate" => RestartPolicy::Immediate,
            "10s" => RestartPolicy::After10s,
            "30s" => RestartPolicy::After30s,
            "1min" => RestartPolicy::After1min,
            other => {
                return Err(UnknownPolicy {
                    found: other.to_owned(),
                })
            }
        })
    }
}

impl<'de> serde::Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_spelling_round_trips() {
        for s in RestartPolicy::ACCEPTED {
            assert_eq!(s.parse::<RestartPolicy>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn refusal_names_value_and_accepted_values() {
        let err = "5min".parse::<RestartPolicy>().unwrap_err().to_string();
        assert!(err.contains("\"5min\""), "{err}");
        assert!(err.contains("stop, immediate, 10s, 30s, 1min"), "{err}");
    }
}
