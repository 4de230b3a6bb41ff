//! What `status` adds from the home to the host's answer (the module sets,
//! the core that runs, the registration), and the lines of the text
//! `status` about them: one assembly for the CLI and the console.

use banalytics_home::{swap, Layout};
use serde_json::{json, Value};

/// Adds the home's part to `data`, the host's `status` answer (or the
/// stopped box's): `upgrade` (the module sets, [`swap::SetsReport`]),
/// `core` (the core that runs) and `registration` (whether an environment
/// UUID is configured, and whether the portal link is up, from Portal
/// Integration's details; `null` when the host is not running).
pub fn add_home(data: &mut Value, layout: &Layout) {
    data["upgrade"] = serde_json::to_value(swap::report(layout)).expect("plain data");
    data["core"] = serde_json::to_value(banalytics_home::running::read(layout).ok().flatten())
        .expect("plain data");
    data["unreadable_files"] =
        serde_json::to_value(banalytics_home::format::newer_files(layout.home()))
            .expect("plain data");
    let portal = components_of(data, banalytics_portal_integration::KIND_NAME)
        .next()
        .map(|c| c["details"].clone());
    data["registration"] = json!({
        "environment_uuid": layout.environment_uuid().ok().flatten().is_some(),
        "portal_link": portal.as_ref().map(|d| d["connected"].as_bool() == Some(true)),
        "portal": portal.as_ref().and_then(|d| d["portal"].as_str()),
        "portal_error": portal.as_ref().and_then(|d| d["last_error"].as_str()),
    });
}

/// The components of `kind` in a `status` answer.
pub fn components_of<'a>(data: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    data["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |c| c["kind"] == kind)
}

/// The registration line of the text `status`.
pub fn registration_line(data: &Value) -> String {
    let r = &data["registration"];
    let env = if r["environment_uuid"].as_bool() == Some(true) {
        "registered (environment UUID present)"
    } else {
        "not registered (no environmentUuid in config/device-registration.properties)"
    };
    let link = match r["portal_link"].as_bool() {
        Some(true) => format!("portal link up ({})", r["portal"].as_str().unwrap_or("?")),
        Some(false) => match r["portal_error"].as_str() {
            Some(e) => format!("portal link down: {e}"),
            None => "portal link down".to_owned(),
        },
        None if data["host"]["running"].as_bool() == Some(true) => {
            "no portal link (no portal-integration component)".to_owned()
        }
        None => "portal link unknown (the host is not running)".to_owned(),
    };
    format!("registration: {env}; {link}")
}

/// The last synchronisation's lines of the text `status`: its state,
/// trigger and result, or why there is none to show.
pub fn sync_lines(data: &Value) -> Vec<String> {
    if data["host"]["running"].as_bool() != Some(true) {
        return vec!["synchronisation: unknown (the host is not running)".to_owned()];
    }
    let centers: Vec<&Value> = components_of(data, banalytics_upgrade_center::KIND_NAME).collect();
    if centers.is_empty() {
        return vec!["synchronisation: none (no software-upgrade-center component)".to_owned()];
    }
    centers
        .into_iter()
        .map(|c| {
            let sync = &c["details"]["sync"];
            let name = c["name"].as_str().unwrap_or("?");
            match sync["state"].as_str() {
                None | Some("idle") => {
                    format!("synchronisation ({name}): none since the host started")
                }
                Some(state) => format!(
                    "synchronisation ({name}): {state} (trigger: {}){}",
                    sync["trigger"].as_str().unwrap_or("?"),
                    sync["result"]
                        .as_str()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_says_uuid_and_link() {
        let up = json!({
            "host": {"running": true},
            "registration": {"environment_uuid": true, "portal_link": true, "portal": "ws://p/"},
        });
        assert_eq!(
            registration_line(&up),
            "registration: registered (environment UUID present); portal link up (ws://p/)"
        );
        let stopped = json!({
            "host": {"running": false},
            "registration": {"environment_uuid": false, "portal_link": null},
        });
        let line = registration_line(&stopped);
        assert!(line.contains("not registered"), "{line}");
        assert!(line.contains("the host is not running"), "{line}");
    }

    #[test]
    fn the_last_synchronisation_is_shown_with_its_result_or_why_not() {
        let data = json!({
            "host": {"running": true},
            "components": [{"name": "uc", "kind": "software-upgrade-center", "details": {"sync": {
                "state": "cancelled", "trigger": "local", "result": "no"}}}],
        });
        assert_eq!(
            sync_lines(&data),
            ["synchronisation (uc): cancelled (trigger: local): no"]
        );
        let idle = json!({
            "host": {"running": true},
            "components": [{"name": "uc", "kind": "software-upgrade-center", "details": {"sync": {"state": "idle"}}}],
        });
        assert!(sync_lines(&idle)[0].contains("none since the host started"));
        let stopped = json!({"host": {"running": false}});
        assert!(sync_lines(&stopped)[0].contains("not running"));
    }
}
