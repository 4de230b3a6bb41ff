//! A client of the admin API, for the `banalytics-portal` commands and for
//! tests that drive a portal running as a separate process.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    rollout::{Rollout, RolloutSpec},
    AddEnvironmentRequest, AssignRawRequest, AssignRequest, Connections, Delivered,
    EnvironmentReport, Faults, ModuleObject, PublishRequest, Registration, SendRawRequest,
    StatsReport, SyncRequest,
};

/// Talks to `/admin/...` of a running portal.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl AdminClient {
    /// A client of the portal at `url` (`http://127.0.0.1:PORT`, or
    /// `https://` with [`AdminClient::with_ca_pem`] for a private CA).
    pub fn new(url: &str) -> Self {
        AdminClient {
            base: url.trim().trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// The same client, sending the admin token with every call.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }

    /// The same client, trusting the PEM certificates of `pem` besides
    /// the webpki roots: for a portal whose certificate comes from a
    /// private CA.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self> {
        let certs = reqwest::Certificate::from_pem_bundle(pem).context("reading the CA PEM")?;
        if certs.is_empty() {
            bail!("the CA PEM holds no certificate");
        }
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        self.http = builder.build().context("building the http client")?;
        Ok(self)
    }

    /// A client of the portal whose data folder is `dir` (reads
    /// `dir/portal.addr`).
    pub fn from_data_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("portal.addr");
        let addr = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {} (is the portal running?)", file.display()))?;
        let addr = addr.trim();
        if addr.starts_with("http://") || addr.starts_with("https://") {
            Ok(AdminClient::new(addr))
        } else {
            Ok(AdminClient::new(&format!("http://{addr}")))
        }
    }

    /// The portal's URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading {url}"))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!("portal refused ({status}): {msg}");
        }
        serde_json::from_str(&text).with_context(|| format!("parsing the answer of {url}"))
    }

    /// `POST /admin/publish`.
    pub async fn publish(&self, req: &PublishRequest) -> Result<ModuleObject> {
        self.call(reqwest::Method::POST, "/admin/publish", Some(req))
            .await
    }

    /// `GET /admin/modules`.
    pub async fn modules(&self) -> Result<Vec<ModuleObject>> {
        self.call(reqwest::Method::GET, "/admin/modules", None::<&()>)
            .await
    }

    /// `POST /admin/assign`: the module objects of the new set.
    pub async fn assign(&self, env: &str, modules: &[String]) -> Result<Vec<ModuleObject>> {
        let v: serde_json::Value = self
            .call(
                reqwest::Method::POST,
                "/admin/assign",
                Some(&AssignRequest {
                    environment_uuid: env.to_string(),
                    modules: modules.to_vec(),
                }),
            )
            .await?;
        Ok(serde_json::from_value(v["modules"].clone())?)
    }

    /// `POST /admin/assign-raw`: module objects answered as they are.
    pub async fn assign_raw(&self, env: &str, modules: Vec<serde_json::Value>) -> Result<()> {
        let _: serde_json::Value = self
            .call(
                reqwest::Method::POST,
                "/admin/assign-raw",
                Some(&AssignRawRequest {
                    environment_uuid: env.to_string(),
                    modules,
                }),
            )
            .await?;
        Ok(())
    }

    /// `POST /admin/sync`: how many live connections of this portal took
    /// `EVT_SYNC_SOFT` (none: the box is sent it when it connects).
    pub async fn sync(&self, env: &str) -> Result<usize> {
        let d: Delivered = self
            .call(
                reqwest::Method::POST,
                "/admin/sync",
                Some(&SyncRequest {
                    environment_uuid: env.to_string(),
                }),
            )
            .await?;
        Ok(d.delivered)
    }

    /// `POST /admin/send-raw`: how many live connections took the frame.
    pub async fn send_raw(&self, env: &str, text: &str) -> Result<usize> {
        let d: Delivered = self
            .call(
                reqwest::Method::POST,
                "/admin/send-raw",
                Some(&SendRawRequest {
                    environment_uuid: env.to_string(),
                    text: text.to_string(),
                }),
            )
            .await?;
        Ok(d.delivered)
    }

    /// `GET /admin/environments`.
    pub async fn environments(&self) -> Result<Vec<EnvironmentReport>> {
        self.call(reqwest::Method::GET, "/admin/environments", None::<&()>)
            .await
    }

    /// `POST /admin/environments`: registers an environment (the UUID
    /// `uuid` of a box that has one, else a new one); the UUID and the
    /// secret, shown once.
    pub async fn add_environment(&self, name: &str, uuid: Option<&str>) -> Result<Registration> {
        self.call(
            reqwest::Method::POST,
            "/admin/environments",
            Some(&AddEnvironmentRequest {
                name: name.to_string(),
                environment_uuid: uuid.map(str::to_string),
            }),
        )
        .await
    }

    /// `POST /admin/environments/ENV/revoke`: how many live connections
    /// were closed.
    pub async fn revoke_environment(&self, env: &str) -> Result<usize> {
        let c: Connections = self
            .call(
                reqwest::Method::POST,
                &format!("/admin/environments/{env}/revoke"),
                None::<&()>,
            )
            .await?;
        Ok(c.connections)
    }

    /// `POST /admin/environments/ENV/rotate-secret`: how many live
    /// connections took the new secret.
    pub async fn rotate_secret(&self, env: &str) -> Result<usize> {
        let c: Connections = self
            .call(
                reqwest::Method::POST,
                &format!("/admin/environments/{env}/rotate-secret"),
                None::<&()>,
            )
            .await?;
        Ok(c.connections)
    }

    /// `GET /admin/stats`.
    pub async fn stats(&self) -> Result<StatsReport> {
        self.call(reqwest::Method::GET, "/admin/stats", None::<&()>)
            .await
    }

    /// `POST /admin/stats/reset`.
    pub async fn reset_stats(&self) -> Result<StatsReport> {
        self.call(reqwest::Method::POST, "/admin/stats/reset", None::<&()>)
            .await
    }

    /// `GET /admin/rollouts`, newest first.
    pub async fn rollouts(&self) -> Result<Vec<Rollout>> {
        self.call(reqwest::Method::GET, "/admin/rollouts", None::<&()>)
            .await
    }

    /// `POST /admin/rollouts`: starts a rollout.
    pub async fn start_rollout(&self, spec: &RolloutSpec) -> Result<Rollout> {
        self.call(reqwest::Method::POST, "/admin/rollouts", Some(spec))
            .await
    }

    /// `POST /admin/rollouts/ID/resume`.
    pub async fn resume_rollout(&self, id: u64) -> Result<Rollout> {
        self.call(
            reqwest::Method::POST,
            &format!("/admin/rollouts/{id}/resume"),
            None::<&()>,
        )
        .await
    }

    /// `POST /admin/rollouts/ID/cancel`.
    pub async fn cancel_rollout(&self, id: u64) -> Result<Rollout> {
        self.call(
            reqwest::Method::POST,
            &format!("/admin/rollouts/{id}/cancel"),
            None::<&()>,
        )
        .await
    }

    /// `GET /admin/faults`.
    pub async fn faults(&self) -> Result<Faults> {
        self.call(reqwest::Method::GET, "/admin/faults", None::<&()>)
            .await
    }

    /// `PUT /admin/faults`.
    pub async fn set_faults(&self, faults: &Faults) -> Result<Faults> {
        self.call(reqwest::Method::PUT, "/admin/faults", Some(faults))
            .await
    }
}
