//! The box's registration with the portal: the environment UUID in
//! `config/device-registration.properties` (contracts section 1).
//!
//! The one reader of that file, for Portal Integration (which reads it
//! again before every connection attempt, so a box registered while it
//! runs connects with its UUID from the next attempt on) and for the
//! upgrade center. The file is read with the full `java.util.Properties`
//! codec ([`crate::properties`]), as the original box writes it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::properties;

/// Where the registration lives, relative to the home.
pub const REGISTRATION_FILE: &str = "config/device-registration.properties";

/// The key of the environment UUID.
pub const ENVIRONMENT_UUID_KEY: &str = "environmentUuid";

/// The registration file of the home at `home`.
pub fn registration_file(home: &Path) -> PathBuf {
    home.join(REGISTRATION_FILE)
}

/// The environment UUID, or `None` when the box is not registered (the
/// file is missing, or the key is missing or blank). Other read errors are
/// returned; a file that is not a properties file is `InvalidData` naming
/// the file.
pub fn environment_uuid(home: &Path) -> io::Result<Option<String>> {
    let file = registration_file(home);
    let bytes = match fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let entries = properties::read(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", file.display()),
        )
    })?;
    // The last line wins, as in Java.
    Ok(entries
        .into_iter()
        .rev()
        .find(|(k, _)| k == ENVIRONMENT_UUID_KEY)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid_of(text: &str) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("config")).unwrap();
        fs::write(registration_file(dir.path()), text).unwrap();
        environment_uuid(dir.path()).unwrap()
    }

    #[test]
    fn reads_the_uuid_in_every_separator_style_and_skips_comments() {
        let text =
            "#Sat Mar 01 10:15:30 UTC 2026\n! other comment\nfoo=bar\nenvironmentUuid = 8c1f-2\n";
        assert_eq!(uuid_of(text).as_deref(), Some("8c1f-2"));
        assert_eq!(uuid_of("environmentUuid:abc").as_deref(), Some("abc"));
        assert_eq!(uuid_of("environmentUuid abc").as_deref(), Some("abc"));
        assert_eq!(uuid_of("#environmentUuid=abc"), None);
        assert_eq!(uuid_of("environmentUuidX=abc"), None);
        assert_eq!(
            uuid_of("environmentUuid=a\nenvironmentUuid=b\n").as_deref(),
            Some("b")
        );
    }

    #[test]
    fn reads_escapes_and_continuations_as_java_does() {
        assert_eq!(
            uuid_of("environment\\u0055uid=e-\\\n    7\n").as_deref(),
            Some("e-7")
        );
    }

    #[test]
    fn missing_file_or_empty_value_means_not_registered() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(environment_uuid(dir.path()).unwrap(), None);
        assert_eq!(uuid_of("environmentUuid=\n"), None);
        assert_eq!(uuid_of("environmentUuid=e-7\n").as_deref(), Some("e-7"));
    }
}
