//! The loop test of issue 10: [`KILLS`] SIGKILLs at random moments of real
//! upgrades (synchronisation, download, staging, the restart, the apply,
//! probation, commit and rollback), with a set that fails probation in the
//! rotation. The real `banalytics-box` runs as a service manager runs it
//! (started again after exit 75 and after every kill), against the
//! reference portal in process. After each round (one assigned set) the box
//! must end reachable on a committed set without more than
//! `max_boot_attempts + 1` starts of its own for that set; at the end,
//! every status it put in its outbox must be at the portal exactly once.
//!
//! The kills come from a seeded generator (`fastrand`): a failure names the
//! seed, and `BANALYTICS_LOOP_SEED=N` replays that schedule (the moments
//! the kills land at still vary with the machine's speed).

use std::{
    collections::BTreeMap,
    os::unix::process::ExitStatusExt,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, log_events, BoxSettings, ManagedBox, PortalApi, EXIT_RESTART},
    portal::PortalHandle,
    DEADLINE,
};
use serde_json::Value;

/// The SIGKILLs of the whole test, as the issue asks.
const KILLS: usize = 200;

/// Kills per round: 1 to this many, so that some rounds see one kill and
/// some see the set's every start killed (a good set then is rolled back).
const MAX_KILLS_PER_ROUND: usize = 6;

/// A kill comes this long at most after the previous one (or after the
/// round's synchronisation was triggered): long enough to reach every
/// phase of a round (a debug box starts, synchronises, stages and applies
/// a small set in well under a second), short enough that 200 kills fit
/// in a few minutes.
const MAX_KILL_DELAY_MS: u64 = 900;

/// The milestones a kill may aim at, with [`AIM_JITTER_MS`] of jitter
/// after it: the windows of a real upgrade are tens of milliseconds on a
/// small set, so kills at uniform moments alone would hardly ever land in
/// the download, the staging, the restart or the apply. [`APPLY`] is the
/// start of a process that finds a staged set or a swap journal.
/// The first [`EARLY_AIMS`] are the synchronisation's, which a round goes
/// through once (unless a kill makes it start over): the first kill of a
/// round aims at one of them.
const AIMS: [&str; 8] = [
    "synchronisation started",
    "downloading",
    "staged set complete",
    "stopping to restart",
    APPLY,
    "new module set on probation",
    "new module set committed",
    "rolling back",
];

/// See [`AIMS`].
const EARLY_AIMS: usize = 5;

/// The aim that is a start with a swap to do, not a log message.
const APPLY: &str = "";

/// A kill aimed at a milestone comes up to this long after it.
const AIM_JITTER_MS: u64 = 30;

/// One kill in this many (but the first of a round) has no aim, only a
/// random moment.
const UNAIMED: u64 = 4;

/// Starts a new set gets; the bound is this plus one.
const MAX_BOOT_ATTEMPTS: u32 = 2;

/// Short, so that a good set commits and the failing set fails quickly.
const HEALTH_GRACE_S: f64 = 0.3;

/// How long a round may take to settle once the kills stop, on a loaded
/// two-core machine with debug builds.
const SETTLE: Duration = Duration::from_secs(60);

/// How long the portal may take to hear a round's verdict once the box
/// settled (it is appended within milliseconds of the commit or the
/// rollback, and the link is up).
const VERDICT: Duration = Duration::from_secs(10);

/// The default seed; `BANALYTICS_LOOP_SEED` overrides it.
const SEED: u64 = 10_200;

use crate::probation::{drill, world, World, ALPHA, BETA, BROKEN, GAMMA};

/// One assigned set of the rotation, and whether it can commit.
struct Assignment {
    name: &'static str,
    modules: &'static [&'static str],
    good: bool,
}

/// The rotation: A, B, F (fails probation), C, and again.
const ROTATION: [Assignment; 4] = [
    Assignment {
        name: "A",
        modules: &[ALPHA],
        good: true,
    },
    Assignment {
        name: "B",
        modules: &[ALPHA, BETA],
        good: true,
    },
    Assignment {
        name: "F",
        modules: &[ALPHA, BROKEN],
        good: false,
    },
    Assignment {
        name: "C",
        modules: &[GAMMA],
        good: true,
    },
];

/// How one `run` process ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// On its own, with this status (only 75 is accepted).
    Exit(i32),
    /// By our SIGKILL, this long after it started, in this phase (the last
    /// milestone of its log).
    Killed { after_ms: u64, phase: &'static str },
}

/// One `run` process, as the service manager saw it.
#[derive(Debug, Clone)]
struct Start {
    /// Its number (its log is `box-N.log`).
    n: usize,
    end: End,
    /// The set on probation when it had ended (`modules-probation.json`:
    /// the set's identity and the starts counted), if any.
    probation: Option<(String, u64)>,
}

/// A round's starts, one a line, named by their logs.
fn describe(starts: &[Start]) -> String {
    starts
        .iter()
        .map(|s| {
            format!(
                "\n  box-{}.log: {:?}, then on probation {:?}",
                s.n, s.end, s.probation
            )
        })
        .collect()
}

fn sorted(set: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn set_of(v: &Value) -> Vec<String> {
    let mut set: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    set.sort();
    set
}

/// The probation record the host keeps in the home, if any.
fn probation_record(home: &Path) -> Option<(String, u64)> {
    let bytes = std::fs::read(home.join("modules-probation.json")).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        v["set"].as_str().unwrap_or_default().to_owned(),
        v["boot_attempts"].as_u64().unwrap_or_default(),
    ))
}

/// The entries of the box's portal outbox (`state/portal-outbox/`), by
/// `seq`, read as the files they are.
fn outbox(home: &Path) -> BTreeMap<u64, Value> {
    let Ok(read) = std::fs::read_dir(home.join("state/portal-outbox")) else {
        return BTreeMap::new();
    };
    read.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name().into_string().ok()?;
        let seq = name.strip_suffix(".json")?.parse().ok()?;
        let bytes = std::fs::read(e.path()).ok()?;
        Some((seq, serde_json::from_slice(&bytes).ok()?))
    })
    .collect()
}

/// The phase a killed process was in: the last milestone its log reached
/// ("swap" when it left a swap journal behind: killed inside an apply or a
/// rollback; "commit" from the commit to the announcement of `installed`, which
/// [`Loop::kill`] also finds by the probation record gone before the log
/// said so).
fn phase(log: &str, journal: bool) -> &'static str {
    if journal {
        return "swap";
    }
    let mut phase = "starting";
    for e in log_events(log) {
        let status = e["status"].as_str().unwrap_or_default();
        phase = match (e["message"].as_str().unwrap_or_default(), status, phase) {
            ("interrupted module swap finished", _, _) => "recovered",
            ("staged module set applied", _, _) => "applied",
            ("new module set on probation", _, _) => "probation",
            ("rolling back", _, _) => "rollback",
            ("new module set committed", _, _) => "commit",
            ("status to portal", "Installed", "commit") => "committed",
            ("status to portal", "InstallationCancelled", "rollback") => "rolled-back",
            ("restarting", _, _) => "failed-start",
            // The synchronisation of a start on probation or right after a
            // verdict is not what such a kill interrupts.
            (_, _, "probation" | "commit" | "rollback") => continue,
            ("synchronisation started", _, _) => "sync",
            ("downloading" | "downloaded", _, _) => "download",
            ("staged set complete", _, _) => "staged",
            ("restarting to apply the staged set" | "stopping to restart", _, _) => "restart",
            ("synchronisation finished", _, _) => "idle",
            _ => continue,
        };
    }
    phase
}

/// When the next kill comes: at a random moment, or aimed at a milestone.
#[derive(Debug, Clone, Copy)]
struct Shot {
    /// At the latest this long after the shot is taken.
    within: Duration,
    /// Or this long after the current process reaches this milestone.
    aim: Option<(&'static str, Duration)>,
}

impl Shot {
    /// The next shot; the first of a round aims at the synchronisation.
    fn draw(rng: &mut fastrand::Rng, first: bool) -> Shot {
        let within = Duration::from_millis(rng.u64(0..=MAX_KILL_DELAY_MS));
        let aims = if first {
            &AIMS[..EARLY_AIMS]
        } else {
            &AIMS[..]
        };
        let aim = (first || rng.u64(0..UNAIMED) != 0).then(|| {
            (
                aims[rng.usize(..aims.len())],
                Duration::from_millis(rng.u64(0..=AIM_JITTER_MS)),
            )
        });
        Shot { within, aim }
    }
}

/// `InstallationCancelled` (the log's `Debug`) as the wire's
/// `installation_cancelled`.
fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// The box, run as a service manager runs it, and what it saw.
struct Loop {
    portal: PortalHandle,
    env: String,
    b: ManagedBox,
    rng: fastrand::Rng,
    seed: u64,
    /// Every process so far, in order.
    starts: Vec<Start>,
    /// When the running process started.
    started: Instant,
    /// Whether it started with a staged set or a swap journal in the home.
    applying: bool,
    /// Every outbox entry seen on disk when a process was killed.
    waiting: BTreeMap<u64, Value>,
}

impl Loop {
    /// When the running process exited on its own, records it and starts
    /// it again; fails on any exit but 75.
    fn supervise(&mut self) -> Result<()> {
        if self.b.pid().is_none() || self.b.is_running() {
            return Ok(());
        }
        let status = self.b.wait_exit(DEADLINE)?;
        let code = status.code().unwrap_or(-1);
        self.record(End::Exit(code));
        ensure!(
            code == EXIT_RESTART,
            "start {} exited with {status} (seed {}): {}",
            self.b.starts(),
            self.seed,
            self.b.log_tail(30)
        );
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        let home = self.b.path();
        self.applying = home
            .join("modules-upgrade/modules-info.properties")
            .exists()
            || home.join("modules-swap.journal").exists();
        self.b.spawn()?;
        self.started = Instant::now();
        Ok(())
    }

    fn record(&mut self, end: End) {
        self.starts.push(Start {
            n: self.b.starts(),
            end,
            probation: probation_record(&self.b.path()),
        });
    }

    /// SIGKILL, as a power cut would; every outbox entry on disk is kept
    /// to be looked for at the portal; then the service manager starts it
    /// again.
    fn kill(&mut self) -> Result<()> {
        // It may have exited by itself since we last looked: the service
        // manager's work, not a kill.
        self.supervise()?;
        let pid = self.b.pid().context("the box runs")?;
        let after_ms = self.started.elapsed().as_millis() as u64;
        // SAFETY: kill(2) on our child, which is not reaped before the
        // `wait_exit` below.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let status = self.b.wait_exit(DEADLINE)?;
        if status.signal() != Some(libc::SIGKILL) {
            // It exited by itself just before the signal came.
            let code = status.code().unwrap_or(-1);
            self.record(End::Exit(code));
            ensure!(
                code == EXIT_RESTART,
                "start {} exited with {status} (seed {})",
                self.b.starts(),
                self.seed
            );
            return self.spawn();
        }
        let log = std::fs::read_to_string(self.b.home().log_path(self.b.starts()))?;
        let journal = self.b.path().join("modules-swap.journal").exists();
        let on_probation = probation_record(&self.b.path()).is_some();
        self.record(End::Killed {
            after_ms,
            phase: match phase(&log, journal) {
                // Committed (the record is gone) before it could say so.
                "probation" if !on_probation => "commit",
                phase => phase,
            },
        });
        for (seq, entry) in outbox(&self.b.path()) {
            if let Some(earlier) = self.waiting.insert(seq, entry.clone()) {
                ensure!(
                    earlier == entry,
                    "seq {seq} names two statuses (seed {}): {earlier} and {entry}",
                    self.seed
                );
            }
        }
        self.spawn()
    }

    /// Supervises until the moment of `shot`: its milestone plus its
    /// jitter (in whichever process runs by then), or its latest moment.
    fn wait_for(&mut self, shot: Shot) -> Result<()> {
        let until = Instant::now() + shot.within;
        let mut reached: Option<Instant> = None;
        loop {
            self.supervise()?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            let Some((milestone, jitter)) = shot.aim else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            if reached.is_none() {
                reached = if milestone == APPLY {
                    // A process that starts with a swap to do, while its
                    // first `jitter` lasts.
                    (self.applying && now <= self.started + jitter).then_some(self.started)
                } else {
                    let log = self.b.home().log_path(self.b.starts());
                    std::fs::read_to_string(log)
                        .is_ok_and(|log| log.contains(&format!("\"message\":\"{milestone}\"")))
                        .then_some(now)
                };
            }
            if reached.is_some_and(|at| now >= at + jitter) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Supervises until `f` returns `Some`, for at most `timeout`; `None`
    /// when it never did.
    fn run_until<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<Option<T>> {
        let start = Instant::now();
        loop {
            self.supervise()?;
            if let Some(v) = f(self) {
                return Ok(Some(v));
            }
            if start.elapsed() > timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Supervises until the box's outbox is empty: every status it kept
    /// was confirmed by the portal.
    fn drained(&mut self) -> Result<()> {
        let start = Instant::now();
        while !outbox(&self.b.path()).is_empty() {
            self.supervise()?;
            ensure!(
                start.elapsed() < DEADLINE,
                "statuses wait in the outbox after {DEADLINE:?} (seed {}): {:?}",
                self.seed,
                outbox(&self.b.path())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Supervises, without kills, until the host runs with nothing on
    /// probation or staged, its last synchronisation is over, and the active
    /// set is `assigned`, or `committed` with `assigned` quarantined.
    /// Returns that `status`.
    fn settle(&mut self, assigned: &[String], committed: &[String]) -> Result<Value> {
        let start = Instant::now();
        loop {
            self.supervise()?;
            if let Ok(s) = self.b.status() {
                let u = &s["upgrade"];
                let sync = s["components"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["kind"] == "software-upgrade-center"))
                    .map(|c| c["details"]["sync"].clone())
                    .unwrap_or(Value::Null);
                let over = matches!(sync["state"].as_str(), Some("up-to-date" | "cancelled"));
                let installed = set_of(&u["installed"]);
                let at_rest = s["host"]["running"] == true
                    && u["probation"].is_null()
                    && u["staged"].is_null()
                    && over;
                if at_rest
                    && (installed == assigned
                        || (installed == committed
                            && set_of(&u["quarantined"]["modules"]) == assigned))
                {
                    return Ok(s);
                }
            }
            if start.elapsed() > SETTLE {
                bail!(
                    "the box did not settle within {SETTLE:?} (seed {}); status: {}; log: {}",
                    self.seed,
                    self.b
                        .status()
                        .map_or_else(|e| e.to_string(), |s| s.to_string()),
                    self.b.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn two_hundred_sigkills_during_real_upgrades_leave_a_reachable_committed_box_and_every_status_at_the_portal_once(
) -> Result<()> {
    let _machine = crate::machine::alone();
    // Alone: the kills aim at windows of a few milliseconds, and a few
    // minutes of one box restarting hundreds of times is enough load.
    let seed = std::env::var("BANALYTICS_LOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    eprintln!("loop test seed {seed} (BANALYTICS_LOOP_SEED={seed} replays it)");
    let began = Instant::now();
    let World { _dir, portal } = world()?;
    let env = env_uuid(200);
    let mut settings = BoxSettings::new(&portal, Some(&env));
    settings.max_boot_attempts = MAX_BOOT_ATTEMPTS;
    settings.health_grace_s = HEALTH_GRACE_S;
    // Every start synchronises, so a kill anywhere in a synchronisation is
    // followed by one that finishes it, as on a box in the field.
    settings.upgrade_extra = "software_update_type = \"on-boot\"".into();
    settings.components = drill("stop");
    let first = &ROTATION[0];
    portal.assign(&env, first.modules)?;
    let mut l = Loop {
        b: ManagedBox::new(&settings)?,
        portal,
        env,
        rng: fastrand::Rng::with_seed(seed),
        seed,
        starts: Vec::new(),
        started: Instant::now(),
        applying: false,
        waiting: BTreeMap::new(),
    };

    // The first install, without kills.
    l.spawn()?;
    let mut committed = sorted(first.modules);
    l.settle(&committed, &[])?;

    let mut kills = 0;
    let mut rounds = 0;
    let mut rolled_back_good = 0;
    while kills < KILLS {
        rounds += 1;
        let a = &ROTATION[rounds % ROTATION.len()];
        let assigned = sorted(a.modules);
        let from = l.starts.len();
        let round_began = l.portal.statuses(&l.env)?.len();

        l.portal.assign(&l.env, a.modules)?;
        l.portal.wait_connected(&l.env, DEADLINE)?;
        ensure!(l.portal.sync(&l.env) >= 1, "the box is not connected");
        let n = l.rng.usize(1..=MAX_KILLS_PER_ROUND).min(KILLS - kills);
        for i in 0..n {
            let shot = Shot::draw(&mut l.rng, i == 0);
            l.wait_for(shot)?;
            l.kill()?;
            kills += 1;
        }
        let status = l.settle(&assigned, &committed)?;
        l.portal
            .wait_connected(&l.env, DEADLINE)
            .with_context(|| format!("the box settled but is not connected (seed {seed})"))?;
        let installed = set_of(&status["upgrade"]["installed"]);
        let round: Vec<Start> = l.starts[from..].to_vec();
        let context = || {
            format!(
                "round {rounds} ({}: {assigned:?}, seed {seed}), its starts: {}",
                a.name,
                describe(&round)
            )
        };

        // The trial: the starts that ended with the assigned set on
        // probation (`modules-probation.json` as each process left it),
        // one block of them (a set is tried once per round), then the
        // start that committed it or put the previous set back.
        let on_probation: Vec<usize> = round
            .iter()
            .enumerate()
            .filter(|(_, s)| s.probation.is_some())
            .map(|(i, _)| i)
            .collect();
        if let (Some(&first), Some(&last)) = (on_probation.first(), on_probation.last()) {
            ensure!(
                last - first + 1 == on_probation.len(),
                "the set went on probation twice: {}",
                context()
            );
            let ids: Vec<&String> = round[first..=last]
                .iter()
                .filter_map(|s| s.probation.as_ref().map(|(id, _)| id))
                .collect();
            ensure!(
                ids.iter().all(|id| *id == ids[0]),
                "one set on probation in a round: {}",
                context()
            );
        }
        let trial = on_probation.len();
        let killed_in_trial = on_probation
            .iter()
            .filter(|&&i| matches!(round[i].end, End::Killed { .. }))
            .count();
        // The issue's bound, "never more than max_boot_attempts + 1 starts
        // for one assigned set": the starts of the set's trial are those
        // that ended with it on probation and the one after (which commits
        // it or puts the previous set back); a start that came after our
        // SIGKILL is the service manager's answer to the kill, not a start
        // the box asked for, so it is not counted.
        let own_failed = trial - killed_in_trial;
        let trial_starts = if trial == 0 { 1 } else { trial + 1 };
        ensure!(
            trial_starts - killed_in_trial <= MAX_BOOT_ATTEMPTS as usize + 1,
            "{trial_starts} starts for the set, {killed_in_trial} of them after a kill: {}",
            context()
        );
        // And by the host's own count (which counts killed starts too): a
        // start that failed by itself was one of the set's first
        // `max_boot_attempts`; the one after them puts the previous set
        // back instead of trying it again.
        for s in &round {
            if let (End::Exit(_), Some((_, counted))) = (&s.end, &s.probation) {
                ensure!(
                    *counted <= u64::from(MAX_BOOT_ATTEMPTS),
                    "box-{}.log failed start {counted} of the set: {}",
                    s.n,
                    context()
                );
            }
        }
        if a.good {
            ensure!(
                own_failed == 0,
                "a good set failed a start by itself: {}",
                context()
            );
            if installed != assigned {
                // Only kills can use up a good set's starts.
                ensure!(
                    installed == committed && killed_in_trial >= MAX_BOOT_ATTEMPTS as usize,
                    "a good set rolled back without its starts killed: {}",
                    context()
                );
                rolled_back_good += 1;
            }
        } else {
            ensure!(
                installed == committed,
                "the failing set is not active, the last committed set is: {installed:?}; {}",
                context()
            );
        }
        ensure!(
            installed == assigned
                || set_of(&status["upgrade"]["quarantined"]["modules"]) == assigned,
            "a set that was not installed is quarantined: {status}; {}",
            context()
        );
        // The portal hears the verdict: `installation_cancelled` for a set
        // not installed (the start that rolls it back reports it, and so
        // does the refusal of the quarantined set at every start after),
        // `installed` for a set committed in this round, whatever a kill
        // interrupted: the host holds the report across the commit or
        // rollback and the next start settles it.
        let wanted = if installed == assigned {
            "installed"
        } else {
            "installation_cancelled"
        };
        if installed != committed || installed != assigned {
            l.run_until(VERDICT, |l| {
                let lines = l.portal.statuses(&l.env).ok()?;
                lines
                    .get(round_began..)?
                    .iter()
                    .any(|s| s.status == wanted)
                    .then_some(())
            })?
            .with_context(|| format!("the portal never heard `{wanted}`: {}", context()))?;
        }
        eprintln!(
            "round {rounds}: {} -> {}; {} starts, trial of {trial} ({killed_in_trial} killed)",
            a.name,
            if installed == assigned {
                "committed"
            } else {
                "rolled back"
            },
            round.len()
        );
        committed = installed;
    }

    // Every status the box appended reached the portal once, in order:
    // the outbox numbers every status it keeps 1, 2, 3... (the next
    // number is above every entry and the counter), so with the outbox
    // empty the portal must have exactly 1 to next-seq - 1.
    l.drained()?;
    let next: u64 = std::fs::read_to_string(l.b.path().join("state/portal-outbox/next-seq"))
        .context("the outbox counter")?
        .trim()
        .parse()?;
    let report = l
        .portal
        .environment(&l.env)
        .context("the environment at the portal")?;
    let seqs: Vec<u64> = report
        .statuses
        .iter()
        .map(|s| s.seq.context("every status is durable"))
        .collect::<Result<_>>()?;
    ensure!(
        seqs == (1..next).collect::<Vec<_>>(),
        "statuses 1 to {} each once, in order (seed {seed}): {seqs:?}",
        next - 1
    );
    let at_portal = |seq: u64| &report.statuses[seq as usize - 1];
    // What the box said it kept, by its log: each number once, and the
    // portal has that status under it.
    let mut logged = BTreeMap::new();
    for e in log_events(&l.b.log()) {
        if e["message"] != "status to portal" {
            continue;
        }
        let seq = e["seq"]
            .as_u64()
            .with_context(|| format!("a status not kept on disk (seed {seed}): {e}"))?;
        let status = snake_case(e["status"].as_str().unwrap_or_default());
        ensure!(
            logged.insert(seq, status.clone()).is_none(),
            "seq {seq} logged twice (seed {seed})"
        );
        ensure!(
            seq < next && at_portal(seq).status == status.as_str(),
            "status {seq} was {status}, the portal has {:?} (seed {seed})",
            report.statuses.get(seq as usize - 1)
        );
    }
    // What was on disk when a kill came: the same status at the portal.
    for (seq, entry) in &l.waiting {
        let p = at_portal(*seq);
        ensure!(
            p.status == entry["status"]
                && p.module == entry["module"]
                && p.status_message == entry["statusMessage"],
            "status {seq} on disk at a kill was {entry}, the portal has {p:?} (seed {seed})"
        );
    }

    let mut by_phase: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &l.starts {
        if let End::Killed { phase, .. } = s.end {
            *by_phase.entry(phase).or_default() += 1;
        }
    }
    eprintln!(
        "loop test: {kills} kills in {rounds} rounds, {} starts, {:?}; kills by phase {by_phase:?}; \
         {rolled_back_good} good sets rolled back after their starts were killed; \
         {} statuses ({} logged by the box, the others' processes were killed before the line), \
         {} seen waiting on disk at a kill, {} duplicates dropped by the portal",
        l.starts.len(),
        began.elapsed(),
        seqs.len(),
        logged.len(),
        l.waiting.len(),
        report.duplicate_statuses
    );
    ensure!(l.b.stop()?.success());
    Ok(())
}
