//! The box's registration with the portal: the environment UUID and the
//! environment's secret in `config/device-registration.properties`
//! (contracts section 1).
//!
//! The one reader of that file, for Portal Integration (which reads it
//! again before every connection attempt, so a box registered while it
//! runs connects with its UUID from the next attempt on) and for the
//! upgrade center; and its one writer, for a secret the portal rotated
//! ([`store_secret`]: write-rename-fsync, owner-only, every other entry
//! kept). The file is read with the full `java.util.Properties` codec
//! ([`crate::properties`]), as the original box writes it.
//!
//! The secret is an [`EnvironmentSecret`], whose `Debug` hides it and which
//! has no `Display`: it goes into an `Authorization` header and nowhere
//! else, never into a log.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::properties;

/// Where the registration lives, relative to the home.
pub const REGISTRATION_FILE: &str = "config/device-registration.properties";

/// The key of the environment UUID.
pub const ENVIRONMENT_UUID_KEY: &str = "environmentUuid";

/// The key of the environment's secret.
pub const ENVIRONMENT_SECRET_KEY: &str = "environmentSecret";

/// The environment's secret, as the portal issued it. Its `Debug` shows no
/// byte of it; [`EnvironmentSecret::expose`] is the one way to the value.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvironmentSecret(String);

impl EnvironmentSecret {
    /// A secret as the portal sent it; `None` when blank or when it holds
    /// characters no HTTP header can carry (controls, non-ASCII).
    pub fn new(secret: &str) -> Option<EnvironmentSecret> {
        let s = secret.trim();
        let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| EnvironmentSecret(s.to_owned()))
    }

    /// The secret itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its SHA-256: what the box tells the portal it stored.
    pub fn sha256(&self) -> crate::Sha256 {
        crate::Sha256::of(self.0.as_bytes())
    }
}

impl std::fmt::Debug for EnvironmentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvironmentSecret(..)")
    }
}

/// The registration file of the home at `home`.
pub fn registration_file(home: &Path) -> PathBuf {
    home.join(REGISTRATION_FILE)
}

/// The environment UUID, or `None` when the box is not registered (the
/// file is missing, or the key is missing or blank). Other read errors are
/// returned; a file that is not a properties file is `InvalidData` naming
/// the file.
pub fn environment_uuid(home: &Path) -> io::Result<Option<String>> {
    Ok(value(&entries(home)?, ENVIRONMENT_UUID_KEY))
}

/// The environment's secret, or `None` when the file has none (a box the
/// portal let in without one, or not registered). Errors as for
/// [`environment_uuid`].
pub fn environment_secret(home: &Path) -> io::Result<Option<EnvironmentSecret>> {
    Ok(value(&entries(home)?, ENVIRONMENT_SECRET_KEY).and_then(|s| EnvironmentSecret::new(&s)))
}

/// Every entry of the file, in order; none when it is missing.
fn entries(home: &Path) -> io::Result<Vec<(String, String)>> {
    let file = registration_file(home);
    let bytes = match fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    properties::read(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", file.display()),
        )
    })
}

/// The value of `key`, trimmed; the last line wins, as in Java; blank is
/// none.
fn value(entries: &[(String, String)], key: &str) -> Option<String> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Replaces the environment's secret in the file (a rotation by the
/// portal), keeping every other entry: written to a temporary file created
/// owner-only, fsynced, renamed over the file, the folder fsynced
/// ([`crate::layout::write_atomic_private`]). A crash leaves the old file
/// or the new one.
pub fn store_secret(home: &Path, secret: &EnvironmentSecret) -> io::Result<()> {
    let mut entries: Vec<(String, String)> = entries(home)?
        .into_iter()
        .filter(|(k, _)| k != ENVIRONMENT_SECRET_KEY)
        .collect();
    entries.push((
        ENVIRONMENT_SECRET_KEY.to_owned(),
        secret.expose().to_owned(),
    ));
    let bytes = properties::write(&entries, Some("the portal registration"));
    let file = registration_file(home);
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir)?;
    }
    crate::layout::write_atomic_private(&file, &bytes)?;
    Ok(())
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
    fn the_secret_is_read_beside_the_uuid_and_never_shown_by_debug() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("config")).unwrap();
        fs::write(
            registration_file(dir.path()),
            "environmentUuid=e-7\nenvironmentSecret = s3cr3t\n",
        )
        .unwrap();
        let secret = environment_secret(dir.path()).unwrap().unwrap();
        assert_eq!(secret.expose(), "s3cr3t");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        assert_eq!(EnvironmentSecret::new("a\nb"), None);
        assert_eq!(EnvironmentSecret::new("  "), None);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(environment_secret(empty.path()).unwrap(), None);
    }

    #[test]
    fn a_stored_secret_replaces_the_old_one_keeps_the_rest_and_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("config")).unwrap();
        fs::write(
            registration_file(dir.path()),
            "#by the original box\nenvironmentUuid=e-7\nenvironmentSecret=old\nfoo=bar\n",
        )
        .unwrap();
        let new = EnvironmentSecret::new("new-secret").unwrap();
        store_secret(dir.path(), &new).unwrap();
        assert_eq!(environment_secret(dir.path()).unwrap(), Some(new));
        assert_eq!(
            environment_uuid(dir.path()).unwrap().as_deref(),
            Some("e-7")
        );
        let text = fs::read_to_string(registration_file(dir.path())).unwrap();
        assert!(text.contains("foo=bar") && !text.contains("=old"));
        #[cfg(unix)] // Windows: the home folder's ACL (platform::create_private)
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(registration_file(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn missing_file_or_empty_value_means_not_registered() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(environment_uuid(dir.path()).unwrap(), None);
        assert_eq!(uuid_of("environmentUuid=\n"), None);
        assert_eq!(uuid_of("environmentUuid=e-7\n").as_deref(), Some("e-7"));
    }
}
