//! `Restarter`: once a staged set is complete, asks the host to restart the
//! box so that `run` applies it.
//!
//! The statuses of the synchronisation were appended to the portal outbox
//! on disk and announced to Portal Integration before this runs (a bus
//! publish returns once the subscriber has the message). Before asking for
//! the restart, the Restarter asks Portal Integration how many frames the
//! portal does not have yet, in memory and on disk ([`PortalOutboxQuery`]),
//! until none, for at most `status_flush_timeout_ms`: the host stops the
//! link when it restarts. A durable status not confirmed by then is sent
//! after the restart; waiting here only makes the portal see it sooner.
//!
//! The upgrade center's `apply` decides when ([`ApplyPolicy`]): at once
//! (the default), in the next maintenance window, or once approved. A
//! restart that waits runs as a future of this actor, so that the
//! approval ([`Approve`], or `ApproveStagedSet` from the CLI) is handled
//! meanwhile; a newer staged set replaces the one that waits. An approval
//! applies the staged set at once in either waiting mode. When the window
//! closes while the statuses are flushed, the restart waits for the next
//! window. The wait itself is in memory; what survives a restart of the
//! box or of this actor is the hold (`banalytics_home::hold`) that the
//! synchronisation wrote before it staged the set: the host does not apply
//! a held set when it starts, and this actor, when it starts, finds the
//! held set and waits for its turn again. The hold is removed right
//! before the restart is asked for; a kill in between applies the set at
//! the next start, when its turn had come.

use std::time::Duration;

use actix::prelude::*;
use banalytics_home::{hold, Layout, TargetSetId};
use banalytics_messages::{
    portal::{PortalOutboxQuery, PortalOutboxState},
    upgrade::{ApprovalHandled, ApproveStagedSet, RestartMode, RestartRequested},
};
use banalytics_sdk::{Bus, FromBus};
use tokio::sync::oneshot;
use tracing::{error, info, info_span, warn, Instrument};

use crate::schedule::{ApplyMode, ApplyPolicy, WindowState};

/// Restart the box to apply the staged set (when the [`ApplyPolicy`]
/// allows).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestartToApply {
    /// Why, for the log.
    pub reason: String,
    /// The staged set's id, which a portal approval names.
    pub set_id: Option<TargetSetId>,
}

/// Apply the staged set that waits now. Answers whether one waited (the
/// set named by `set_id`, when given).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Approve {
    /// Who approved, for the log: `cli`, `portal`.
    pub by: String,
    /// Only this set.
    pub set_id: Option<TargetSetId>,
}

/// Which staged set waits for its restart, if any.
#[derive(Message)]
#[rtype(result = "Option<TargetSetId>")]
pub struct WaitingSet;

/// Stop waiting to apply the staged set: the portal's target set is no
/// longer it. Answers whether one waited.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct ForgetWaitingSet;

struct Pending {
    set_id: Option<TargetSetId>,
    approve: Option<oneshot::Sender<String>>,
    handle: SpawnHandle,
}

/// The Restarter actor.
pub struct Restarter {
    bus: Bus,
    mode: RestartMode,
    flush_timeout: Duration,
    policy: ApplyPolicy,
    pending: Option<Pending>,
    /// The home whose held staged set this actor waits for (see the
    /// module docs); `None`: no hold is read or removed.
    home: Option<Layout>,
}

/// How often the outbox is asked while statuses are still queued.
pub(crate) const FLUSH_POLL: Duration = Duration::from_millis(50);

impl Restarter {
    /// A restarter that restarts with `mode`, waiting at most
    /// `flush_timeout` for the queued statuses to leave. The program of
    /// `RestartMode::Command` is the host's to read from `box.toml`.
    pub fn new(bus: Bus, mode: RestartMode, flush_timeout: Duration) -> Self {
        Restarter {
            bus,
            mode,
            flush_timeout,
            policy: ApplyPolicy::default(),
            pending: None,
            home: None,
        }
    }

    /// The same restarter, waiting again at start for a staged set of
    /// `layout` that a hold names, and removing the hold before it asks
    /// for the restart.
    pub fn with_home(mut self, layout: Layout) -> Self {
        self.home = Some(layout);
        self
    }

    /// The same restarter, restarting when `policy` allows.
    pub fn with_policy(mut self, policy: ApplyPolicy) -> Self {
        self.policy = policy;
        self
    }
}

impl Actor for Restarter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(held) = self.home.as_ref().and_then(hold::of_staged) else {
            return;
        };
        info!(waits_for = %held.waits_for, set = ?held.set_id, "a staged set is held for its apply policy: waiting for its turn again");
        // Handled here, before any message: a synchronisation that asks
        // which set waits already hears of this one.
        let wait = self.handle(
            RestartToApply {
                reason: format!(
                    "staged {} modules (held since before this start)",
                    held.modules.len()
                ),
                set_id: held.set_id,
            },
            ctx,
        );
        ctx.spawn(actix::fut::wrap_future(wait));
    }
}

/// Removes the hold of `home`'s staged set, right before the restart that
/// applies it is asked for. `false` when it cannot be removed: then no
/// restart is asked for, since the next start would not apply the set and
/// this actor would ask again at once, a restart loop.
fn lift_hold(home: Option<&Layout>) -> bool {
    let Some(layout) = home else {
        return true;
    };
    match hold::lift(layout) {
        Ok(()) => true,
        Err(e) => {
            error!(error = %e, file = %layout.state().join(hold::HOLD_FILE).display(), "cannot remove the apply hold: no restart; the staged set stays staged (`banalytics-box apply` on the stopped box applies it)");
            false
        }
    }
}

impl Handler<RestartToApply> for Restarter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: RestartToApply, ctx: &mut Context<Self>) -> Self::Result {
        let (bus, mode, timeout) = (self.bus.clone(), self.mode, self.flush_timeout);
        let span = info_span!("restarter.restart_to_apply", ?mode, reason = %msg.reason);
        let home = self.home.clone();
        if self.policy.mode == ApplyMode::Immediately {
            return Box::pin(
                async move {
                    let flushed = tokio::time::timeout(timeout, flush(&bus)).await.is_ok();
                    // A hold left from an earlier policy.
                    if !lift_hold(home.as_ref()) {
                        return;
                    }
                    info!(?mode, flushed, reason = %msg.reason, "restarting to apply the staged set");
                    bus.publish(RestartRequested {
                        mode,
                        reason: msg.reason,
                    })
                    .await;
                }
                .instrument(span),
            );
        }
        if let Some(old) = self.pending.take() {
            info!(set = ?old.set_id, "a newer staged set replaces the one that waited");
            ctx.cancel_future(old.handle);
        }
        let (approve, approved) = oneshot::channel();
        let policy = self.policy.clone();
        let reason = msg.reason.clone();
        let waits = policy.waits_for();
        span.in_scope(|| info!(waits_for = waits.as_deref().unwrap_or("nothing"), set = ?msg.set_id, "staged set waits for its restart"));
        let wait = async move {
            let why = wait_turn(&policy, approved, &bus, timeout).await;
            if !lift_hold(home.as_ref()) {
                return;
            }
            info!(?mode, %why, reason = %reason, "restarting to apply the staged set");
            bus.publish(RestartRequested {
                mode,
                reason: format!("{reason} ({why})"),
            })
            .await;
        }
        .instrument(span);
        let handle = ctx.spawn(wait.into_actor(self).map(|(), act, _| act.pending = None));
        self.pending = Some(Pending {
            set_id: msg.set_id,
            approve: Some(approve),
            handle,
        });
        Box::pin(async {})
    }
}

impl Handler<Approve> for Restarter {
    type Result = bool;

    fn handle(&mut self, msg: Approve, _: &mut Context<Self>) -> bool {
        let Some(pending) = self.pending.as_mut() else {
            info!(by = %msg.by, "approval with no staged set waiting; nothing to do");
            return false;
        };
        if msg.set_id.is_some() && msg.set_id != pending.set_id {
            info!(by = %msg.by, approved = ?msg.set_id, waiting = ?pending.set_id, "approval for another set than the one waiting; ignored");
            return false;
        }
        match pending.approve.take() {
            Some(tx) => {
                info!(by = %msg.by, set = ?pending.set_id, "staged set approved");
                tx.send(msg.by).is_ok()
            }
            None => true,
        }
    }
}

impl Handler<FromBus<ApproveStagedSet>> for Restarter {
    type Result = ResponseFuture<()>;

    /// `approve` from the CLI: approves the set that waits, if any, and
    /// answers [`ApprovalHandled`].
    fn handle(
        &mut self,
        FromBus(msg): FromBus<ApproveStagedSet>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let set_id = self.pending.as_ref().and_then(|p| p.set_id);
        let restarting = self.handle(
            Approve {
                by: msg.by.clone(),
                set_id: None,
            },
            ctx,
        );
        let bus = self.bus.clone();
        Box::pin(async move {
            bus.publish(ApprovalHandled { restarting, set_id }).await;
        })
    }
}

impl Handler<ForgetWaitingSet> for Restarter {
    type Result = bool;

    fn handle(&mut self, _: ForgetWaitingSet, ctx: &mut Context<Self>) -> bool {
        match self.pending.take() {
            Some(old) => {
                info!(set = ?old.set_id, "the staged set that waited is dropped: it is no longer the target set");
                ctx.cancel_future(old.handle);
                true
            }
            None => false,
        }
    }
}

impl Handler<WaitingSet> for Restarter {
    type Result = Option<TargetSetId>;

    fn handle(&mut self, _: WaitingSet, _: &mut Context<Self>) -> Option<TargetSetId> {
        self.pending.as_ref().and_then(|p| p.set_id)
    }
}

/// Waits until the staged set may be applied: approved, or (in window
/// mode) a maintenance window open once the statuses were flushed.
/// Returns why now, for the log.
async fn wait_turn(
    policy: &ApplyPolicy,
    mut approved: oneshot::Receiver<String>,
    bus: &Bus,
    flush_timeout: Duration,
) -> String {
    loop {
        let why = tokio::select! {
            by = &mut approved => match by {
                Ok(by) => {
                    let flushed = tokio::time::timeout(flush_timeout, flush(bus)).await.is_ok();
                    return format!("approved by {by}, statuses flushed: {flushed}");
                }
                // The sender lives as long as the wait; never without it.
                Err(_) => std::future::pending().await,
            },
            closes = window_opens(policy) => format!("in the maintenance window until {closes}"),
        };
        let flushed = tokio::time::timeout(flush_timeout, flush(bus))
            .await
            .is_ok();
        let window = policy.window.as_ref().expect("window mode has a window");
        match window.state_at(policy.clock.now()) {
            Ok(WindowState::Open { .. }) => return format!("{why}, statuses flushed: {flushed}"),
            _ => {
                warn!(%window, "the maintenance window closed before the restart could start; waiting for the next one")
            }
        }
    }
}

/// Returns when a maintenance window is open, with when it closes; never
/// when the policy has no window (approval only).
async fn window_opens(policy: &ApplyPolicy) -> String {
    let Some(window) = policy
        .window
        .as_ref()
        .filter(|_| policy.mode == ApplyMode::Window)
    else {
        return std::future::pending().await;
    };
    match window.wait_open(&*policy.clock).await {
        Ok(closes) => closes.to_string(),
        Err(e) => {
            warn!(%window, error = %e, "the maintenance window never opens: only an approval applies the staged set");
            std::future::pending().await
        }
    }
}

/// Returns once Portal Integration reports an empty outbox (at once when
/// there is no Portal Integration on the bus).
async fn flush(bus: &Bus) {
    let mut states = bus.subscribe::<PortalOutboxState>();
    loop {
        if bus.publish(PortalOutboxQuery {}).await == 0 {
            return;
        }
        match tokio::time::timeout(FLUSH_POLL, states.recv()).await {
            Ok(Some(state)) if state.queued == 0 => return,
            Ok(None) => return,
            _ => tokio::time::sleep(FLUSH_POLL).await,
        }
    }
}
