//! The typed message bus between components.
//!
//! Publish and subscribe by message type. A message type names its topic
//! ([`BusMessage::TOPIC`]), the stable name under which it crosses a plugin
//! boundary in serialized form; in-process subscribers get the value itself,
//! shared behind an `Arc`, with no serialization. Each subscriber has its own
//! bounded queue ([`SUBSCRIBER_QUEUE`]); `publish` waits for room in a full
//! queue (backpressure, nothing dropped), so a subscriber sees the messages
//! of each publisher in the order they were published.
//!
//! # Serialized access (plugin bridges)
//!
//! A bridge to a plugin speaks topic names and JSON bytes instead of types:
//! [`Bus::subscribe_raw`] yields the JSON of every message on a topic and
//! [`Bus::publish_raw`] delivers JSON to the topic's typed subscribers
//! (decoded once, with the decoder their `subscribe::<M>` registered) and to
//! its raw subscribers. A typed `publish` serializes only when the topic has
//! raw subscribers, once for all of them; without any, the in-process path
//! stays free of serialization.
//!
//! # The start phase
//!
//! A host starts its components one after the other, and a component
//! subscribes when it starts; a message published by an earlier component
//! (the portal's synchronisation request, on a link that came up fast)
//! would miss a later component's subscription. A bus made with
//! [`Bus::starting`] therefore keeps what is published until
//! [`Bus::started`] ([`START_BACKLOG`] per topic at most) and hands it to each
//! subscription made meanwhile, before anything newer: the components see
//! the start as if all of them had subscribed before anything was
//! published.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    marker::PhantomData,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
};

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;

/// Messages one subscriber may have waiting. Bounds memory per subscriber;
/// a publisher to a full queue waits, so a slow subscriber slows its
/// publishers instead of losing messages.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// Messages per topic a [`Bus::starting`] keeps for subscriptions made
/// later in the start phase; what is published beyond it reaches only the
/// subscribers of the moment, as after the start. Well below
/// [`SUBSCRIBER_QUEUE`], so that a new subscription always takes them.
pub const START_BACKLOG: usize = 256;

/// A message that travels on the bus: plain, serializable data.
pub trait BusMessage: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The topic name, unique per message type across the host and its
    /// plugins, e.g. `"probe.ping"`.
    const TOPIC: &'static str;
}

type Payload = Arc<dyn Any + Send + Sync>;

/// Turns a topic's JSON into its typed payload; registered by the typed
/// `subscribe::<M>` of the topic.
type Decode = fn(&[u8]) -> Result<Payload, serde_json::Error>;

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Payload>,
    /// Gets the JSON bytes (`Arc<Vec<u8>>`) instead of the typed value.
    raw: bool,
}

/// The message type of a topic, known once something subscribed by type.
struct Typed {
    type_id: TypeId,
    type_name: &'static str,
    decode: Decode,
}

struct Topic {
    typed: Option<Typed>,
    subscribers: Arc<[Arc<Subscriber>]>,
    /// What was published in the start phase, oldest first.
    held: Vec<Held>,
    /// More than [`START_BACKLOG`] were published in the start phase.
    overflowed: bool,
}

/// Where a message goes: the subscribers, and the topic's decoder and type
/// name once a typed subscription registered them.
type Route = (Arc<[Arc<Subscriber>]>, Option<(Decode, &'static str)>);

impl Topic {
    fn new() -> Self {
        Topic {
            typed: None,
            subscribers: Arc::new([]),
            held: Vec::new(),
            overflowed: false,
        }
    }

    fn route(&self) -> Route {
        (
            self.subscribers.clone(),
            self.typed.as_ref().map(|t| (t.decode, t.type_name)),
        )
    }
}

fn raw_topic<'a>(topics: &'a mut HashMap<String, Topic>, name: &str) -> &'a mut Topic {
    topics.entry(name.to_owned()).or_insert_with(Topic::new)
}

/// A message kept in the start phase: its JSON, and the value itself when
/// it was published typed.
struct Held {
    /// `None` when it could not be serialized (raw subscriptions get no
    /// such message after the start phase either).
    json: Option<Payload>,
    value: Option<Payload>,
}

/// A handle to the host's bus; clones share it.
#[derive(Clone, Default)]
pub struct Bus {
    topics: Arc<RwLock<HashMap<String, Topic>>>,
    next_id: Arc<AtomicU64>,
    /// In the start phase ([`Bus::starting`]).
    holding: Arc<std::sync::atomic::AtomicBool>,
}

/// Identifies one subscription, e.g. to leave it out of a
/// [`Bus::publish_raw_except`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriberId(u64);

/// Why serialized bytes were not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bytes are not a message of the topic's type.
    #[error("bus topic {topic:?}: cannot decode {type_name} from the message: {message}")]
    Decode {
        /// The topic.
        topic: String,
        /// The topic's message type.
        type_name: &'static str,
        /// The decoder's message.
        message: String,
    },
}

impl Bus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A bus in its start phase: what is published is also kept for the
    /// subscriptions made before [`Bus::started`] (see the module docs).
    pub fn starting() -> Self {
        let bus = Self::default();
        bus.holding.store(true, Ordering::SeqCst);
        bus
    }

    /// Ends the start phase: what was kept is let go, and a subscription
    /// gets only what is published after it, as on any bus.
    pub fn started(&self) {
        let mut topics = self.topics.write().expect("bus lock poisoned");
        self.holding.store(false, Ordering::SeqCst);
        for topic in topics.values_mut() {
            topic.held = Vec::new();
        }
    }

    /// Subscribes to every `M` published from now on.
    ///
    /// # Panics
    /// When another type already uses `M::TOPIC`: two types on one topic is a
    /// programming error that would otherwise lose messages.
    pub fn subscribe<M: BusMessage>(&self) -> Subscription<M> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut topics = self.topics.write().expect("bus lock poisoned");
        let topic = topic_of::<M>(&mut topics);
        for held in &topic.held {
            // A raw publish is decoded when it is kept, once a typed
            // subscription registered the topic's type; later, here.
            let value = match (&held.value, &held.json) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(json)) => decode::<M>(raw_bytes(json.clone()).as_slice()).ok(),
                (None, None) => None,
            };
            if let Some(value) = value {
                let _ = tx.try_send(value);
            }
        }
        let mut subs: Vec<_> = topic.subscribers.iter().cloned().collect();
        subs.push(Arc::new(Subscriber { id, tx, raw: false }));
        topic.subscribers = subs.into();
        Subscription {
            rx,
            _type: PhantomData,
        }
    }

    /// Subscribes to the JSON of every message on `topic` from now on,
    /// whatever its type and whether it was published typed or raw.
    pub fn subscribe_raw(&self, topic: &str) -> RawSubscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut topics = self.topics.write().expect("bus lock poisoned");
        let entry = raw_topic(&mut topics, topic);
        for json in entry.held.iter().filter_map(|h| h.json.clone()) {
            let _ = tx.try_send(json);
        }
        let mut subs: Vec<_> = entry.subscribers.iter().cloned().collect();
        subs.push(Arc::new(Subscriber { id, tx, raw: true }));
        entry.subscribers = subs.into();
        RawSubscription {
            rx,
            id: SubscriberId(id),
        }
    }

    /// Ends the subscription `id` now: its receiver sees the end once it has
    /// taken what was queued. For a subscription whose receiver is owned
    /// elsewhere (a bridge thread).
    pub fn unsubscribe(&self, topic: &str, id: SubscriberId) {
        self.forget(topic, &[id.0]);
    }

    /// Publishes the JSON `json` on `topic`, as [`Bus::publish_raw_except`]
    /// with no exception.
    pub async fn publish_raw(&self, topic: &str, json: Vec<u8>) -> Result<usize, BusError> {
        self.publish_raw_except(topic, json, &[]).await
    }

    /// Publishes the JSON `json` on `topic` to every subscriber but those in
    /// `except` (a bridge leaves out its own raw subscriptions, so a message
    /// does not come back to where it came from). Typed subscribers get the
    /// message decoded once; an undecodable message is refused before anyone
    /// gets it. Returns how many got it; waits while a queue is full.
    pub async fn publish_raw_except(
        &self,
        topic: &str,
        json: Vec<u8>,
        except: &[SubscriberId],
    ) -> Result<usize, BusError> {
        let json: Payload = Arc::new(json);
        let decode_error = |type_name, e: serde_json::Error| BusError::Decode {
            topic: topic.to_owned(),
            type_name,
            message: e.to_string(),
        };
        let held = self.hold(topic, raw_topic, |t| {
            let value = match &t.typed {
                Some(typed) => Some(
                    (typed.decode)(raw_bytes(json.clone()).as_slice())
                        .map_err(|e| decode_error(typed.type_name, e))?,
                ),
                None => None,
            };
            Ok(Held {
                json: Some(json.clone()),
                value,
            })
        })?;
        let (subscribers, typed) = match held {
            Some(route) => route,
            None => {
                let topics = self.topics.read().expect("bus lock poisoned");
                match topics.get(topic) {
                    Some(t) => t.route(),
                    None => return Ok(0),
                }
            }
        };
        let wanted = |s: &Subscriber| !except.iter().any(|e| e.0 == s.id);
        let value = match typed {
            Some((decode, type_name)) if subscribers.iter().any(|s| !s.raw && wanted(s)) => Some(
                decode(raw_bytes(json.clone()).as_slice())
                    .map_err(|e| decode_error(type_name, e))?,
            ),
            _ => None,
        };
        let bytes = json;
        let mut delivered = 0;
        let mut gone = Vec::new();
        for sub in subscribers.iter().filter(|s| wanted(s)) {
            let payload = match (&value, sub.raw) {
                (_, true) => bytes.clone(),
                (Some(v), false) => v.clone(),
                (None, false) => continue,
            };
            match sub.tx.send(payload).await {
                Ok(()) => delivered += 1,
                Err(_) => gone.push(sub.id),
            }
        }
        if !gone.is_empty() {
            self.forget(topic, &gone);
        }
        Ok(delivered)
    }

    /// Publishes `msg` to every current subscriber of `M` and returns how
    /// many got it. Waits while a subscriber's queue is full.
    pub async fn publish<M: BusMessage>(&self, msg: M) -> usize {
        let payload: Payload = Arc::new(msg);
        let msg = payload.downcast_ref::<M>().expect("just made");
        let json = || match serde_json::to_vec(msg) {
            Ok(json) => Some(Arc::new(json) as Payload),
            Err(e) => {
                tracing::error!(topic = M::TOPIC, error = %e, "cannot serialize a bus message for raw subscribers; they do not get it");
                None
            }
        };
        // Serialized once: for the start phase's later raw subscribers
        // (kept then), else only when a raw subscriber wants the bytes.
        let mut kept_json = None;
        let held = self.hold(
            M::TOPIC,
            |t, _| topic_of::<M>(t),
            |_| {
                kept_json = json();
                Ok(Held {
                    json: kept_json.clone(),
                    value: Some(payload.clone()),
                })
            },
        );
        let subscribers = match held.expect("a typed message is never refused") {
            Some((subscribers, _)) => subscribers,
            None => match self.subscribers::<M>() {
                Some(s) => s,
                None => return 0,
            },
        };
        let bytes = match subscribers.iter().any(|s| s.raw) {
            false => None,
            true => kept_json.or_else(json),
        };
        let mut delivered = 0;
        let mut gone = Vec::new();
        for sub in subscribers.iter() {
            let payload = match (sub.raw, &bytes) {
                (false, _) => payload.clone(),
                (true, Some(b)) => b.clone(),
                (true, None) => continue,
            };
            match sub.tx.send(payload).await {
                Ok(()) => delivered += 1,
                Err(_) => gone.push(sub.id),
            }
        }
        if !gone.is_empty() {
            self.forget(M::TOPIC, &gone);
        }
        delivered
    }

    /// How many subscribers `M` has now.
    pub fn subscriber_count<M: BusMessage>(&self) -> usize {
        self.subscribers::<M>().map_or(0, |s| s.len())
    }

    fn subscribers<M: BusMessage>(&self) -> Option<Arc<[Arc<Subscriber>]>> {
        let topics = self.topics.read().expect("bus lock poisoned");
        let topic = topics.get(M::TOPIC)?;
        check_type::<M>(topic);
        Some(topic.subscribers.clone())
    }

    /// In the start phase, keeps the message `keep` gives for later
    /// subscriptions and returns the topic's subscribers of the moment and
    /// its decoder, under one lock: each subscription gets the message
    /// exactly once, from the one or the other. `Ok(None)` after the start
    /// phase: the caller looks the subscribers up itself.
    fn hold(
        &self,
        topic: &str,
        topic_of: for<'t, 'n> fn(&'t mut HashMap<String, Topic>, &'n str) -> &'t mut Topic,
        keep: impl FnOnce(&Topic) -> Result<Held, BusError>,
    ) -> Result<Option<Route>, BusError> {
        if !self.holding.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let mut topics = self.topics.write().expect("bus lock poisoned");
        if !self.holding.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let entry = topic_of(&mut topics, topic);
        let held = keep(entry)?;
        if entry.held.len() < START_BACKLOG {
            entry.held.push(held);
        } else if !entry.overflowed {
            entry.overflowed = true;
            tracing::warn!(topic, kept = START_BACKLOG, "more messages in the start phase than are kept; components that subscribe later get only the first ones");
        }
        Ok(Some(entry.route()))
    }

    fn forget(&self, topic: &str, ids: &[u64]) {
        let mut topics = self.topics.write().expect("bus lock poisoned");
        if let Some(t) = topics.get_mut(topic) {
            let subs: Vec<_> = t
                .subscribers
                .iter()
                .filter(|s| !ids.contains(&s.id))
                .cloned()
                .collect();
            t.subscribers = subs.into();
        }
    }
}

fn topic_of<M: BusMessage>(topics: &mut HashMap<String, Topic>) -> &mut Topic {
    let topic = raw_topic(topics, M::TOPIC);
    check_type::<M>(topic);
    topic.typed.get_or_insert_with(|| Typed {
        type_id: TypeId::of::<M>(),
        type_name: std::any::type_name::<M>(),
        decode: decode::<M>,
    });
    topic
}

fn decode<M: BusMessage>(json: &[u8]) -> Result<Payload, serde_json::Error> {
    Ok(Arc::new(serde_json::from_slice::<M>(json)?))
}

fn check_type<M: BusMessage>(topic: &Topic) {
    if let Some(typed) = &topic.typed {
        assert!(
            typed.type_id == TypeId::of::<M>(),
            "bus topic {:?} carries {} and cannot also carry {}",
            M::TOPIC,
            typed.type_name,
            std::any::type_name::<M>()
        );
    }
}

/// A bus message handed to a supervised actor by
/// [`ComponentContext::route`](crate::ComponentContext::route).
pub struct FromBus<M>(pub Arc<M>);

impl<M: 'static> actix::Message for FromBus<M> {
    type Result = ();
}

/// The receiving end of a subscription; dropping it unsubscribes.
pub struct Subscription<M> {
    rx: mpsc::Receiver<Payload>,
    _type: PhantomData<fn() -> M>,
}

impl<M: BusMessage> Subscription<M> {
    /// The next message; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Arc<M>> {
        let payload = self.rx.recv().await?;
        Some(
            payload
                .downcast::<M>()
                .expect("topic type checked at subscribe"),
        )
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<M>> {
        let payload = self.rx.try_recv().ok()?;
        Some(
            payload
                .downcast::<M>()
                .expect("topic type checked at subscribe"),
        )
    }
}

/// The receiving end of a [`Bus::subscribe_raw`]: the JSON of each
/// message. Dropping it unsubscribes.
pub struct RawSubscription {
    rx: mpsc::Receiver<Payload>,
    id: SubscriberId,
}

impl RawSubscription {
    /// This subscription's ID.
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    /// The next message's JSON; `None` once unsubscribed or the bus is gone.
    pub async fn recv(&mut self) -> Option<Arc<Vec<u8>>> {
        let payload = self.rx.recv().await?;
        Some(raw_bytes(payload))
    }

    /// As [`RawSubscription::recv`], blocking the thread: for a bridge thread
    /// outside any async runtime (it panics inside one).
    pub fn blocking_recv(&mut self) -> Option<Arc<Vec<u8>>> {
        let payload = self.rx.blocking_recv()?;
        Some(raw_bytes(payload))
    }

    /// The next message's JSON if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Vec<u8>>> {
        let payload = self.rx.try_recv().ok()?;
        Some(raw_bytes(payload))
    }
}

fn raw_bytes(payload: Payload) -> Arc<Vec<u8>> {
    payload
        .downcast::<Vec<u8>>()
        .expect("raw subscribers get bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Ping(u32);
    impl BusMessage for Ping {
        const TOPIC: &'static str = "test.ping";
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Impostor;
    impl BusMessage for Impostor {
        const TOPIC: &'static str = "test.ping";
    }

    #[tokio::test]
    async fn every_subscriber_gets_each_senders_messages_in_order() {
        let bus = Bus::new();
        let mut a = bus.subscribe::<Ping>();
        let mut b = bus.subscribe::<Ping>();
        for i in 0..100 {
            assert_eq!(bus.publish(Ping(i)).await, 2);
        }
        for i in 0..100 {
            assert_eq!(*a.recv().await.unwrap(), Ping(i));
            assert_eq!(*b.recv().await.unwrap(), Ping(i));
        }
    }

    #[tokio::test]
    async fn a_dropped_subscription_is_forgotten() {
        let bus = Bus::new();
        let a = bus.subscribe::<Ping>();
        drop(a);
        assert_eq!(bus.publish(Ping(1)).await, 0);
        assert_eq!(bus.subscriber_count::<Ping>(), 0);
    }

    #[tokio::test]
    async fn a_full_subscriber_applies_backpressure_without_loss() {
        let bus = Bus::new();
        let mut a = bus.subscribe::<Ping>();
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..(SUBSCRIBER_QUEUE as u32 * 3) {
                    bus.publish(Ping(i)).await;
                }
            })
        };
        for i in 0..(SUBSCRIBER_QUEUE as u32 * 3) {
            assert_eq!(a.recv().await.unwrap().0, i);
        }
        publisher.await.unwrap();
    }

    #[tokio::test]
    async fn raw_subscribers_get_json_of_typed_publishes_and_typed_get_raw_publishes_decoded() {
        let bus = Bus::new();
        let mut raw = bus.subscribe_raw(Ping::TOPIC);
        let mut typed = bus.subscribe::<Ping>();
        assert_eq!(bus.publish(Ping(7)).await, 2);
        assert_eq!(*raw.recv().await.unwrap(), b"7".to_vec());
        assert_eq!(*typed.recv().await.unwrap(), Ping(7));

        assert_eq!(bus.publish_raw(Ping::TOPIC, b"8".to_vec()).await, Ok(2));
        assert_eq!(*typed.recv().await.unwrap(), Ping(8));
        assert_eq!(*raw.recv().await.unwrap(), b"8".to_vec());

        let except = [raw.id()];
        assert_eq!(
            bus.publish_raw_except(Ping::TOPIC, b"9".to_vec(), &except)
                .await,
            Ok(1)
        );
        assert_eq!(*typed.recv().await.unwrap(), Ping(9));
        assert!(raw.try_recv().is_none(), "left out by except");
    }

    #[tokio::test]
    async fn undecodable_raw_publishes_are_refused_before_anyone_gets_them() {
        let bus = Bus::new();
        let mut raw = bus.subscribe_raw(Ping::TOPIC);
        let _typed = bus.subscribe::<Ping>();
        let err = bus
            .publish_raw(Ping::TOPIC, b"\"x\"".to_vec())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("test.ping"), "{err}");
        assert!(raw.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_raw_only_topic_needs_no_type_and_unsubscribe_ends_it() {
        let bus = Bus::new();
        let mut raw = bus.subscribe_raw("any.topic");
        assert_eq!(bus.publish_raw("any.topic", b"{}".to_vec()).await, Ok(1));
        bus.unsubscribe("any.topic", raw.id());
        assert_eq!(*raw.recv().await.unwrap(), b"{}".to_vec());
        assert!(raw.recv().await.is_none());
        assert_eq!(bus.publish_raw("none", b"1".to_vec()).await, Ok(0));
    }

    #[tokio::test]
    async fn in_the_start_phase_a_later_subscription_gets_what_was_published_before_it_first() {
        let bus = Bus::starting();
        assert_eq!(bus.publish(Ping(1)).await, 0, "nobody subscribed yet");
        assert_eq!(bus.publish_raw(Ping::TOPIC, b"2".to_vec()).await, Ok(0));
        let mut early = bus.subscribe::<Ping>();
        let mut raw = bus.subscribe_raw(Ping::TOPIC);
        assert_eq!(bus.publish(Ping(3)).await, 2);
        let mut late = bus.subscribe::<Ping>();
        for sub in [&mut early, &mut late] {
            for i in 1..=3 {
                assert_eq!(*sub.recv().await.unwrap(), Ping(i), "each once, in order");
            }
            assert!(sub.try_recv().is_none());
        }
        for json in [b"1", b"2", b"3"] {
            assert_eq!(*raw.recv().await.unwrap(), json.to_vec());
        }
        assert!(raw.try_recv().is_none());

        bus.started();
        assert_eq!(bus.publish(Ping(4)).await, 3);
        let mut after = bus.subscribe::<Ping>();
        assert!(
            after.try_recv().is_none(),
            "after the start, only what comes"
        );
        assert_eq!(bus.publish(Ping(5)).await, 4);
        assert_eq!(*after.recv().await.unwrap(), Ping(5));
    }

    #[tokio::test]
    async fn the_start_phase_keeps_a_bounded_number_and_refuses_undecodable_bytes() {
        let bus = Bus::starting();
        let _typed = bus.subscribe::<Ping>();
        assert!(bus
            .publish_raw(Ping::TOPIC, b"\"x\"".to_vec())
            .await
            .is_err());
        for i in 0..(START_BACKLOG as u32 + 10) {
            bus.publish(Ping(i)).await;
        }
        let mut late = bus.subscribe::<Ping>();
        for i in 0..START_BACKLOG as u32 {
            assert_eq!(late.try_recv().unwrap().0, i);
        }
        assert!(late.try_recv().is_none());
    }

    #[test]
    #[should_panic(expected = "cannot also carry")]
    fn two_types_on_one_topic_is_refused() {
        let bus = Bus::new();
        let _a = bus.subscribe::<Ping>();
        let _b = bus.subscribe::<Impostor>();
    }
}
