//! Component and actor states, published on one board the host and the CLI read.
//!
//! The board is the single record of "what runs": supervisors write actor
//! states, the host writes component lifecycle states, and anyone may take a
//! [`StatusBoard::snapshot`] or wait for the next change with
//! [`StatusBoard::changes`].

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A component's (or an actor's) state, spelled as in the original box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Not running, by request or not yet started.
    Stopped,
    /// Being started.
    Starting,
    /// Running.
    Run,
    /// Being stopped.
    Stopping,
    /// Failed; see the reason. It may be waiting for an automatic restart.
    Error,
}

/// The state of one supervised actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorStatus {
    /// Current state.
    pub state: State,
    /// When the state was entered, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Why the actor last failed, kept after it runs again.
    pub last_error: Option<String>,
    /// How many times the actor was restarted after a failure.
    pub restarts: u32,
}

/// The state of one component instance, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// Instance name: the table name in `box.toml`.
    pub name: String,
    /// Component kind.
    pub kind: String,
    /// Where the kind comes from: `built-in`, or the plugin library's file
    /// name in `modules/`.
    #[serde(default)]
    pub origin: String,
    /// Persistent instance ID.
    pub id: String,
    /// Effective state: `ERROR` while any actor is failed.
    pub state: State,
    /// When `state` was entered, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// The reason of the current `ERROR`, if in `ERROR`.
    pub reason: Option<String>,
    /// The last failure reason, kept after recovery.
    pub last_error: Option<String>,
    /// Restarts after failure, of the component and all its actors.
    pub restart_count: u32,
    /// The component's supervised actors by name.
    pub actors: BTreeMap<String, ActorStatus>,
    /// What the component itself reports (e.g. the upgrade center's
    /// synchronisation and download progress); `null` when nothing.
    #[serde(default)]
    pub details: serde_json::Value,
    /// Messages the host refused to publish for this component (a plugin's
    /// on a topic it may not publish), counted per topic.
    #[serde(default)]
    pub refused_publications: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Entry {
    /// Registration order, which is the host's start order.
    order: usize,
    kind: String,
    origin: String,
    id: String,
    lifecycle: State,
    lifecycle_since_ms: u64,
    lifecycle_reason: Option<String>,
    last_error: Option<String>,
    restarts: u32,
    actors: BTreeMap<String, ActorStatus>,
    details: serde_json::Value,
    refused_publications: BTreeMap<String, u64>,
}

/// The shared record of every component's and actor's state.
#[derive(Clone)]
pub struct StatusBoard {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    changes: Arc<watch::Sender<u64>>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds since the Unix epoch, now: the clock of every `*_ms` field
/// of the box's statuses. On std's `SystemTime` because the SDK, which
/// every plugin links, has no calendar crate; `banalytics-home` (which
/// depends on no crate of ours) reads the same clock through `jiff`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl StatusBoard {
    /// An empty board.
    pub fn new() -> Self {
        StatusBoard {
            entries: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }

    /// Registers a component instance in `STOPPED`.
    pub fn register(&self, name: &str, kind: &str, id: &str) {
        self.update(|entries| {
            let order = entries.len();
            entries.insert(
                name.to_owned(),
                Entry {
                    order,
                    kind: kind.to_owned(),
                    origin: "built-in".to_owned(),
                    id: id.to_owned(),
                    lifecycle: State::Stopped,
                    lifecycle_since_ms: now_ms(),
                    lifecycle_reason: None,
                    last_error: None,
                    restarts: 0,
                    actors: BTreeMap::new(),
                    details: serde_json::Value::Null,
                    refused_publications: BTreeMap::new(),
                },
            );
        });
    }

    /// Records where component `name`'s kind comes from (a plugin file).
    pub fn set_origin(&self, name: &str, origin: &str) {
        self.update(|entries| {
            if let Some(e) = entries.get_mut(name) {
                e.origin = origin.to_owned();
            }
        });
    }

    /// Records a component lifecycle state (set by the host).
    pub fn set_component(&self, name: &str, state: State, reason: Option<String>) {
        self.update(|entries| {
            if let Some(e) = entries.get_mut(name) {
                if state == State::Error {
                    e.last_error.clone_from(&reason);
                }
                if state == State::Starting && e.lifecycle == State::Error {
                    e.restarts += 1;
                }
                if state == State::Stopped {
                    e.actors.clear();
                }
                e.lifecycle = state;
                e.lifecycle_since_ms = now_ms();
                e.lifecycle_reason = reason;
            }
        });
    }

    /// Records an actor state (set by its supervisor).
    pub fn set_actor(&self, component: &str, actor: &str, state: State, reason: Option<String>) {
        self.update(|entries| {
            if let Some(e) = entries.get_mut(component) {
                let a = e.actors.entry(actor.to_owned()).or_insert(ActorStatus {
                    state,
                    since_ms: 0,
                    last_error: None,
                    restarts: 0,
                });
                if state == State::Error {
                    let reason = reason.unwrap_or_else(|| "failed".to_owned());
                    e.last_error = Some(format!("actor {actor}: {reason}"));
                    a.last_error = Some(reason);
                }
                if state == State::Starting && a.state == State::Error {
                    a.restarts += 1;
                }
                a.state = state;
                a.since_ms = now_ms();
            }
        });
    }

    /// Records an actor's whole status as another board reported it: the
    /// host mirrors a plugin's actors this way, restart count included, so
    /// that a restart is counted even when its states arrive coalesced.
    pub fn mirror_actor(&self, component: &str, actor: &str, status: ActorStatus) {
        self.update(|entries| {
            if let Some(e) = entries.get_mut(component) {
                let known = e.actors.get(actor).and_then(|a| a.last_error.clone());
                if let Some(reason) = status
                    .last_error
                    .as_ref()
                    .filter(|r| Some(*r) != known.as_ref())
                {
                    e.last_error = Some(format!("actor {actor}: {reason}"));
                }
                e.actors.insert(actor.to_owned(), status);
            }
        });
    }

    /// Replaces what component `name` reports about itself.
    pub fn set_details(&self, name: &str, details: serde_json::Value) {
        self.update(|entries| {
            if let Some(e) = entries.get_mut(name) {
                e.details = details;
            }
        });
    }

    /// Counts one message the host refused to publish for component `name`
    /// on `topic`; answers how many it refused on that topic so far (0 for
    /// an unknown component), so that the caller logs the first.
    pub fn refuse_publication(&self, name: &str, topic: &str) -> u64 {
        let mut count = 0;
        self.update(|entries| {
            if let Some(e) = entries.get_mut(name) {
                let n = e.refused_publications.entry(topic.to_owned()).or_default();
                *n += 1;
                count = *n;
            }
        });
        count
    }

    /// The state of one component.
    pub fn component(&self, name: &str) -> Option<ComponentStatus> {
        let entries = self.entries.lock().expect("status board poisoned");
        entries.get(name).map(|e| view(name, e))
    }

    /// Every component, in registration (start) order.
    pub fn snapshot(&self) -> Vec<ComponentStatus> {
        let entries = self.entries.lock().expect("status board poisoned");
        let mut all: Vec<_> = entries.iter().collect();
        all.sort_by_key(|(_, e)| e.order);
        all.into_iter().map(|(n, e)| view(n, e)).collect()
    }

    /// A receiver that is marked changed after every update.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut BTreeMap<String, Entry>)) {
        {
            let mut entries = self.entries.lock().expect("status board poisoned");
            f(&mut entries);
        }
        self.changes.send_modify(|v| *v += 1);
    }
}

fn view(name: &str, e: &Entry) -> ComponentStatus {
    let failed = e
        .actors
        .iter()
        .filter(|(_, a)| a.state == State::Error)
        .max_by_key(|(_, a)| a.since_ms);
    let (state, since_ms, reason) = match (e.lifecycle, failed) {
        (State::Run, Some((actor, a))) => (
            State::Error,
            a.since_ms,
            Some(format!(
                "actor {actor}: {}",
                a.last_error.as_deref().unwrap_or("failed")
            )),
        ),
        (state, _) => (state, e.lifecycle_since_ms, e.lifecycle_reason.clone()),
    };
    ComponentStatus {
        name: name.to_owned(),
        kind: e.kind.clone(),
        origin: e.origin.clone(),
        id: e.id.clone(),
        state,
        since_ms,
        reason,
        last_error: e.last_error.clone(),
        restart_count: e.restarts + e.actors.values().map(|a| a.restarts).sum::<u32>(),
        actors: e.actors.clone(),
        details: e.details.clone(),
        refused_publications: e.refused_publications.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_actor_puts_a_running_component_in_error_with_its_reason() {
        let board = StatusBoard::new();
        board.register("c", "probe", "id");
        board.set_component("c", State::Run, None);
        board.set_actor("c", "a", State::Run, None);
        board.set_actor("c", "a", State::Error, Some("boom".into()));
        let s = board.component("c").unwrap();
        assert_eq!(s.state, State::Error);
        assert_eq!(s.reason.as_deref(), Some("actor a: boom"));
        board.set_actor("c", "a", State::Starting, None);
        board.set_actor("c", "a", State::Run, None);
        let s = board.component("c").unwrap();
        assert_eq!(s.state, State::Run);
        assert_eq!(s.restart_count, 1);
        assert_eq!(s.last_error.as_deref(), Some("actor a: boom"));
    }

    #[test]
    fn refused_publications_are_counted_per_component_and_topic() {
        let board = StatusBoard::new();
        board.register("c", "sample-echo", "id");
        board.register("d", "sample-echo", "id2");
        assert_eq!(board.refuse_publication("c", "host.restart-requested"), 1);
        assert_eq!(board.refuse_publication("c", "host.restart-requested"), 2);
        assert_eq!(board.refuse_publication("c", "probe.ping"), 1);
        assert_eq!(board.refuse_publication("gone", "probe.ping"), 0);
        let c = board.component("c").unwrap();
        assert_eq!(
            c.refused_publications,
            BTreeMap::from([
                ("host.restart-requested".to_owned(), 2),
                ("probe.ping".to_owned(), 1)
            ])
        );
        assert!(board
            .component("d")
            .unwrap()
            .refused_publications
            .is_empty());
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["refused_publications"]["host.restart-requested"], 2);
    }
}
