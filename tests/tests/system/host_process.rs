//! The real `banalytics-box run` process on a temporary home.

use std::collections::BTreeMap;

use anyhow::Result;
use banalytics_tests::{poll_until, TempHome, DEADLINE};

const CONFIG: &str = r#"
[log]
level = "info"
format = "json"

[components.alpha]
kind = "probe"
restart_on_failure = "immediate"

[components.drill]
kind = "probe"
restart_on_failure = "stop"
fail_while_file = "data/fail-drill"
"#;

fn states_and_ids(home: &TempHome) -> Result<BTreeMap<String, (String, String)>> {
    let status = home.status()?;
    Ok(status["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                (
                    c["state"].as_str().unwrap().to_owned(),
                    c["id"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect())
}

fn wait_for_state(home: &TempHome, name: &str, state: &str) -> Result<serde_json::Value> {
    poll_until(DEADLINE, &format!("{name} in {state}"), || {
        home.component(name).ok().filter(|c| c["state"] == state)
    })
}

#[test]
fn status_shows_components_in_run_with_ids_stable_across_process_restarts() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = TempHome::new(CONFIG)?;
    let first = home.start(1)?;
    wait_for_state(&home, "alpha", "RUN")?;
    wait_for_state(&home, "drill", "RUN")?;
    let before = states_and_ids(&home)?;
    assert_eq!(before.len(), 2);
    for (state, id) in before.values() {
        assert_eq!(state, "RUN");
        uuid_like(id);
    }
    assert_ne!(before["alpha"].1, before["drill"].1);
    assert!(first.signal_and_wait(libc::SIGTERM)?.success());

    let second = home.start(2)?;
    wait_for_state(&home, "drill", "RUN")?;
    assert_eq!(
        states_and_ids(&home)?,
        before,
        "IDs changed across a restart"
    );
    assert!(second.signal_and_wait(libc::SIGTERM)?.success());
    Ok(())
}

#[test]
fn a_component_failing_under_stop_stays_in_error_until_restart() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = TempHome::new(CONFIG)?;
    std::fs::create_dir_all(home.path().join("data"))?;
    std::fs::write(home.path().join("data/fail-drill"), b"")?;
    let host = home.start(1)?;
    let drill = wait_for_state(&home, "drill", "ERROR")?;
    assert!(
        drill["reason"].as_str().unwrap().contains("failure drill"),
        "{drill}"
    );
    // It stays there: polled for a while, never RUN, never restarted.
    for _ in 0..20 {
        let drill = home.component("drill")?;
        assert_eq!(drill["state"], "ERROR");
        assert_eq!(drill["restart_count"], 0);
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert_eq!(home.component("alpha")?["state"], "RUN");

    // A healthy component is not restarted by hand.
    let refused = home.cli(&["restart", "alpha"])?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is running"));

    std::fs::remove_file(home.path().join("data/fail-drill"))?;
    let out = home.cli(&["restart", "drill"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drill = wait_for_state(&home, "drill", "RUN")?;
    assert_eq!(drill["restart_count"], 1);
    assert!(drill["last_error"]
        .as_str()
        .unwrap()
        .contains("failure drill"));
    assert!(host.signal_and_wait(libc::SIGTERM)?.success());
    Ok(())
}

#[test]
fn sigterm_stops_components_in_reverse_order_and_exits_0() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = TempHome::new(CONFIG)?;
    let host = home.start(1)?;
    wait_for_state(&home, "drill", "RUN")?;
    let socket = home.path().join("state/control.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket)?.permissions().mode() & 0o777,
        0o600
    );
    let status = host.signal_and_wait(libc::SIGTERM)?;
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(home.log_path(1))?;
    let stopped: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "component stopped")
        .map(|v| v["component"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(stopped, ["drill", "alpha"], "log:\n{log}");
    assert!(!socket.exists(), "control socket left behind");
    let offline = home.status()?;
    assert_eq!(offline["host"]["running"], false);
    Ok(())
}

#[test]
fn sigint_also_stops_the_host_with_status_0() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = TempHome::new(CONFIG)?;
    let host = home.start(1)?;
    assert_eq!(host.signal_and_wait(libc::SIGINT)?.code(), Some(0));
    Ok(())
}

#[test]
fn a_second_host_on_the_same_home_is_refused() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = TempHome::new(CONFIG)?;
    let host = home.start(1)?;
    let out = home.cli(&["run"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another banalytics-box is running"));
    assert_eq!(
        home.status()?["host"]["running"],
        true,
        "the first host must survive"
    );
    assert!(host.signal_and_wait(libc::SIGTERM)?.success());
    Ok(())
}

fn uuid_like(id: &str) {
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
}
