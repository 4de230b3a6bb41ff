//! A fleet: many boxes, each a [`ManagedBox`] with its own home and
//! environment, against one portal, supervised together, and watched
//! through one `environments` call per round rather than a `status` per box,
//! so that 50 boxes cost the test little.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::e2e::{env_uuid, signal, status_lines, BoxSettings, ManagedBox, PortalApi};

/// Many boxes against one portal, each with its own home and environment
/// ([`env_uuid`] `0..n`), supervised together.
pub struct Fleet {
    boxes: Vec<ManagedBox>,
    envs: Vec<String>,
}

impl Fleet {
    /// `n` fresh homes wired to `portal`; `tune` adjusts each box's
    /// settings. Nothing runs yet.
    pub fn new(portal: &dyn PortalApi, n: usize, tune: impl Fn(&mut BoxSettings)) -> Result<Fleet> {
        let envs: Vec<String> = (0..n).map(env_uuid).collect();
        let boxes = envs
            .iter()
            .map(|env| {
                let mut s = BoxSettings::new(portal, Some(env));
                tune(&mut s);
                ManagedBox::new(&s)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Fleet { boxes, envs })
    }

    /// The environment UUIDs.
    pub fn envs(&self) -> &[String] {
        &self.envs
    }

    /// The boxes.
    pub fn boxes(&mut self) -> &mut [ManagedBox] {
        &mut self.boxes
    }

    /// Assigns `coordinates` to every box.
    pub fn assign_all(&self, portal: &dyn PortalApi, coordinates: &[String]) -> Result<()> {
        for env in &self.envs {
            portal.assign_set(env, coordinates)?;
        }
        Ok(())
    }

    /// Starts every box.
    pub fn spawn_all(&mut self) -> Result<()> {
        for b in &mut self.boxes {
            b.spawn()?;
        }
        Ok(())
    }

    /// [`ManagedBox::supervise`] for each box; how many were started again.
    pub fn supervise_all(&mut self) -> Result<usize> {
        let mut restarted = 0;
        for b in &mut self.boxes {
            restarted += usize::from(b.supervise()?);
        }
        Ok(restarted)
    }

    /// How many statuses each environment has reported so far.
    pub fn status_counts(&self, portal: &dyn PortalApi) -> Result<Vec<usize>> {
        let reports = portal.environment_reports()?;
        Ok(self
            .envs
            .iter()
            .map(|env| {
                reports
                    .iter()
                    .find(|r| &r.environment_uuid == env)
                    .map_or(0, |r| r.statuses.len())
            })
            .collect())
    }

    /// Supervises every box until each reported `installed` after its
    /// status number `after[i]`; `progress` sees how many have. Returns the
    /// time it took.
    pub fn converge(
        &mut self,
        portal: &dyn PortalApi,
        after: &[usize],
        timeout: Duration,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Duration> {
        let start = Instant::now();
        let mut last = usize::MAX;
        loop {
            self.supervise_all()?;
            let reports = portal.environment_reports()?;
            let done = self
                .envs
                .iter()
                .zip(after)
                .filter(|(env, after)| {
                    reports
                        .iter()
                        .find(|r| &r.environment_uuid == *env)
                        .is_some_and(|r| {
                            status_lines(r)
                                .iter()
                                .skip(**after)
                                .any(|l| l.status == "installed")
                        })
                })
                .count();
            if done != last {
                progress(done, self.envs.len());
                last = done;
            }
            if done == self.envs.len() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let stuck: Vec<String> = self
                    .envs
                    .iter()
                    .zip(&self.boxes)
                    .take(3)
                    .map(|(env, b)| format!("{env}: {}", b.log_tail(5)))
                    .collect();
                bail!(
                    "{done} of {} boxes converged within {timeout:?}; some logs: {}",
                    self.envs.len(),
                    stuck.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every box has a live connection; the time it took.
    pub fn wait_all_connected(
        &mut self,
        portal: &dyn PortalApi,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            self.supervise_all()?;
            let reports = portal.environment_reports()?;
            let connected = self
                .envs
                .iter()
                .filter(|env| {
                    reports
                        .iter()
                        .any(|r| &r.environment_uuid == *env && r.live_connections > 0)
                })
                .count();
            if connected == self.envs.len() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{connected} of {} boxes connected within {timeout:?}",
                    self.envs.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to every box; the ones that did not exit 0.
    pub fn stop_all(&mut self) -> Vec<String> {
        let mut bad = Vec::new();
        for b in &mut self.boxes {
            if let Some(pid) = b.pid() {
                signal(pid, libc::SIGTERM);
            }
        }
        for (env, b) in self.envs.iter().zip(&mut self.boxes) {
            if b.pid().is_none() {
                continue;
            }
            match b.stop() {
                Ok(s) if s.success() => {}
                Ok(s) => bad.push(format!("{env}: {s}")),
                Err(e) => bad.push(format!("{env}: {e}")),
            }
        }
        bad
    }
}
