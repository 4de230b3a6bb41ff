//! `Outbox`: bus messages for the portal, queued and handed to the link in
//! order.
//!
//! The component routes every outbound portal type to this actor
//! ([`ComponentContext::route`](banalytics_sdk::ComponentContext::route)).
//! Each message is encoded as a frame and put at the back of a bounded FIFO
//! ([`OutboxQueue`]). A drain loop, spawned by the actor, hands the front
//! frame to the [`Link`] and removes it only once the link says it was
//! written; while the link is down it waits for the link to come back, so
//! frames queued meanwhile go out in order when it does.
//!
//! **Full queue: the publisher waits.** A status such as `download_error`
//! or `installed` is exactly what an operator needs to see, so none is
//! dropped to make room. A message that finds the queue full waits in the
//! handler; behind it the actor's mailbox and then the bus subscriber queue
//! fill, and the publisher's `Bus::publish` waits: backpressure, as
//! everywhere on the bus. A warning is logged once per full spell.
//!
//! Order: frames of one type leave in the order they were published.
//! Frames of two types published back to back may swap, because the SDK
//! routes each type through its own subscription.
//!
//! Lifecycle: the queue belongs to the component, not to an actor instance,
//! so a restart of the outbox loses no frame; the front frame is resent if
//! the link failed while writing it (at least once). Frames still queued
//! when the component stops are dropped with a warning naming how many.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use actix::{fut, prelude::*};
use banalytics_messages::portal::PortalMessage;
use banalytics_sdk::{FromBus, SendError, SupervisedAddr};
use tokio::sync::{watch, Notify};
use tracing::{debug, error, warn};

use crate::{
    frame,
    link::{Link, SendFrame},
};

/// One encoded frame waiting for the portal.
#[derive(Debug, Clone)]
struct Frame {
    wire_type: &'static str,
    text: String,
}

/// The bounded FIFO of frames for the portal; shared by the component and
/// every instance of the outbox actor.
#[derive(Debug)]
pub struct OutboxQueue {
    frames: Mutex<VecDeque<Frame>>,
    capacity: usize,
    added: Notify,
    room: Notify,
}

impl OutboxQueue {
    /// An empty queue holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        OutboxQueue {
            frames: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            capacity,
            added: Notify::new(),
            room: Notify::new(),
        }
    }

    /// Frames waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most frames it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Frame>> {
        // A panic while holding the lock cannot leave the deque half
        // changed (push and pop are single calls), so a poisoned lock is
        // still a good queue.
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a frame, waiting while the queue is full.
    async fn push(&self, frame: Frame) {
        let mut warned = false;
        loop {
            {
                let mut frames = self.lock();
                if frames.len() < self.capacity {
                    frames.push_back(frame);
                    let queued = frames.len();
                    drop(frames);
                    self.added.notify_one();
                    debug!(queued, "frame for the portal queued");
                    return;
                }
            }
            if !warned {
                warn!(
                    capacity = self.capacity,
                    wire_type = frame.wire_type,
                    "outbox to the portal is full: publisher waits until the link takes frames"
                );
                warned = true;
            }
            self.room.notified().await;
        }
    }

    /// The front frame, without removing it; waits while the queue is empty.
    async fn front(&self) -> Frame {
        loop {
            if let Some(frame) = self.lock().front().cloned() {
                return frame;
            }
            self.added.notified().await;
        }
    }

    /// Removes the front frame once it was written.
    fn pop_front(&self) {
        self.lock().pop_front();
        self.room.notify_one();
    }
}

/// The outbox actor; see the module docs.
pub struct Outbox {
    queue: Arc<OutboxQueue>,
    link: SupervisedAddr<Link>,
    up: watch::Receiver<bool>,
}

impl Outbox {
    /// An outbox instance over the component's `queue`, handing frames to
    /// `link`; `up` tells whether the link is connected.
    pub fn new(
        queue: Arc<OutboxQueue>,
        link: SupervisedAddr<Link>,
        up: watch::Receiver<bool>,
    ) -> Self {
        Outbox { queue, link, up }
    }
}

impl Actor for Outbox {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let drain = drain(self.queue.clone(), self.link.clone(), self.up.clone());
        ctx.spawn(fut::wrap_future::<_, Self>(drain));
    }
}

/// Hands the front frame to the link until it is written, then the next.
async fn drain(queue: Arc<OutboxQueue>, link: SupervisedAddr<Link>, mut up: watch::Receiver<bool>) {
    loop {
        let frame = queue.front().await;
        match link.send(SendFrame(frame.text.clone())).await {
            Ok(Ok(())) => {
                queue.pop_front();
                debug!(
                    wire_type = frame.wire_type,
                    "frame handed to the portal link"
                );
            }
            Ok(Err(_link_down)) => {
                debug!(
                    wire_type = frame.wire_type,
                    queued = queue.len(),
                    "portal link down: frames wait"
                );
                if up.wait_for(|up| *up).await.is_err() {
                    return;
                }
            }
            // The link restarts: the next send waits in its mailbox.
            Err(SendError::ActorFailed { reason, .. }) => {
                warn!(wire_type = frame.wire_type, %reason, "portal link failed while sending: frame kept");
            }
            Err(e) => {
                debug!(error = %e, "portal link gone: outbox drain ends");
                return;
            }
        }
    }
}

impl<M: PortalMessage> Handler<FromBus<M>> for Outbox {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, FromBus(msg): FromBus<M>, _: &mut Context<Self>) -> Self::Result {
        let text = match frame::encode(&*msg) {
            Ok(text) => text,
            Err(e) => {
                error!(error = %e, "message for the portal cannot be encoded: dropped");
                return Box::pin(std::future::ready(()));
            }
        };
        let queue = self.queue.clone();
        Box::pin(async move {
            queue
                .push(Frame {
                    wire_type: M::WIRE_TYPE,
                    text,
                })
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(n: usize) -> Frame {
        Frame {
            wire_type: "T",
            text: n.to_string(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_pusher_wait_and_keeps_order() {
        let queue = Arc::new(OutboxQueue::new(2));
        queue.push(frame(1)).await;
        queue.push(frame(2)).await;
        let pusher = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push(frame(3)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pusher.is_finished(), "the third push waits for room");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.front().await.text, "1");
        queue.pop_front();
        tokio::time::timeout(Duration::from_secs(5), pusher)
            .await
            .expect("push completes once there is room")
            .unwrap();
        let mut got = Vec::new();
        while !queue.is_empty() {
            got.push(queue.front().await.text);
            queue.pop_front();
        }
        assert_eq!(got, ["2", "3"]);
    }
}
