//! The box's own web console, served by the host only when `box.toml` has
//! a `[console]` table: Components, the Software Upgrade Center (its
//! state, the actions Synchronise now, Apply now, Retry and Discard, and
//! its settings) and the host's Log.
//!
//! It runs on a thread of its own (one current-thread tokio runtime with
//! axum), so rendering never holds up the host's thread. It does nothing
//! itself: each read and each action is a `control::Request` that it hands
//! to the host ([`ControlTx`]), where [`answer`] runs the control socket's
//! own dispatcher (`control::respond`) on it: one way of doing anything,
//! whether from the CLI or from a browser. Pages are rendered on the server
//! (`pages.rs`, with the shared look of `banalytics_ui`); a live region
//! follows its view over Server-Sent Events, rendered again every
//! [`LIVE_EVERY`] and sent when it differs from what the browser shows
//! (`ui::LiveStream`: not even once when the page just rendered it); one
//! embedded script (`ui::LIVE_SCRIPT` with the confirmation and the
//! relative times), no build step.
//!
//! Access (`auth.rs`): a session opened with the token or a one-time
//! `console-url` link; every POST must come from the console's own origin
//! (`Origin`, else `Referer`; 403 otherwise) and carry a session; every
//! answer forbids framing.

pub mod auth;
pub mod config;
pub mod pages;
pub mod ring;
pub mod settings;
mod tls;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use axum::{
    extract::{ConnectInfo, Path as UrlPath, Query, Request as HttpRequest, State},
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event, Sse},
        Html, IntoResponse, Redirect, Response as HttpResponse,
    },
    routing::{get, post},
    Form, Router,
};
use banalytics_home::Layout;
use banalytics_messages::upgrade::RestartMode;
use banalytics_ui::{self as ui, Button};
use futures_util::stream::Stream;
use maud::{html, Markup};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

pub use config::ConsoleConfig;
pub use ring::LogRing;

use crate::{
    control::{Request, Response},
    host::Host,
    Error, Home,
};

/// How often a live region is rendered again (and sent when it changed).
pub const LIVE_EVERY: Duration = Duration::from_millis(500);

/// Requests waiting for the host; a browser sends few.
pub const CONTROL_QUEUE: usize = 16;

/// Sessions whose last action's message waits to be shown.
const MAX_TOLD: usize = 64;

/// The name in each page's header and title.
pub const PRODUCT: &str = "Banalytics box";

/// The console's way to the host's control dispatcher: a request and where
/// to send its answer.
pub type ControlTx = mpsc::Sender<(Request, oneshot::Sender<Response>)>;

/// The requests [`start`]ed console hands the host, for [`answer`].
pub type ControlRx = mpsc::Receiver<(Request, oneshot::Sender<Response>)>;

/// What the host needs of the console besides its config.
pub struct Options {
    /// The log ring `logging::init` feeds.
    pub ring: LogRing,
    /// The component kinds this host knows (the settings are checked
    /// against them, as at start).
    pub kinds: Vec<String>,
    /// How the box restarts (the upgrade center's `restart_mode`), for
    /// Restart now.
    pub restart_mode: RestartMode,
}

/// A running console; dropping it stops it.
pub struct Console {
    stop: watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Open connections end with the stop signal; a stuck one is not
        // waited for beyond this.
        let _ = self.done.recv_timeout(Duration::from_secs(2));
    }
}

struct App {
    home: PathBuf,
    layout: Layout,
    auth: auth::Auth,
    control: ControlTx,
    ring: LogRing,
    kinds: Vec<String>,
    https: bool,
    restart_mode: RestartMode,
    stop: watch::Receiver<bool>,
    /// The message of each session's last action, shown once.
    said: Mutex<HashMap<String, (bool, String)>>,
}

/// Binds the console's address and starts serving on a thread of its own:
/// an address in use, a bad certificate or an unreadable token stop the
/// host's start. Returns the console and the requests it will hand the
/// host ([`answer`] them).
pub fn start(
    home: &Home,
    config: &ConsoleConfig,
    options: Options,
) -> Result<(Console, ControlRx), Error> {
    let io = |path: PathBuf| move |source| Error::Io { path, source };
    let token = auth::load_or_create_token(&home.state_dir())
        .map_err(io(home.state_dir().join(auth::TOKEN_FILE)))?;
    let acceptor = match &config.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key).map_err(|e| Error::Component {
            name: "console".into(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(io(PathBuf::from(config.listen.to_string())))?;
    listener
        .set_nonblocking(true)
        .map_err(io(PathBuf::from(config.listen.to_string())))?;
    if config.insecure {
        warn!(listen = %config.listen, "the console serves plain http on a network address (allow_insecure_http = true): its token and session cross the network in clear");
    }
    info!(url = %config.base_url(), tls = config.https(), "console listening; `banalytics-box console-url` prints a login link");
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    let (stop, stop_rx) = watch::channel(false);
    let (done_tx, done) = std::sync::mpsc::channel();
    let app = Arc::new(App {
        home: home.root().to_owned(),
        layout: Layout::new(home.root()),
        auth: auth::Auth::new(token),
        control: tx,
        ring: options.ring,
        kinds: options.kinds,
        https: acceptor.is_some(),
        restart_mode: options.restart_mode,
        stop: stop_rx.clone(),
        said: Mutex::new(HashMap::new()),
    });
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the console");
            runtime.block_on(serve(listener, acceptor, app, stop_rx));
            let _ = done_tx.send(());
        })
        .map_err(io(PathBuf::from("console thread")))?;
    Ok((Console { stop, done }, rx))
}

async fn serve(
    listener: std::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let tcp = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return warn!(error = %e, "the console cannot listen"),
    };
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let routes = router(app).into_make_service_with_connect_info::<SocketAddr>();
    let served = match acceptor {
        Some(acceptor) => match tls::TlsListener::new(tcp, acceptor) {
            // A no-op tap: axum gives `ConnectInfo<SocketAddr>` for a
            // tapped listener whose address is a `SocketAddr`.
            Ok(l) => {
                use axum::serve::ListenerExt as _;
                axum::serve(l.tap_io(|_| {}), routes)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            Err(e) => Err(e),
        },
        None => {
            axum::serve(tcp, routes)
                .with_graceful_shutdown(stopped)
                .await
        }
    };
    if let Err(e) = served {
        warn!(error = %e, "the console stopped");
    }
}

/// Answers the console's requests with the control socket's dispatcher,
/// on the host's thread, until the console is gone.
pub async fn answer(mut requests: ControlRx, host: Arc<Host>) {
    let layout = Layout::new(host.home());
    while let Some((request, reply)) = requests.recv().await {
        let (host, layout) = (host.clone(), layout.clone());
        actix_rt::spawn(async move {
            let _ = reply.send(crate::control::respond(&host, &layout, request).await);
        });
    }
}

fn router(app: Arc<App>) -> Router {
    let private = Router::new()
        .route("/console", get(components_page))
        .route(
            "/console/components/{name}/restart",
            post(restart_component),
        )
        .route("/console/upgrade", get(upgrade_page))
        .route("/console/upgrade/{action}", post(upgrade_action))
        .route("/console/settings", get(settings_page).post(save_settings))
        .route("/console/restart", post(restart_box))
        .route("/console/log", get(log_page))
        .route("/console/events", get(events))
        .route("/console/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            session_required,
        ));
    Router::new()
        .route("/console/login", get(login_link).post(login_form))
        .route("/console/console.js", get(script))
        .merge(private)
        .route_layer(middleware::from_fn(same_origin_posts))
        .route_layer(middleware::map_response(no_framing))
        .with_state(app)
}

async fn no_framing(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

/// Whether `url` (an `Origin` or `Referer`) names the host and port the
/// request was sent to (its `Host`).
fn same_origin(url: &str, own_host: &str) -> bool {
    // Parsed with `url`, as every URL the box reads (`null` and other
    // opaque origins have no host).
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    match url.port() {
        Some(port) => format!("{host}:{port}").eq_ignore_ascii_case(own_host),
        None => host.eq_ignore_ascii_case(own_host),
    }
}

/// Refuses (403) a POST whose `Origin` (else `Referer`) names another
/// origin. A POST with neither (not a browser) goes on to the session
/// check.
async fn same_origin_posts(req: HttpRequest, next: Next) -> HttpResponse {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let headers = req.headers();
    let own = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .map(|v| v.to_str().unwrap_or("invalid").to_owned());
    match claimed {
        Some(from) if !same_origin(&from, own) => {
            warn!(origin = %from, path = %req.uri().path(), "console POST from another origin refused");
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
        .find(|(k, _)| *k == auth::SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

async fn session_required(
    State(app): State<Arc<App>>,
    req: HttpRequest,
    next: Next,
) -> HttpResponse {
    match session_of(req.headers()) {
        Some(s) if app.auth.session_ok(&s) => next.run(req).await,
        _ if req.method() == axum::http::Method::GET => {
            Redirect::to("/console/login").into_response()
        }
        _ => (StatusCode::UNAUTHORIZED, "log in first").into_response(),
    }
}

async fn script() -> HttpResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        [ui::LIVE_SCRIPT, ui::CONFIRM_SCRIPT, ui::TIME_SCRIPT].concat(),
    )
        .into_response()
}

fn page(title: &str, section: &str, body: Markup) -> Html<String> {
    Html(
        ui::Page::new(PRODUCT, title)
            .nav("/console", "Components")
            .nav("/console/upgrade", "Software Upgrade Center")
            .nav("/console/settings", "Settings")
            .nav("/console/log", "Log")
            .current(section)
            .nav_end(Button::post("/console/logout", "Log out").render())
            .script("/console/console.js")
            .render(body)
            .into_string(),
    )
}

impl App {
    /// The host's answer to `request` (the control socket's dispatcher).
    async fn ask(&self, request: Request) -> Response {
        let (tx, rx) = oneshot::channel();
        let gone = || Response {
            ok: false,
            message: Some("the host is stopping".into()),
            data: None,
        };
        if self.control.send((request, tx)).await.is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }

    /// What `status --json` shows, and the installed set's details.
    async fn status(&self) -> Value {
        let mut data = self.ask(Request::Status).await.data.unwrap_or_default();
        crate::report::add_home(&mut data, &self.layout);
        data["installed_modules"] = pages::installed_modules(&self.layout);
        data
    }

    fn tell(&self, headers: &HeaderMap, ok: bool, message: String) {
        if let Some(s) = session_of(headers) {
            let mut said = self.said.lock().expect("said");
            if said.len() >= MAX_TOLD {
                said.clear();
            }
            said.insert(s, (ok, message));
        }
    }

    fn told(&self, headers: &HeaderMap) -> Markup {
        let said = session_of(headers).and_then(|s| self.said.lock().expect("said").remove(&s));
        match said {
            None => html! {},
            Some((ok, text)) => html! {
                p.notice role="status" id="notice" data-ok=(ok) {
                    (ui::badge(if ok { ui::Outcome::Good } else { ui::Outcome::Bad }, if ok { "done" } else { "refused" })) " " (text)
                }
            },
        }
    }

    async fn render(&self, view: &str, filter: &pages::LogFilter) -> Option<Markup> {
        let now = SystemTime::now();
        Some(match view {
            "components" => pages::components(&self.status().await, now),
            "upgrade" => {
                let data = self.status().await;
                html! { (pages::upgrade_actions(&data)) (pages::upgrade(&data, now)) }
            }
            "log" => pages::log(&self.ring.tail(pages::LOG_SHOWN, |l| filter.keeps(l))),
            _ => return None,
        })
    }
}

/// A live region: `now`, then whatever `/console/events` sends for `view`.
fn live(view: &str, query: &str, now: Markup) -> Markup {
    ui::live_region(&format!("/console/events?view={view}{query}"), now)
}

/// `banalytics-box console-url`: a one-time login link for the console of
/// this home (`auth.rs`), made with its token (which it makes when there is
/// none yet, as the host's first start with a console does).
pub fn url_command(home: &Home) -> Result<u8, Error> {
    let config = crate::config::BoxConfig::load_any_kind(home.root())?;
    let Some(console) = config.console else {
        eprintln!(
            "banalytics-box: the console is off: add a [console] table to {} (and restart the box)",
            config.file.display()
        );
        return Ok(crate::EXIT_FAILURE);
    };
    let state = home.state_dir();
    let token = auth::load_or_create_token(&state).map_err(|source| Error::Io {
        path: state.join(auth::TOKEN_FILE),
        source,
    })?;
    println!(
        "{}/console/login?code={}",
        console.base_url(),
        auth::login_code(&token)
    );
    Ok(crate::EXIT_OK)
}

// ---------------------------------------------------------------- login

fn login_page(message: Option<&str>) -> Html<String> {
    Html(
        ui::Page::new(PRODUCT, "Log in")
            .render(html! {
                @if let Some(m) = message { p.notice role="alert" { (ui::badge(ui::Outcome::Bad, "refused")) " " (m) } }
                p { "Open the link " code { "banalytics-box console-url" } " prints, or give the token in the box's " code { "state/console-token" } "." }
                form method="post" action="/console/login" {
                    (ui::field("Console token", html! { input type="password" name="token" id="token" autocomplete="current-password"; }))
                    div.actions { (Button::submit("Log in").id("login").kind(ui::ButtonKind::Primary).render()) }
                }
            })
            .into_string(),
    )
}

fn logged_in(app: &App, login: auth::Login, session: Option<String>) -> HttpResponse {
    match (login, session) {
        (auth::Login::Opened, Some(s)) => {
            let secure = if app.https { "; Secure" } else { "" };
            (
                StatusCode::SEE_OTHER,
                [
                    (
                        header::SET_COOKIE,
                        format!(
                            "{}={s}; Path=/console; HttpOnly; SameSite=Strict{secure}",
                            auth::SESSION_COOKIE
                        ),
                    ),
                    (header::LOCATION, "/console".to_owned()),
                ],
            )
                .into_response()
        }
        (auth::Login::TooMany, _) => {
            warn!("console login refused: too many attempts");
            (
                StatusCode::TOO_MANY_REQUESTS,
                login_page(Some("too many login attempts: wait a minute")),
            )
                .into_response()
        }
        _ => {
            warn!("console login refused: wrong token or link");
            (
                StatusCode::UNAUTHORIZED,
                login_page(Some("wrong token, or a login link that expired or was used already; `banalytics-box console-url` prints a new one")),
            )
                .into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct CodeQuery {
    code: Option<String>,
}

async fn login_link(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<CodeQuery>,
) -> HttpResponse {
    match q.code {
        None => login_page(None).into_response(),
        Some(code) => {
            let (login, session) = app.auth.login_with_code(peer.ip(), &code);
            logged_in(&app, login, session)
        }
    }
}

#[derive(serde::Deserialize)]
struct TokenForm {
    token: String,
}

async fn login_form(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<TokenForm>,
) -> HttpResponse {
    let (login, session) = app.auth.login_with_token(peer.ip(), &form.token);
    logged_in(&app, login, session)
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> HttpResponse {
    if let Some(s) = session_of(&headers) {
        app.auth.end_session(&s);
    }
    Redirect::to("/console/login").into_response()
}

// ---------------------------------------------------------------- pages

async fn components_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Html<String> {
    let view = app.render("components", &pages::LogFilter::default()).await;
    page(
        "Components",
        "/console",
        html! { (app.told(&headers)) (live("components", "", view.unwrap_or_default())) },
    )
}

async fn restart_component(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> HttpResponse {
    let r = app.ask(Request::Restart { component: name }).await;
    app.tell(&headers, r.ok, r.message.unwrap_or_default());
    Redirect::to("/console").into_response()
}

async fn upgrade_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Html<String> {
    let view = app.render("upgrade", &pages::LogFilter::default()).await;
    page(
        "Software Upgrade Center",
        "/console/upgrade",
        html! { (app.told(&headers)) (live("upgrade", "", view.unwrap_or_default())) },
    )
}

async fn upgrade_action(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath(action): UrlPath<String>,
) -> HttpResponse {
    let request = match action.as_str() {
        "sync" => Request::Upgrade {
            retry: false,
            request: None,
        },
        "retry" => Request::Upgrade {
            retry: true,
            request: None,
        },
        "apply" => Request::Approve,
        "discard" => Request::Discard {
            by: "console".into(),
        },
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let r = app.ask(request).await;
    app.tell(&headers, r.ok, r.message.unwrap_or_default());
    Redirect::to("/console/upgrade").into_response()
}

async fn settings_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Html<String> {
    let text =
        std::fs::read_to_string(app.home.join(crate::config::CONFIG_FILE)).unwrap_or_default();
    let current = settings::current(&text).map(|(_, s)| s);
    let said = session_of(&headers).and_then(|s| app.said.lock().expect("said").remove(&s));
    page(
        "Settings",
        "/console/settings",
        pages::settings(
            current.as_ref(),
            said.as_ref().map(|(ok, m)| (*ok, m.as_str())),
        ),
    )
}

async fn save_settings(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(new): Form<settings::UpgradeSettings>,
) -> HttpResponse {
    match settings::save(&app.home, &new, &app.kinds) {
        Ok(saved) => app.tell(&headers, true, saved.to_string()),
        Err(e) => {
            let message = e.to_string();
            warn!(%message, "settings from the console refused");
            app.tell(&headers, false, message)
        }
    }
    Redirect::to("/console/settings").into_response()
}

async fn restart_box(State(app): State<Arc<App>>, headers: HeaderMap) -> HttpResponse {
    let r = app
        .ask(Request::RestartBox {
            mode: app.restart_mode,
            by: "console".into(),
        })
        .await;
    app.tell(&headers, r.ok, r.message.unwrap_or_default());
    Redirect::to("/console/settings").into_response()
}

async fn log_page(
    State(app): State<Arc<App>>,
    Query(filter): Query<pages::LogFilter>,
) -> Html<String> {
    let view = app.render("log", &filter).await.unwrap_or_default();
    let query = format!(
        "&component={}&level={}",
        filter.component.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
            ""
        ),
        filter.level.replace(|c: char| !c.is_ascii_alphabetic(), "")
    );
    page(
        "Log",
        "/console/log",
        html! { (pages::log_filter(&filter, &app.ring.components())) (live("log", &query, view)) },
    )
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    view: String,
    /// The version of the region the page rendered (`ui::live_region`).
    seen: Option<String>,
    #[serde(flatten)]
    filter: pages::LogFilter,
}

async fn events(
    State(app): State<Arc<App>>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StatusCode> {
    let first = app
        .render(&q.view, &q.filter)
        .await
        .ok_or(StatusCode::NOT_FOUND)?
        .into_string();
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let shown = ui::LiveStream::new(last_event_id, q.seen.as_deref());
    let stop = app.stop.clone();
    let stream = futures_util::stream::unfold(
        (app, q, stop, shown, Some(first)),
        |(app, q, mut stop, mut shown, mut rendered)| async move {
            loop {
                let html = match rendered.take() {
                    Some(html) => html,
                    None => {
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => return None,
                            () = tokio::time::sleep(LIVE_EVERY) => {}
                        }
                        app.render(&q.view, &q.filter).await?.into_string()
                    }
                };
                if let Some(version) = shown.send(&html) {
                    let event = Event::default().id(version).data(html);
                    return Some((Ok(event), (app, q, stop, shown, None)));
                }
            }
        },
    );
    Ok(Sse::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_the_same_only_with_the_same_host_and_port() {
        assert!(same_origin("http://127.0.0.1:8480", "127.0.0.1:8480"));
        assert!(same_origin(
            "http://127.0.0.1:8480/console/upgrade",
            "127.0.0.1:8480"
        ));
        assert!(!same_origin("http://127.0.0.1:9999", "127.0.0.1:8480"));
        assert!(!same_origin("https://evil.example", "127.0.0.1:8480"));
        assert!(!same_origin("null", "127.0.0.1:8480"));
    }
}
