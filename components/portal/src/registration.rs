//! The box's registration with the portal: the environment UUID in
//! `config/device-registration.properties` (contracts section 1).
//!
//! The file is read again before every connection attempt, so a box that
//! is registered while it runs connects with its UUID from the next attempt
//! on, without a restart. The reader is the small subset of
//! `java.util.Properties` this file uses: `key=value`, `key: value` or
//! `key value` lines, `#` and `!` comments, surrounding blanks trimmed; no
//! escapes or continuation lines (a UUID needs neither).

use std::{
    io,
    path::{Path, PathBuf},
};

/// Where the registration lives, relative to the home.
pub const REGISTRATION_FILE: &str = "config/device-registration.properties";

/// The key of the environment UUID.
pub const ENVIRONMENT_UUID_KEY: &str = "environmentUuid";

/// The registration file of the home at `home`.
pub fn registration_file(home: &Path) -> PathBuf {
    home.join(REGISTRATION_FILE)
}

/// The environment UUID, or `None` when the box is not registered (the file
/// is missing, or the key is missing or empty). Other read errors are
/// returned.
pub fn environment_uuid(home: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(registration_file(home)) {
        Ok(text) => Ok(property(&text, ENVIRONMENT_UUID_KEY).filter(|v| !v.is_empty())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The value of `key` in properties `text`; the last line wins, as in Java.
pub fn property(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let end = line
            .find(|c: char| c == '=' || c == ':' || c.is_whitespace())
            .unwrap_or(line.len());
        if &line[..end] != key {
            continue;
        }
        let rest = line[end..].trim_start();
        let rest = rest
            .strip_prefix('=')
            .or_else(|| rest.strip_prefix(':'))
            .unwrap_or(rest);
        found = Some(rest.trim().to_owned());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_uuid_in_every_separator_style_and_skips_comments() {
        let text =
            "#Sat Mar 01 10:15:30 UTC 2026\n! other comment\nfoo=bar\nenvironmentUuid = 8c1f-2\n";
        assert_eq!(property(text, "environmentUuid").as_deref(), Some("8c1f-2"));
        assert_eq!(
            property("environmentUuid:abc", "environmentUuid").as_deref(),
            Some("abc")
        );
        assert_eq!(
            property("environmentUuid abc", "environmentUuid").as_deref(),
            Some("abc")
        );
        assert_eq!(property("#environmentUuid=abc", "environmentUuid"), None);
        assert_eq!(property("environmentUuidX=abc", "environmentUuid"), None);
    }

    #[test]
    fn missing_file_or_empty_value_means_not_registered() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(environment_uuid(dir.path()).unwrap(), None);
        std::fs::create_dir(dir.path().join("config")).unwrap();
        std::fs::write(registration_file(dir.path()), "environmentUuid=\n").unwrap();
        assert_eq!(environment_uuid(dir.path()).unwrap(), None);
        std::fs::write(registration_file(dir.path()), "environmentUuid=e-7\n").unwrap();
        assert_eq!(
            environment_uuid(dir.path()).unwrap().as_deref(),
            Some("e-7")
        );
    }
}
