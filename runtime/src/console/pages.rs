//! The console's views, rendered on the server with `maud` and the shared
//! look (`banalytics_ui`) from the data `status` shows (the control
//! socket's answer plus `crate::report::add_home`) and the files of the
//! home: pure functions of that data, so each view is rendered the same
//! for a page and for its live updates.

use std::time::{Duration, SystemTime};

use banalytics_home::{installed, record::SetRecord, Layout};
use banalytics_ui::{self as ui, Button, ButtonKind, Outcome};
use maud::{html, Markup};
use serde_json::{json, Value};
use tracing::Level;

use super::{ring::LogLine, settings::UpgradeSettings};

/// The installed set's modules with type and size, for the upgrade page:
/// `[{"module", "version", "type", "bytes"}]` (bytes of the main artifact
/// and its extracted packages, from the set's hash record).
pub fn installed_modules(layout: &Layout) -> Value {
    let dir = layout.modules();
    let modules = installed::read_modules_info(&dir)
        .ok()
        .flatten()
        .unwrap_or_default();
    let record = SetRecord::load(&dir).ok().flatten().unwrap_or_default();
    let rows: Vec<Value> = modules
        .iter()
        .map(|m| {
            let bytes = record.modules.get(&m.coords).map(|r| {
                let package = |p: &Option<banalytics_home::record::PackageRecord>| {
                    p.as_ref()
                        .map_or(0, |p| p.files.iter().map(|f| f.size).sum::<u64>())
                };
                r.main.size + package(&r.dependencies) + package(&r.model)
            });
            let (module, version) = (m.coords.module_name().to_string(), m.coords.version());
            json!({"module": module, "version": version, "type": m.module_type.as_str(), "bytes": bytes})
        })
        .collect();
    Value::Array(rows)
}

fn state_outcome(state: &str) -> Outcome {
    match state {
        "RUN" => Outcome::Good,
        "ERROR" => Outcome::Bad,
        "STARTING" | "STOPPING" => Outcome::Running,
        _ => Outcome::Neutral,
    }
}

fn since(ms: Option<u64>, now: SystemTime) -> Markup {
    match ms {
        Some(ms) if ms > 0 => ui::time(ui::unix_ms(ms), now),
        _ => html! { "—" },
    }
}

/// The Components view: each component's kind, ID, state, restarts, last
/// error and actors, with Restart for one that is stopped or in ERROR.
pub fn components(data: &Value, now: SystemTime) -> Markup {
    let list = data["components"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return ui::empty(
            "No components configured",
            html! { "Add a " code { "[components.NAME]" } " table to config/box.toml and restart the box." },
        );
    }
    let rows = html! {
        @for c in &list {
            @let name = c["name"].as_str().unwrap_or("?");
            @let state = c["state"].as_str().unwrap_or("?");
            tr data-component=(name) {
                td { strong { (name) } }
                td data-label="Kind" { (c["kind"].as_str().unwrap_or("?"))
                    @if let Some(o) = c["origin"].as_str().filter(|o| *o != "built-in") { br; small { (o) } } }
                td data-label="ID" { code.id { (c["id"].as_str().unwrap_or("—")) } }
                td data-label="State" { (ui::badge(state_outcome(state), state)) br; small { "since " (since(c["since_ms"].as_u64(), now)) } }
                td data-label="Restarts" { (c["restart_count"].as_u64().unwrap_or(0)) }
                td data-label="Last error" { (c["reason"].as_str().or(c["last_error"].as_str()).unwrap_or("—")) }
                td data-label="Actors" {
                    @for (actor, a) in c["actors"].as_object().into_iter().flatten() {
                        @let s = a["state"].as_str().unwrap_or("?");
                        span.actor { (actor) " " (ui::badge(state_outcome(s), s))
                            @if a["restarts"].as_u64().unwrap_or(0) > 0 { " ↻" (a["restarts"]) } }
                        " "
                    }
                }
                td data-label="Action" {
                    @if state == "STOPPED" || state == "ERROR" {
                        @let action = format!("/console/components/{name}/restart");
                        @let label = format!("Restart {name}");
                        (Button::post(&action, &label).kind(ButtonKind::Primary).render())
                    } @else { "—" }
                }
            }
        }
    };
    ui::table(
        "components",
        "Components",
        &[
            "Name",
            "Kind",
            "ID",
            "State",
            "Restarts",
            "Last error",
            "Actors",
            "Action",
        ],
        rows,
    )
}

fn keys(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect()
}

fn pairs(keys: &[String]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| {
            let (m, v) = ui::split_version(k);
            (m.to_owned(), v.to_owned())
        })
        .collect()
}

fn sync_outcome(state: &str) -> Outcome {
    match state {
        "staged" | "up-to-date" => Outcome::Good,
        "failed" | "cancelled" | "refused" => Outcome::Bad,
        "waiting-for-link" => Outcome::Waiting,
        "idle" => Outcome::Neutral,
        _ => Outcome::Running,
    }
}

/// The Software Upgrade Center view (the live part of its page).
pub fn upgrade(data: &Value, now: SystemTime) -> Markup {
    let u = &data["upgrade"];
    let reg = &data["registration"];
    let core = &data["core"];
    let center = data["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["kind"] == banalytics_upgrade_center::KIND_NAME);
    let sync = center
        .map(|c| c["details"]["sync"].clone())
        .unwrap_or_default();
    let installed = keys(&u["installed"]);
    html! {
        section {
            h2 id="h-registration" { "Registration" }
            (ui::details("registration", "Registration", [
                ("Environment UUID", match reg["environment_uuid"].as_bool() {
                    Some(true) => ui::badge(Outcome::Good, "present"),
                    _ => ui::badge(Outcome::Bad, "missing: set environmentUuid in config/device-registration.properties"),
                }),
                ("Portal link", match reg["portal_link"].as_bool() {
                    Some(true) => html! { (ui::badge(Outcome::Good, "up")) " " (reg["portal"].as_str().unwrap_or("")) },
                    Some(false) => html! { (ui::badge(Outcome::Bad, "down")) " " (reg["portal_error"].as_str().unwrap_or("")) },
                    None => ui::badge(Outcome::Neutral, "no portal-integration component"),
                }),
            ]))
        }
        section {
            h2 id="h-core" { "Running core" }
            (ui::details("core", "Running core", [
                ("Version", html! { (core["version"].as_str().unwrap_or("unknown")) }),
                ("SHA-256", html! { code.id { (core["sha256"].as_str().unwrap_or("—")) } }),
                ("Build", html! { (match core["origin"].as_str() {
                    Some("module-set") => "the installed module set's core",
                    Some("launcher") => "the launcher's own build",
                    _ => "unknown",
                }) @if let Some(f) = core["fallback"].as_str() { " (" (f) ")" } }),
            ]))
        }
        section {
            h2 id="h-sync" { "Last synchronisation" }
            (last_sync(&sync, now))
        }
        section {
            h2 id="h-installed" { "Installed set" }
            @if installed.is_empty() {
                (ui::empty("No module set installed yet", html! { "Synchronise now: the portal names the set to install." }))
            } @else {
                (ui::table("installed", "Installed set", &["Module", "Version", "Type", "Size"], html! {
                    @for m in data["installed_modules"].as_array().into_iter().flatten() {
                        tr {
                            td { (m["module"].as_str().unwrap_or("?")) }
                            td data-label="Version" { (m["version"].as_str().unwrap_or("?")) }
                            td data-label="Type" { (m["type"].as_str().unwrap_or("?")) }
                            td data-label="Size" { (m["bytes"].as_u64().map(ui::human_size).unwrap_or_else(|| "—".into())) }
                        }
                    }
                }))
            }
        }
        section {
            h2 id="h-staged" { "Staged set" }
            @if u["staged"].is_null() {
                (ui::empty("No staged set", html! { "A synchronisation stages the portal's target set here before the box applies it." }))
            } @else {
                (ui::diff_table("staged", &ui::diff(pairs(&installed), pairs(&keys(&u["staged"]))), "Installed", "Staged"))
                (waits(data, &sync, now))
            }
        }
        section {
            h2 id="h-backup" { "Backup set" }
            @if u["backup"].is_null() {
                (ui::empty("No backup set", html! { "The set an upgrade replaces is kept here, to roll back to." }))
            } @else {
                ul.sets id="backup" { @for k in keys(&u["backup"]) { li { (k) } } }
            }
        }
        @if let Some(q) = u["quarantined"].as_object() {
            section {
                h2 id="h-quarantine" { "Quarantined set" }
                (ui::details("quarantine", "Quarantined set", [
                    ("Modules", html! { @for k in keys(&q["modules"]) { (k) br; } }),
                    ("Reason", html! { (ui::badge(Outcome::Bad, "rolled back")) " " (q["reason"].as_str().unwrap_or("?")) }),
                    ("When", since(q["rolled_back_ms"].as_u64(), now)),
                ]))
            }
        }
    }
}

fn last_sync(sync: &Value, now: SystemTime) -> Markup {
    let state = sync["state"].as_str().unwrap_or("idle");
    if state == "idle" {
        return ui::empty(
            "No synchronisation since the box started",
            html! { "Press Synchronise now to ask the portal for the target set." },
        );
    }
    let running = sync["finished_ms"].is_null();
    let (done, total) = (
        sync["done_bytes"].as_u64().unwrap_or(0),
        sync["total_bytes"].as_u64().unwrap_or(0),
    );
    let took = match (sync["started_ms"].as_u64(), sync["finished_ms"].as_u64()) {
        (Some(a), Some(b)) => ui::human_duration(Duration::from_millis(b.saturating_sub(a))),
        _ => "running".to_owned(),
    };
    html! {
        (ui::details("sync", "Last synchronisation", [
            ("State", html! { span id="sync-state" data-state=(state) { (ui::badge(sync_outcome(state), state)) } }),
            ("Trigger", html! { (sync["trigger"].as_str().unwrap_or("?")) }),
            ("Started", since(sync["started_ms"].as_u64(), now)),
            ("Duration", html! { (took) }),
            ("Result", html! { (sync["result"].as_str().unwrap_or(if running { "under way" } else { "—" })) }),
            ("Bytes", html! { (ui::human_size(done)) " of " (ui::human_size(total)) }),
        ]))
        @if running && (total > 0 || state == "downloading") {
            div id="sync-progress" { (ui::progress("Download of the target set", done, Some(total).filter(|t| *t > 0))) }
        }
        @if let Some(modules) = sync["modules"].as_array().filter(|m| !m.is_empty()) {
            ul.modules id="sync-modules" {
                @for m in modules {
                    @let s = m["state"].as_str().unwrap_or("?");
                    li data-module=(m["module"].as_str().unwrap_or("?")) data-state=(s) {
                        (ui::badge(match s { "downloaded" => Outcome::Good, "failed" => Outcome::Bad, _ => Outcome::Running }, s))
                        " " (m["module"].as_str().unwrap_or("?"))
                        @if let Some(t) = m["transferred"].as_u64() { " (" (ui::human_size(t)) " over the network)" }
                    }
                }
            }
        }
    }
}

fn waits(data: &Value, sync: &Value, now: SystemTime) -> Markup {
    let u = &data["upgrade"];
    let why = u["staged_waits_for"]
        .as_str()
        .or(sync["waits_for"].as_str());
    html! {
        ul.waits id="waits" {
            @if let Some(why) = why { li { (ui::badge(Outcome::Waiting, "waits")) " " (why) } }
            @if let Some(p) = u["probation"].as_object() {
                li { (ui::badge(Outcome::Waiting, "probation")) " the active set is on probation (start " (p["boot_attempts"]) ")" }
            }
            @for l in data["busy"]["leases"].as_array().into_iter().flatten() {
                li { (ui::badge(Outcome::Waiting, "busy")) " " (l["holder"].as_str().unwrap_or("?")) " holds "
                    (l["lease"].as_str().unwrap_or("?")) " (" (l["reason"].as_str().unwrap_or("")) ")" }
            }
            @if let Some(until) = data["busy"]["restart_deferred_until_ms"].as_u64() {
                li { "The restart waits for the busy leases, at most until " (since(Some(until), now)) }
            }
            @if why.is_none() && u["probation"].is_null() { li { "Nothing: the box applies it at its next restart." } }
        }
    }
}

/// The actions of the upgrade page; those that restart the box ask first.
pub fn upgrade_actions(data: &Value) -> Markup {
    let staged = !data["upgrade"]["staged"].is_null();
    let quarantined = !data["upgrade"]["quarantined"].is_null();
    html! {
        div.actions id="actions" {
            (Button::post("/console/upgrade/sync", "Synchronise now").id("sync-now").kind(ButtonKind::Primary).render())
            @if staged {
                (Button::post("/console/upgrade/apply", "Apply now").id("apply-now")
                    .confirm("Apply the staged set now? The box restarts.").render())
                (Button::post("/console/upgrade/discard", "Discard staged set").id("discard").kind(ButtonKind::Danger)
                    .confirm("Discard the staged set? The portal is told that nothing was installed.").render())
            }
            @if quarantined {
                (Button::post("/console/upgrade/retry", "Retry quarantined set").id("retry")
                    .confirm("Install the quarantined set again? It goes on probation, and the box restarts once it is staged.").render())
            }
        }
    }
}

/// The Settings form, with `message` (ok or not) from the last save.
pub fn settings(s: Option<&UpgradeSettings>, message: Option<(bool, &str)>) -> Markup {
    let select = |name: &str, current: &str, options: &[&str]| {
        html! {
            select name=(name) id=(name) {
                @for o in options { option value=(o) selected[*o == current] { (o) } }
            }
        }
    };
    html! {
        @if let Some((ok, text)) = message {
            p.notice role="status" id="notice" data-ok=(ok) {
                (ui::badge(if ok { Outcome::Good } else { Outcome::Bad }, if ok { "saved" } else { "refused" })) " " (text)
            }
            @if ok && text.starts_with("saved") {
                (Button::post("/console/restart", "Restart now").id("restart-now").kind(ButtonKind::Danger)
                    .confirm("Restart the box now? Its components stop and start again.").render())
            }
        }
        @match s {
            None => (ui::empty("No upgrade center configured", html! { "Add a software-upgrade-center component to config/box.toml." })),
            Some(s) => form method="post" action="/console/settings" id="settings" {
                p { "Saved into config/box.toml (comments and other settings kept) and checked as at start; they take effect at the next start." }
                (ui::field("Software update type", select("software_update_type", &s.software_update_type, &["manual", "on-boot"])))
                (ui::field("Restart on failure", select("restart_on_failure", &s.restart_on_failure, &banalytics_sdk::RestartPolicy::ACCEPTED)))
                (ui::field("Apply mode", select("apply", &s.apply, &["immediately", "window", "approval"])))
                fieldset {
                    legend { "Maintenance window (for apply mode window)" }
                    (ui::field_with_hint("Schedule", html! { input type="text" name="window_schedule" id="window_schedule" value=(s.window_schedule); }, "cron, e.g. 0 2 * * *"))
                    (ui::field_with_hint("Duration", html! { input type="text" name="window_duration" id="window_duration" value=(s.window_duration); }, "e.g. 2h"))
                    (ui::field_with_hint("Time zone", html! { input type="text" name="window_timezone" id="window_timezone" value=(s.window_timezone); }, "e.g. Europe/Berlin"))
                }
                (ui::field_with_hint("Download rate", html! { input type="text" name="max_download_rate" id="max_download_rate" value=(s.max_download_rate); }, "all downloads together, e.g. 2 MiB/s; empty: no cap"))
                div.actions { (Button::submit("Save").id("save").kind(ButtonKind::Primary).render()) }
            }
        }
    }
}

/// The filter of the Log page.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct LogFilter {
    /// Only this component (empty: all).
    #[serde(default)]
    pub component: String,
    /// This level and more severe (empty: all).
    #[serde(default)]
    pub level: String,
}

impl LogFilter {
    /// Whether `line` passes.
    pub fn keeps(&self, line: &LogLine) -> bool {
        let level_ok = match self.level.parse::<Level>() {
            Ok(min) if !self.level.is_empty() => line.level <= min,
            _ => true,
        };
        level_ok && (self.component.is_empty() || line.component == self.component)
    }
}

/// Lines the Log page shows.
pub const LOG_SHOWN: usize = 500;

/// The Log view: the newest lines that pass the filter, newest last.
pub fn log(lines: &[LogLine]) -> Markup {
    if lines.is_empty() {
        return ui::empty(
            "No log lines",
            html! { "None match the filter yet; this view follows the log live." },
        );
    }
    html! {
        ol.log id="log-lines" {
            @for l in lines {
                li data-level=(l.level.as_str()) data-component=(l.component) {
                    time datetime=(ui::iso_time(ui::unix_ms(l.at_ms))) { (ui::absolute_time(ui::unix_ms(l.at_ms))) }
                    " " (ui::badge(match l.level { Level::ERROR => Outcome::Bad, Level::WARN => Outcome::Waiting, _ => Outcome::Neutral }, l.level.as_str()))
                    " " strong { (l.component) } " " (l.text)
                }
            }
        }
    }
}

/// The Log page's filter form.
pub fn log_filter(filter: &LogFilter, components: &[String]) -> Markup {
    html! {
        form method="get" action="/console/log" id="log-filter" {
            (ui::field("Component", html! {
                select name="component" id="component" {
                    option value="" selected[filter.component.is_empty()] { "all" }
                    @for c in components { option value=(c) selected[*c == filter.component] { (c) } }
                }
            }))
            (ui::field("Level", html! {
                select name="level" id="level" {
                    @for (v, label) in [("", "all"), ("error", "error"), ("warn", "warn and above"), ("info", "info and above"), ("debug", "debug and above")] {
                        option value=(v) selected[v == filter.level] { (label) }
                    }
                }
            }))
            div.actions { (Button::submit("Filter").id("filter").render()) }
        }
    }
}
