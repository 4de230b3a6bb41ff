//! `exchange`, a control request: publish one message on the host bus and
//! answer with the first message on a reply topic, both as JSON.
//!
//! It lets an operator (and the whole-system tests) talk to any component of
//! a running host, a plugin component included, through the serialized bus
//! path a plugin bridge uses, without building a client component. Only
//! the control socket's owner can ask (the socket is mode 0600).

use std::time::Duration;

use banalytics_sdk::Bus;
use serde::{Deserialize, Serialize};

use crate::control::Response;

/// The longest an exchange waits for its reply; below the CLI's own
/// timeout ([`crate::control::CLIENT_TIMEOUT`]), so the CLI always gets an
/// answer.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// What to publish and where the reply comes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    /// The topic to publish on, e.g. `"probe.ping"`.
    pub topic: String,
    /// The message, as the topic's JSON.
    pub message: serde_json::Value,
    /// The topic of the reply, e.g. `"probe.pong"`.
    pub reply_topic: String,
    /// How long to wait for the reply, at most [`MAX_WAIT`].
    pub timeout_ms: u64,
}

/// Subscribes to the reply topic, publishes, and answers with the first
/// reply (as `data`), or says why there is none.
pub async fn answer(bus: &Bus, x: Exchange) -> Response {
    let refused = |message: String| Response {
        ok: false,
        message: Some(message),
        data: None,
    };
    let mut replies = bus.subscribe_raw(&x.reply_topic);
    let json = serde_json::to_vec(&x.message).expect("a json value serializes");
    match bus.publish_raw(&x.topic, json).await {
        Err(e) => return refused(e.to_string()),
        Ok(0) => return refused(format!("no component subscribes to {:?}", x.topic)),
        Ok(_) => {}
    }
    let wait = Duration::from_millis(x.timeout_ms).min(MAX_WAIT);
    match tokio::time::timeout(wait, replies.recv()).await {
        Ok(Some(reply)) => match serde_json::from_slice(&reply) {
            Ok(data) => Response {
                ok: true,
                message: None,
                data: Some(data),
            },
            Err(e) => refused(format!("unreadable reply on {:?}: {e}", x.reply_topic)),
        },
        _ => refused(format!(
            "no message on {:?} within {} ms",
            x.reply_topic,
            wait.as_millis()
        )),
    }
}
