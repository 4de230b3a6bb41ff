//! The two identities of a module set, each computed one way:
//!
//! - [`TargetSetId`], the target set's: from its modules' coordinates, so
//!   it is known as soon as the portal names the set, before anything is
//!   downloaded. The apply hold, the quarantine, the Restarter and
//!   `status` name and compare sets by it.
//! - [`ContentId`], a set on disk's: from its recorded files
//!   (`modules-info.properties` and the hash record), computed by
//!   [`crate::swap::set_identity`]. The swap (its journal, the probation
//!   record) and the quarantine record's `set` use it, to tell folders
//!   apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::{coords::Coords, Sha256};

/// The target set's identity: the first 8 bytes of the SHA-256 of its
/// modules' keys ([`Coords`]' text), sorted, each once, one per
/// line; written as 16 hex digits. The same set has the same id whatever
/// order the portal lists it in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetSetId([u8; 8]);

impl TargetSetId {
    /// The id of the set of `modules`.
    pub fn of<'a>(modules: impl IntoIterator<Item = &'a Coords>) -> TargetSetId {
        let mut keys: Vec<String> = modules.into_iter().map(ToString::to_string).collect();
        keys.sort();
        keys.dedup();
        let mut hasher = sha2::Sha256::new();
        for key in &keys {
            hasher.update(key.as_bytes());
            hasher.update(b"\n");
        }
        let digest = hasher.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        TargetSetId(id)
    }
}

impl fmt::Display for TargetSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TargetSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetSetId({self})")
    }
}

/// Text that is not a target set id (16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a target set id of 16 hex digits")]
pub struct TargetSetIdError {
    /// The refused text.
    pub value: String,
}

impl FromStr for TargetSetId {
    type Err = TargetSetIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id).map_err(|_| TargetSetIdError {
            value: s.to_owned(),
        })?;
        Ok(TargetSetId(id))
    }
}

impl Serialize for TargetSetId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TargetSetId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The content id of a set on disk: the SHA-256 of its
/// `modules-info.properties` (length first) and its hash record. Written as
/// 64 hex digits, as it always was.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentId(Sha256);

impl ContentId {
    /// The id whose digest is `digest` (what [`crate::swap::set_identity`]
    /// computes).
    pub fn from_digest(digest: Sha256) -> ContentId {
        ContentId(digest)
    }

    /// Its first 12 hex digits, for logs and `status`.
    pub fn short(&self) -> String {
        self.0.to_string()[..12].to_owned()
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

/// Serde for an optional content id in the records' form: `""` for none
/// (`#[serde(with = "sets::optional_content")]`).
pub mod optional_content {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ContentId;

    /// Writes the id, or `""` for none.
    pub fn serialize<S: Serializer>(id: &Option<ContentId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.collect_str(id),
            None => s.serialize_str(""),
        }
    }

    /// Reads `""` as none, an id as an id; other text (a record written
    /// by hand) as none too, so that the record stays readable: such text
    /// named no set on disk either.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ContentId>, D::Error> {
        let text = String::deserialize(d)?;
        Ok(crate::Sha256::parse(&text).ok().map(ContentId))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: &str) -> Coords {
        key.parse().unwrap()
    }

    #[test]
    fn a_target_set_id_names_the_set_not_its_order() {
        let (a, b) = (c("g:a:1"), c("g:b:1"));
        let id = TargetSetId::of([&a, &b]);
        assert_eq!(id.to_string().len(), 16);
        assert_eq!(TargetSetId::of([&b, &a]), id);
        assert_eq!(TargetSetId::of([&b, &a, &a]), id);
        assert_ne!(TargetSetId::of([&a, &c("g:b:2")]), id);
        assert_ne!(TargetSetId::of([&a]), id);
        assert_eq!(id.to_string().parse::<TargetSetId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<TargetSetId>(&json).unwrap(), id);
        assert!("abc".parse::<TargetSetId>().is_err());
    }

    #[test]
    fn the_id_is_the_one_the_upgrade_center_always_logged() {
        // sha256("g:a:1\ng:b:1\n"), first 16 hex digits: the id of the
        // format before the type, so a hold written then names the same set.
        let digest = hex::encode(sha2::Sha256::digest(b"g:a:1\ng:b:1\n"));
        assert_eq!(
            TargetSetId::of([&c("g:b:1"), &c("g:a:1")]).to_string(),
            digest[..16]
        );
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        #[serde(with = "optional_content")]
        outgoing: Option<ContentId>,
    }

    #[test]
    fn a_content_id_keeps_its_on_disk_form_and_none_is_the_empty_string() {
        let id = ContentId::from_digest(Sha256::of(b"set"));
        let some = Record { outgoing: Some(id) };
        let json = serde_json::to_string(&some).unwrap();
        assert_eq!(json, format!("{{\"outgoing\":\"{}\"}}", Sha256::of(b"set")));
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), some);
        let none = Record { outgoing: None };
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"outgoing":""}"#);
        assert_eq!(
            serde_json::from_str::<Record>(r#"{"outgoing":""}"#).unwrap(),
            none
        );
        assert_eq!(id.short().len(), 12);
    }
}
