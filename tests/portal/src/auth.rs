//! Who may use the console and the admin API: the holder of the admin
//! token. The token is made at the first start (or given by the operator),
//! printed once, and kept only as its SHA-256 in `DATA/admin-token.sha256`.
//! The admin API takes it as `Authorization: Bearer TOKEN`; the console's
//! login page trades it for a session cookie, whose value is also kept only
//! as a hash, in memory (a restart logs everybody out).
//!
//! Login attempts and admin calls with a wrong token are rate-limited per
//! peer address ([`LOGIN_QUOTA_PER_MINUTE`]), so a token cannot be guessed
//! at network speed. The limiter is asked before the token is compared: a
//! peer over its quota is answered 429 whatever it sends, the right token
//! included, until its quota has room again. The boxes' WebSocket
//! endpoint needs no admin token (boxes prove themselves with their
//! environment's secret, [`super::registry`]).

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::Read,
    net::IpAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Instant,
};

use governor::{
    clock::{Clock as _, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
    Quota, RateLimiter,
};

/// The per-peer limiter; it tells how much of the quota is left, so that
/// a peer that spent it is refused before its next token is compared.
type Limiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;
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

/// Peers remembered as over their quota at once; past it the earliest to
/// be let in again are forgotten first (and then meet the limiter again).
const MAX_LOCKED_OUT: usize = 1024;

/// The admin token's hash, the console's sessions and the login limiter.
pub(crate) struct Auth {
    token_sha256: String,
    sessions: Mutex<Vec<String>>,
    limiter: Limiter,
    /// Peers over their quota, and when the limiter lets them try again.
    locked_out: Mutex<HashMap<IpAddr, Instant>>,
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// 32 random bytes from the OS, hex.
pub(crate) fn random_token() -> Result<String, PortalError> {
    let path = PathBuf::from("/dev/urandom");
    let mut bytes = [0u8; 32];
    fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| PortalError::Io { path, source })?;
    Ok(hex::encode(bytes))
}

/// Compares two equal-length strings in time independent of where they
/// differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What [`Auth::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    /// The admin token.
    Ok,
    /// Not the admin token (or none); counted.
    Wrong,
    /// The peer is over its quota: nothing was compared.
    TooMany,
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
                super::store::write_private(file, format!("{hash}\n").as_bytes())?;
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
                    super::store::write_private(file, format!("{hash}\n").as_bytes())?;
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
                limiter: RateLimiter::keyed(quota).with_middleware(),
                locked_out: Mutex::new(HashMap::new()),
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
        let wait = match self.limiter.check_key(&peer) {
            // Room for this attempt, and maybe for more.
            Ok(state) if state.remaining_burst_capacity() > 0 => return true,
            // This attempt used the last of the quota: the next one waits
            // until a cell is back.
            Ok(state) => {
                self.lock_out(peer, state.quota().replenish_interval());
                return true;
            }
            Err(not_until) => not_until.wait_time_from(DefaultClock::default().now()),
        };
        self.lock_out(peer, wait);
        false
    }

    /// Remembers that `peer` may try again in `wait`.
    fn lock_out(&self, peer: IpAddr, wait: std::time::Duration) {
        let mut locked = self.locked_out.lock().expect("locked-out lock");
        if locked.len() >= MAX_LOCKED_OUT {
            let now = Instant::now();
            locked.retain(|_, until| *until > now);
            while locked.len() >= MAX_LOCKED_OUT {
                let first = locked
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(peer, _)| *peer)
                    .expect("not empty");
                locked.remove(&first);
            }
            self.limiter.retain_recent();
        }
        locked.insert(peer, Instant::now() + wait);
    }

    /// Whether `peer` is over its quota now: asked before a token is
    /// compared, so that a right guess over quota gets no further than a
    /// wrong one. Counts nothing.
    pub(crate) fn locked_out(&self, peer: IpAddr) -> bool {
        let mut locked = self.locked_out.lock().expect("locked-out lock");
        match locked.get(&peer) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                locked.remove(&peer);
                false
            }
            None => false,
        }
    }

    /// The gate of a token check, in order: a peer over its quota is
    /// refused before the comparison; a wrong token counts against the
    /// quota.
    pub(crate) fn check(&self, peer: IpAddr, token: Option<&str>) -> TokenCheck {
        if self.locked_out(peer) {
            return TokenCheck::TooMany;
        }
        match token {
            Some(t) if self.token_ok(t) => TokenCheck::Ok,
            _ if self.attempt_allowed(peer) => TokenCheck::Wrong,
            _ => TokenCheck::TooMany,
        }
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
    fn over_quota_even_the_right_token_is_refused_before_it_is_compared() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, token) = Auth::open(&dir.path().join("t"), None).unwrap();
        let token = token.unwrap();
        let a: IpAddr = [192, 0, 2, 1].into();
        assert_eq!(auth.check(a, Some(&token)), TokenCheck::Ok);
        for _ in 0..LOGIN_QUOTA_PER_MINUTE {
            assert_eq!(auth.check(a, Some("wrong")), TokenCheck::Wrong);
        }
        assert_eq!(auth.check(a, Some("wrong")), TokenCheck::TooMany);
        assert_eq!(auth.check(a, None), TokenCheck::TooMany);
        assert_eq!(auth.check(a, Some(&token)), TokenCheck::TooMany);
        let b: IpAddr = [192, 0, 2, 2].into();
        assert_eq!(auth.check(b, Some(&token)), TokenCheck::Ok);
    }

    #[test]
    fn the_token_hash_file_is_created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token.sha256");
        // A leftover temporary file readable by all is not reused.
        fs::write(dir.path().join("admin-token.sha256.tmp"), "x").unwrap();
        fs::set_permissions(
            dir.path().join("admin-token.sha256.tmp"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Auth::open(&file, None).unwrap();
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
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
