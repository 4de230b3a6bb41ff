//! Who may use the console: the holder of the token in
//! `state/console-token` (0600, made at the first start with a console,
//! or by the first `console-url`), directly (the login form) or through a
//! one-time login URL that `banalytics-box console-url` prints.
//!
//! The one-time URL carries `code = EXPIRY.NONCE.MAC`: the MAC is
//! HMAC-SHA-256 of `EXPIRY.NONCE` under the token, so only the token's
//! holder (the home's owner) can make one, the host needs no message from
//! the CLI, and the token never appears in a URL. The host accepts a code
//! once (it remembers the nonces until they expire) and only before its
//! expiry, at most [`CODE_LIFETIME`] ahead.
//!
//! A login (form or code) opens a session: a cookie `EXPIRY.NONCE.MAC`
//! made the same way under the token (for another purpose, so a login
//! code is no session and a session no login code), sent `HttpOnly;
//! SameSite=Strict` (and `Secure` over https). It needs no state in the
//! host, so it outlives the restarts the console itself asks for (Apply
//! now, Restart now); a logout is remembered until the host stops. Every
//! login attempt counts against its peer address, [`LOGINS_PER_MINUTE`]
//! a minute (`governor`); the next is refused before anything is checked.

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use aws_lc_rs::{
    hmac::{self, HMAC_SHA256},
    rand::{SecureRandom, SystemRandom},
};
use banalytics_home::format;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The token's file, in the home's `state/`.
pub const TOKEN_FILE: &str = "console-token";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "banalytics_box_session";

/// Login attempts per peer address and minute; the 11th in a minute is
/// refused (a guess of a 256-bit token is hopeless anyway; this bounds
/// the work and the log).
pub const LOGINS_PER_MINUTE: u32 = 10;

/// How long a one-time login URL is valid: long enough to paste it into a
/// browser.
pub const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// One-time codes remembered as used, and sessions as ended (until their
/// expiry); past this, new ones are refused until some expire.
pub const MAX_USED_CODES: usize = 1024;

/// What a MAC is for: a login link or a session.
const LOGIN: &str = "login";
const SESSION: &str = "session";

/// Peer addresses the rate limiter remembers before it forgets the idle.
const MAX_PEERS: usize = 1024;

/// What a login attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// A session is open: its cookie value.
    Opened,
    /// The token or code is wrong, expired or used.
    Refused,
    /// Too many attempts from this address in the last minute.
    TooMany,
}

/// The console's access state.
pub struct Auth {
    key: hmac::Key,
    token: String,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    used: Mutex<HashMap<String, u64>>,
    ended: Mutex<HashMap<String, u64>>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system's random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_s() -> u64 {
    banalytics_sdk::status::now_ms() / 1000
}

/// The token of the home whose `state/` is `state`, made (0600) when there
/// is none. A token file of a newer format ([`format::CONSOLE_TOKEN`]) is
/// left as it is: an `InvalidData` error holding the
/// [`format::NewerFormat`].
pub fn load_or_create_token(state: &Path) -> std::io::Result<String> {
    let path: PathBuf = state.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match format::of_line(&text) {
            (known, token) if known <= format::CONSOLE_TOKEN && !token.trim().is_empty() => {
                return Ok(token.trim().to_owned())
            }
            (known, _) if known <= format::CONSOLE_TOKEN => {}
            (newer, _) => {
                return Err(format::NewerFormat {
                    path,
                    format: newer,
                    known: format::CONSOLE_TOKEN,
                }
                .into_io())
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(state)?;
    let token = random_hex(32);
    banalytics_home::layout::write_atomic_private(&path, format!("{token}\n").as_bytes())
        .map_err(std::io::Error::other)?;
    Ok(token)
}

/// `EXPIRY.NONCE.MAC` for `purpose`, valid `lifetime` from now.
fn signed(key: &hmac::Key, purpose: &str, lifetime: Duration) -> String {
    let payload = format!("{}.{}", now_s() + lifetime.as_secs(), random_hex(16));
    let tag = hmac::sign(key, format!("{purpose}:{payload}").as_bytes());
    let mac: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{payload}.{mac}")
}

/// The expiry and nonce of `value` when it is [`signed`] for `purpose`
/// under `key`, unexpired and not beyond `lifetime` from now.
fn verified<'a>(
    key: &hmac::Key,
    purpose: &str,
    value: &'a str,
    lifetime: Duration,
) -> Option<(u64, &'a str)> {
    let (payload, mac) = value.rsplit_once('.')?;
    let (expiry, nonce) = payload.split_once('.')?;
    let expiry: u64 = expiry.parse().ok()?;
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hmac::verify(key, format!("{purpose}:{payload}").as_bytes(), &unhex(mac)?).ok()?;
    let now = now_s();
    (expiry >= now && expiry <= now + lifetime.as_secs() + 60).then_some((expiry, nonce))
}

/// Remembers `nonce` until `expiry` in `seen`; `false` when it was there
/// already or `seen` is full.
fn remember(seen: &Mutex<HashMap<String, u64>>, nonce: &str, expiry: u64) -> bool {
    let now = now_s();
    let mut seen = seen.lock().expect("nonces");
    seen.retain(|_, until| *until >= now);
    if seen.len() >= MAX_USED_CODES || seen.contains_key(nonce) {
        return false;
    }
    seen.insert(nonce.to_owned(), expiry);
    true
}

/// A one-time login code for `token`, valid until `CODE_LIFETIME` from
/// now (`console-url`).
pub fn login_code(token: &str) -> String {
    signed(
        &hmac::Key::new(HMAC_SHA256, token.as_bytes()),
        LOGIN,
        CODE_LIFETIME,
    )
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Auth {
    /// Access with `token`.
    pub fn new(token: String) -> Auth {
        let quota = Quota::per_minute(NonZeroU32::new(LOGINS_PER_MINUTE).expect("not zero"));
        Auth {
            key: hmac::Key::new(HMAC_SHA256, token.as_bytes()),
            token,
            limiter: RateLimiter::keyed(quota),
            used: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
        }
    }

    fn admit(&self, peer: IpAddr) -> bool {
        if self.limiter.len() > MAX_PEERS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&peer).is_ok()
    }

    /// A login with the token itself (the form); on success, the new
    /// session's cookie value.
    pub fn login_with_token(&self, peer: IpAddr, token: &str) -> (Login, Option<String>) {
        if !self.admit(peer) {
            return (Login::TooMany, None);
        }
        // Constant time: compare MACs of both under a key of our own.
        let ours = hmac::sign(&self.key, self.token.as_bytes());
        if hmac::verify(&self.key, token.trim().as_bytes(), ours.as_ref()).is_err() {
            return (Login::Refused, None);
        }
        (Login::Opened, Some(self.open_session()))
    }

    /// A login with a one-time code (the `console-url` link).
    pub fn login_with_code(&self, peer: IpAddr, code: &str) -> (Login, Option<String>) {
        if !self.admit(peer) {
            return (Login::TooMany, None);
        }
        let ok = verified(&self.key, LOGIN, code, CODE_LIFETIME)
            .is_some_and(|(expiry, nonce)| remember(&self.used, nonce, expiry));
        match ok {
            true => (Login::Opened, Some(self.open_session())),
            false => (Login::Refused, None),
        }
    }

    fn open_session(&self) -> String {
        signed(&self.key, SESSION, SESSION_LIFETIME)
    }

    /// Whether `cookie` is the value of an open session.
    pub fn session_ok(&self, cookie: &str) -> bool {
        verified(&self.key, SESSION, cookie, SESSION_LIFETIME).is_some_and(|(_, nonce)| {
            !self
                .ended
                .lock()
                .expect("ended sessions")
                .contains_key(nonce)
        })
    }

    /// Ends the session of `cookie`.
    pub fn end_session(&self, cookie: &str) {
        if let Some((expiry, nonce)) = verified(&self.key, SESSION, cookie, SESSION_LIFETIME) {
            remember(&self.ended, nonce, expiry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_code_opens_one_session_once_and_a_wrong_one_none() {
        let auth = Auth::new("secret".into());
        let code = login_code("secret");
        let (login, session) = auth.login_with_code(PEER, &code);
        assert_eq!(login, Login::Opened);
        assert!(auth.session_ok(&session.unwrap()));
        assert_eq!(auth.login_with_code(PEER, &code).0, Login::Refused);
        let forged = login_code("other");
        assert_eq!(auth.login_with_code(PEER, &forged).0, Login::Refused);
        assert_eq!(auth.login_with_token(PEER, "wrong").0, Login::Refused);
        assert!(!auth.session_ok("made-up"));
        // A login code is no session, and a session outlives its host.
        assert!(!auth.session_ok(&login_code("secret")));
        let (_, session) = auth.login_with_token(PEER, "secret");
        let session = session.unwrap();
        assert!(Auth::new("secret".into()).session_ok(&session));
        assert!(!Auth::new("other".into()).session_ok(&session));
        auth.end_session(&session);
        assert!(!auth.session_ok(&session));
    }

    #[test]
    fn the_eleventh_login_in_a_minute_is_refused_whatever_it_carries() {
        let auth = Auth::new("secret".into());
        for _ in 0..LOGINS_PER_MINUTE {
            assert_eq!(auth.login_with_token(PEER, "wrong").0, Login::Refused);
        }
        assert_eq!(auth.login_with_token(PEER, "secret").0, Login::TooMany);
    }

    #[test]
    fn the_token_file_is_made_once_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let t = load_or_create_token(dir.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(load_or_create_token(dir.path()).unwrap(), t);
        let file = dir.path().join(TOKEN_FILE);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{t}\n"));
        std::fs::write(&file, format!("format 1\n{t}\n")).unwrap();
        assert_eq!(load_or_create_token(dir.path()).unwrap(), t);
        let newer = format!("format 2\n{{\"token\": \"{t}\"}}\n");
        std::fs::write(&file, &newer).unwrap();
        let e = load_or_create_token(dir.path()).unwrap_err();
        assert_eq!(format::in_io(&e).map(|n| n.format), Some(2), "{e}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            newer,
            "left as it is"
        );
        // Windows: the home folder's ACL (README, "Windows").
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode()
        };
        #[cfg(unix)]
        assert_eq!(mode & 0o777, 0o600);
    }
}
