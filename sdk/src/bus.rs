//! The typed message bus between components.
//!
//! Publish and subscribe by message type. A message type names its topic
//! ([`BusMessage::TOPIC`]), the stable name under which it crosses a plugin
//! boundary in serialized form; in-process subscribers get the value itself,
//! shared behind an `Arc`, with no serialization. Each subscriber has its own
//! bounded queue ([`SUBSCRIBER_QUEUE`]); `publish` waits for room in a full
//! queue (backpressure, nothing dropped), so a subscriber sees the messages
//! of each publisher in the order they were published.

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

/// A message that travels on the bus: plain, serializable data.
pub trait BusMessage: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The topic name, unique per message type across the host and its
    /// plugins, e.g. `"portal.inbound"`.
    const TOPIC: &'static str;
}

type Payload = Arc<dyn Any + Send + Sync>;

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Payload>,
}

struct Topic {
    type_id: TypeId,
    type_name: &'static str,
    subscribers: Arc<[Arc<Subscriber>]>,
}

/// A handle to the host's bus; clones share it.
#[derive(Clone, Default)]
pub struct Bus {
    topics: Arc<RwLock<HashMap<&'static str, Topic>>>,
    next_id: Arc<AtomicU64>,
}

impl Bus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
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
        let mut subs: Vec<_> = topic.subscribers.iter().cloned().collect();
        subs.push(Arc::new(Subscriber { id, tx }));
        topic.subscribers = subs.into();
        Subscription {
            rx,
            _type: PhantomData,
        }
    }

    /// Publishes `msg` to every current subscriber of `M` and returns how
    /// many got it. Waits while a subscriber's queue is full.
    pub async fn publish<M: BusMessage>(&self, msg: M) -> usize {
        let subscribers = match self.subscribers::<M>() {
            Some(s) => s,
            None => return 0,
        };
        let payload: Payload = Arc::new(msg);
        let mut delivered = 0;
        let mut gone = Vec::new();
        for sub in subscribers.iter() {
            match sub.tx.send(payload.clone()).await {
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

    fn forget(&self, topic: &'static str, ids: &[u64]) {
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

fn topic_of<'a, M: BusMessage>(topics: &'a mut HashMap<&'static str, Topic>) -> &'a mut Topic {
    let topic = topics.entry(M::TOPIC).or_insert_with(|| Topic {
        type_id: TypeId::of::<M>(),
        type_name: std::any::type_name::<M>(),
        subscribers: Arc::new([]),
    });
    check_type::<M>(topic);
    topic
}

fn check_type<M: BusMessage>(topic: &Topic) {
    assert!(
        topic.type_id == TypeId::of::<M>(),
        "bus topic {:?} carries {} and cannot also carry {}",
        M::TOPIC,
        topic.type_name,
        std::any::type_name::<M>()
    );
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

    #[test]
    #[should_panic(expected = "cannot also carry")]
    fn two_types_on_one_topic_is_refused() {
        let bus = Bus::new();
        let _a = bus.subscribe::<Ping>();
        let _b = bus.subscribe::<Impostor>();
    }
}
