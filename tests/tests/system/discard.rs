//! `banalytics-box discard` (issue 23) with real processes: a staged set
//! that waits for approval is dropped with the host running (through the
//! control socket) and with it stopped (on the home, under the home lock):
//! `modules-upgrade/` and the hold are gone, and the portal hears
//! `installation_cancelled` naming the operator's discard.

use anyhow::{ensure, Result};
use banalytics_tests::e2e::PortalApi;

use crate::maintenance::{staged_box, Scene, CONVERGE};

/// What the portal hears of a discard from the command line.
const TOLD: &str = "discarded by the operator (cli)";

fn assert_gone(home: &std::path::Path) -> Result<()> {
    let staged = home.join("modules-upgrade");
    ensure!(
        !staged.exists(),
        "modules-upgrade/ is gone: {:?}",
        std::fs::read_dir(&staged).map(|d| d.count())
    );
    ensure!(
        !home.join("state/apply-hold.json").exists(),
        "the hold is gone"
    );
    Ok(())
}

#[test]
fn discard_with_the_host_running_drops_the_set_and_tells_the_portal() -> Result<()> {
    let _machine = crate::machine::shared();
    let mut s = staged_box(31, "apply = \"approval\"")?;
    ensure!(s.b.path().join("state/apply-hold.json").exists(), "held");
    let out = s.b.home().cli(&["discard"])?;
    let said = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && said.contains(TOLD),
        "discard: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_gone(&s.b.path())?;
    portal_heard_the_discard(&s, "")?;
    ensure!(s.b.is_running(), "a discard restarts nothing");
    let text = s.b.home().cli(&["status"])?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(
        !text.contains("\nstaged:") && text.contains(TOLD),
        "status shows no staged set and the discard as the last result: {text}"
    );
    let again = s.b.home().cli(&["approve"])?;
    ensure!(!again.status.success(), "nothing left to approve");
    Ok(())
}

/// The portal got `installation_cancelled` naming the operator's discard
/// (`when` completes the failure's words).
fn portal_heard_the_discard(s: &Scene, when: &str) -> Result<()> {
    let lines = s
        .portal
        .wait_for_status(&s.env, "installation_cancelled", 0, CONVERGE)?;
    ensure!(
        lines
            .iter()
            .any(|l| l.status == "installation_cancelled" && l.message.contains(TOLD)),
        "the portal heard the discard{when}: {:?}",
        lines.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn discard_with_the_host_stopped_drops_the_set_and_the_portal_hears_at_the_next_start() -> Result<()>
{
    let _machine = crate::machine::shared();
    let mut s = staged_box(32, "apply = \"approval\"")?;
    s.b.stop()?;
    let out = s.b.home().cli(&["discard"])?;
    let said = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && said.contains(TOLD) && said.contains("outbox"),
        "discard: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_gone(&s.b.path())?;
    let text = s.b.home().cli(&["status"])?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(
        !text.contains("\nstaged:")
            && text.contains("registration: registered")
            && text.contains("backup: ")
            && text.contains("synchronisation: unknown (the host is not running)"),
        "status: {text}"
    );
    let again = s.b.home().cli(&["discard"])?;
    ensure!(
        again.status.success()
            && String::from_utf8_lossy(&again.stdout).contains("nothing to discard"),
        "a second discard finds nothing"
    );
    s.b.spawn()?;
    portal_heard_the_discard(&s, " once the box was back")?;
    Ok(())
}
