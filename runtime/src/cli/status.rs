//! `banalytics-box status`: the running host's answer (or, with no host,
//! the configured components, all stopped), the module sets and the core,
//! as a table or as JSON.

use banalytics_home::{running::RunningCore, swap::SetsReport, Layout};
use banalytics_messages::status::{SyncState, Trigger, UpgradeCenterDetails};

use crate::{
    config::BoxConfig,
    control::{self, Request},
    host::busy::BusyState,
    ids, Error, Home, EXIT_OK,
};

/// Prints the status of the box in `home`.
pub(super) fn status(home: &Home, json: bool) -> Result<u8, Error> {
    let socket = home.control_socket();
    let answer = control::request(&socket, &Request::Status).map_err(|source| Error::Io {
        path: socket.clone(),
        source,
    })?;
    let mut data = match answer {
        Some(r) => r.data.unwrap_or_default(),
        None => offline_status(home)?,
    };
    // The home's part, as the console shows it: sets, core, registration,
    // files of a newer format.
    let (sets, core) = crate::report::add_home(&mut data, &Layout::new(home.root()));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&data).expect("json value")
        );
    } else {
        print_status(&data, &sets, core.as_ref());
    }
    Ok(EXIT_OK)
}

/// What `status` shows when no host runs: the configured components with
/// their IDs, all stopped.
fn offline_status(home: &Home) -> Result<serde_json::Value, Error> {
    // Listing the configured components needs no plugin loaded (that would
    // run library initialisers in a CLI process): any kind is listed.
    let config = BoxConfig::load_any_kind(home.root())?;
    let ids = ids::load(&home.ids_file()).map_err(|source| Error::Io {
        path: home.ids_file(),
        source,
    })?;
    let components: Vec<_> = config
        .components
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "kind": c.kind,
                "id": ids.get(&c.name).map(|u| u.to_string()),
                "state": "STOPPED",
                "restart_count": 0,
                "reason": null,
                "last_error": null,
            })
        })
        .collect();
    Ok(serde_json::json!({ "host": { "running": false }, "components": components }))
}

fn print_status(data: &serde_json::Value, sets: &SetsReport, core: Option<&RunningCore>) {
    let running = data["host"]["running"].as_bool().unwrap_or(false);
    println!("host: {}", if running { "running" } else { "not running" });
    println!("{}", crate::report::registration_line(data));
    let sandbox = &data["host"]["sandbox"];
    match sandbox["level"].as_str() {
        Some("none") if cfg!(windows) => println!(
            "sandbox: none (Landlock is Linux-only): isolated components run unsandboxed, in a Job object with their limits"
        ),
        Some("none") => println!(
            "sandbox: none (the kernel has no Landlock): isolated components run unsandboxed"
        ),
        Some(level) => println!(
            "sandbox: Landlock ABI {} for isolated components ({level})",
            sandbox["landlock_abi"]
        ),
        None => {}
    }
    if let Some(core) = core {
        println!(
            "core: {} ({}, sha256 {})",
            core.version,
            core.origin.as_str(),
            core.sha256
        );
        if let Some(why) = &core.fallback {
            println!("core: not the set's: {why}");
        }
    }
    println!(
        "{:<20} {:<26} {:<9} {:>8}  {:<36}  LAST ERROR",
        "COMPONENT", "KIND", "STATE", "RESTARTS", "ID"
    );
    for c in data["components"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<26} {:<9} {:>8}  {:<36}  {}",
            c["name"].as_str().unwrap_or("?"),
            match c["origin"].as_str() {
                Some(o) if o != "built-in" =>
                    format!("{} ({o})", c["kind"].as_str().unwrap_or("?")),
                _ => c["kind"].as_str().unwrap_or("?").to_owned(),
            },
            c["state"].as_str().unwrap_or("?"),
            c["restart_count"].as_u64().unwrap_or(0),
            c["id"].as_str().unwrap_or("-"),
            c["last_error"].as_str().unwrap_or("-"),
        );
    }
    print_refused_publications(data);
    print_sets(sets);
    for f in data["unreadable_files"].as_array().into_iter().flatten() {
        println!(
            "left as it is: {} is of format {}, newer than format {} this core knows",
            f["path"].as_str().unwrap_or("?"),
            f["format"],
            f["known"]
        );
    }
    print_sync(data);
    print_waits(data);
}

/// The messages the host refused from each plugin component (bus
/// authority, `crate::authority`), per topic.
fn print_refused_publications(data: &serde_json::Value) {
    for c in data["components"].as_array().into_iter().flatten() {
        let Some(refused) = c["refused_publications"].as_object() else {
            continue;
        };
        if refused.is_empty() {
            continue;
        }
        let topics: Vec<String> = refused
            .iter()
            .map(|(topic, n)| format!("{topic} ({n})"))
            .collect();
        println!(
            "  {}: messages refused (topics it may not publish): {}",
            c["name"].as_str().unwrap_or("?"),
            topics.join(", ")
        );
    }
}

/// An upgrade center in a `status` answer, read with the types it writes.
pub(super) struct UpgradeCenterSeen {
    /// The component's name.
    pub(super) name: String,
    /// Its details: the home's facts and the last synchronisation.
    pub(super) details: UpgradeCenterDetails,
    /// Whether its report lists request numbers (`requests`): a host older
    /// than them does not write the field, so its absence tells an asker
    /// to fall back on the start time.
    pub(super) knows_requests: bool,
}

/// The upgrade centers of a `status` answer's `data`, their details
/// decoded as [`UpgradeCenterDetails`] (a component whose details do not
/// decode is left out).
pub(super) fn upgrade_centers(data: &serde_json::Value) -> Vec<UpgradeCenterSeen> {
    data["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["kind"] == banalytics_upgrade_center::KIND_NAME)
        .filter_map(|c| {
            Some(UpgradeCenterSeen {
                name: c["name"].as_str().unwrap_or("?").to_owned(),
                details: serde_json::from_value(c["details"].clone()).ok()?,
                knows_requests: c["details"]["sync"].get("requests").is_some(),
            })
        })
        .collect()
}

/// The upgrade center's last synchronisation (or refused request): its
/// state, trigger and result.
fn print_sync(data: &serde_json::Value) {
    if data["host"]["running"].as_bool() != Some(true) {
        println!("synchronisation: unknown (the host is not running)");
        return;
    }
    let centers = upgrade_centers(data);
    if centers.is_empty() {
        println!("synchronisation: none (no software-upgrade-center component)");
    }
    for c in centers {
        let sync = &c.details.sync;
        if sync.state == SyncState::Idle {
            println!("synchronisation ({}): none since the host started", c.name);
            continue;
        }
        let result = sync
            .result
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        println!(
            "synchronisation ({}): {} (trigger: {}){result}",
            c.name,
            sync.state,
            sync.trigger.map_or("?", Trigger::as_str),
        );
    }
}

/// What a staged set waits for: the upgrade center's window or approval,
/// and the busy leases that defer the restart.
fn print_waits(data: &serde_json::Value) {
    for c in upgrade_centers(data) {
        if let Some(why) = &c.details.sync.waits_for {
            println!("  {}: {why}", c.name);
        }
    }
    let busy: BusyState = serde_json::from_value(data["busy"].clone()).unwrap_or_default();
    for l in &busy.leases {
        println!("busy: {} holds {:?} ({})", l.holder, l.lease, l.reason);
    }
    if let Some(until) = busy.restart_deferred_until_ms {
        println!("  the restart waits for the busy leases, at most until {until} ms");
    }
}

/// The module sets part of `status` ([`swap::SetsReport`]).
fn print_sets(u: &SetsReport) {
    fn list<T: std::fmt::Display>(names: &[T]) -> String {
        if names.is_empty() {
            "(empty set)".to_owned()
        } else {
            names
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
    println!("modules: {}", list(&u.installed));
    if let Some(p) = &u.probation {
        println!(
            "  on probation: start {}, last error: {}{}",
            p.boot_attempts,
            p.last_error.as_deref().unwrap_or("none"),
            if p.excused.is_empty() {
                String::new()
            } else {
                format!(
                    ", excused (failing before the upgrade): {}",
                    list(&p.excused)
                )
            }
        );
    }
    if let Some(staged) = &u.staged {
        println!("staged: {}", list(staged));
        if let Some(why) = &u.staged_waits_for {
            println!("  waits: {why}");
        }
    }
    match &u.backup {
        None => println!("backup: none (nothing to roll back to)"),
        Some(backup) => println!("backup: {}", list(backup)),
    }
    if let Some(q) = &u.quarantined {
        println!(
            "quarantined: {} (rolled back at {} ms: {})",
            list(
                &q.modules
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            q.rolled_back_ms,
            q.reason
        );
    }
}
