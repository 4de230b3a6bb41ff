//! The JSON admin API under `/admin/...`, what the `publish`, `assign`,
//! `sync`, `environments`, `send-raw`, `stats` and `faults` commands call.
//! It can publish files from the portal's own disk and push frames to boxes,
//! so it answers loopback peers only, whatever address the portal listens
//! on, and only with the admin token (`Authorization: Bearer TOKEN`, see
//! [`super::auth`]). The rollouts' calls are here too.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::warn;

use super::{auth::TokenCheck, rollout::RolloutSpec, App, Faults, PortalError, PublishRequest};

/// Largest admin request body: `send-raw` must be able to carry a frame
/// over the protocol's 4 MiB limit, to test that the box refuses it.
pub const MAX_ADMIN_BODY: usize = 16 * 1024 * 1024;

/// `POST /admin/assign` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignRequest {
    /// The environment.
    pub environment_uuid: String,
    /// Its whole target set, as `groupId:artifactId:version`.
    pub modules: Vec<String>,
}

/// `POST /admin/assign-raw` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignRawRequest {
    /// The environment.
    pub environment_uuid: String,
    /// Module objects sent as they are, unchecked.
    pub modules: Vec<serde_json::Value>,
}

/// `POST /admin/sync` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequest {
    /// The environment.
    pub environment_uuid: String,
}

/// `POST /admin/send-raw` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendRawRequest {
    /// The environment.
    pub environment_uuid: String,
    /// The text frame, sent as is.
    pub text: String,
}

/// `POST /admin/environments` body: register an environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddEnvironmentRequest {
    /// A name for people.
    #[serde(default)]
    pub name: String,
    /// The UUID of a box that has one already; a new one when `None`.
    #[serde(default)]
    pub environment_uuid: Option<String>,
}

/// Answer of `revoke` (connections closed) and `rotate-secret`
/// (connections that took the new secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    /// Live connections concerned.
    pub connections: usize,
}

/// Answer of `sync` and `send-raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// Live connections that took the frame.
    pub delivered: usize,
}

pub(crate) fn router(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/admin/publish", post(publish))
        .route("/admin/modules", get(modules))
        .route("/admin/assign", post(assign))
        .route("/admin/assign-raw", post(assign_raw))
        .route("/admin/sync", post(sync))
        .route("/admin/send-raw", post(send_raw))
        .route(
            "/admin/environments",
            get(environments).post(add_environment),
        )
        .route("/admin/environments/{env}/revoke", post(revoke_environment))
        .route(
            "/admin/environments/{env}/rotate-secret",
            post(rotate_secret),
        )
        .route("/admin/stats", get(stats))
        .route("/admin/stats/reset", post(reset_stats))
        .route("/admin/faults", get(get_faults).put(put_faults))
        .route("/admin/rollouts", get(rollouts).post(start_rollout))
        .route("/admin/rollouts/{id}/resume", post(resume_rollout))
        .route("/admin/rollouts/{id}/cancel", post(cancel_rollout))
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
        .route_layer(middleware::from_fn_with_state(app, token_required))
        .route_layer(middleware::from_fn(loopback_only))
}

/// Refuses a request without the admin token; a wrong token counts
/// against the peer's login quota, and a peer over it is refused before
/// its token is compared.
async fn token_required(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match app.auth.check(peer.ip(), token) {
        TokenCheck::Ok => next.run(req).await,
        refused => {
            let status = if refused == TokenCheck::Wrong {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            warn!(%peer, path = %req.uri().path(), %status, "admin request without the admin token refused");
            (
                status,
                Json(json!({"error": "the admin API needs the admin token (Authorization: Bearer TOKEN)"})),
            )
                .into_response()
        }
    }
}

async fn rollouts(State(app): State<Arc<App>>) -> Response {
    Json(app.rollouts.list()).into_response()
}

async fn start_rollout(
    State(app): State<Arc<App>>,
    Json(spec): Json<RolloutSpec>,
) -> Result<Response, PortalError> {
    Ok(Json(app.start_rollout(spec)?).into_response())
}

async fn resume_rollout(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
) -> Result<Response, PortalError> {
    Ok(Json(app.resume_rollout(id)?).into_response())
}

async fn cancel_rollout(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
) -> Result<Response, PortalError> {
    Ok(Json(app.cancel_rollout(id)?).into_response())
}

async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if peer.ip().is_loopback() {
        next.run(req).await
    } else {
        warn!(%peer, path = %req.uri().path(), "admin request from a non-loopback peer refused");
        (
            StatusCode::FORBIDDEN,
            Json(json!({"error": format!("admin API refused for non-loopback peer {peer}")})),
        )
            .into_response()
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let status = match &self {
            PortalError::InvalidCoordinate { .. } | PortalError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            PortalError::UnknownModule { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

async fn publish(
    State(app): State<Arc<App>>,
    Json(req): Json<PublishRequest>,
) -> Result<Response, PortalError> {
    let module = tokio::task::spawn_blocking(move || app.store.publish(&req))
        .await
        .map_err(|e| PortalError::BadRequest(format!("publish task failed: {e}")))??;
    Ok(Json(module).into_response())
}

async fn modules(State(app): State<Arc<App>>) -> Response {
    Json(app.store.modules()).into_response()
}

async fn assign(
    State(app): State<Arc<App>>,
    Json(req): Json<AssignRequest>,
) -> Result<Response, PortalError> {
    let modules = app.store.assign(&req.environment_uuid, &req.modules)?;
    Ok(Json(json!({"environmentUuid": req.environment_uuid, "modules": modules})).into_response())
}

async fn assign_raw(
    State(app): State<Arc<App>>,
    Json(req): Json<AssignRawRequest>,
) -> Result<Response, PortalError> {
    app.store
        .assign_raw(&req.environment_uuid, req.modules.clone())?;
    Ok(
        Json(json!({"environmentUuid": req.environment_uuid, "modules": req.modules}))
            .into_response(),
    )
}

async fn sync(State(app): State<Arc<App>>, Json(req): Json<SyncRequest>) -> Response {
    Json(Delivered {
        delivered: app.sync(&req.environment_uuid),
    })
    .into_response()
}

async fn send_raw(State(app): State<Arc<App>>, Json(req): Json<SendRawRequest>) -> Response {
    Json(Delivered {
        delivered: app.envs.send(&req.environment_uuid, &req.text),
    })
    .into_response()
}

async fn environments(State(app): State<Arc<App>>) -> Response {
    Json(app.environments()).into_response()
}

async fn add_environment(
    State(app): State<Arc<App>>,
    Json(req): Json<AddEnvironmentRequest>,
) -> Result<Response, PortalError> {
    let registration = app.register(&req.name, req.environment_uuid.as_deref())?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(registration),
    )
        .into_response())
}

async fn revoke_environment(
    State(app): State<Arc<App>>,
    Path(env): Path<String>,
) -> Result<Response, PortalError> {
    let connections = app.revoke(&env)?;
    Ok(Json(Connections { connections }).into_response())
}

async fn rotate_secret(
    State(app): State<Arc<App>>,
    Path(env): Path<String>,
) -> Result<Response, PortalError> {
    let connections = app.rotate_secret(&env)?;
    Ok(Json(Connections { connections }).into_response())
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    Json(app.stats.report()).into_response()
}

async fn reset_stats(State(app): State<Arc<App>>) -> Response {
    app.stats.reset();
    Json(app.stats.report()).into_response()
}

async fn get_faults(State(app): State<Arc<App>>) -> Response {
    Json(app.faults.lock().expect("faults lock").clone()).into_response()
}

async fn put_faults(State(app): State<Arc<App>>, Json(faults): Json<Faults>) -> Response {
    app.set_faults(faults.clone());
    Json(faults).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::connect_info::MockConnectInfo;

    /// Serves `/admin/x` behind the loopback check as if every peer were
    /// `peer`; the test itself talks over loopback only.
    async fn status_for(peer: [u8; 4]) -> u16 {
        let router = Router::new()
            .route("/admin/x", get(|| async { "ok" }))
            .route_layer(middleware::from_fn(loopback_only))
            .layer(MockConnectInfo(SocketAddr::from((peer, 40_000))));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let status = reqwest::get(format!("http://{addr}/admin/x"))
            .await
            .unwrap()
            .status()
            .as_u16();
        server.abort();
        status
    }

    #[tokio::test]
    async fn refuses_admin_requests_from_non_loopback_peers() {
        assert_eq!(status_for([192, 0, 2, 7]).await, 403);
        assert_eq!(status_for([127, 0, 0, 1]).await, 200);
    }
}
