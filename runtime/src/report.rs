//! What `status` adds from the home to the host's answer (the module sets,
//! the core that runs, the registration), and the lines of the text
//! `status` about them: one assembly for the CLI and the console.

use banalytics_home::{
    running::RunningCore,
    swap::{self, SetsReport},
    Layout,
};
use serde_json::{json, Value};

/// Adds the home's part to `data`, the host's `status` answer (or the
/// stopped box's): `upgrade` (the module sets, [`swap::SetsReport`]),
/// `core` (the core that runs) and `registration` (whether an environment
/// UUID is configured, and whether the portal link is up, from Portal
/// Integration's details; `null` when the host is not running). Returns
/// the sets and the core it read, for a caller that shows them typed.
pub fn add_home(data: &mut Value, layout: &Layout) -> (SetsReport, Option<RunningCore>) {
    let sets = swap::report(layout);
    let core = banalytics_home::running::read(layout).ok().flatten();
    data["upgrade"] = serde_json::to_value(&sets).expect("plain data");
    data["core"] = serde_json::to_value(&core).expect("plain data");
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
    (sets, core)
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
}
