//! Frames of the portal protocol as pure functions: text in, typed message
//! out, and back (contracts section 3).
//!
//! A frame is one JSON object with a string `type`. [`decode`] refuses, with
//! a [`DecodeError`] naming the fault, whatever it cannot turn into an
//! inbound message: frames over [`MAX_FRAME_BYTES`], malformed JSON, a
//! missing `type`, an unknown `type`, fields of the wrong shape. Unknown
//! fields of a known type are not an error: they are reported beside the
//! message so that the link can log them. Nothing here panics on any input
//! (property tests below).

use banalytics_home::registration::EnvironmentSecret;
use banalytics_messages::portal::{GetEnvModulesResponse, PortalMessage, SyncSoftware};
use banalytics_sdk::Bus;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The extension frame (portal → box) that carries the environment's new
/// secret, `environmentSecret`. The original portal never sends it; the
/// link handles it itself ([`secret_rotation`]) and never publishes it on
/// the bus, where components would read the secret.
pub const SECRET_ROTATE: &str = "ENV_SECRET_ROTATE";

/// The extension frame (box → portal) that says the box stored the new
/// secret: `environmentUuid`, and `secretSha256`, the stored secret's
/// SHA-256 in hex (the secret itself does not travel back).
pub const SECRET_ROTATED: &str = "ENV_SECRET_ROTATED";

/// `Some` when `text` is a [`SECRET_ROTATE`] frame: its secret, or `None`
/// when the frame carries none that an HTTP header could hold. `None`
/// for every other frame.
pub fn secret_rotation(text: &str) -> Option<Option<EnvironmentSecret>> {
    if !text.contains(SECRET_ROTATE) {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    (v.get("type")?.as_str()? == SECRET_ROTATE).then(|| {
        v.get("environmentSecret")
            .and_then(Value::as_str)
            .and_then(EnvironmentSecret::new)
    })
}

/// The [`SECRET_ROTATED`] frame for `secret`, stored by the box of `uuid`.
pub fn secret_rotated(uuid: &str, secret: &EnvironmentSecret) -> String {
    serde_json::json!({
        "type": SECRET_ROTATED,
        "environmentUuid": uuid,
        "secretSha256": secret.sha256(),
    })
    .to_string()
}

/// The largest frame accepted from the portal (contracts section 3). A
/// whole target set of a few hundred modules is some tens of kilobytes;
/// 4 MiB leaves room for growth and bounds what one frame can cost.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// An inbound message, by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// `EVT_SYNC_SOFT`.
    SyncSoftware(SyncSoftware),
    /// `GET_ENV_MOD_RES`.
    GetEnvModulesResponse(GetEnvModulesResponse),
}

/// The inbound types and the fields each of them knows, beside `type`.
/// A unit test checks the lists against the types' serialization.
const INBOUND_FIELDS: [(&str, &[&str]); 2] = [
    (SyncSoftware::WIRE_TYPE, &[]),
    (GetEnvModulesResponse::WIRE_TYPE, &["modules"]),
];

impl Inbound {
    /// The frame's `type`.
    pub fn wire_type(&self) -> &'static str {
        match self {
            Inbound::SyncSoftware(_) => SyncSoftware::WIRE_TYPE,
            Inbound::GetEnvModulesResponse(_) => GetEnvModulesResponse::WIRE_TYPE,
        }
    }

    /// Publishes the message on the bus as its own type; returns how many
    /// subscribers got it.
    pub async fn publish(self, bus: &Bus) -> usize {
        match self {
            Inbound::SyncSoftware(m) => bus.publish(m).await,
            Inbound::GetEnvModulesResponse(m) => bus.publish(m).await,
        }
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The message.
    pub message: Inbound,
    /// Fields of the frame its type does not know (ignored), sorted.
    pub unknown_fields: Vec<String>,
}

/// Why a frame from the portal was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Over [`MAX_FRAME_BYTES`].
    #[error("frame of {bytes} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The frame's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON.
    #[error("malformed JSON at line {line} column {column}: {reason}")]
    Malformed {
        /// 1-based line of the fault.
        line: usize,
        /// 1-based column of the fault.
        column: usize,
        /// What `serde_json` found.
        reason: String,
    },
    /// JSON, but not an object.
    #[error("frame is a JSON {found}, not an object")]
    NotAnObject {
        /// The JSON kind found.
        found: &'static str,
    },
    /// No `type`, or not a string.
    #[error("frame has no string field \"type\"")]
    MissingType,
    /// A `type` this box does not handle.
    #[error("unknown frame type {wire_type:?}")]
    UnknownType {
        /// The `type` value.
        wire_type: String,
    },
    /// A known `type` whose fields have the wrong shape.
    #[error("frame {wire_type} has bad fields: {reason}")]
    BadFields {
        /// The `type` value.
        wire_type: &'static str,
        /// What `serde_json` found.
        reason: String,
    },
}

impl DecodeError {
    /// Whether the contract expects this (an unknown `type`: a newer
    /// portal), so that it is logged at debug rather than as a warning.
    pub fn is_expected(&self) -> bool {
        matches!(self, DecodeError::UnknownType { .. })
    }
}

/// Why a message could not be written as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// `serde_json` refused the value.
    #[error("cannot serialize {wire_type}: {reason}")]
    Serialize {
        /// The message's `type`.
        wire_type: &'static str,
        /// What `serde_json` said.
        reason: String,
    },
    /// The value is not a JSON object, or already has a `type` field.
    #[error("{wire_type} does not serialize to an object without a \"type\" field")]
    Shape {
        /// The message's `type`.
        wire_type: &'static str,
    },
}

/// Decodes one text frame from the portal.
pub fn decode(text: &str) -> Result<Decoded, DecodeError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge {
            bytes: text.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::Malformed {
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })?;
    let mut object = match value {
        Value::Object(o) => o,
        other => {
            return Err(DecodeError::NotAnObject {
                found: kind_of(&other),
            })
        }
    };
    let wire_type = match object.remove("type") {
        Some(Value::String(t)) => t,
        _ => return Err(DecodeError::MissingType),
    };
    let Some((wire_type, known)) = INBOUND_FIELDS
        .iter()
        .copied()
        .find(|(t, _)| *t == wire_type)
    else {
        return Err(DecodeError::UnknownType { wire_type });
    };
    let mut unknown_fields: Vec<String> = object
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    unknown_fields.sort();
    let message = match wire_type {
        SyncSoftware::WIRE_TYPE => Inbound::SyncSoftware(typed(wire_type, object)?),
        _ => Inbound::GetEnvModulesResponse(typed(wire_type, object)?),
    };
    Ok(Decoded {
        message,
        unknown_fields,
    })
}

fn typed<M: DeserializeOwned>(
    wire_type: &'static str,
    object: Map<String, Value>,
) -> Result<M, DecodeError> {
    serde_json::from_value(Value::Object(object)).map_err(|e| DecodeError::BadFields {
        wire_type,
        reason: e.to_string(),
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Writes `msg` as a frame: its fields and `"type": M::WIRE_TYPE`.
pub fn encode<M: PortalMessage>(msg: &M) -> Result<String, EncodeError> {
    let value = serde_json::to_value(msg).map_err(|e| EncodeError::Serialize {
        wire_type: M::WIRE_TYPE,
        reason: e.to_string(),
    })?;
    let mut object = match value {
        Value::Object(o) if !o.contains_key("type") => o,
        _ => {
            return Err(EncodeError::Shape {
                wire_type: M::WIRE_TYPE,
            })
        }
    };
    object.insert("type".into(), Value::String(M::WIRE_TYPE.into()));
    Ok(Value::Object(object).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use banalytics_messages::portal::{
        GetEnvModulesRequest, ModuleRef, ModuleStatus, ModuleStatusUpdate,
    };
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn known_field_lists_match_the_types() {
        let keys = |v: Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        assert_eq!(
            keys(serde_json::to_value(SyncSoftware {}).unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(serde_json::to_value(GetEnvModulesResponse { modules: vec![] }).unwrap()),
            vec!["modules"]
        );
    }

    #[test]
    fn decodes_each_inbound_type_and_reports_unknown_fields() {
        let d = decode(r#"{"type":"EVT_SYNC_SOFT"}"#).unwrap();
        assert_eq!(d.message, Inbound::SyncSoftware(SyncSoftware {}));
        assert!(d.unknown_fields.is_empty());

        let d = decode(
            r#"{"modules":[{"groupId":"g"}],"type":"GET_ENV_MOD_RES","zeta":1,"alpha":null}"#,
        )
        .unwrap();
        assert_eq!(
            d.message,
            Inbound::GetEnvModulesResponse(GetEnvModulesResponse {
                modules: vec![json!({"groupId": "g"})]
            })
        );
        assert_eq!(d.unknown_fields, vec!["alpha", "zeta"]);
        assert_eq!(d.message.wire_type(), "GET_ENV_MOD_RES");
    }

    #[test]
    fn every_fault_is_named() {
        assert!(matches!(
            decode("{\"type\":"),
            Err(DecodeError::Malformed { line: 1, .. })
        ));
        assert_eq!(
            decode("[1]"),
            Err(DecodeError::NotAnObject { found: "array" })
        );
        assert_eq!(decode(r#"{"type":7}"#), Err(DecodeError::MissingType));
        let e = decode(r#"{"type":"EVT_NEW_THING"}"#).unwrap_err();
        assert!(e.is_expected());
        assert_eq!(e.to_string(), "unknown frame type \"EVT_NEW_THING\"");
        let e = decode(r#"{"type":"GET_ENV_MOD_RES","modules":5}"#).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::BadFields {
                    wire_type: "GET_ENV_MOD_RES",
                    ..
                }
            ),
            "{e}"
        );
        assert!(!e.is_expected());
        let big = format!(
            r#"{{"type":"EVT_SYNC_SOFT","pad":"{}"}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(
            decode(&big),
            Err(DecodeError::TooLarge {
                bytes: big.len(),
                limit: MAX_FRAME_BYTES
            })
        );
    }

    #[test]
    fn outbound_frames_carry_their_type_and_wire_field_names() {
        let text = encode(&GetEnvModulesRequest {
            environment_uuid: "e-1".into(),
            core_module: ModuleRef {
                group_id: "com.banalytics.box".into(),
                artifact_id: "core".into(),
                version: "1.2".into(),
            },
            core_build: None,
        })
        .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"type": "GET_ENV_MOD_REQ", "environmentUUID": "e-1",
                   "banalyticsBoxCoreModule": {"groupId": "com.banalytics.box", "artifactId": "core", "version": "1.2"}})
        );
        let text = encode(&ModuleStatusUpdate {
            environment_uuid: "e-1".into(),
            module: None,
            status: ModuleStatus::Installed,
            status_message: None,
            seq: None,
            outbox_id: None,
        })
        .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"type": "EVT_ENV_MOD_UPD_STS", "environmentUuid": "e-1", "module": null,
                   "status": "installed", "statusMessage": null})
        );
    }

    /// JSON values biased towards frame-like objects. Floats only where
    /// a value is not compared after a round trip (`serde_json` parses
    /// some floats one ulp off without its `float_roundtrip` feature).
    fn json_value_with(floats: bool) -> impl Strategy<Value = Value> {
        let float = if floats {
            any::<f64>().prop_map(|f| json!(f)).boxed()
        } else {
            any::<i32>().prop_map(|n| json!(n)).boxed()
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            float,
            ".{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("EVT_SYNC_SOFT"),
                Just("GET_ENV_MOD_RES"),
                Just("GET_ENV_MOD_REQ")
            ]
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("modules".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_value_with(true)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn no_text_makes_the_decoder_panic(text in ".{0,256}") {
            let _ = decode(&text);
        }

        #[test]
        fn no_json_value_makes_the_decoder_panic(value in json_value()) {
            let _ = decode(&value.to_string());
        }

        #[test]
        fn truncated_frames_are_refused_not_panicked_on(value in json_value(), cut in 0usize..64) {
            let text = value.to_string();
            let mut end = text.len().saturating_sub(cut);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let _ = decode(&text[..end]);
        }

        #[test]
        fn a_target_set_survives_a_round_trip(modules in prop::collection::vec(json_value_with(false), 0..8)) {
            let frame = json!({"type": "GET_ENV_MOD_RES", "modules": modules.clone()}).to_string();
            let d = decode(&frame).unwrap();
            prop_assert_eq!(d.message, Inbound::GetEnvModulesResponse(GetEnvModulesResponse { modules }));
            prop_assert!(d.unknown_fields.is_empty());
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(decode(&text), Err(DecodeError::Malformed { .. })));
    }
}
