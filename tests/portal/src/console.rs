//! The fleet console under `/console`: server-rendered pages (`maud`)
//! for environments, modules, assignment and rollouts, kept live by
//! Server-Sent Events. Each live region of a page names its view
//! (`data-sse="/console/events?view=...&seen=..."`); the one small script
//! (`ui::LIVE_SCRIPT`, embedded, no build step) opens that stream and swaps
//! the region's HTML with each event, and keeps each relative time ("3 min
//! ago") true from its `<time datetime>` (`ui::TIME_SCRIPT`). The server
//! renders the region again at most every [`RENDER_EVERY`] after a change,
//! so a burst of statuses is one update, and sends it only when it differs
//! from what the browser shows (`ui::LiveStream`).
//!
//! Every page but the login page needs a session; the login page trades
//! the admin token for one ([`super::auth`]). Forms post with the session
//! cookie, which is `SameSite=Strict` (and `Secure` when the portal serves
//! TLS). SameSite alone does not stop a page on another port of the same
//! host (same site, another origin), so every POST must also come from the
//! console's own origin: an `Origin` (or, without one, a `Referer`) that
//! names another origin is refused with 403 ([`same_origin_posts`]).
//! Every answer says `Content-Security-Policy: frame-ancestors 'none'`, so
//! no page can frame the console to lure a click.
//!
//! The console knows no more than the portal: what the boxes reported
//! (statuses, the core of their last request) and what was assigned. The
//! installed set is the set that was assigned when the box last reported
//! `installed`, remembered since this portal started.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use axum::{
    extract::{ConnectInfo, Path, Query, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event, KeepAlive, Sse},
        Html, IntoResponse, Redirect, Response,
    },
    routing::{get, post},
    Form, Router,
};
use banalytics_ui::{self as ui, Button, ButtonKind, Outcome};
use futures_util::stream::Stream;
use maud::{html, Markup};
use serde_json::Value;

use super::{
    auth::{TokenCheck, SESSION_COOKIE},
    protocol::module_label,
    rollout::{BoxState, Rollout, RolloutSpec, WaveSize, DEFAULT_REPORT_TIMEOUT_MS},
    App, EnvironmentReport, StatusRecord,
};

/// The shortest time between two renders of one live region.
pub const RENDER_EVERY: Duration = Duration::from_millis(200);

/// Statuses shown in an environment's history, newest first.
const HISTORY_SHOWN: usize = 200;

/// Downloads followed at once per environment; a box names the modules it
/// fetches, and a set has far fewer (a box that names more gets no bar
/// for the rest).
const MAX_DOWNLOADS_PER_ENV: usize = 64;

/// The name of the console in each page's header and title.
const PRODUCT: &str = "Banalytics fleet console";

/// What the console remembers beside the portal's own state.
#[derive(Default)]
pub(crate) struct ConsoleState {
    installed: Mutex<BTreeMap<String, Vec<String>>>,
    /// Per environment, the modules it reported `downloading` for and not
    /// yet `downloaded` (or failed), each with the repository's bytes
    /// served for the module's files when it started.
    downloads: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

impl ConsoleState {
    /// `env` reported `installed` while `set` was assigned.
    pub(crate) fn installed(&self, env: &str, set: Vec<String>) {
        self.installed
            .lock()
            .expect("console lock")
            .insert(env.to_string(), set);
    }

    fn installed_set(&self, env: &str) -> Option<Vec<String>> {
        self.installed
            .lock()
            .expect("console lock")
            .get(env)
            .cloned()
    }

    fn download_started(&self, env: &str, module: String, served: u64) {
        let mut downloads = self.downloads.lock().expect("console lock");
        let mine = downloads.entry(env.to_string()).or_default();
        if mine.len() < MAX_DOWNLOADS_PER_ENV || mine.contains_key(&module) {
            mine.insert(module, served);
        }
    }

    fn download_ended(&self, env: &str, module: Option<&str>) {
        let mut downloads = self.downloads.lock().expect("console lock");
        match module {
            Some(m) => {
                if let Some(mine) = downloads.get_mut(env) {
                    mine.remove(m);
                }
            }
            None => {
                downloads.remove(env);
            }
        }
    }

    fn downloads(&self, env: &str) -> BTreeMap<String, u64> {
        self.downloads
            .lock()
            .expect("console lock")
            .get(env)
            .cloned()
            .unwrap_or_default()
    }
}

/// What the console keeps of a status `env` reported: the assigned set as
/// the installed one at `installed`; where a module's download started at
/// `downloading`, until its `downloaded` or `download_error` or the
/// synchronisation's end.
pub(crate) fn status_recorded(app: &App, env: &str, record: &StatusRecord) {
    let module = coordinates(&record.module);
    match (record.status.as_str(), module) {
        (Some("installed"), _) => {
            let set = app.store.assigned(env);
            app.console.installed(env, set);
            app.console.download_ended(env, None);
        }
        (Some("installation_cancelled"), _) => app.console.download_ended(env, None),
        (Some("downloading"), Some(m)) => {
            let served = app.stats.bytes_under(&repository_folder(&m));
            app.console.download_started(env, m, served);
        }
        (Some("downloaded" | "download_error"), Some(m)) => {
            app.console.download_ended(env, Some(&m));
        }
        _ => {}
    }
}

/// The repository folder of `coords` (`group:artifact:version`), as the
/// request paths the stats count: `/repo/com/example/alpha/2.0/`.
fn repository_folder(coords: &str) -> String {
    let mut parts = coords.splitn(3, ':');
    let (g, a, v) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    format!("/repo/{}/", super::store::module_dir(g, a, v))
}

pub(crate) fn router(app: Arc<App>) -> Router<Arc<App>> {
    let private = Router::new()
        .route("/console", get(environments_page))
        .route("/console/env/{env}", get(environment_page))
        .route("/console/modules", get(modules_page))
        .route("/console/assign", get(assign_page).post(assign))
        .route("/console/sync", post(sync))
        .route("/console/rollouts", get(rollouts_page))
        .route("/console/rollouts/{id}", get(rollout_page))
        .route("/console/rollouts/{id}/resume", post(resume))
        .route("/console/rollouts/{id}/cancel", post(cancel))
        .route("/console/events", get(events))
        .route("/console/logout", post(logout))
        .route("/console/environments/add", post(add_environment))
        .route("/console/env/{env}/revoke", post(revoke))
        .route("/console/env/{env}/rotate-secret", post(rotate_secret))
        .route_layer(middleware::from_fn_with_state(app, session_required));
    Router::new()
        .route("/console/login", get(login_page).post(login))
        .route("/console/console.js", get(script))
        .merge(private)
        .route_layer(middleware::from_fn(same_origin_posts))
        .route_layer(middleware::map_response(no_framing))
}

/// The console's pages may not be framed by any page.
async fn no_framing(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

/// Whether `url` (an `Origin`, or a `Referer`) names the host and port
/// the request was sent to (its `Host`); the scheme needs no check, as
/// one port serves one scheme.
fn same_origin(url: &str, own_host: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    host.eq_ignore_ascii_case(own_host)
}

/// Refuses (403) a POST whose `Origin` names another origin (another
/// site, or another port of this host); without `Origin`, the same for a
/// `Referer`. A client that sends neither (not a browser) passes on to the
/// session check.
async fn same_origin_posts(req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let own_host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let headers = req.headers();
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .map(|v| v.to_str().unwrap_or("invalid").to_string());
    match claimed {
        Some(from) if !same_origin(&from, &own_host) => {
            tracing::warn!(origin = %from, path = %req.uri().path(), "console POST from another origin refused");
            (
                StatusCode::FORBIDDEN,
                "refused: this form was posted from another origin",
            )
                .into_response()
        }
        _ => next.run(req).await,
    }
}

fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

async fn session_required(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match session_of(req.headers()) {
        Some(s) if app.auth.session_ok(&s) => next.run(req).await,
        _ if req.method() == axum::http::Method::GET => {
            Redirect::to("/console/login").into_response()
        }
        _ => (StatusCode::UNAUTHORIZED, "log in first").into_response(),
    }
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        [ui::LIVE_SCRIPT, ui::TIME_SCRIPT].concat(),
    )
        .into_response()
}

/// A console page titled `title`, in the navigation's section `section`
/// (the `href` of its link).
fn page(title: &str, section: &str, body: Markup) -> Html<String> {
    Html(
        ui::Page::new(PRODUCT, title)
            .nav("/console", "Environments")
            .nav("/console/modules", "Modules")
            .nav("/console/assign", "Assign")
            .nav("/console/rollouts", "Rollouts")
            .current(section)
            .nav_end(Button::post("/console/logout", "Log out").render())
            .script("/console/console.js")
            .render(body)
            .into_string(),
    )
}

// ---------------------------------------------------------------- login

async fn login_page() -> Html<String> {
    Html(
        ui::Page::new(PRODUCT, "Log in")
            .render(html! {
                form method="post" action="/console/login" {
                    (ui::field_with_hint(
                        "Admin token",
                        html! { input type="password" name="token" id="token" autocomplete="current-password" autofocus; },
                        "printed once by the portal at its first start",
                    ))
                    div.actions { (Button::submit("Log in").id("login").kind(ButtonKind::Primary).render()) }
                }
            })
            .into_string(),
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    match app.auth.check(peer.ip(), Some(form.token.trim())) {
        TokenCheck::Ok => {}
        TokenCheck::TooMany => {
            tracing::warn!(%peer, "console login refused: too many attempts");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "too many login attempts: wait a minute",
            )
                .into_response();
        }
        TokenCheck::Wrong => {
            tracing::warn!(%peer, "console login with a wrong token");
            return (
                StatusCode::UNAUTHORIZED,
                Html("wrong token: <a href=\"/console/login\">again</a>"),
            )
                .into_response();
        }
    }
    match app.auth.new_session() {
        Ok(session) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, session_cookie(&session, app.tls)),
                (header::LOCATION, "/console".to_string()),
            ],
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The `Set-Cookie` value of a console session: never readable by
/// scripts, never sent by another site, and over TLS never sent in clear.
fn session_cookie(session: &str, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={session}; Path=/console; HttpOnly; SameSite=Strict{secure}")
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(s) = session_of(&headers) {
        app.auth.end_session(&s);
    }
    Redirect::to("/console/login").into_response()
}

// ---------------------------------------------------------------- views

/// A live region: `view` rendered now, then again on every change.
fn live(view: &str, now: Markup) -> Markup {
    ui::live_region(&format!("/console/events?view={view}"), now)
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    view: String,
    /// The version of the region the page rendered (`ui::live_region`).
    seen: Option<String>,
}

/// Renders `view`; `None` when it names nothing.
fn render(app: &App, view: &str) -> Option<Markup> {
    match view.split_once(':') {
        None if view == "envs" => Some(environments_table(app, EnvFilter::All)),
        None if view == "envs-failed" => Some(environments_table(app, EnvFilter::Failed)),
        None if view == "rollouts" => Some(rollouts_table(app)),
        Some(("env", env)) => Some(environment_detail(app, env)),
        Some(("rollout", id)) => id
            .parse()
            .ok()
            .and_then(|id| app.rollouts.get(id))
            .map(|r| rollout_detail(&r)),
        _ => None,
    }
}

async fn events(
    State(app): State<Arc<App>>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StatusCode> {
    if render(&app, &q.view).is_none() {
        return Err(StatusCode::NOT_FOUND);
    }
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let shown = ui::LiveStream::new(last_event_id, q.seen.as_deref());
    let changes = app.changes.subscribe();
    let shutdown = app.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (app, q.view, changes, shutdown, shown, true),
        |(app, view, mut changes, mut shutdown, mut shown, mut first)| async move {
            loop {
                if !first {
                    tokio::select! {
                        _ = super::stopped(&mut shutdown) => return None,
                        r = changes.changed() => if r.is_err() { return None },
                    }
                    tokio::time::sleep(RENDER_EVERY).await;
                    changes.borrow_and_update();
                }
                first = false;
                let html = render(&app, &view)?.into_string();
                if let Some(version) = shown.send(&html) {
                    let event = Event::default().id(version).data(html);
                    return Some((Ok(event), (app, view, changes, shutdown, shown, false)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(String::new, str::to_string)
}

/// `groupId:artifactId:version` of a module object; `None` for anything
/// else (`null`, the whole set).
fn coordinates(m: &Value) -> Option<String> {
    let field = |k: &str| m.get(k).and_then(Value::as_str);
    Some(format!(
        "{}:{}:{}",
        field("groupId")?,
        field("artifactId")?,
        field("version")?
    ))
}

fn status_line(s: &StatusRecord) -> String {
    let mut line = text(&s.status);
    if !s.module.is_null() {
        line.push(' ');
        line.push_str(&module_label(&s.module));
    }
    if let Some(m) = s.status_message.as_str().filter(|m| !m.is_empty()) {
        line.push_str(": ");
        line.push_str(m);
    }
    line
}

/// What a status means to an operator: the protocol's five values, and a
/// `downloaded` whose message says the set waits (for a window, an
/// approval, a busy component: contracts section 3 puts that there).
fn status_outcome(s: &StatusRecord) -> Outcome {
    let waits = s
        .status_message
        .as_str()
        .is_some_and(|m| m.contains("waits"));
    match s.status.as_str() {
        Some("installed") => Outcome::Good,
        Some("download_error" | "installation_cancelled") => Outcome::Bad,
        Some("downloading") => Outcome::Running,
        Some("downloaded") if waits => Outcome::Waiting,
        Some("downloaded") => Outcome::Good,
        _ => Outcome::Neutral,
    }
}

fn status_badge(s: &StatusRecord) -> Markup {
    let word = s.status.as_str().unwrap_or("?");
    ui::badge(status_outcome(s), &word.replace('_', " "))
}

/// When the portal received `s`, absolute and relative to `now`.
fn received(s: &StatusRecord, now: SystemTime) -> Markup {
    match s.received_ms {
        Some(ms) => ui::time(ui::unix_ms(ms), now),
        None => html! { span.dim { "unknown" } },
    }
}

/// A status in one cell: its badge, module, message and time.
fn status_cell(s: &StatusRecord, now: SystemTime) -> Markup {
    html! {
        (status_badge(s))
        @if !s.module.is_null() { " " code { (module_label(&s.module)) } }
        @if let Some(m) = s.status_message.as_str().filter(|m| !m.is_empty()) {
            div.message title=(m) { (m) }
        }
        div { (received(s, now)) }
    }
}

fn is_verdict(s: &StatusRecord) -> bool {
    matches!(
        s.status.as_str(),
        Some("installed" | "installation_cancelled")
    )
}

/// The statuses after the last verdict: a synchronisation in progress.
fn in_progress(e: &EnvironmentReport) -> &[StatusRecord] {
    let from = e.statuses.iter().rposition(is_verdict).map_or(0, |i| i + 1);
    &e.statuses[from..]
}

/// The reason of the last verdict when it was a cancellation or rollback.
fn rollback_reason(e: &EnvironmentReport) -> Option<String> {
    let last = e.statuses.iter().rev().find(|s| is_verdict(s))?;
    (last.status.as_str() == Some("installation_cancelled")).then(|| text(&last.status_message))
}

fn progress_text(e: &EnvironmentReport) -> String {
    let running = in_progress(e);
    if running.is_empty() {
        return String::new();
    }
    let downloaded = running
        .iter()
        .filter(|s| s.status.as_str() == Some("downloaded"))
        .count();
    let last = running.last().map(status_line).unwrap_or_default();
    format!("{downloaded} downloaded; last: {last}")
}

/// The bytes a box fetches for `m`: the main artifact of this portal's
/// platform (a native module's build), and its packages.
fn download_size(m: &super::ModuleObject) -> u64 {
    m.main_size()
        + m.dependencies.as_ref().map_or(0, |d| d.size)
        + m.model.as_ref().map_or(0, |d| d.size)
}

/// A bar per module `env` is downloading. The box reports no byte counts
/// (contracts section 3), so the bar shows the bytes the repository served
/// for the module's files since the box said `downloading`: exact for one
/// box, and the sum (never above the module's size) when several boxes
/// fetch the same module at once.
fn download_bars(app: &App, env: &str) -> Markup {
    let downloads = app.console.downloads(env);
    if downloads.is_empty() {
        return html! {};
    }
    let modules: BTreeMap<String, super::ModuleObject> = app
        .store
        .modules()
        .into_iter()
        .map(|m| (m.coordinates(), m))
        .collect();
    html! {
        @for (coords, started) in &downloads {
            @let served = app.stats.bytes_under(&repository_folder(coords)).saturating_sub(*started);
            (ui::progress(&format!("Download of {coords}"), served, modules.get(coords).map(download_size)))
        }
    }
}

/// The synchronisation in progress: its steps so far and a bar per
/// download; "idle" between synchronisations.
fn sync_cell(app: &App, e: &EnvironmentReport) -> Markup {
    let steps = progress_text(e);
    html! {
        @if steps.is_empty() {
            span.dim { "idle" }
        } @else {
            span.steps { (steps) }
            (download_bars(app, &e.environment_uuid))
        }
    }
}

fn core_label(e: &EnvironmentReport) -> String {
    e.last_core_module
        .as_ref()
        .map(module_label)
        .unwrap_or_else(|| "?".to_string())
}

fn connected_cell(e: &EnvironmentReport) -> Markup {
    if e.connected {
        ui::badge(Outcome::Good, "connected")
    } else {
        ui::badge(Outcome::Bad, "offline")
    }
}

fn registration_label(e: &EnvironmentReport) -> String {
    let state = match (e.registered, e.revoked, e.rotation_pending) {
        (false, _, _) => "not registered (open registration)",
        (true, true, _) => "revoked",
        (true, false, true) => "registered, new secret waiting for the box",
        (true, false, false) => "registered",
    };
    if e.name.is_empty() {
        state.to_string()
    } else {
        format!("{state}: {}", e.name)
    }
}

/// `group:artifact:version` strings as the `(module, version)` pairs a
/// set difference compares.
fn pairs(set: &[String]) -> Vec<(&str, &str)> {
    set.iter().map(|c| ui::split_version(c)).collect()
}

/// The installed set against the assigned one, in a few words.
fn sets_cell(installed: Option<&[String]>, assigned: &[String]) -> Markup {
    match installed {
        None => html! {
            (ui::badge(Outcome::Neutral, "installed set unknown"))
            br; span.dim { (assigned.len()) " module(s) assigned" }
        },
        Some(installed) => {
            let rows = ui::diff(pairs(installed), pairs(assigned));
            let same = rows.iter().all(|r| r.change == ui::Change::Unchanged);
            html! {
                @if same {
                    (ui::badge(Outcome::Good, "as assigned"))
                    br; span.dim { (installed.len()) " module(s)" }
                } @else {
                    (ui::badge(Outcome::Waiting, "differs"))
                    br; span.dim { (ui::diff_summary(&rows)) }
                }
            }
        }
    }
}

/// Environments the failed view of the environments page lists at most.
pub(crate) const MAX_LISTED: usize = 10_000;

/// Which environments the environments page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvFilter {
    /// Every one, by UUID.
    All,
    /// Those whose last verdict is a failure, the newest status first
    /// (`/console?status=failed`): one indexed query, not the history of
    /// the fleet.
    Failed,
}

#[derive(serde::Deserialize)]
struct EnvironmentsQuery {
    #[serde(default)]
    status: Option<String>,
}

fn environments_table(app: &App, filter: EnvFilter) -> Markup {
    let envs = match filter {
        EnvFilter::All => app.environments(),
        EnvFilter::Failed => app.failed_environments(),
    };
    let now = SystemTime::now();
    html! {
        p { (envs.len()) " environment(s), " (envs.iter().filter(|e| e.connected).count()) " connected" }
        @if envs.is_empty() {
            (ui::empty(
                "No box has connected yet.",
                html! { "Register a box below, put its two lines into the box's " code { "config/device-registration.properties" } " and start it: it appears here when it connects." },
            ))
        } @else {
            (ui::table("environments", "Environments", &["Select", "Environment", "Link and core", "Installed set", "Last status", "Synchronisation"], html! {
                @for e in &envs {
                    tr data-env=(e.environment_uuid) {
                        td { input type="checkbox" form="group" name="env" value=(e.environment_uuid) aria-label={ "Select " (e.environment_uuid) }; }
                        td {
                            a href={ "/console/env/" (e.environment_uuid) } { (e.environment_uuid) }
                            @if !e.name.is_empty() { br; span.dim { (e.name) } }
                        }
                        td data-label="Link and core" {
                            (connected_cell(e))
                            br; span.dim title=(core_label(e)) { "core " (e.last_core_module.as_ref().map(|m| ui::split_version(&module_label(m)).1.to_string()).unwrap_or_else(|| "unknown".into())) }
                        }
                        td data-label="Installed set" { (sets_cell(app.console.installed_set(&e.environment_uuid).as_deref(), &e.assigned)) }
                        td.last-status.clamp data-label="Last status" {
                            @if let Some(s) = e.statuses.last() { (status_cell(s, now)) } @else { span.dim { "none yet" } }
                            @if let Some(reason) = rollback_reason(e).filter(|_| !e.statuses.last().is_some_and(is_verdict)) {
                                div.bad.message title=(reason) { "rolled back / cancelled: " (reason) }
                            }
                        }
                        td.sync data-label="Synchronisation" { (sync_cell(app, e)) }
                    }
                }
            }))
        }
    }
}

/// The warning of a TUF root in its last quarter that the portal cannot
/// renew by itself (its keys are not at hand), if so.
fn tuf_root_warning(app: &App) -> Option<Markup> {
    let data = &app.data_dir;
    let due = super::tuf::enabled(data)
        && super::tuf::root_due_at(data, jiff::Timestamp::now())
        && !super::tuf::root_keys_present(data);
    let expires = super::tuf::root_expires(data)?;
    due.then(|| {
        html! {
            p.bad.error id="tuf-root" {
                "The repository's TUF root expires at " (expires.to_string())
                " and its keys are not at hand: run " code { "banalytics-portal keys renew-root" }
                " with the root key folder mounted. Once it expired, every box refuses the repository."
            }
        }
    })
}

async fn environments_page(
    State(app): State<Arc<App>>,
    Query(q): Query<EnvironmentsQuery>,
) -> Html<String> {
    let (filter, view) = match q.status.as_deref() {
        Some("failed") => (EnvFilter::Failed, "envs-failed"),
        _ => (EnvFilter::All, "envs"),
    };
    let table = environments_table(&app, filter);
    page(
        "Environments",
        "/console",
        html! {
            @if let Some(warning) = tuf_root_warning(&app) { (warning) }
            p.actions {
                a href="/console" { "All" } " · " a href="/console?status=failed" { "Failed last" }
            }
            form id="group" method="get" action="/console/assign" class="actions" {
                (Button::submit("Assign to the selected…").render())
            }
            (live(view, table))
            h2 { "Register a box" }
            form method="post" action="/console/environments/add" id="register" {
                (ui::field("Name", html! { input name="name" id="register-name"; }))
                div.actions { (Button::submit("Register").render()) }
            }
            (refusals(&app))
        },
    )
}

/// The refused upgrades, per peer address.
fn refusals(app: &App) -> Markup {
    let stats = app.stats.report();
    html! {
        h2 { "Refused connections" }
        p id="refused" data-refused=(stats.refused_connections) {
            (stats.refused_connections) " upgrade(s) refused (unknown environment, wrong secret, revoked)"
        }
        @if !stats.refused_by_address.is_empty() {
            (ui::table("refused-by-address", "Refused upgrades by address", &["Address", "Refused"], html! {
                @for (address, n) in &stats.refused_by_address {
                    tr { td { (address.to_string()) } td.num { (n) } }
                }
            }))
        }
    }
}

#[derive(serde::Deserialize)]
struct AddForm {
    #[serde(default)]
    name: String,
}

/// Registers a box and shows its UUID and secret, this once.
async fn add_environment(State(app): State<Arc<App>>, Form(form): Form<AddForm>) -> Response {
    let r = match app.register(&form.name, None) {
        Ok(r) => r,
        Err(e) => return bad_request(e.to_string()),
    };
    let body = page(
        "Box registered",
        "/console",
        html! {
            p { "Put these two lines in the box's " code { "config/device-registration.properties" } ". The secret is shown this once: the portal keeps only its SHA-256." }
            pre id="registration" {
                "environmentUuid=" (r.environment_uuid) "\n"
                "environmentSecret=" (r.environment_secret) "\n"
            }
            a href={ "/console/env/" (r.environment_uuid) } { "To the environment" }
        },
    );
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

async fn revoke(State(app): State<Arc<App>>, Path(env): Path<String>) -> Response {
    match app.revoke(&env) {
        Ok(_) => Redirect::to(&format!("/console/env/{env}")).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn rotate_secret(State(app): State<Arc<App>>, Path(env): Path<String>) -> Response {
    match app.rotate_secret(&env) {
        Ok(_) => Redirect::to(&format!("/console/env/{env}")).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

/// The installed set against the assigned one, module by module.
fn sets_difference(installed: Option<&[String]>, assigned: &[String]) -> Markup {
    match installed {
        None => ui::empty(
            "The installed set is not known yet.",
            html! { "The portal learns it when the box reports " code { "installed" } " (since this portal started): synchronise the box now, or wait for its next synchronisation. Assigned: " (if assigned.is_empty() { "nothing".to_string() } else { assigned.join(", ") }) "." },
        ),
        Some(installed) => ui::diff_table(
            "sets",
            &ui::diff(pairs(installed), pairs(assigned)),
            "Installed",
            "Assigned",
        ),
    }
}

fn environment_detail(app: &App, env: &str) -> Markup {
    let e = app
        .environments()
        .into_iter()
        .find(|e| e.environment_uuid == env)
        .unwrap_or_else(|| EnvironmentReport {
            environment_uuid: env.to_string(),
            ..EnvironmentReport::default()
        });
    let now = SystemTime::now();
    let installed = app.console.installed_set(env);
    let mut facts = vec![
        (
            "Link",
            html! { (connected_cell(&e)) " " span.dim { "(" (e.live_connections) " open, " (e.connections) " since start)" } },
        ),
        (
            "Registration",
            html! { span.registration { (registration_label(&e)) } },
        ),
        ("Core", html! { code { (core_label(&e)) } }),
        (
            "Synchronisation",
            html! { div.sync { (sync_cell(app, &e)) } },
        ),
    ];
    if let Some(reason) = rollback_reason(&e) {
        facts.push((
            "Rolled back / cancelled",
            html! { span.bad.reason { (reason) } },
        ));
    }
    html! {
        (ui::details("environment", "The box", facts))
        h2 { "Installed and assigned sets" }
        (sets_difference(installed.as_deref(), &e.assigned))
        h2 { "History" }
        @if e.statuses.is_empty() {
            (ui::empty("No status yet.", html! { "The box reports each step of a synchronisation here: press " i { "Synchronise now" } " above, or assign it a set." }))
        } @else {
            (ui::table("history", &format!("Statuses, newest first ({} of {})", e.statuses.len().min(HISTORY_SHOWN), e.statuses.len()), &["Received", "Status", "Module", "Message"], html! {
                @for s in e.statuses.iter().rev().take(HISTORY_SHOWN) {
                    tr {
                        td { (received(s, now)) }
                        td { (status_badge(s)) }
                        td data-label="Module" { @if s.module.is_null() { span.dim { "whole set" } } @else { code { (module_label(&s.module)) } } }
                        td.message { (s.status_message.as_str().unwrap_or_default()) }
                    }
                }
            }))
        }
    }
}

async fn environment_page(State(app): State<Arc<App>>, Path(env): Path<String>) -> Html<String> {
    page(
        &format!("Environment {env}"),
        "/console",
        html! {
            div.actions {
                (Button::post("/console/sync", "Synchronise now").hidden("env", &env).kind(ButtonKind::Primary).render())
                a href={ "/console/assign?env=" (env) } { "Assign…" }
                @if app.registry.contains(&env) {
                    (Button::post(&format!("/console/env/{env}/rotate-secret"), "Rotate its secret").id("rotate-secret").render())
                    (Button::post(&format!("/console/env/{env}/revoke"), "Revoke").id("revoke").kind(ButtonKind::Danger).render())
                }
            }
            (live(&format!("env:{env}"), environment_detail(&app, &env)))
        },
    )
}

/// A module's upload time (ISO-8601 local date-time read as UTC), absolute
/// and relative to `now`; as given when it does not parse.
fn upload_time(m: &super::ModuleObject, now: SystemTime) -> Markup {
    let parsed = m
        .upload_time
        .parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| SystemTime::from(z.timestamp()));
    match parsed {
        Some(at) => ui::time(at, now),
        None => html! { (m.upload_time) },
    }
}

/// The main artifact's size: a native module's build for this portal's
/// platform (its `size` field is 0: each build has its own), or the
/// largest build when there is none for this platform.
fn main_size_cell(m: &super::ModuleObject) -> Markup {
    match &m.platforms {
        None => html! { (ui::human_size(m.size)) },
        Some(builds) => match builds.get(super::PLATFORM) {
            Some(here) => {
                html! { (ui::human_size(here.size)) br; span.dim { "this platform's build" } }
            }
            None => html! {
                (ui::human_size(builds.values().map(|b| b.size).max().unwrap_or(0)))
                br; span.dim { "largest build" }
            },
        },
    }
}

async fn modules_page(State(app): State<Arc<App>>) -> Html<String> {
    let modules = app.store.modules();
    let now = SystemTime::now();
    let part = |p: &Option<super::store::PartInfo>| {
        p.as_ref()
            .map(|d| ui::human_size(d.size))
            .unwrap_or_else(|| "—".to_string())
    };
    page(
        "Modules",
        "/console/modules",
        html! {
            @if modules.is_empty() {
                (ui::empty("No module is published yet.", html! { "Publish one with " code { "banalytics-portal publish --group-id … --artifact-id … --version … --type component --file …" } "; it appears here and on the Assign page." }))
            } @else {
                (ui::table("modules", "Published modules", &["Module", "Version", "Type", "Platforms", "Size", "Dependencies", "Model", "Uploaded"], html! {
                    @for m in &modules {
                        tr data-module=(m.coordinates()) {
                            td { code { (m.group_id) ":" (m.artifact_id) } }
                            td data-label="Version" { (m.version) }
                            td data-label="Type" { (format!("{:?}", m.module_type).to_lowercase()) }
                            td data-label="Platforms" {
                                @match &m.platforms {
                                    Some(p) => { @for (triple, part) in p { code { (triple) } " (" (ui::human_size(part.size)) ")" br; } }
                                    None => { "any (" (m.packaging) ")" }
                                }
                            }
                            td.num.size data-label="Size" { (main_size_cell(m)) }
                            td.num data-label="Dependencies" { (part(&m.dependencies)) }
                            td.num data-label="Model" { (part(&m.model)) }
                            td data-label="Uploaded" { (upload_time(m, now)) }
                        }
                    }
                }))
            }
        },
    )
}

// ---------------------------------------------------------------- assign

async fn assign_page(
    State(app): State<Arc<App>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Html<String> {
    let chosen: Vec<String> = query
        .into_iter()
        .filter(|(k, _)| k == "env")
        .map(|(_, v)| v)
        .collect();
    let envs = app.environments();
    let current: Vec<String> = chosen
        .first()
        .and_then(|e| envs.iter().find(|r| &r.environment_uuid == e))
        .map(|r| r.assigned.clone())
        .unwrap_or_default();
    let mut artifacts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in app.store.modules() {
        artifacts
            .entry(format!("{}:{}", m.group_id, m.artifact_id))
            .or_default()
            .push(m.version.clone());
    }
    page(
        "Assign",
        "/console/assign",
        html! {
            @if envs.is_empty() || artifacts.is_empty() {
                (ui::empty(
                    "Nothing to assign yet.",
                    html! { "Assigning needs a box that has connected (" (envs.len()) " now) and a published module (" (artifacts.len()) " now): register and start a box from the Environments page, publish a module with " code { "banalytics-portal publish" } "." },
                ))
            }
            form method="post" action="/console/assign" id="assign" {
                fieldset {
                    legend { "Environments (one, or a group)" }
                    @for e in &envs {
                        label.check {
                            input type="checkbox" name="env" value=(e.environment_uuid) checked[chosen.contains(&e.environment_uuid)];
                            " " (e.environment_uuid)
                            @if !e.name.is_empty() { " " span.dim { "(" (e.name) ")" } }
                        }
                    }
                }
                fieldset {
                    legend { "Target set: a version per module" }
                    @for (artifact, versions) in &artifacts {
                        (ui::field(artifact, html! {
                            select name={ "module:" (artifact) } data-artifact=(artifact) {
                                option value="" { "not installed" }
                                @for v in versions {
                                    @let c = format!("{artifact}:{v}");
                                    option value=(v) selected[current.contains(&c)] { (v) }
                                }
                            }
                        }))
                    }
                }
                div.actions {
                    (Button::submit("Assign").value("action", "assign").render())
                    (Button::submit("Assign and synchronise now").value("action", "assign_sync").id("assign-sync").kind(ButtonKind::Primary).render())
                }
                fieldset {
                    legend { "Or as a rollout in waves" }
                    (ui::field("Name", html! { input name="name" value="rollout"; }))
                    (ui::field_with_hint("Waves", html! { input name="waves" value="1, 10%, rest"; }, "sizes: a count, a percentage, rest"))
                    (ui::field_with_hint("Halt above (% failed)", html! { input name="threshold" value="0" size="3" inputmode="numeric"; }, "of a wave"))
                    (ui::field_with_hint("Report within (s)", html! { input name="timeout_s" value=(DEFAULT_REPORT_TIMEOUT_MS / 1000) size="5" inputmode="numeric"; }, "or the box counts as failed"))
                    div.actions { (Button::submit("Start rollout").value("action", "rollout").id("start-rollout").render()) }
                }
            }
        },
    )
}

fn form_values<'a>(form: &'a [(String, String)], key: &'a str) -> impl Iterator<Item = &'a str> {
    form.iter()
        .filter(move |(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        page(
            "Refused",
            "",
            html! { p.error { (msg) } p { a href="/console/assign" { "Back to Assign" } } },
        ),
    )
        .into_response()
}

async fn assign(State(app): State<Arc<App>>, Form(form): Form<Vec<(String, String)>>) -> Response {
    let envs: Vec<String> = form_values(&form, "env").map(str::to_string).collect();
    if envs.is_empty() {
        return bad_request("choose at least one environment".into());
    }
    let target: Vec<String> = form
        .iter()
        .filter_map(|(k, v)| {
            let artifact = k.strip_prefix("module:")?;
            (!v.is_empty()).then(|| format!("{artifact}:{v}"))
        })
        .collect();
    let field = |k: &str| {
        form_values(&form, k)
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    match field("action").as_str() {
        "rollout" => {
            let Some(waves) = field("waves")
                .split(',')
                .map(WaveSize::parse)
                .collect::<Option<Vec<_>>>()
            else {
                return bad_request(format!(
                    "waves {:?}: give sizes like 1, 10%, rest",
                    field("waves")
                ));
            };
            let spec = RolloutSpec {
                name: field("name"),
                target,
                environments: envs,
                waves,
                failure_threshold_percent: field("threshold").parse().unwrap_or(0).min(100),
                report_timeout_ms: field("timeout_s")
                    .parse::<u64>()
                    .map_or(DEFAULT_REPORT_TIMEOUT_MS, |s| s.saturating_mul(1000)),
            };
            match app.start_rollout(spec) {
                Ok(r) => Redirect::to(&format!("/console/rollouts/{}", r.id)).into_response(),
                Err(e) => bad_request(e.to_string()),
            }
        }
        action => {
            for env in &envs {
                if let Err(e) = app.store.assign(env, &target) {
                    return bad_request(e.to_string());
                }
                if action == "assign_sync" {
                    app.sync(env);
                }
            }
            app.changed();
            Redirect::to("/console").into_response()
        }
    }
}

async fn sync(State(app): State<Arc<App>>, Form(form): Form<Vec<(String, String)>>) -> Response {
    let envs: Vec<&str> = form_values(&form, "env").collect();
    for env in &envs {
        app.sync(env);
    }
    match envs.as_slice() {
        [one] => Redirect::to(&format!("/console/env/{one}")).into_response(),
        _ => Redirect::to("/console").into_response(),
    }
}

// ---------------------------------------------------------------- rollouts

fn box_cell(s: &BoxState) -> Markup {
    match s {
        BoxState::Waiting => ui::badge(Outcome::Waiting, "waiting for its wave"),
        BoxState::Assigned { progress, .. } => html! {
            (ui::badge(Outcome::Running, "assigned"))
            @if let Some(p) = progress { " " span.message { (p) } }
        },
        BoxState::Installed => ui::badge(Outcome::Good, "installed"),
        BoxState::Failed { reason, accepted } => html! {
            (ui::badge(Outcome::Bad, if *accepted { "failed (accepted)" } else { "failed" }))
            " " span.message { (reason) }
        },
    }
}

fn rollout_outcome(r: &Rollout) -> Outcome {
    use super::rollout::RolloutState;
    match r.state {
        RolloutState::Running => Outcome::Running,
        RolloutState::Finished => Outcome::Good,
        RolloutState::Halted { .. } => Outcome::Bad,
        RolloutState::Cancelled => Outcome::Neutral,
    }
}

fn rollout_summary(r: &Rollout) -> String {
    format!(
        "{}: wave {} of {}, {} of {} installed, {} failed",
        r.state.as_str(),
        (r.current_wave + 1).min(r.waves.len()),
        r.waves.len(),
        r.installed(),
        r.boxes.len(),
        r.failed()
    )
}

fn rollouts_table(app: &App) -> Markup {
    let rollouts = app.rollouts.list();
    html! {
        @if rollouts.is_empty() {
            (ui::empty("No rollout yet.", html! { "Start one on the " a href="/console/assign" { "Assign" } " page: choose the environments and a target set, then " i { "Start rollout" } "." }))
        } @else {
            (ui::table("rollouts", "Rollouts", &["#", "Name", "Target", "State"], html! {
                @for r in &rollouts {
                    tr {
                        td { a href={ "/console/rollouts/" (r.id) } { (r.id) } }
                        td { (r.spec.name) }
                        td data-label="Target" { (r.spec.target.join(", ")) }
                        td data-label="State" { (ui::badge(rollout_outcome(r), r.state.as_str())) " " (rollout_summary(r)) }
                    }
                }
            }))
        }
    }
}

fn rollout_detail(r: &Rollout) -> Markup {
    html! {
        p { (ui::badge(rollout_outcome(r), r.state.as_str())) " " span id="rollout-state" data-state=(r.state.as_str()) { (rollout_summary(r)) } }
        @if let super::rollout::RolloutState::Halted { reason } = &r.state {
            p.bad.error id="halt-reason" { "Halted: " (reason) }
        }
        (ui::details("rollout", "The rollout", [
            ("Target", html! { (r.spec.target.join(", ")) }),
            ("Waves", html! { (r.spec.waves.iter().map(WaveSize::label).collect::<Vec<_>>().join(", ")) }),
            ("Halts above", html! { (r.spec.failure_threshold_percent) "% failed per wave" }),
            ("Report within", html! { (ui::human_duration(Duration::from_millis(r.spec.report_timeout_ms))) }),
        ]))
        (ui::table("rollout-boxes", "Boxes by wave", &["Wave", "Environment", "State"], html! {
            @for (i, wave) in r.waves.iter().enumerate() {
                @for env in wave {
                    tr data-env=(env) {
                        td data-label="Wave" { (i + 1) }
                        td { a.id href={ "/console/env/" (env) } { (env) } }
                        td class="box-state" { (r.box_state(env).map(box_cell).unwrap_or_default()) }
                    }
                }
            }
        }))
    }
}

async fn rollouts_page(State(app): State<Arc<App>>) -> Html<String> {
    page(
        "Rollouts",
        "/console/rollouts",
        live("rollouts", rollouts_table(&app)),
    )
}

async fn rollout_page(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    let Some(r) = app.rollouts.get(id) else {
        return (StatusCode::NOT_FOUND, "no such rollout").into_response();
    };
    page(
        &format!("Rollout {} ({})", r.id, r.spec.name),
        "/console/rollouts",
        html! {
            div.actions {
                (Button::post(&format!("/console/rollouts/{id}/resume"), "Resume").id("resume").render())
                (Button::post(&format!("/console/rollouts/{id}/cancel"), "Cancel").id("cancel").kind(ButtonKind::Danger).render())
            }
            (live(&format!("rollout:{id}"), rollout_detail(&r)))
        },
    )
    .into_response()
}

async fn resume(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    match app.resume_rollout(id) {
        Ok(_) => Redirect::to(&format!("/console/rollouts/{id}")).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn cancel(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    match app.cancel_rollout(id) {
        Ok(_) => Redirect::to(&format!("/console/rollouts/{id}")).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_the_same_only_with_the_same_host_and_port() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_origin(
            "http://127.0.0.1:8080/console/assign?x=1",
            "127.0.0.1:8080"
        ));
        assert!(!same_origin("http://127.0.0.1:9090", "127.0.0.1:8080"));
        assert!(!same_origin(
            "http://127.0.0.1:8080.evil.example",
            "127.0.0.1:8080"
        ));
        assert!(!same_origin("null", "127.0.0.1:8080"));
        assert!(!same_origin("http://evil.example", ""));
    }

    #[test]
    fn the_session_cookie_is_secure_exactly_when_the_portal_serves_tls() {
        let plain = session_cookie("abc", false);
        assert_eq!(
            plain,
            format!("{SESSION_COOKIE}=abc; Path=/console; HttpOnly; SameSite=Strict")
        );
        assert_eq!(session_cookie("abc", true), format!("{plain}; Secure"));
    }

    fn record(module: Value, status: &str, message: Value) -> StatusRecord {
        StatusRecord {
            environment_uuid: "e".into(),
            module,
            status: status.into(),
            status_message: message,
            seq: None,
            outbox_id: None,
            received_ms: None,
            served_set: None,
        }
    }

    #[test]
    fn a_synchronisation_with_nothing_to_do_ends_with_its_installed() {
        let alpha = serde_json::json!({"groupId": "g", "artifactId": "alpha", "version": "1"});
        let mut e = EnvironmentReport {
            environment_uuid: "e".into(),
            statuses: vec![record(alpha, "downloaded", Value::Null)],
            ..EnvironmentReport::default()
        };
        assert_eq!(
            progress_text(&e),
            "1 downloaded; last: downloaded g:alpha:1"
        );
        // A box already on its set: `installed` with module null ends it.
        e.statuses.push(record(
            Value::Null,
            "installed",
            "nothing changed: the installed set is the target set".into(),
        ));
        assert_eq!(progress_text(&e), "", "the synchronisation ended");
        assert_eq!(rollback_reason(&e), None);
    }
}
