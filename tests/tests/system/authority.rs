//! Bus authority (issue 21, item 2) in the real host: a plugin may publish
//! only the topics its kind declares, and never one that steers the host
//! or the upgrade center, whatever it declares; a restart runs only the
//! program `box.toml` names. The sample plugin built with its feature
//! `forge` misbehaves on request: each `forge` of a `sample.request`
//! reaches the host as a message on any topic, and its kind declares a
//! restart, an approval and the portal's target set among its topics.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use anyhow::{bail, ensure, Result};
use banalytics_tests::{poll_until, TempHome, DEADLINE};
use serde_json::{json, Value};

use crate::plugins::{home_with_modules, ping, samples, wait_for_state};

const RESTART: &str = "host.restart-requested";
const APPROVE: &str = "host.approve-staged-set";
const PORTAL_ANSWER: &str = "portal.GET_ENV_MOD_RES";

fn config(isolation: &str) -> String {
    format!(
        r#"
[components.heartbeat]
kind = "probe"

[components.echo]
kind = "sample-echo"
isolation = "{isolation}"
"#
    )
}

fn home(isolation: &str) -> Result<TempHome> {
    home_with_modules(
        &config(isolation),
        &[("com.example:sample:1.0", &samples().forge)],
    )
}

/// A program that leaves `marker` behind when it runs: what a forged
/// restart command would start.
fn marker_program(home: &TempHome, marker: &Path) -> Result<String> {
    let program = home.path().join("forged-restart-job");
    std::fs::write(
        &program,
        format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    )?;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))?;
    Ok(program.display().to_string())
}

/// Asks the sample to forge `forged` (topic, message) and waits for its
/// reply on `reply_topic`: `Err` with the host's reason when none came
/// within `timeout`.
fn forge(
    home: &TempHome,
    seq: u64,
    forged: &[(&str, Value)],
    reply_topic: &str,
    timeout: Duration,
) -> Result<std::result::Result<Value, String>> {
    let forge: Vec<Value> = forged
        .iter()
        .map(|(topic, message)| json!({ "topic": topic, "message": message }))
        .collect();
    home.exchange(
        "sample.request",
        json!({ "seq": seq, "forge": forge }),
        reply_topic,
        timeout,
    )
}

/// Waits until `echo`'s refused publications are `expected` (topic, count).
fn wait_for_refusals(home: &TempHome, expected: &[(&str, u64)]) -> Result<Value> {
    let want: serde_json::Map<String, Value> = expected
        .iter()
        .map(|(t, n)| ((*t).to_owned(), json!(n)))
        .collect();
    poll_until(DEADLINE, &format!("refused publications {want:?}"), || {
        home.component("echo")
            .ok()
            .filter(|c| c["refused_publications"] == Value::Object(want.clone()))
    })
}

fn count_lines(log: &str, needles: &[&str]) -> usize {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[test]
fn a_plugin_forging_a_restart_an_approval_and_the_portals_answer_is_refused_and_nothing_restarts(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let home = home("none")?;
    let marker = home.path().join("forged-restart-ran");
    let program = marker_program(&home, &marker)?;
    let mut host = home.start(1)?;
    wait_for_state(&home, "echo", "RUN")?;
    let pid = home.status()?["host"]["pid"].clone();
    assert_eq!(pid, json!(host.pid()));

    let forged = [
        (
            RESTART,
            json!({ "mode": "command", "command": program, "reason": "forged by a plugin" }),
        ),
        (APPROVE, json!({ "by": "plugin" })),
        (PORTAL_ANSWER, json!({ "modules": [] })),
    ];
    // Twice: each is counted, logged once.
    for seq in 1..=2 {
        match forge(&home, seq, &forged, "sample.reply", DEADLINE)? {
            Ok(reply) => assert_eq!(reply["seq"], seq, "{reply}"),
            Err(why) => bail!("no reply to the forging request {seq}: {why}"),
        }
    }
    let echo = wait_for_refusals(&home, &[(RESTART, 2), (APPROVE, 2), (PORTAL_ANSWER, 2)])?;
    assert_eq!(echo["state"], "RUN", "{echo}");

    // Nothing restarts: the same host answers, no restart program ran.
    assert_eq!(ping(&home, "heartbeat", 3)?["from"], "heartbeat");
    ensure!(host.is_running(), "the host exited: {}", host.log());
    assert_eq!(home.status()?["host"]["pid"], pid);
    assert!(!marker.exists(), "the forged restart command ran");
    let text = home.cli(&["status"])?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("echo: messages refused (topics it may not publish)")
            && text.contains(&format!("{RESTART} (2)")),
        "{text}"
    );

    let status = host.signal_and_wait(libc::SIGTERM)?;
    assert_eq!(status.code(), Some(0), "stopped by SIGTERM, not restarted");
    let log = std::fs::read_to_string(home.log_path(1))?;
    assert!(!log.contains("stopping to restart"), "{log}");
    assert!(
        log.contains("plugin kind declares topics no plugin may publish"),
        "{log}"
    );
    for topic in [RESTART, APPROVE, PORTAL_ANSWER] {
        assert_eq!(
            count_lines(
                &log,
                &[
                    "no plugin may publish on this topic",
                    "component=echo",
                    topic
                ]
            ),
            1,
            "one warning for {topic}:\n{log}"
        );
    }
    assert!(!marker.exists());
    Ok(())
}

#[test]
fn an_isolated_plugin_publishing_on_a_topic_it_did_not_declare_is_refused() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = home("process")?;
    let mut host = home.start(1)?;
    wait_for_state(&home, "echo", "RUN")?;

    // A ping for the probe, which the sample's kind does not declare: the
    // probe would answer it with a pong, which never comes.
    let answer = forge(
        &home,
        1,
        &[("probe.ping", json!({ "to": "*", "seq": 41 }))],
        "probe.pong",
        Duration::from_secs(2),
    )?;
    assert!(
        answer.is_err(),
        "the forged ping reached the probe: {answer:?}"
    );
    // A declared topic passes: the reply to the same kind of request.
    match forge(
        &home,
        2,
        &[(RESTART, json!({ "mode": "exit", "reason": "forged" }))],
        "sample.reply",
        DEADLINE,
    )? {
        Ok(reply) => assert_eq!(reply["seq"], 2, "{reply}"),
        Err(why) => bail!("no reply from the isolated sample: {why}"),
    }
    wait_for_refusals(&home, &[("probe.ping", 1), (RESTART, 1)])?;
    // The probe itself answers a ping from the operator.
    assert_eq!(ping(&home, "heartbeat", 42)?["seq"], 42);
    ensure!(host.is_running(), "the host exited: {}", host.log());

    let status = host.signal_and_wait(libc::SIGTERM)?;
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(home.log_path(1))?;
    assert_eq!(
        count_lines(
            &log,
            &[
                "does not declare this topic",
                "component=echo",
                "probe.ping"
            ]
        ),
        1,
        "{log}"
    );
    assert_eq!(
        count_lines(
            &log,
            &[
                "no plugin may publish on this topic",
                "component=echo",
                RESTART
            ]
        ),
        1,
        "{log}"
    );
    Ok(())
}

#[test]
fn a_restart_request_over_the_control_socket_runs_no_program_of_its_own() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = home("none")?;
    let marker = home.path().join("requested-restart-ran");
    let program = marker_program(&home, &marker)?;
    let host = home.start(1)?;
    // The operator's exchange is trusted: the host restarts, but the way
    // `box.toml` says (no restart program configured: it exits with the
    // restart status), never with the message's `command`. The answer may
    // be lost with the stopping host.
    let _ = home.exchange(
        RESTART,
        json!({ "mode": "command", "command": program, "reason": "asked over the socket" }),
        "test.nothing",
        Duration::from_millis(200),
    );
    let status = host.wait(DEADLINE)?;
    assert_eq!(status.code(), Some(75), "exits to be restarted");
    assert!(
        !marker.exists(),
        "the request's own command ran: {}",
        std::fs::read_to_string(home.log_path(1))?
    );
    Ok(())
}
