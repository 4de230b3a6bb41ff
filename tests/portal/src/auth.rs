//! Who may use the console and the admin API: the holder of the admin
//! token. The token is made at the first start (or given by the operator),
//! printed once, and kept only as its SHA-256 in `DATA/admin-token.sha256`.
//! The admin API takes it as `Authorization: Bearer TOKEN`; the console's
//! login page trades it for a session cookie, whose value is also kept only
//! as a hash, in memory (a restart logs everybody out).
//!
//! Login attempts and admin calls with a wrong token are rate-limited per
//! peer address ([`LOGIN_QUOTA_PER_MINUTE`]), so a token cannot be guessed
//! at network speed. The boxes' WebSocket endpoint needs no token.

use std::{
    collections::HashSet,
    fs,
    io::Read,
    net::IpAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::Mutex,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::PortalError;

/// Login attempts (and admin calls with a wrong token) each peer address
/// may make per minute; also the burst. An operator mistyping stays far
/// below it; 32 random bytes are out of reach at this rate anyway, the
/// limit keeps a guesser from loading the portal.
pub const LOGIN_QUOTA_PER_MINUTE: u32 = 10;

/// The name of the console's session cookie.
pub const SESSION_COOKIE: &str = "banalytics_session";

/// Sessions kept at once; the oldest half is dropped past it, so repeated
/// logins cannot grow the portal's memory.
const MAX_SESSIONS: usize = 1024;

/// The admin token's hash, the console's sessions and the login limiter.
pub(crate) struct Auth {
    token_sha256: String,
    sessions: Mutex<Vec<String>>,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// 32 random bytes from the OS, hex.
fn random_token() -> Result<String, PortalError> {
    let path = PathBuf::from("/dev/urandom");
    let mut bytes = [0u8; 32];
    fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| PortalError::Io { path, source })?;
    Ok(hex::encode(bytes))
}

/// Compares two equal-length strings in time independent of where they
/// differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// Loads the token's hash from `file`; with `given`, stores its hash
    /// instead; with neither, makes a token, stores its hash and returns
    /// the token (the only time it exists in clear).
    pub(crate) fn open(
        file: &Path,
        given: Option<&str>,
    ) -> Result<(Auth, Option<String>), PortalError> {
        let (hash, fresh) = match given {
            Some(token) if !token.is_empty() => {
                let hash = sha256_hex(token);
                super::store::write_atomically(file, format!("{hash}\n").as_bytes())?;
                (hash, None)
            }
            _ => match fs::read_to_string(file) {
                Ok(text) if !text.trim().is_empty() => (text.trim().to_string(), None),
                Ok(_) => {
                    return Err(PortalError::BadRequest(format!(
                        "{} is empty",
                        file.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let token = random_token()?;
                    let hash = sha256_hex(&token);
                    super::store::write_atomically(file, format!("{hash}\n").as_bytes())?;
                    (hash, Some(token))
                }
                Err(source) => {
                    return Err(PortalError::Io {
                        path: file.to_path_buf(),
                        source,
                    })
                }
            },
        };
        let quota = Quota::per_minute(NonZeroU32::new(LOGIN_QUOTA_PER_MINUTE).expect("non-zero"));
        Ok((
            Auth {
                token_sha256: hash,
                sessions: Mutex::new(Vec::new()),
                limiter: RateLimiter::keyed(quota),
            },
            fresh,
        ))
    }

    /// Whether `token` is the admin token.
    pub(crate) fn token_ok(&self, token: &str) -> bool {
        same(&sha256_hex(token), &self.token_sha256)
    }

    /// Whether `peer` may try a token now (counts the attempt).
    pub(crate) fn attempt_allowed(&self, peer: IpAddr) -> bool {
        self.limiter.check_key(&peer).is_ok()
    }

    /// A new session; the cookie value.
    pub(crate) fn new_session(&self) -> Result<String, PortalError> {
        let session = random_token()?;
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() >= MAX_SESSIONS {
            sessions.drain(..MAX_SESSIONS / 2);
        }
        sessions.push(sha256_hex(&session));
        Ok(session)
    }

    /// Whether `session` is a live session.
    pub(crate) fn session_ok(&self, session: &str) -> bool {
        let hash = sha256_hex(session);
        let sessions = self.sessions.lock().expect("sessions lock");
        sessions.iter().any(|s| same(s, &hash))
    }

    /// Ends `session`.
    pub(crate) fn end_session(&self, session: &str) {
        let hash = sha256_hex(session);
        let gone: HashSet<String> = [hash].into();
        self.sessions
            .lock()
            .expect("sessions lock")
            .retain(|s| !gone.contains(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_token_once_and_keeps_only_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token.sha256");
        let (auth, token) = Auth::open(&file, None).unwrap();
        let token = token.expect("a token at the first start");
        assert_eq!(token.len(), 64);
        let stored = fs::read_to_string(&file).unwrap();
        assert!(!stored.contains(&token));
        assert_eq!(stored.trim(), sha256_hex(&token));
        assert!(auth.token_ok(&token));
        assert!(!auth.token_ok("guess"));
        let (again, none) = Auth::open(&file, None).unwrap();
        assert!(none.is_none(), "printed only at the first start");
        assert!(again.token_ok(&token));
        let (given, none) = Auth::open(&file, Some("operator-chosen")).unwrap();
        assert!(none.is_none());
        assert!(given.token_ok("operator-chosen") && !given.token_ok(&token));
    }

    #[test]
    fn limits_login_attempts_per_peer() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, _) = Auth::open(&dir.path().join("t"), None).unwrap();
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..LOGIN_QUOTA_PER_MINUTE {
            assert!(auth.attempt_allowed(a));
        }
        assert!(!auth.attempt_allowed(a));
        assert!(auth.attempt_allowed(b), "another peer has its own quota");
    }

    #[test]
    fn sessions_are_checked_and_ended() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, _) = Auth::open(&dir.path().join("t"), None).unwrap();
        let s = auth.new_session().unwrap();
        assert!(auth.session_ok(&s));
        assert!(!auth.session_ok("forged"));
        auth.end_session(&s);
        assert!(!auth.session_ok(&s));
    }
}
