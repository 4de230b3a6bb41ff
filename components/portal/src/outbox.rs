//! `Outbox`: bus messages for the portal, handed to the link in order:
//! durable statuses from the home's portal outbox on disk, everything else
//! from a bounded queue in memory.
//!
//! The component routes every outbound portal type to this actor
//! ([`ComponentContext::route`](banalytics_sdk::ComponentContext::route)).
//! A drain loop, spawned by the actor, sends while the link is up: at
//! link-up and whenever something new arrives, first the durable statuses,
//! then the queued frames.
//!
//! **Durable statuses** (a `ModuleStatusUpdate` with a `seq`) are on disk
//! already, in `state/portal-outbox/` ([`banalytics_home::outbox`]): the
//! upgrade center appended them before publishing, and the bus message only
//! nudges the drain ([`DurableOutbox`]). The drain reads the oldest
//! [`CONFIRM_EVERY`] entries, writes each as a frame with its `seq`, asks
//! the portal to confirm it read them ([`ConfirmFrames`]: a ping, then its
//! pong) and only then removes them, so a status survives a restart, a
//! SIGKILL and a link that dies with frames in flight. Anything that goes
//! wrong before the removal sends the batch again later; the portal drops
//! a status it has by its `seq`. A frame written is not a frame received:
//! removing entries on the write alone would lose what a dying link had in
//! flight.
//!
//! **Other frames** (`GET_ENV_MOD_REQ`, statuses without a `seq`) are
//! encoded and put at the back of a bounded FIFO ([`OutboxQueue`]); the
//! drain hands the front frame to the [`Link`] and removes it once the link
//! says it was written.
//!
//! **Full queue: the publisher waits.** A status such as `download_error`
//! or `installed` is exactly what an operator needs to see, so none is
//! dropped to make room. A message that finds the queue full waits in the
//! handler; behind it the actor's mailbox and then the bus subscriber queue
//! fill, and the publisher's `Bus::publish` waits: backpressure, as
//! everywhere on the bus. A warning is logged once per full spell. The
//! disk outbox has its own bound, where the producer is refused.
//!
//! Order: durable statuses leave in `seq` order; frames of one type queued
//! in memory leave in the order they were published. Frames of two types
//! published back to back may swap, because the SDK routes each type
//! through its own subscription.
//!
//! Lifecycle: the queue belongs to the component, not to an actor instance,
//! so a restart of the outbox loses no frame; the front frame is resent if
//! the link failed while writing it (at least once). Frames still queued in
//! memory when the component stops are dropped with a warning naming how
//! many; durable statuses stay on disk for the next start.

use std::{
    collections::VecDeque,
    path::Path,
    sync::{Arc, Mutex},
};

use actix::{fut, prelude::*};
use banalytics_home::{failpoint::failpoint, outbox, Layout};
use banalytics_messages::portal::{GetEnvModulesRequest, ModuleStatusUpdate, PortalMessage};
use banalytics_sdk::{FromBus, SendError, SupervisedAddr};
use tokio::sync::{watch, Notify};
use tracing::{debug, error, warn};

use crate::{
    frame,
    link::{ConfirmFrames, Link, SendFrame},
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
    #[cfg(test)]
    async fn front(&self) -> Frame {
        loop {
            if let Some(frame) = self.try_front() {
                return frame;
            }
            self.added.notified().await;
        }
    }

    /// The front frame, without removing it, if there is one.
    fn try_front(&self) -> Option<Frame> {
        self.lock().front().cloned()
    }

    /// Removes the front frame once it was written.
    fn pop_front(&self) {
        self.lock().pop_front();
        self.room.notify_one();
    }
}

/// The durable statuses: the home's portal outbox on disk
/// ([`banalytics_home::outbox`]), which the upgrade center appends to and
/// the drain empties; shared by the component and every instance of the
/// outbox actor.
#[derive(Debug)]
pub struct DurableOutbox {
    layout: Layout,
    nudged: Notify,
}

impl DurableOutbox {
    /// The outbox of the home `home`.
    pub fn new(home: &Path) -> Self {
        DurableOutbox {
            layout: Layout::new(home),
            nudged: Notify::new(),
        }
    }

    /// Wakes the drain: an entry was appended.
    pub fn nudge(&self) {
        self.nudged.notify_one();
    }

    /// Entries waiting on disk; 0 when the folder cannot be read (logged).
    pub async fn count(&self) -> usize {
        let layout = self.layout.clone();
        match off_thread(move || outbox::count(&layout)).await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "cannot count the durable statuses for the portal");
                0
            }
        }
    }

    /// The oldest entries, at most [`CONFIRM_EVERY`].
    /// The outbox's id and its oldest entries.
    async fn oldest(&self) -> Result<(String, Vec<(u64, Vec<u8>)>), outbox::OutboxError> {
        let layout = self.layout.clone();
        off_thread(move || {
            let entries = outbox::pending(&layout, CONFIRM_EVERY)?;
            Ok((outbox::id(&layout)?, entries))
        })
        .await
    }

    async fn remove(&self, seqs: Vec<u64>) -> Result<(), outbox::OutboxError> {
        let layout = self.layout.clone();
        off_thread(move || outbox::remove_all(&layout, &seqs)).await
    }
}

/// Durable statuses sent before the portal is asked to confirm them
/// ([`ConfirmFrames`]): the most that are sent again after a link lost
/// before the confirmation, and the most entries read into memory at once
/// (at most 4 MiB with [`outbox::MAX_ENTRY_BYTES`]).
pub const CONFIRM_EVERY: usize = 64;

/// Runs blocking file work on tokio's blocking pool, off the actor's
/// thread. A panic there is resumed here, so it stays the actor's failure.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The outbox actor; see the module docs.
pub struct Outbox {
    queue: Arc<OutboxQueue>,
    durable: Arc<DurableOutbox>,
    link: SupervisedAddr<Link>,
    up: watch::Receiver<bool>,
}

impl Outbox {
    /// An outbox instance over the component's `queue` and `durable`
    /// outbox, handing frames to `link`; `up` tells whether the link is
    /// connected.
    pub fn new(
        queue: Arc<OutboxQueue>,
        durable: Arc<DurableOutbox>,
        link: SupervisedAddr<Link>,
        up: watch::Receiver<bool>,
    ) -> Self {
        Outbox {
            queue,
            durable,
            link,
            up,
        }
    }
}

impl Actor for Outbox {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let drain = drain(
            self.queue.clone(),
            self.durable.clone(),
            self.link.clone(),
            self.up.clone(),
        );
        ctx.spawn(fut::wrap_future::<_, Self>(drain));
    }
}

/// How a round of sends ended.
enum Round {
    /// Everything there was is sent.
    Done,
    /// The link is down (or restarting): wait for it.
    LinkDown,
    /// The link actor is gone: the component stops.
    Gone,
}

/// While the link is up: the durable statuses, oldest first, then the
/// frames queued in memory; then waits for a nudge, a queued frame or a
/// change of the link.
async fn drain(
    queue: Arc<OutboxQueue>,
    durable: Arc<DurableOutbox>,
    link: SupervisedAddr<Link>,
    mut up: watch::Receiver<bool>,
) {
    loop {
        if up.wait_for(|up| *up).await.is_err() {
            return;
        }
        let round = match send_durable(&durable, &link).await {
            Round::Done => send_queued(&queue, &link).await,
            other => other,
        };
        match round {
            Round::Done => {}
            Round::LinkDown => {
                debug!(queued = queue.len(), "portal link down: frames wait");
                continue;
            }
            Round::Gone => {
                debug!("portal link gone: outbox drain ends");
                return;
            }
        }
        tokio::select! {
            _ = durable.nudged.notified() => {}
            _ = queue.added.notified() => {}
            changed = up.changed() => if changed.is_err() { return },
        }
    }
}

/// Sends one frame; how the send ended, `None` when it was written.
async fn send(link: &SupervisedAddr<Link>, text: String, wire_type: &str) -> Option<Round> {
    match link.send(SendFrame(text)).await {
        Ok(Ok(())) => None,
        Ok(Err(_link_down)) => Some(Round::LinkDown),
        // The link restarts: the next send waits in its mailbox.
        Err(SendError::ActorFailed { reason, .. }) => {
            warn!(wire_type, %reason, "portal link failed while sending: frame kept");
            Some(Round::LinkDown)
        }
        Err(_) => Some(Round::Gone),
    }
}

/// Sends the durable statuses in batches of [`CONFIRM_EVERY`], oldest
/// first; each batch is removed from disk only once the portal confirmed
/// it ([`ConfirmFrames`]), so a status is sent again after any failure
/// before that (the portal drops one it has by its `seq`), never lost.
async fn send_durable(durable: &DurableOutbox, link: &SupervisedAddr<Link>) -> Round {
    loop {
        let (outbox_id, entries) = match durable.oldest().await {
            Ok(oldest) => oldest,
            Err(e) => {
                // Tried again at the next nudge or link-up.
                error!(error = %e, "cannot read the durable statuses for the portal");
                return Round::Done;
            }
        };
        if entries.is_empty() {
            return Round::Done;
        }
        let mut sent = Vec::with_capacity(entries.len());
        for (seq, bytes) in entries {
            let text = match status_frame(&outbox_id, seq, &bytes) {
                Ok(text) => text,
                Err(reason) => {
                    // Nothing can ever send it; keeping it would stop every
                    // status behind it.
                    error!(seq, %reason, entry = %String::from_utf8_lossy(&bytes), "durable status cannot be read: removed unsent");
                    sent.push(seq);
                    continue;
                }
            };
            if let Some(round) = send(link, text, ModuleStatusUpdate::WIRE_TYPE).await {
                return round;
            }
            debug!(seq, "durable status written to the portal");
            sent.push(seq);
        }
        match link.send(ConfirmFrames).await {
            Ok(Ok(())) => {}
            Ok(Err(_link_down)) => return Round::LinkDown,
            Err(SendError::ActorFailed { reason, .. }) => {
                warn!(%reason, "portal link failed while confirming: statuses kept");
                return Round::LinkDown;
            }
            Err(_) => return Round::Gone,
        }
        failpoint("portal-outbox.confirmed");
        let (first, last, n) = (sent[0], sent[sent.len() - 1], sent.len());
        if let Err(e) = durable.remove(sent).await {
            // They go again at the next nudge or link-up; the portal drops
            // them by their seq.
            error!(error = %e, "cannot remove durable statuses the portal has");
            return Round::Done;
        }
        debug!(
            first,
            last,
            statuses = n,
            "durable statuses confirmed by the portal and removed"
        );
    }
}

/// The frame of durable entry `seq` of outbox `outbox_id`: the status it
/// holds, with its `seq` and `outboxId`.
fn status_frame(outbox_id: &str, seq: u64, entry: &[u8]) -> Result<String, EntryError> {
    let mut status: ModuleStatusUpdate = serde_json::from_slice(entry)?;
    status.seq = Some(seq);
    status.outbox_id = Some(outbox_id.to_owned());
    Ok(frame::encode(&status)?)
}

/// A durable entry that is no status frame.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    /// Not a status's JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Not encodable as a frame.
    #[error("{0}")]
    Encode(#[from] frame::EncodeError),
}

/// Sends the frames queued in memory, front first, each removed once
/// written.
async fn send_queued(queue: &OutboxQueue, link: &SupervisedAddr<Link>) -> Round {
    while let Some(frame) = queue.try_front() {
        if let Some(round) = send(link, frame.text.clone(), frame.wire_type).await {
            return round;
        }
        queue.pop_front();
        debug!(
            wire_type = frame.wire_type,
            "frame handed to the portal link"
        );
    }
    Round::Done
}

impl Handler<FromBus<GetEnvModulesRequest>> for Outbox {
    type Result = ResponseFuture<()>;

    fn handle(
        &mut self,
        FromBus(msg): FromBus<GetEnvModulesRequest>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        self.enqueue(&*msg)
    }
}

impl Handler<FromBus<ModuleStatusUpdate>> for Outbox {
    type Result = ResponseFuture<()>;

    fn handle(
        &mut self,
        FromBus(msg): FromBus<ModuleStatusUpdate>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        match msg.seq {
            // On disk already: the drain sends it from there.
            Some(seq) => {
                debug!(seq, "durable status announced");
                self.durable.nudge();
                Box::pin(std::future::ready(()))
            }
            None => self.enqueue(&*msg),
        }
    }
}

impl Outbox {
    /// Encodes `msg` and queues it in memory, waiting while the queue is
    /// full.
    fn enqueue<M: PortalMessage>(&self, msg: &M) -> ResponseFuture<()> {
        let text = match frame::encode(msg) {
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
        while queue.len() > 0 {
            got.push(queue.front().await.text);
            queue.pop_front();
        }
        assert_eq!(got, ["2", "3"]);
    }
}
