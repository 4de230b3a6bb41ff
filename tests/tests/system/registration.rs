//! The reference portal knows its boxes (issue 21, item 4), with the real
//! `banalytics-box`: a wrong secret or an unregistered UUID is refused
//! with 401 before the upgrade and reads no target set; the right secret
//! upgrades; a revoked box is disconnected and refused; a rotated secret
//! reaches the box over the link and is what it connects with after a
//! restart. And the console's and admin API's gates on the real
//! `banalytics-portal serve`: a foreign `Origin` (403), the limiter before
//! the token comparison (429 for the right token).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    e2e::{
        env_uuid, write_registration, BoxSettings, ManagedBox, ModuleSpec, PortalApi,
        PortalProcess, HARNESS_ADMIN_TOKEN,
    },
    portal::{Portal, PortalConfig, PortalHandle},
    DEADLINE,
};

/// Long enough for a box to install a small set (a download and a
/// restart).
const CONVERGE: Duration = Duration::from_secs(60);

fn set() -> Vec<ModuleSpec> {
    vec![ModuleSpec::new("com.example:alpha:1.0", 4096)]
}

fn coords() -> Vec<String> {
    set().iter().map(|s| s.coordinates.clone()).collect()
}

/// A portal with [`set`] published.
fn portal(dir: &tempfile::TempDir) -> Result<PortalHandle> {
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    portal.publish_all(&dir.path().join("files"), &set())?;
    Ok(portal)
}

/// The secret in the box's registration file.
fn stored_secret(b: &ManagedBox) -> Option<String> {
    let text =
        std::fs::read_to_string(b.path().join("config/device-registration.properties")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("environmentSecret="))
        .map(str::to_owned)
}

/// The HTTP status of an upgrade of `env` with `secret`: 101 when let in.
fn upgrade_status(portal: &PortalHandle, env: &str, secret: &str) -> Result<u16> {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
    let mut req = portal.ws_url(env, "h").into_client_request()?;
    req.headers_mut()
        .insert("Authorization", format!("Bearer {secret}").parse()?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(match rt.block_on(tokio_tungstenite::connect_async(req)) {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => return Err(e).context("connecting"),
    })
}

#[test]
fn a_box_with_a_wrong_secret_is_refused_and_reads_no_target_set_then_upgrades_with_the_right_one(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = portal(&dir)?;
    let env = env_uuid(1);
    portal.assign_set(&env, &coords())?;
    let mut settings = BoxSettings::new(&portal, Some(&env));
    let right = settings.environment_secret.replace("wrong-secret".into());
    let right = right.context("registered")?;
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    b.run_until(DEADLINE, "two refused attempts", |_| {
        (portal.stats().refused_connections >= 2).then_some(())
    })?;
    let report = portal.environment(&env).context("registered")?;
    ensure!(
        report.connections == 0 && report.module_requests == 0 && report.statuses.is_empty(),
        "a refused box read nothing and reported nothing: {report:?}"
    );
    ensure!(
        portal
            .stats()
            .refused_by_address
            .contains_key(&"127.0.0.1".parse()?),
        "refusals counted per address"
    );
    let link = b.run_until(DEADLINE, "the refusal in status", |b| {
        let s = b.status().ok()?;
        let text = s.to_string();
        text.contains("401").then_some(text)
    })?;
    ensure!(
        !link.contains("wrong-secret"),
        "the secret is never shown: {link}"
    );
    ensure!(
        !b.log().contains("wrong-secret"),
        "the secret is never logged"
    );

    // The right secret: the box's next attempt is let in and it upgrades.
    write_registration(&b.path(), &env, Some(&right))?;
    b.run_until(CONVERGE, "installed", |_| {
        portal
            .statuses(&env)
            .ok()
            .filter(|l| l.iter().any(|l| l.status == "installed"))
    })?;
    Ok(())
}

#[test]
fn an_unregistered_uuid_is_refused_and_gets_no_state() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = portal(&dir)?;
    let env = env_uuid(2);
    let mut settings = BoxSettings::new(&portal, None);
    settings.environment = Some(env.clone());
    settings.environment_secret = Some("made-up".into());
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    b.run_until(DEADLINE, "a refused attempt", |_| {
        (portal.stats().refused_connections >= 1).then_some(())
    })?;
    ensure!(
        portal.environment(&env).is_none(),
        "an unregistered UUID has no state at the portal"
    );
    Ok(())
}

#[test]
fn a_revoked_box_is_disconnected_and_refused() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = portal(&dir)?;
    let env = env_uuid(3);
    let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;
    b.spawn()?;
    b.run_until(DEADLINE, "the box to connect", |_| {
        portal.environment(&env).filter(|e| e.live_connections > 0)
    })?;
    let refused_before = portal.stats().refused_connections;
    ensure!(portal.revoke(&env)? == 1, "one live connection closed");
    b.run_until(DEADLINE, "the box to be refused again", |_| {
        let e = portal.environment(&env)?;
        (e.live_connections == 0 && portal.stats().refused_connections > refused_before)
            .then_some(())
    })?;
    let e = portal.environment(&env).context("registered")?;
    ensure!(e.revoked && e.connections == 1, "{e:?}");
    let secret = stored_secret(&b).context("a secret")?;
    ensure!(upgrade_status(&portal, &env, &secret)? == 401);
    Ok(())
}

#[test]
fn a_rotated_secret_reaches_the_box_which_reconnects_with_it_after_a_restart() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = portal(&dir)?;
    let env = env_uuid(4);
    let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;
    let old = stored_secret(&b).context("a secret")?;
    b.spawn()?;
    b.run_until(DEADLINE, "the box to connect", |_| {
        portal.environment(&env).filter(|e| e.live_connections > 0)
    })?;
    ensure!(portal.rotate_secret(&env)? == 1, "sent to the live box");
    let new = b.run_until(
        DEADLINE,
        "the box to store and confirm the new secret",
        |b| {
            let stored = stored_secret(b).filter(|s| *s != old)?;
            let e = portal.environment(&env)?;
            (!e.rotation_pending).then_some(stored)
        },
    )?;
    ensure!(
        upgrade_status(&portal, &env, &old)? == 401,
        "the old secret stopped working"
    );
    ensure!(!b.log().contains(&new), "the new secret is never logged");
    b.stop()?;
    let before = portal.environment(&env).context("registered")?.connections;
    b.spawn()?;
    b.run_until(DEADLINE, "the box to reconnect with the new secret", |_| {
        portal
            .environment(&env)
            .filter(|e| e.live_connections > 0 && e.connections > before)
    })?;
    ensure!(stored_secret(&b).as_deref() == Some(new.as_str()));
    Ok(())
}

#[test]
fn console_posts_from_a_foreign_origin_and_a_right_token_over_quota_are_refused() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = PortalProcess::start(&dir.path().join("portal"), None, &[])?;
    let url = format!("http://{}", portal.addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let login = |origin: String| {
            http.post(format!("{url}/console/login"))
                .header("Origin", origin)
                .form(&[("token", HARNESS_ADMIN_TOKEN)])
                .send()
        };
        let foreign = format!("http://127.0.0.1:{}", portal.addr().port() ^ 1);
        let refused = login(foreign).await?;
        ensure!(refused.status() == 403, "{}", refused.status());
        ensure!(
            refused.headers()["content-security-policy"] == "frame-ancestors 'none'",
            "no framing"
        );
        let own = login(url.clone()).await?;
        ensure!(own.status() == 303, "{}", own.status());

        let call = |token: &str| {
            http.get(format!("{url}/admin/stats"))
                .bearer_auth(token)
                .send()
        };
        for _ in 0..12 {
            let s = call("wrong").await?.status();
            ensure!(s == 401 || s == 429, "{s}");
        }
        let right = call(HARNESS_ADMIN_TOKEN).await?.status();
        ensure!(right == 429, "the right token over quota: {right}");
        Ok(())
    })?;
    Ok(())
}
