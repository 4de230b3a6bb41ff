//! The portal's rollouts: the [`Rollout`] machines, written to
//! `DATA/rollouts.json` (temporary file, fsync, rename) after every change
//! but a box's progress, so that a restarted portal continues them. The portal feeds them the
//! statuses it records and a clock tick; this module turns their
//! [`Action`]s into assignments and `EVT_SYNC_SOFT`s.

use std::{
    path::PathBuf,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tracing::info;

use super::{
    rollout::{Action, BoxState, Rollout, RolloutSpec},
    App, PortalError,
};

/// Rollouts kept, finished ones included; the oldest finished or cancelled
/// one is dropped past it, so the state file stays small.
pub const MAX_ROLLOUTS: usize = 200;

/// An action with the target set of the rollout it came from.
type TargetedAction = (Vec<String>, Action);

#[derive(Debug, Default, Serialize, Deserialize)]
struct RolloutsFile {
    next_id: u64,
    rollouts: Vec<Rollout>,
}

/// Every rollout of this portal, persisted.
pub(crate) struct Rollouts {
    path: PathBuf,
    state: Mutex<RolloutsFile>,
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Rollouts {
    /// Loads `path` (missing: none).
    pub(crate) fn open(path: PathBuf) -> Result<Rollouts, PortalError> {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| PortalError::State {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RolloutsFile::default(),
            Err(source) => return Err(PortalError::Io { path, source }),
        };
        Ok(Rollouts {
            path,
            state: Mutex::new(state),
        })
    }

    fn persist(&self, state: &RolloutsFile) -> Result<(), PortalError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|source| PortalError::State {
            path: self.path.clone(),
            source,
        })?;
        super::store::write_atomically(&self.path, &bytes)
    }

    /// Every rollout, newest first.
    pub(crate) fn list(&self) -> Vec<Rollout> {
        let state = self.state.lock().expect("rollouts lock");
        state.rollouts.iter().rev().cloned().collect()
    }

    /// One rollout.
    pub(crate) fn get(&self, id: u64) -> Option<Rollout> {
        let state = self.state.lock().expect("rollouts lock");
        state.rollouts.iter().find(|r| r.id == id).cloned()
    }

    /// Runs `f` on every live rollout (or only `id`), persists when any
    /// action or change came out, and returns the actions with each
    /// rollout's target.
    fn update(
        &self,
        id: Option<u64>,
        mut f: impl FnMut(&mut Rollout) -> Vec<Action>,
    ) -> Result<(bool, Vec<TargetedAction>), PortalError> {
        let mut state = self.state.lock().expect("rollouts lock");
        let mut changed = false;
        let mut durable_change = false;
        let mut actions = Vec::new();
        for r in state.rollouts.iter_mut() {
            if id.is_some_and(|id| id != r.id) {
                continue;
            }
            let before = r.clone();
            let out = f(r);
            if *r != before {
                changed = true;
                durable_change |= durable(r) != durable(&before);
            }
            actions.extend(out.into_iter().map(|a| (r.spec.target.clone(), a)));
        }
        if durable_change {
            self.persist(&state)?;
        }
        Ok((changed, actions))
    }
}

/// `r` without what need not survive a restart: the boxes' last progress
/// (`downloading`, ...), which would otherwise cost a write per status.
fn durable(r: &Rollout) -> Rollout {
    let mut r = r.clone();
    for (_, s) in &mut r.boxes {
        if let BoxState::Assigned { progress, .. } = s {
            *progress = None;
        }
    }
    r
}

impl App {
    /// Creates and starts a rollout of `spec`.
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
        self.store.check_set(&spec.target)?;
        let now = now_ms();
        let (rollout, actions) = {
            let mut state = self.rollouts.state.lock().expect("rollouts lock");
            // An environment in two live rollouts would be assigned by
            // both, and its reports counted by both.
            if let Some((live, env)) =
                state
                    .rollouts
                    .iter()
                    .filter(|r| !r.is_over())
                    .find_map(|r| {
                        spec.environments
                            .iter()
                            .find(|e| r.boxes.iter().any(|(b, _)| b == *e))
                            .map(|e| (r, e))
                    })
            {
                return Err(PortalError::BadRequest(format!(
                    "environment {env} is in rollout {} ({:?}, {}), which is not over: cancel it first",
                    live.id,
                    live.spec.name,
                    live.state.as_str()
                )));
            }
            state.next_id += 1;
            let mut r = Rollout::new(state.next_id, spec, now);
            let actions = r.start(now);
            state.rollouts.push(r.clone());
            while state.rollouts.len() > MAX_ROLLOUTS {
                match state.rollouts.iter().position(Rollout::is_over) {
                    Some(i) => {
                        state.rollouts.remove(i);
                    }
                    None => break,
                }
            }
            self.rollouts.persist(&state)?;
            (r, actions)
        };
        info!(
            rollout = rollout.id,
            boxes = rollout.boxes.len(),
            waves = rollout.waves.len(),
            "rollout started"
        );
        let target = rollout.spec.target.clone();
        self.carry_out(actions.into_iter().map(|a| (target.clone(), a)).collect());
        self.changed();
        Ok(rollout)
    }

    /// Resumes a halted rollout.
    pub(crate) fn resume_rollout(&self, id: u64) -> Result<Rollout, PortalError> {
        let now = now_ms();
        let (_, actions) = self.rollouts.update(Some(id), |r| r.resume(now))?;
        self.carry_out(actions);
        self.changed();
        self.rollouts
            .get(id)
            .ok_or_else(|| PortalError::BadRequest(format!("no rollout {id}")))
    }

    /// Cancels a rollout.
    pub(crate) fn cancel_rollout(&self, id: u64) -> Result<Rollout, PortalError> {
        self.rollouts.update(Some(id), |r| {
            r.cancel();
            Vec::new()
        })?;
        self.changed();
        self.rollouts
            .get(id)
            .ok_or_else(|| PortalError::BadRequest(format!("no rollout {id}")))
    }

    /// Feeds a recorded status to the rollouts.
    pub(crate) fn rollout_status(&self, env: &str, status: &str, message: Option<&str>) {
        let now = now_ms();
        match self
            .rollouts
            .update(None, |r| r.status_reported(env, status, message, now))
        {
            Ok((_, actions)) => self.carry_out(actions),
            Err(error) => tracing::error!(%error, "rollout state not written"),
        }
    }

    /// Moves the rollouts' clock.
    pub(crate) fn rollout_tick(&self) {
        let now = now_ms();
        match self.rollouts.update(None, |r| r.tick(now)) {
            Ok((changed, actions)) => {
                self.carry_out(actions);
                if changed {
                    self.changed();
                }
            }
            Err(error) => tracing::error!(%error, "rollout state not written"),
        }
    }

    fn carry_out(&self, actions: Vec<TargetedAction>) {
        for (target, action) in actions {
            match action {
                Action::AssignTarget(env) => {
                    if let Err(error) = self.store.assign(&env, &target) {
                        tracing::error!(%error, env, "rollout assignment failed");
                        continue;
                    }
                    let delivered = self.sync(&env);
                    info!(env, delivered, "rollout assigned the target set");
                }
            }
        }
    }
}
