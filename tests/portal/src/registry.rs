//! Which boxes the portal knows: the registered environments, each an
//! environment UUID and a secret. `environments add` makes both and shows
//! the secret once; only its SHA-256 is kept, in `DATA/environments.json`
//! (created 0600). A box proves it is the environment with
//! `Authorization: Bearer SECRET` on the WebSocket upgrade; the portal
//! compares the hashes in constant time and refuses an unknown UUID, a
//! wrong secret or a revoked environment with 401, before the upgrade.
//!
//! Rotation: `rotate-secret` makes a new secret and keeps its hash as
//! pending beside the current one; the new secret itself stays in memory
//! only, until the box has it. The portal sends it over the link
//! ([`ROTATE_FRAME`], at once when the box is connected, else at its next
//! connection); the box stores it and answers [`ROTATED_FRAME`] with the
//! new secret's SHA-256. Then the pending hash becomes the current one and
//! the old secret stops working. A box that stored the new secret but was
//! cut off before its answer proves it by connecting with it, which
//! completes the rotation as well. A portal restarted before the box had
//! the new secret has forgotten it: the box goes on with the old one, and
//! the operator rotates again.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Mutex,
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{auth, PortalError};

/// The extension frame (portal → box) that carries a new secret. The
/// original portal never sends it.
pub const ROTATE_FRAME: &str = "ENV_SECRET_ROTATE";

/// The extension frame (box → portal) that says the box stored the new
/// secret; `secretSha256` is the stored secret's SHA-256 (hex).
pub const ROTATED_FRAME: &str = "ENV_SECRET_ROTATED";

/// Environments the portal registers at most. Registration is an
/// operator's act, so this is a sanity bound, far above a self-hosted
/// fleet, not a quota.
pub const MAX_REGISTERED: usize = 100_000;

/// Longest environment UUID an operator may choose (a UUID is 36).
const MAX_UUID_LEN: usize = 64;

/// A new registration: the only time the secret exists in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The environment UUID, the box's `environmentUuid`.
    pub environment_uuid: String,
    /// The secret, the box's `environmentSecret`; shown once.
    pub environment_secret: String,
}

/// A registered environment as the operator sees it (no hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredEnvironment {
    /// The environment UUID.
    pub environment_uuid: String,
    /// The name given at registration (may be empty).
    pub name: String,
    /// Revoked: every connection is refused.
    pub revoked: bool,
    /// A new secret waits for the box's confirmation.
    pub rotation_pending: bool,
}

/// How one environment is kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    name: String,
    secret_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_sha256: Option<String>,
    #[serde(default)]
    revoked: bool,
}

/// What the portal makes of an upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A registered environment with its secret (or, under open
    /// registration, an environment the portal does not know).
    Admitted,
    /// No environment of that UUID is registered.
    Unknown,
    /// The secret is missing or not the environment's.
    WrongSecret,
    /// The environment was revoked.
    Revoked,
}

impl Admission {
    /// Why, for the log.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Admission::Admitted => "admitted",
            Admission::Unknown => "unknown environment",
            Admission::WrongSecret => "wrong or missing secret",
            Admission::Revoked => "revoked environment",
        }
    }
}

/// The registered environments and the new secrets not yet delivered.
pub(crate) struct Registry {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// New secrets in clear, until the box confirms it stored them.
    undelivered: Mutex<HashMap<String, String>>,
}

fn hash(secret: &str) -> String {
    auth::sha256_hex(secret)
}

impl Registry {
    /// Loads `path` (none registered when it is missing).
    pub(crate) fn open(path: PathBuf) -> Result<Registry, PortalError> {
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| PortalError::State {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(PortalError::Io { path, source }),
        };
        Ok(Registry {
            path,
            entries: Mutex::new(entries),
            undelivered: Mutex::new(HashMap::new()),
        })
    }

    fn save(&self, entries: &BTreeMap<String, Entry>) -> Result<(), PortalError> {
        let bytes = serde_json::to_vec_pretty(entries).expect("entries serialize");
        super::store::write_private(&self.path, &bytes)
    }

    /// Registers an environment named `name`, with the UUID `uuid` when
    /// given (a box that has one already), else a new one.
    pub(crate) fn add(&self, name: &str, uuid: Option<&str>) -> Result<Registration, PortalError> {
        let uuid = match uuid.map(str::trim) {
            Some(u) => {
                let ok = !u.is_empty()
                    && u.len() <= MAX_UUID_LEN
                    && u.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(PortalError::InvalidCoordinate {
                        field: "environmentUuid",
                        value: u.to_string(),
                    });
                }
                u.to_string()
            }
            None => new_uuid()?,
        };
        let secret = auth::random_token()?;
        let mut entries = self.entries.lock().expect("registry lock");
        if entries.contains_key(&uuid) {
            return Err(PortalError::BadRequest(format!(
                "environment {uuid} is registered already"
            )));
        }
        if entries.len() >= MAX_REGISTERED {
            return Err(PortalError::BadRequest(format!(
                "{MAX_REGISTERED} environments are registered: no more"
            )));
        }
        entries.insert(
            uuid.clone(),
            Entry {
                name: name.trim().to_string(),
                secret_sha256: hash(&secret),
                pending_sha256: None,
                revoked: false,
            },
        );
        if let Err(e) = self.save(&entries) {
            entries.remove(&uuid);
            return Err(e);
        }
        info!(env = %uuid, name, "environment registered");
        Ok(Registration {
            environment_uuid: uuid,
            environment_secret: secret,
        })
    }

    /// Whether `uuid` is registered (revoked or not).
    pub(crate) fn contains(&self, uuid: &str) -> bool {
        self.entries
            .lock()
            .expect("registry lock")
            .contains_key(uuid)
    }

    /// Checks `secret` for `uuid`. A connection with the pending secret
    /// completes its rotation.
    pub(crate) fn admit(&self, uuid: &str, secret: Option<&str>) -> Admission {
        let mut entries = self.entries.lock().expect("registry lock");
        let Some(entry) = entries.get_mut(uuid) else {
            return Admission::Unknown;
        };
        if entry.revoked {
            return Admission::Revoked;
        }
        let Some(given) = secret.map(hash) else {
            return Admission::WrongSecret;
        };
        if auth::same(&given, &entry.secret_sha256) {
            return Admission::Admitted;
        }
        if entry
            .pending_sha256
            .as_deref()
            .is_some_and(|p| auth::same(&given, p))
        {
            entry.secret_sha256 = given;
            entry.pending_sha256 = None;
            self.undelivered
                .lock()
                .expect("undelivered lock")
                .remove(uuid);
            if let Err(error) = self.save(&entries) {
                warn!(env = uuid, %error, "cannot record the completed rotation");
            }
            info!(
                env = uuid,
                "secret rotated: the box connected with the new one"
            );
            return Admission::Admitted;
        }
        Admission::WrongSecret
    }

    /// Revokes `uuid`; `false` when it is not registered.
    pub(crate) fn revoke(&self, uuid: &str) -> Result<bool, PortalError> {
        let mut entries = self.entries.lock().expect("registry lock");
        let Some(entry) = entries.get_mut(uuid) else {
            return Ok(false);
        };
        entry.revoked = true;
        entry.pending_sha256 = None;
        self.undelivered
            .lock()
            .expect("undelivered lock")
            .remove(uuid);
        self.save(&entries)?;
        info!(env = uuid, "environment revoked");
        Ok(true)
    }

    /// A new secret for `uuid`, pending until the box confirms it; the
    /// frame that carries it to the box.
    pub(crate) fn rotate(&self, uuid: &str) -> Result<String, PortalError> {
        let secret = auth::random_token()?;
        let mut entries = self.entries.lock().expect("registry lock");
        let entry = match entries.get_mut(uuid) {
            Some(e) if !e.revoked => e,
            Some(_) => {
                return Err(PortalError::BadRequest(format!(
                    "environment {uuid} is revoked"
                )))
            }
            None => {
                return Err(PortalError::BadRequest(format!(
                    "environment {uuid} is not registered"
                )))
            }
        };
        entry.pending_sha256 = Some(hash(&secret));
        self.save(&entries)?;
        self.undelivered
            .lock()
            .expect("undelivered lock")
            .insert(uuid.to_string(), secret);
        info!(env = uuid, "secret rotation started");
        Ok(self.rotation_frame(uuid).expect("just inserted"))
    }

    /// The frame carrying `uuid`'s new secret, while the box has not
    /// confirmed it.
    pub(crate) fn rotation_frame(&self, uuid: &str) -> Option<String> {
        let undelivered = self.undelivered.lock().expect("undelivered lock");
        let secret = undelivered.get(uuid)?;
        Some(
            serde_json::json!({
                "type": ROTATE_FRAME,
                "environmentUuid": uuid,
                "environmentSecret": secret,
            })
            .to_string(),
        )
    }

    /// The box of `uuid` says it stored the secret whose hash is
    /// `sha256`: when that is the pending one, it becomes the secret and
    /// the old one stops working. Whether it did.
    pub(crate) fn confirm(&self, uuid: &str, sha256: &str) -> bool {
        let mut entries = self.entries.lock().expect("registry lock");
        let Some(entry) = entries.get_mut(uuid) else {
            return false;
        };
        let matches = entry
            .pending_sha256
            .as_deref()
            .is_some_and(|p| auth::same(&sha256.to_ascii_lowercase(), p));
        if !matches {
            return false;
        }
        entry.secret_sha256 = entry.pending_sha256.take().expect("matched");
        self.undelivered
            .lock()
            .expect("undelivered lock")
            .remove(uuid);
        if let Err(error) = self.save(&entries) {
            warn!(env = uuid, %error, "cannot record the completed rotation");
        }
        info!(env = uuid, "secret rotated: the box confirmed the new one");
        true
    }

    /// Every registered environment.
    pub(crate) fn list(&self) -> Vec<RegisteredEnvironment> {
        self.entries
            .lock()
            .expect("registry lock")
            .iter()
            .map(|(uuid, e)| RegisteredEnvironment {
                environment_uuid: uuid.clone(),
                name: e.name.clone(),
                revoked: e.revoked,
                rotation_pending: e.pending_sha256.is_some(),
            })
            .collect()
    }
}

/// A random (version 4) UUID.
fn new_uuid() -> Result<String, PortalError> {
    let hex = auth::random_token()?;
    let mut b = hex::decode(&hex[..32]).expect("hex");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path().join("environments.json")).unwrap();
        (dir, r)
    }

    #[test]
    fn keeps_only_the_secrets_hash_owner_only_and_admits_only_the_secret() {
        let (dir, r) = registry();
        let reg = r.add("kitchen", None).unwrap();
        assert_eq!(reg.environment_uuid.len(), 36);
        assert_eq!(&reg.environment_uuid[14..15], "4");
        let file = dir.path().join("environments.json");
        let stored = std::fs::read_to_string(&file).unwrap();
        assert!(!stored.contains(&reg.environment_secret));
        assert!(stored.contains(&hash(&reg.environment_secret)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let uuid = reg.environment_uuid.as_str();
        assert_eq!(
            r.admit(uuid, Some(&reg.environment_secret)),
            Admission::Admitted
        );
        assert_eq!(r.admit(uuid, Some("guess")), Admission::WrongSecret);
        assert_eq!(r.admit(uuid, None), Admission::WrongSecret);
        assert_eq!(
            r.admit("other", Some(&reg.environment_secret)),
            Admission::Unknown
        );
        let again = Registry::open(file).unwrap();
        assert_eq!(
            again.admit(uuid, Some(&reg.environment_secret)),
            Admission::Admitted
        );
        assert!(r.add("twice", Some(uuid)).is_err());
        assert!(r.add("bad", Some("a/b")).is_err());
    }

    #[test]
    fn a_revoked_environment_is_refused_even_with_its_secret() {
        let (_dir, r) = registry();
        let reg = r.add("", Some("env-1")).unwrap();
        assert!(r.revoke("env-1").unwrap());
        assert_eq!(
            r.admit("env-1", Some(&reg.environment_secret)),
            Admission::Revoked
        );
        assert!(!r.revoke("never").unwrap());
    }

    #[test]
    fn the_old_secret_works_until_the_box_confirms_the_new_one() {
        let (_dir, r) = registry();
        let old = r.add("", Some("env-1")).unwrap().environment_secret;
        let frame: serde_json::Value = serde_json::from_str(&r.rotate("env-1").unwrap()).unwrap();
        assert_eq!(frame["type"], ROTATE_FRAME);
        let new = frame["environmentSecret"].as_str().unwrap().to_string();
        assert_ne!(new, old);
        assert!(r.rotation_frame("env-1").is_some(), "kept until confirmed");
        assert_eq!(r.admit("env-1", Some(&old)), Admission::Admitted);
        assert!(!r.confirm("env-1", &hash("something else")));
        assert_eq!(r.admit("env-1", Some(&old)), Admission::Admitted);
        assert!(r.confirm("env-1", &hash(&new)));
        assert!(r.rotation_frame("env-1").is_none());
        assert_eq!(r.admit("env-1", Some(&old)), Admission::WrongSecret);
        assert_eq!(r.admit("env-1", Some(&new)), Admission::Admitted);
    }

    #[test]
    fn connecting_with_the_pending_secret_completes_the_rotation() {
        let (_dir, r) = registry();
        let old = r.add("", Some("env-1")).unwrap().environment_secret;
        let frame: serde_json::Value = serde_json::from_str(&r.rotate("env-1").unwrap()).unwrap();
        let new = frame["environmentSecret"].as_str().unwrap();
        assert_eq!(r.admit("env-1", Some(new)), Admission::Admitted);
        assert_eq!(r.admit("env-1", Some(&old)), Admission::WrongSecret);
        assert!(!r.list()[0].rotation_pending);
    }
}
