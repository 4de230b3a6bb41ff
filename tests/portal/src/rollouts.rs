//! The portal's rollouts: the [`Rollout`] machines in memory, driven by
//! this process, and their rows in the database (`rollouts`, one per
//! rollout; `rollout_boxes`, one per box with its state), so that a
//! restarted portal continues them. The portal feeds them the statuses it
//! records and a clock tick; this module turns their [`Action`]s into
//! assignments and `EVT_SYNC_SOFT`s.
//!
//! One event is one transaction: a status's row, the rows of the boxes it
//! changed, the rollout's row and the assignments of a wave it started are
//! committed together, before any box is told to synchronise. A portal
//! killed at any point has either all of it or none of it: a status it did
//! not commit is sent again by the box (durable statuses), one it did is
//! refused as a duplicate and never counted twice.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::info;

use super::{
    db::{self, stmt, Db, Stmt},
    history::{self, Recorded},
    leases::Lease,
    rollout::{Action, BoxState, Rollout, RolloutSpec},
    store, App, PortalError, StatusRecord,
};

/// Rollouts kept, finished ones included; the oldest finished or cancelled
/// one is deleted past it, so the rollouts in memory stay bounded.
pub const MAX_ROLLOUTS: usize = 200;

/// An action with the target set of the rollout it came from.
type TargetedAction = (Vec<String>, Action);

/// Every rollout of this portal: in memory, and in the database.
pub(crate) struct Rollouts {
    db: Arc<Db>,
    /// Oldest first. Held while an event's transaction runs, so that the
    /// machines and their rows change together.
    state: Mutex<Vec<Rollout>>,
    /// The rollouts this process drives, holding their lease: only these
    /// take its statuses and ticks ([`App::drive_rollouts`]).
    driven: Mutex<HashSet<u64>>,
    /// The last `statuses.id` fed to the driven rollouts from the table
    /// (statuses other processes recorded; PostgreSQL only).
    fed_up_to: Mutex<u64>,
}

/// What an operator asks of a rollout, kept in its row (`request`) when
/// the process asked does not drive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// Resume a halted rollout.
    Resume,
    /// Cancel it.
    Cancel,
}

impl Request {
    /// The `request` column's value.
    fn as_str(self) -> &'static str {
        match self {
            Request::Resume => "resume",
            Request::Cancel => "cancel",
        }
    }

    /// A `request` column's value.
    fn parse(s: &str) -> Option<Request> {
        match s {
            "resume" => Some(Request::Resume),
            "cancel" => Some(Request::Cancel),
            _ => None,
        }
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `waiting`, `assigned`, `installed`, `failed`: the state column.
fn state_name(s: &BoxState) -> &'static str {
    match s {
        BoxState::Waiting => "waiting",
        BoxState::Assigned { .. } => "assigned",
        BoxState::Installed => "installed",
        BoxState::Failed { .. } => "failed",
    }
}

/// The rows of the new rollout `r`: its own row, whole, and its boxes'.
pub(crate) fn new_rollout_stmts(r: &mut Rollout) -> Vec<Stmt> {
    let mut stmts = vec![stmt!(
        "INSERT INTO rollouts (id, name, spec, waves, current_wave, state, live, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        r.id,
        &r.spec.name,
        json(&r.spec),
        json(&r.waves),
        r.current_wave,
        json(&r.state),
        !r.is_over(),
        r.created_ms,
    )];
    r.mark_all_changed();
    stmts.extend(box_stmts(r));
    stmts
}

/// The rows `r` changed since they were last written: where it is (its
/// wave, its state: never its spec, written once), and the rows of its
/// changed boxes.
pub(crate) fn rollout_stmts(r: &mut Rollout) -> Vec<Stmt> {
    let mut stmts = vec![stmt!(
        "UPDATE rollouts SET current_wave = $2, state = $3, live = $4 WHERE id = $1",
        r.id,
        r.current_wave,
        json(&r.state),
        !r.is_over(),
    )];
    stmts.extend(box_stmts(r));
    stmts
}

/// The rows of `r`'s boxes changed since they were last written, in
/// multi-row statements.
fn box_stmts(r: &mut Rollout) -> Vec<Stmt> {
    let rows: Vec<Vec<db::Arg>> = r
        .take_changed()
        .into_iter()
        .map(|i| {
            let wave = r.wave_of_place(i).unwrap_or_default();
            let (env, s) = &r.boxes[i];
            vec![
                r.id.into(),
                env.into(),
                i.into(),
                wave.into(),
                state_name(s).into(),
                json(s).into(),
            ]
        })
        .collect();
    db::multi_row(
        "INSERT INTO rollout_boxes (rollout_id, env, position, wave, state, detail)",
        rows,
        "ON CONFLICT (rollout_id, env) DO UPDATE SET \
         wave = excluded.wave, state = excluded.state, detail = excluded.detail",
    )
}

/// A rollout's part as JSON, which cannot fail.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("rollout part to JSON")
}

/// Deletes rollout `id` and its boxes.
fn delete_stmts(id: u64) -> Vec<Stmt> {
    vec![
        stmt!("DELETE FROM rollout_boxes WHERE rollout_id = $1", id),
        stmt!("DELETE FROM rollouts WHERE id = $1", id),
    ]
}

/// Reads every rollout of `db`, oldest first (`only`: that one).
fn load(db: &Db, only: Option<u64>) -> Result<Vec<Rollout>, PortalError> {
    let bad = |what: &str, id: u64, e: serde_json::Error| {
        PortalError::BadRequest(format!("rollout {id}: its {what} in the database: {e}"))
    };
    let (heads, boxes) = match only {
        Some(id) => (
            db.rows(stmt!(
                "SELECT id, spec, waves, current_wave, state, created_ms FROM rollouts WHERE id = $1",
                id
            ))?,
            db.rows(stmt!(
                "SELECT rollout_id, env, detail FROM rollout_boxes WHERE rollout_id = $1 \
                 ORDER BY position",
                id
            ))?,
        ),
        None => (
            db.rows(stmt!(
                "SELECT id, spec, waves, current_wave, state, created_ms FROM rollouts ORDER BY id"
            ))?,
            db.rows(stmt!(
                "SELECT rollout_id, env, detail FROM rollout_boxes ORDER BY rollout_id, position"
            ))?,
        ),
    };
    let mut by_rollout: BTreeMap<u64, Vec<(String, BoxState)>> = BTreeMap::new();
    for b in &boxes {
        let id = db::uint(b, 0);
        let state = serde_json::from_str(&db::text(b, 2)).map_err(|e| bad("box", id, e))?;
        by_rollout
            .entry(id)
            .or_default()
            .push((db::text(b, 1), state));
    }
    heads
        .iter()
        .map(|h| {
            let id = db::uint(h, 0);
            let spec: RolloutSpec =
                serde_json::from_str(&db::text(h, 1)).map_err(|e| bad("spec", id, e))?;
            let mut r = Rollout::new(id, spec, db::uint(h, 5));
            r.waves = serde_json::from_str(&db::text(h, 2)).map_err(|e| bad("waves", id, e))?;
            r.current_wave = usize::try_from(db::uint(h, 3)).unwrap_or(usize::MAX);
            r.state = serde_json::from_str(&db::text(h, 4)).map_err(|e| bad("state", id, e))?;
            r.boxes = by_rollout.remove(&id).unwrap_or_default();
            r.take_changed();
            Ok(r)
        })
        .collect()
}

impl Rollouts {
    /// The rollouts of `db`.
    pub(crate) fn open(db: Arc<Db>) -> Result<Rollouts, PortalError> {
        let state = load(&db, None)?;
        Ok(Rollouts {
            db,
            state: Mutex::new(state),
            driven: Mutex::new(HashSet::new()),
            fed_up_to: Mutex::new(0),
        })
    }

    /// Whether this process drives rollout `id` (holds its lease).
    fn drives(&self, id: u64) -> bool {
        self.driven.lock().expect("driven lock").contains(&id)
    }

    /// Every rollout, newest first.
    pub(crate) fn list(&self) -> Vec<Rollout> {
        let state = self.state.lock().expect("rollouts lock");
        state.iter().rev().cloned().collect()
    }

    /// One rollout.
    pub(crate) fn get(&self, id: u64) -> Option<Rollout> {
        let state = self.state.lock().expect("rollouts lock");
        state.iter().find(|r| r.id == id).cloned()
    }

    /// Runs `f` on every live rollout (or only `id`), and writes `first`,
    /// the rows the rollouts changed and the assignments their actions
    /// ask for in one transaction. `None` when a guarded statement of
    /// `first` changed nothing (nothing is written, the machines are read
    /// again); else whether any rollout changed, and the actions.
    fn update(
        &self,
        id: Option<u64>,
        first: Vec<Stmt>,
        f: impl FnMut(&mut Rollout) -> Vec<Action>,
    ) -> Result<Option<(bool, Vec<TargetedAction>)>, PortalError> {
        let mut state = self.state.lock().expect("rollouts lock");
        let moved = self.run(&mut state, id, f);
        let mut stmts = first;
        stmts.extend(moved.stmts);
        let written = self.db.write(stmts);
        if !matches!(written, Ok(true)) {
            self.reload(&mut state, &moved.changed)?;
        }
        Ok(written?.then_some((!moved.changed.is_empty(), moved.actions)))
    }

    /// Runs `f` on every live rollout this process drives (or only `id`):
    /// the rows to write and the actions. The machines move in memory
    /// only; [`Rollouts::reload`] them when the rows are not written.
    fn run(
        &self,
        state: &mut [Rollout],
        id: Option<u64>,
        mut f: impl FnMut(&mut Rollout) -> Vec<Action>,
    ) -> Moved {
        let driven = self.driven.lock().expect("driven lock").clone();
        let mut moved = Moved::default();
        for r in state.iter_mut() {
            if id.is_some_and(|id| id != r.id)
                || (id.is_none() && (r.is_over() || !driven.contains(&r.id)))
            {
                continue;
            }
            let before = (r.current_wave, r.state.clone());
            let out = f(r);
            if r.has_changed_boxes() || before != (r.current_wave, r.state.clone()) {
                moved.changed.push(r.id);
                moved.stmts.extend(rollout_stmts(r));
            }
            for a in out {
                let Action::AssignTarget(env) = &a;
                moved
                    .stmts
                    .extend(store::assignment_stmts(env, &r.spec.target));
                moved.actions.push((r.spec.target.clone(), a));
            }
        }
        moved
    }

    /// Reads the rollouts `changed` again: their machines moved and their
    /// rows were not written.
    fn reload(&self, state: &mut [Rollout], changed: &[u64]) -> Result<(), PortalError> {
        for r in state.iter_mut().filter(|r| changed.contains(&r.id)) {
            if let Some(fresh) = load(&self.db, Some(r.id))?.pop() {
                *r = fresh;
            }
        }
        Ok(())
    }
}

/// What [`Rollouts::run`] moved.
#[derive(Default)]
struct Moved {
    /// The rollouts that changed.
    changed: Vec<u64>,
    /// Their rows and the assignments of their actions.
    stmts: Vec<Stmt>,
    /// The actions, with their target sets.
    actions: Vec<TargetedAction>,
}

impl App {
    /// Creates and starts a rollout of `spec`: the rollout, its boxes and
    /// its first wave's assignments in one transaction.
    pub(crate) fn start_rollout(&self, spec: RolloutSpec) -> Result<Rollout, PortalError> {
        if spec.environments.is_empty() {
            return Err(PortalError::BadRequest(
                "a rollout needs environments".into(),
            ));
        }
        if spec.waves.is_empty() {
            return Err(PortalError::BadRequest("a rollout needs waves".into()));
        }
        // Refuse unknown modules before anything is assigned.
        let target: Vec<String> = self
            .store
            .check_set(&spec.target)?
            .iter()
            .map(super::ModuleObject::coordinates)
            .collect();
        let now = now_ms();
        let (rollout, actions) = {
            let mut state = self.rollouts.state.lock().expect("rollouts lock");
            // An environment in two live rollouts would be assigned by
            // both, and its reports counted by both.
            if let Some((live, env)) = state.iter().filter(|r| !r.is_over()).find_map(|r| {
                spec.environments
                    .iter()
                    .find(|e| r.box_state(e).is_some())
                    .map(|e| (r, e))
            }) {
                return Err(PortalError::BadRequest(format!(
                    "environment {env} is in rollout {} ({:?}, {}), which is not over: cancel it first",
                    live.id,
                    live.spec.name,
                    live.state.as_str()
                )));
            }
            let next_id = self
                .db
                .rows(stmt!("SELECT COALESCE(MAX(id), 0) FROM rollouts"))?
                .first()
                .map_or(0, |r| db::uint(r, 0))
                .max(state.iter().map(|r| r.id).max().unwrap_or(0))
                + 1;
            let mut r = Rollout::new(next_id, spec, now);
            let actions = r.start(now);
            let mut stmts = new_rollout_stmts(&mut r);
            for Action::AssignTarget(env) in &actions {
                stmts.extend(store::assignment_stmts(env, &target));
            }
            let mut pruned = Vec::new();
            let mut kept = state.len() + 1;
            for old in state.iter().filter(|r| r.is_over()) {
                if kept <= MAX_ROLLOUTS {
                    break;
                }
                pruned.push(old.id);
                stmts.extend(delete_stmts(old.id));
                kept -= 1;
            }
            self.db.write(stmts)?;
            state.retain(|r| !pruned.contains(&r.id));
            state.push(r.clone());
            if !self.leases.is_shared() {
                // The only process: it holds every lease.
                self.rollouts
                    .driven
                    .lock()
                    .expect("driven lock")
                    .insert(r.id);
            }
            (r, actions)
        };
        info!(
            rollout = rollout.id,
            boxes = rollout.boxes.len(),
            waves = rollout.waves.len(),
            "rollout started"
        );
        self.tell_assigned(actions.into_iter().map(|a| (target.clone(), a)).collect());
        self.changed();
        Ok(rollout)
    }

    /// Resumes a halted rollout.
    pub(crate) fn resume_rollout(&self, id: u64) -> Result<Rollout, PortalError> {
        self.ask_rollout(id, Request::Resume)
    }

    /// Cancels a rollout.
    pub(crate) fn cancel_rollout(&self, id: u64) -> Result<Rollout, PortalError> {
        self.ask_rollout(id, Request::Cancel)
    }

    /// Carries out `request` on rollout `id` when this process drives it
    /// (or is the only one); otherwise leaves it in the rollout's row for
    /// the process that drives it, which carries it out at its next tick
    /// ([`App::drive_rollouts`]), and answers the rollout as it is now.
    fn ask_rollout(&self, id: u64, request: Request) -> Result<Rollout, PortalError> {
        if self.leases.is_shared() && !self.rollouts.drives(id) {
            let asked = self.db.write(vec![stmt!(
                "UPDATE rollouts SET request = $2 WHERE id = $1 AND live = $3",
                id,
                request.as_str(),
                true
            )
            .guard()])?;
            if asked {
                info!(
                    rollout = id,
                    request = request.as_str(),
                    "asked the process that drives the rollout"
                );
                self.changed();
                return load(&self.db, Some(id))?
                    .pop()
                    .ok_or_else(|| PortalError::BadRequest(format!("no rollout {id}")));
            }
        }
        self.carry_out(id, request, Vec::new())?;
        self.changed();
        self.rollouts
            .get(id)
            .ok_or_else(|| PortalError::BadRequest(format!("no rollout {id}")))
    }

    /// Carries `request` out on rollout `id` in one transaction with
    /// `first`; whether it was (`false`: a guarded statement of `first`
    /// changed nothing).
    fn carry_out(&self, id: u64, request: Request, first: Vec<Stmt>) -> Result<bool, PortalError> {
        let now = now_ms();
        let out = match request {
            Request::Resume => self.rollouts.update(Some(id), first, |r| r.resume(now))?,
            Request::Cancel => self.rollouts.update(Some(id), first, |r| {
                r.cancel();
                Vec::new()
            })?,
        };
        match out {
            Some((_, actions)) => {
                self.tell_assigned(actions);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Carries out the requests left for the rollouts this process
    /// drives ([`App::ask_rollout`] on another process), each in one
    /// transaction with the clearing of its request.
    fn carry_out_requests(&self) -> Result<(), PortalError> {
        let rows = self.db.rows(stmt!(
            "SELECT id, request FROM rollouts WHERE live = $1 AND request IS NOT NULL",
            true
        ))?;
        for row in rows {
            let id = db::uint(&row, 0);
            let Some(request) = db::opt_text(&row, 1).as_deref().and_then(Request::parse) else {
                continue;
            };
            if !self.rollouts.drives(id) {
                continue;
            }
            let clear = stmt!(
                "UPDATE rollouts SET request = NULL WHERE id = $1 AND request = $2",
                id,
                request.as_str()
            )
            .guard();
            if self.carry_out(id, request, vec![clear])? {
                info!(
                    rollout = id,
                    request = request.as_str(),
                    "carried out a request asked through another process"
                );
                self.changed();
            }
        }
        Ok(())
    }

    /// Records a batch of statuses (environment, status, in the order
    /// received; [`super::recorder`] gathers them from every connection)
    /// and feeds the new ones to the live rollouts, in ONE transaction:
    /// the statuses' rows, the environments' summaries, the changed boxes'
    /// rows, the rollouts' rows and the assignments of a wave they
    /// started. Only once it committed are the boxes of such a wave told,
    /// and the console; a durable status recorded already is dropped and
    /// counted. An error: nothing of the batch was written.
    pub(crate) fn record_statuses(
        &self,
        batch: &[(String, StatusRecord)],
    ) -> Result<Vec<Recorded>, PortalError> {
        let now = now_ms();
        let mut state = self.rollouts.state.lock().expect("rollouts lock");
        let mut tx = self.db.begin()?;
        let outcomes = history::record_in(&self.db, &mut tx, batch, now)?;
        let new: Vec<(&str, &str, Option<&str>, Option<&str>)> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == Recorded::New)
            .map(|((env, r), _)| {
                (
                    env.as_str(),
                    r.status.as_str().unwrap_or_default(),
                    r.status_message.as_str(),
                    r.served_set.as_deref(),
                )
            })
            .collect();
        let moved = self.rollouts.run(&mut state, None, |r| {
            let mut actions = Vec::new();
            for (env, status, message, served) in &new {
                actions.extend(r.status_of_set(env, status, *message, *served, now));
            }
            actions
        });
        let written = self
            .db
            .execute(&mut tx, moved.stmts)
            .and_then(|_| self.db.commit(tx));
        if let Err(error) = written {
            self.rollouts.reload(&mut state, &moved.changed)?;
            return Err(error);
        }
        drop(state);
        self.tell_assigned(moved.actions);
        for ((env, record), outcome) in batch.iter().zip(&outcomes) {
            if *outcome == Recorded::New {
                self.status_recorded(env, record);
            }
        }
        Ok(outcomes)
    }

    /// Moves the rollouts' clock.
    pub(crate) fn rollout_tick(&self) {
        let now = now_ms();
        match self.rollouts.update(None, Vec::new(), |r| r.tick(now)) {
            Ok(Some((changed, actions))) => {
                self.tell_assigned(actions);
                if changed {
                    self.changed();
                }
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "rollout state not written"),
        }
    }

    /// Tells each box a rollout assigned (the assignment is committed) to
    /// synchronise now.
    fn tell_assigned(&self, actions: Vec<TargetedAction>) {
        for (_, action) in actions {
            let Action::AssignTarget(env) = action;
            self.tell(env);
        }
    }

    /// Tells `env`, which a rollout assigned a set, to synchronise now
    /// (when it connects, if no connection took it: [`App::sync`]).
    fn tell(&self, env: String) {
        let delivered = self.sync(&env);
        info!(env, delivered, "told a box its rollout's target set");
    }
}

/// Status rows read again behind the last one fed: a row of a transaction
/// that committed after a later id became visible is still seen (feeding
/// a status twice changes nothing: a verdict moves a box out of
/// `Assigned`). Each process writes one batch of statuses at a time
/// ([`super::recorder::STATUS_BATCH`]): this covers four other processes'
/// batches in flight.
const FEED_OVERLAP: u64 = 4 * super::recorder::STATUS_BATCH as u64;

/// Status rows fed per tick at most; the rest at the next tick.
const FEED_BATCH: u64 = 20_000;

impl App {
    /// Before each tick: takes the lease of each live rollout that is free
    /// and drives it (read again from the database, then fed the statuses
    /// recorded since its boxes were assigned that it has not counted),
    /// lets go of the ones that are over, and reads the others again for
    /// the console. With a shared database, feeds the driven rollouts the
    /// statuses other processes recorded.
    pub(crate) async fn drive_rollouts(&self) {
        if let Err(error) = self.try_drive_rollouts().await {
            tracing::error!(%error, "cannot drive the rollouts");
        }
    }

    async fn try_drive_rollouts(&self) -> Result<(), PortalError> {
        let live: Vec<u64> = self
            .db
            .rows(stmt!("SELECT id FROM rollouts WHERE live = $1", true))?
            .iter()
            .map(|r| db::uint(r, 0))
            .collect();
        // A driven rollout ends here, in this process's memory: one that
        // is not live in the database but live in memory was started
        // after `live` was read, and is not given up.
        let over: Vec<u64> = {
            let state = self.rollouts.state.lock().expect("rollouts lock");
            let driven = self.rollouts.driven.lock().expect("driven lock");
            driven
                .iter()
                .copied()
                .filter(|id| {
                    !live.contains(id)
                        && state
                            .iter()
                            .find(|r| r.id == *id)
                            .is_none_or(Rollout::is_over)
                })
                .collect()
        };
        for id in over {
            self.rollouts
                .driven
                .lock()
                .expect("driven lock")
                .remove(&id);
            self.leases.release(Lease::Rollout(id)).await;
        }
        // Rollouts another process finished or cancelled: read once more,
        // so that this process's console does not show them live.
        let ended: Vec<u64> = {
            let state = self.rollouts.state.lock().expect("rollouts lock");
            let driven = self.rollouts.driven.lock().expect("driven lock");
            state
                .iter()
                .filter(|r| !r.is_over() && !live.contains(&r.id) && !driven.contains(&r.id))
                .map(|r| r.id)
                .collect()
        };
        for id in ended {
            let mut state = self.rollouts.state.lock().expect("rollouts lock");
            if let Some(fresh) = load(&self.db, Some(id))?.pop() {
                if let Some(r) = state.iter_mut().find(|r| r.id == id) {
                    *r = fresh;
                }
            }
        }
        for id in live {
            let held = self
                .leases
                .acquire(Lease::Rollout(id))
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, rollout = id, "cannot ask for the rollout's lease");
                    false
                });
            let was = self
                .rollouts
                .driven
                .lock()
                .expect("driven lock")
                .contains(&id);
            if held && was {
                continue;
            }
            {
                // Read under the lock: a batch of statuses committed
                // between the read and the replacement would be lost to
                // the machine.
                let mut state = self.rollouts.state.lock().expect("rollouts lock");
                let fresh = load(&self.db, Some(id))?.pop();
                match (state.iter_mut().find(|r| r.id == id), fresh) {
                    (Some(r), Some(f)) => *r = f,
                    (None, Some(f)) => state.push(f),
                    _ => {}
                }
            }
            let mut driven = self.rollouts.driven.lock().expect("driven lock");
            if held {
                info!(rollout = id, "driving the rollout");
                driven.insert(id);
                drop(driven);
                self.catch_up(id)?;
            } else if was {
                tracing::warn!(rollout = id, "another portal drives the rollout now");
                driven.remove(&id);
            }
        }
        self.carry_out_requests()?;
        if self.events.is_shared() {
            self.feed_others_statuses()?;
        }
        Ok(())
    }

    /// Feeds rollout `id`, just taken over, the statuses recorded since
    /// the first of its boxes still waiting for a verdict was assigned;
    /// then tells each waiting box that has reported nothing since its
    /// assignment to synchronise: the process that assigned it may have
    /// died between the assignment's commit and its `EVT_SYNC_SOFT`, or
    /// told no connection (its mark of a box owed a sync is in its
    /// memory). A box told already and still at work is not disturbed: a
    /// box skips a trigger while a synchronisation runs.
    fn catch_up(&self, id: u64) -> Result<(), PortalError> {
        let waiting: Vec<(String, u64)> = self
            .rollouts
            .get(id)
            .map(|r| {
                r.boxes
                    .iter()
                    .filter_map(|(env, s)| match s {
                        BoxState::Assigned { since_ms, .. } => Some((env.clone(), *since_ms)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(since) = waiting.iter().map(|(_, since)| *since).min() else {
            return Ok(());
        };
        let rows = self.db.rows(stmt!(
            "SELECT id, env, status, record, received_ms FROM statuses WHERE received_ms >= $1 ORDER BY id",
            since
        ))?;
        self.feed(Some(id), &rows)?;
        let mut last_heard: HashMap<String, u64> = HashMap::new();
        for row in &rows {
            let at = last_heard.entry(db::text(row, 1)).or_default();
            *at = (*at).max(db::uint(row, 4));
        }
        let silent: Vec<String> = waiting
            .into_iter()
            .filter(|(env, since)| last_heard.get(env).is_none_or(|at| at < since))
            .map(|(env, _)| env)
            .collect();
        if !silent.is_empty() {
            info!(
                rollout = id,
                boxes = silent.len(),
                "telling the boxes assigned before the takeover that reported nothing since"
            );
            silent.into_iter().for_each(|env| self.tell(env));
        }
        Ok(())
    }

    /// Feeds the driven rollouts the statuses recorded (by any process)
    /// since the last call.
    fn feed_others_statuses(&self) -> Result<(), PortalError> {
        let from = *self.rollouts.fed_up_to.lock().expect("fed lock");
        let rows = self.db.rows(stmt!(
            "SELECT id, env, status, record FROM statuses WHERE id > $1 ORDER BY id LIMIT $2",
            from.saturating_sub(FEED_OVERLAP),
            FEED_BATCH
        ))?;
        if let Some(last) = rows.last() {
            let mut fed = self.rollouts.fed_up_to.lock().expect("fed lock");
            *fed = (*fed).max(db::uint(last, 0));
        }
        self.feed(None, &rows)
    }

    /// Feeds `rows` (`id, env, status, record`) to rollout `only`, or to
    /// every driven one, in one transaction.
    fn feed(&self, only: Option<u64>, rows: &[sqlx::any::AnyRow]) -> Result<(), PortalError> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let reports: Vec<(String, String, Option<String>, Option<String>)> = rows
            .iter()
            .map(|row| {
                let record: serde_json::Value =
                    serde_json::from_str(&db::text(row, 3)).unwrap_or_default();
                let text = |k: &str| record[k].as_str().map(str::to_owned);
                (
                    db::text(row, 1),
                    db::text(row, 2),
                    text("statusMessage"),
                    text("servedSet"),
                )
            })
            .collect();
        let out = self.rollouts.update(only, Vec::new(), |r| {
            let mut actions = Vec::new();
            for (env, status, message, served) in &reports {
                actions.extend(r.status_of_set(
                    env,
                    status,
                    message.as_deref(),
                    served.as_deref(),
                    now,
                ));
            }
            actions
        })?;
        if let Some((changed, actions)) = out {
            self.tell_assigned(actions);
            if changed {
                self.changed();
            }
        }
        Ok(())
    }
}
