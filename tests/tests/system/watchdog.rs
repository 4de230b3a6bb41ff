//! The service manager's notify protocol (issue 20): the test plays
//! systemd with a Unix datagram socket given to the box as `NOTIFY_SOCKET`
//! and a watchdog of 1 s (`WATCHDOG_USEC`), and reads what the box says.
//! The heartbeat is fed only while Portal Integration and the upgrade
//! center answer on their own arbiters; a wedged probe does not stop it.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use banalytics_tests::{
    e2e::{env_uuid, BoxSettings, ManagedBox},
    poll_until,
    portal::{Portal, PortalConfig},
    DEADLINE,
};
use serde_json::json;

/// The watchdog interval the test asks for; the box pings every half.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(1);

/// What the box sent, with when it arrived.
#[derive(Clone, Default)]
pub(crate) struct Heard(Arc<Mutex<Vec<(Instant, String)>>>);

impl Heard {
    /// Reads the socket at `path` on a thread until the test ends.
    pub(crate) fn listen(path: &Path) -> Result<Heard> {
        let socket = UnixDatagram::bind(path)?;
        let heard = Heard::default();
        let log = heard.0.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let now = Instant::now();
                let mut log = log.lock().unwrap();
                for line in text.lines() {
                    log.push((now, line.to_owned()));
                }
            }
        });
        Ok(heard)
    }

    /// The times of the lines equal to `line`.
    pub(crate) fn times(&self, line: &str) -> Vec<Instant> {
        let log = self.0.lock().unwrap();
        log.iter()
            .filter(|(_, l)| l == line)
            .map(|(t, _)| *t)
            .collect()
    }

    pub(crate) fn pings_between(&self, from: Instant, to: Instant) -> usize {
        self.times("WATCHDOG=1")
            .into_iter()
            .filter(|t| *t > from && *t <= to)
            .count()
    }

    pub(crate) fn all(&self) -> Vec<String> {
        let log = self.0.lock().unwrap();
        log.iter().map(|(_, l)| l.clone()).collect()
    }
}

#[test]
fn the_watchdog_is_fed_while_the_essential_components_answer_and_not_when_one_is_wedged(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let env = env_uuid(601);
    let mut settings = BoxSettings::new(&portal, Some(&env));
    settings.components = "[components.probe]\nkind = \"probe\"\n".to_owned();
    let mut b = ManagedBox::new(&settings)?;
    let socket = dir.path().join("notify.sock");
    let heard = Heard::listen(&socket)?;
    let usec = WATCHDOG.as_micros().to_string();
    b.spawn_with_env(&[
        ("NOTIFY_SOCKET", socket.to_str().unwrap()),
        ("WATCHDOG_USEC", &usec),
    ])?;

    // Ready once its components started, then fed while healthy.
    poll_until(DEADLINE, "READY=1", || {
        (!heard.times("READY=1").is_empty()).then_some(())
    })?;
    let ready = heard.times("READY=1")[0];
    poll_until(DEADLINE, "three pings after READY=1", || {
        (heard.pings_between(ready, Instant::now()) >= 3).then_some(())
    })?;

    // A wedged probe (not essential) does not stop the pings.
    let answer = b.home().exchange(
        "probe.ping",
        json!({"to": "probe", "seq": 1, "block_ms": 3000}),
        "probe.pong",
        DEADLINE,
    )?;
    ensure!(answer.is_ok(), "the probe answers, then blocks: {answer:?}");
    let blocked = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let fed = heard.pings_between(blocked, Instant::now());
    ensure!(
        fed >= 3,
        "pings go on while only the probe is wedged: {fed} in 2.5 s: {:?}",
        heard.all()
    );
    std::thread::sleep(Duration::from_millis(1000));

    // A wedged Portal Integration stops them within one interval.
    let no_reply = b.home().exchange(
        "portal-integration.block-drill",
        json!({"ms": 4000}),
        "no.reply",
        Duration::from_millis(200),
    )?;
    ensure!(
        no_reply.as_ref().is_err_and(|e| e.contains("no message")),
        "the drill reached Portal Integration: {no_reply:?}"
    );
    let wedged = Instant::now();
    std::thread::sleep(Duration::from_millis(3000));
    let fed = heard.pings_between(wedged + WATCHDOG, Instant::now());
    ensure!(
        fed == 0,
        "no ping later than one interval after Portal Integration wedged: {fed}: {:?}",
        heard.all()
    );
    ensure!(
        heard
            .all()
            .iter()
            .any(|l| l.starts_with("STATUS=not answering: portal")),
        "the status says who does not answer: {:?}",
        heard.all()
    );

    // Back once it answers again; READY=1 was said once.
    poll_until(DEADLINE, "pings again after the block", || {
        (heard.pings_between(wedged + Duration::from_secs(4), Instant::now()) >= 2).then_some(())
    })?;
    ensure!(heard.times("READY=1").len() == 1, "{:?}", heard.all());
    ensure!(b.stop()?.success());
    ensure!(
        heard.all().iter().any(|l| l == "STOPPING=1"),
        "STOPPING=1 on stop: {:?}",
        heard.all()
    );
    Ok(())
}
