//! Switches that make the repository misbehave on purpose, so end-to-end
//! tests can show the box resumes, retries, times out and verifies: added
//! latency, a bandwidth cap, a body cut after N bytes, `Range` ignored, and
//! artifacts redirected to another server.
//!
//! They are set by `serve` flags at start and replaced at run time through
//! `PUT /admin/faults`; a request reads them once, when it starts.

use serde::{Deserialize, Serialize};

/// The repository's fault switches. The default is a well-behaved server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Delay before answering each repository request, in milliseconds.
    pub latency_ms: u64,
    /// Cap on the body rate of each response, in bytes per second.
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Abort the connection after this many body bytes of a response.
    pub cut_after_bytes: Option<u64>,
    /// Cut only the next matching response, then disarm.
    pub cut_once: bool,
    /// Cut only responses whose path ends with this (e.g. `.jar`).
    pub cut_path_suffix: Option<String>,
    /// Answer every `GET` with `200` and the whole file, as a server without
    /// range support does.
    pub ignore_range: bool,
    /// Answer `GET` and `HEAD` of artifacts (not `.sha256` files, not TUF
    /// metadata) with `302 Found` to this base URL followed by the
    /// request's path, as a repository manager that hands downloads to a
    /// CDN or an object store does.
    pub redirect_to: Option<String>,
}

impl Faults {
    /// Where a request for `path` (`/repo/...`) is redirected, if anywhere.
    pub(crate) fn redirect(&self, path: &str) -> Option<String> {
        let base = self.redirect_to.as_deref()?;
        let artifact = !path.ends_with(".sha256") && !path.contains("/.tuf/");
        artifact.then(|| format!("{}{path}", base.trim_end_matches('/')))
    }

    /// Whether a response for `path` is cut, and after how many bytes;
    /// disarms a `cut_once` cut.
    pub(crate) fn take_cut(&mut self, path: &str) -> Option<u64> {
        let n = self.cut_after_bytes?;
        if let Some(suffix) = &self.cut_path_suffix {
            if !path.ends_with(suffix.as_str()) {
                return None;
            }
        }
        if self.cut_once {
            self.cut_after_bytes = None;
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_once_disarms_after_the_first_matching_path() {
        let mut f = Faults {
            cut_after_bytes: Some(10),
            cut_once: true,
            cut_path_suffix: Some(".jar".into()),
            ..Faults::default()
        };
        assert_eq!(f.take_cut("/repo/a/b/1/b-1.jar.sha256"), None);
        assert_eq!(f.take_cut("/repo/a/b/1/b-1.jar"), Some(10));
        assert_eq!(f.take_cut("/repo/a/b/1/b-1.jar"), None);
    }

    #[test]
    fn redirect_moves_artifacts_only() {
        let f = Faults {
            redirect_to: Some("http://localhost:9/".into()),
            ..Faults::default()
        };
        assert_eq!(
            f.redirect("/repo/a/b/1/b-1.jar").as_deref(),
            Some("http://localhost:9/repo/a/b/1/b-1.jar")
        );
        assert_eq!(f.redirect("/repo/a/b/1/b-1.jar.sha256"), None);
        assert_eq!(f.redirect("/repo/.tuf/timestamp.json"), None);
        assert_eq!(Faults::default().redirect("/repo/a/b/1/b-1.jar"), None);
    }
}
