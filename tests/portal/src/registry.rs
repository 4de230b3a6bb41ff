//! Which boxes the portal knows: the registered environments, each an
//! environment UUID and a secret. `environments add` makes both and shows
//! the secret once; only its SHA-256 is kept, in the database's
//! `environments` table ([`super::db`]). A box proves it is the environment with
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
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    auth,
    db::{self, stmt, Db, Stmt},
    PortalError,
};

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

/// One environment as `environments.json` kept it before the database
/// ([`super::import`]), and as a row is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) secret_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pending_sha256: Option<String>,
    #[serde(default)]
    pub(crate) revoked: bool,
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

/// The registered environments (in the database) and the new secrets not
/// yet delivered (in memory).
pub(crate) struct Registry {
    db: Arc<Db>,
    /// New secrets in clear, until the box confirms it stored them.
    undelivered: Mutex<HashMap<String, String>>,
}

fn hash(secret: &str) -> String {
    auth::sha256_hex(secret)
}

/// One registered environment as a row.
struct Row {
    secret_sha256: String,
    pending_sha256: Option<String>,
    revoked: bool,
}

impl Entry {
    /// Registers `uuid` as this entry, unless it is registered
    /// ([`Stmt::guard`]ed: the write answers `false` then).
    pub(crate) fn insert(&self, uuid: &str, registered_ms: u64) -> Stmt {
        stmt!(
            "INSERT INTO environments (uuid, name, secret_sha256, pending_sha256, revoked, registered_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (uuid) DO NOTHING",
            uuid,
            &self.name,
            &self.secret_sha256,
            self.pending_sha256.clone(),
            self.revoked,
            registered_ms,
        )
        .guard()
    }
}

impl Registry {
    /// The registry of `db`.
    pub(crate) fn open(db: Arc<Db>) -> Registry {
        Registry {
            db,
            undelivered: Mutex::new(HashMap::new()),
        }
    }

    fn row(&self, uuid: &str) -> Result<Option<Row>, PortalError> {
        let rows = self.db.rows(stmt!(
            "SELECT secret_sha256, pending_sha256, revoked FROM environments WHERE uuid = $1",
            uuid
        ))?;
        Ok(rows.first().map(|r| Row {
            secret_sha256: db::text(r, 0),
            pending_sha256: db::opt_text(r, 1),
            revoked: db::int(r, 2) != 0,
        }))
    }

    /// Makes the pending secret of `uuid`, when it hashes to `given`, its
    /// secret.
    fn complete_rotation(&self, uuid: &str, given: &str) -> bool {
        let done = self.db.write(vec![stmt!(
            "UPDATE environments SET secret_sha256 = pending_sha256, pending_sha256 = NULL \
             WHERE uuid = $1 AND pending_sha256 = $2",
            uuid,
            given,
        )
        .guard()]);
        self.undelivered
            .lock()
            .expect("undelivered lock")
            .remove(uuid);
        match done {
            Ok(done) => done,
            Err(error) => {
                warn!(env = uuid, %error, "cannot record the completed rotation");
                false
            }
        }
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
        let count = self
            .db
            .rows(stmt!("SELECT COUNT(*) FROM environments"))?
            .first()
            .map_or(0, |r| db::uint(r, 0));
        if count >= MAX_REGISTERED as u64 {
            return Err(PortalError::BadRequest(format!(
                "{MAX_REGISTERED} environments are registered: no more"
            )));
        }
        let entry = Entry {
            name: name.trim().to_string(),
            secret_sha256: hash(&secret),
            pending_sha256: None,
            revoked: false,
        };
        if !self
            .db
            .write(vec![entry.insert(&uuid, super::rollouts::now_ms())])?
        {
            return Err(PortalError::BadRequest(format!(
                "environment {uuid} is registered already"
            )));
        }
        info!(env = %uuid, name, "environment registered");
        Ok(Registration {
            environment_uuid: uuid,
            environment_secret: secret,
        })
    }

    /// Whether `uuid` is registered (revoked or not).
    pub(crate) fn contains(&self, uuid: &str) -> bool {
        matches!(self.row(uuid), Ok(Some(_)))
    }

    /// Checks `secret` for `uuid`. A connection with the pending secret
    /// completes its rotation.
    pub(crate) fn admit(&self, uuid: &str, secret: Option<&str>) -> Admission {
        let entry = match self.row(uuid) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Admission::Unknown,
            Err(error) => {
                warn!(env = uuid, %error, "cannot read the registration: refused");
                return Admission::WrongSecret;
            }
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
            self.complete_rotation(uuid, &given);
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
        let revoked = self.db.write(vec![stmt!(
            "UPDATE environments SET revoked = 1, pending_sha256 = NULL WHERE uuid = $1",
            uuid
        )
        .guard()])?;
        self.undelivered
            .lock()
            .expect("undelivered lock")
            .remove(uuid);
        if revoked {
            info!(env = uuid, "environment revoked");
        }
        Ok(revoked)
    }

    /// A new secret for `uuid`, pending until the box confirms it; the
    /// frame that carries it to the box.
    pub(crate) fn rotate(&self, uuid: &str) -> Result<String, PortalError> {
        let secret = auth::random_token()?;
        match self.row(uuid)? {
            Some(e) if !e.revoked => {}
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
        }
        self.db.write(vec![stmt!(
            "UPDATE environments SET pending_sha256 = $2 WHERE uuid = $1",
            uuid,
            hash(&secret),
        )])?;
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
        let Ok(Some(entry)) = self.row(uuid) else {
            return false;
        };
        let given = sha256.to_ascii_lowercase();
        let matches = entry
            .pending_sha256
            .as_deref()
            .is_some_and(|p| auth::same(&given, p));
        if !matches || !self.complete_rotation(uuid, &given) {
            return false;
        }
        info!(env = uuid, "secret rotated: the box confirmed the new one");
        true
    }

    /// Every registered environment.
    pub(crate) fn list(&self) -> Vec<RegisteredEnvironment> {
        let rows = self
            .db
            .rows(stmt!(
                "SELECT uuid, name, revoked, pending_sha256 FROM environments ORDER BY uuid"
            ))
            .unwrap_or_else(|error| {
                warn!(%error, "cannot read the registrations");
                Vec::new()
            });
        rows.iter()
            .map(|r| RegisteredEnvironment {
                environment_uuid: db::text(r, 0),
                name: db::text(r, 1),
                revoked: db::int(r, 2) != 0,
                rotation_pending: db::opt_text(r, 3).is_some(),
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

    fn db(dir: &std::path::Path) -> Arc<Db> {
        Arc::new(Db::open(&db::sqlite_url(&dir.join("portal.db"))).unwrap())
    }

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(db(dir.path()));
        (dir, r)
    }

    #[test]
    fn keeps_only_the_secrets_hash_and_admits_only_the_secret() {
        let (dir, r) = registry();
        let reg = r.add("kitchen", None).unwrap();
        assert_eq!(reg.environment_uuid.len(), 36);
        assert_eq!(&reg.environment_uuid[14..15], "4");
        let stored: Vec<String> =
            r.db.rows(stmt!("SELECT uuid, name, secret_sha256 FROM environments"))
                .unwrap()
                .iter()
                .flat_map(|row| [db::text(row, 0), db::text(row, 1), db::text(row, 2)])
                .collect();
        assert!(!stored.contains(&reg.environment_secret));
        assert!(stored.contains(&hash(&reg.environment_secret)));
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
        drop(r);
        let again = Registry::open(db(dir.path()));
        assert_eq!(
            again.admit(uuid, Some(&reg.environment_secret)),
            Admission::Admitted
        );
        assert!(again.add("twice", Some(uuid)).is_err());
        assert!(again.add("bad", Some("a/b")).is_err());
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
