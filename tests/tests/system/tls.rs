//! https with a private CA, with real processes: the reference portal
//! serving https and wss (`banalytics-portal serve --tls-cert --tls-key`)
//! and boxes that trust its CA only through `ca_file`, for the portal link
//! and for the repository. The repository is signed with TUF and the box
//! pins its root; the portal sends matching digests for what it serves, so
//! what refuses a download here is the transport rule under test.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener},
    process::{Command, Output},
};

use anyhow::{ensure, Result};
use banalytics_tests::{
    e2e::{
        env_uuid, portal_bin, BoxSettings, ManagedBox, PortalApi, PortalProcess,
        HARNESS_ADMIN_TOKEN,
    },
    portal::{tuf, Faults},
    tls::PrivateCa,
};

use crate::tuf::{coords, set_v1, set_v2, sorted, sync, verdict};

struct World {
    dir: tempfile::TempDir,
    ca: PrivateCa,
    portal: PortalProcess,
}

/// A `banalytics-portal serve` process on https and wss with a certificate
/// from a fresh private CA, its repository signed with TUF.
fn tls_world() -> Result<World> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("portal");
    std::fs::create_dir_all(&data)?;
    tuf::keys_init(&data, &tuf::KeysInit::default())?;
    let ca = PrivateCa::new("banalytics test CA")?;
    let files = ca.write(&dir.path().join("tls"))?;
    let portal = PortalProcess::start_tls(&data, &files, &ca.ca_pem, &[])?;
    ensure!(portal.portal_url().starts_with("wss://127.0.0.1:"));
    ensure!(portal.repo_url().starts_with("https://127.0.0.1:"));
    Ok(World { dir, ca, portal })
}

impl World {
    /// A box of `env` that pins the repository's TUF root and trusts the
    /// private CA for the portal link, and for the repository when
    /// `repository_ca_file`.
    fn tls_box(&self, env: &str, repository_ca_file: bool) -> Result<ManagedBox> {
        let mut s = BoxSettings::new(&self.portal, Some(env));
        s.portal_extra = "ca_file = \"config/portal-ca.pem\"\n".into();
        s.upgrade_extra = "trust_root = \"config/repository-root.json\"\n".into();
        if repository_ca_file {
            s.upgrade_extra += "ca_file = \"config/repository-ca.pem\"\n";
        }
        let b = ManagedBox::new(&s)?;
        let config = b.path().join("config");
        std::fs::write(config.join("portal-ca.pem"), &self.ca.ca_pem)?;
        if repository_ca_file {
            std::fs::write(config.join("repository-ca.pem"), &self.ca.ca_pem)?;
        }
        std::fs::copy(
            tuf::root_path(self.portal.data_dir()),
            config.join("repository-root.json"),
        )?;
        Ok(b)
    }

    fn files(&self) -> std::path::PathBuf {
        self.dir.path().join("files")
    }

    /// Publishes and assigns set v1 and runs a trusting box until it
    /// installed it.
    fn install_v1(&self, env: &str) -> Result<ManagedBox> {
        self.portal.publish_all(&self.files(), &set_v1())?;
        self.portal.assign_set(env, &coords(&set_v1()))?;
        let mut b = self.tls_box(env, true)?;
        b.spawn()?;
        let v = verdict(&self.portal, &mut b, env, 0)?;
        ensure!(v.status == "installed", "{v}\n{}", b.log_tail(40));
        ensure!(b.installed()? == sorted(&set_v1()), "{:?}", b.installed()?);
        Ok(b)
    }
}

#[test]
fn a_box_trusting_a_private_ca_by_ca_file_installs_a_signed_set_over_https_and_wss() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = tls_world()?;
    let env = env_uuid(1201);
    let mut b = w.install_v1(&env)?;
    // Metadata and artifacts came from the https repository.
    let stats = w.portal.stats_report()?;
    for path in ["/repo/.tuf/timestamp.json", "/repo/.tuf/targets.json"] {
        ensure!(
            stats.paths.get(path).is_some_and(|s| s.requests > 0),
            "{path} was not asked for: {:?}",
            stats.paths.keys()
        );
    }
    ensure!(
        stats
            .paths
            .iter()
            .any(|(p, s)| p.ends_with("/beta-1.0.jar") && s.requests > 0),
        "beta-1.0.jar was not downloaded: {:?}",
        stats.paths.keys()
    );
    // The portal's own commands find it through `portal.addr` (https) and
    // trust the CA only with `--ca-file`.
    let environments = |ca_file: Option<&std::path::Path>| -> Result<Output> {
        let mut cmd = Command::new(portal_bin()?);
        cmd.arg("--data").arg(w.portal.data_dir());
        if let Some(ca) = ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        Ok(cmd
            .arg("environments")
            .env("BANALYTICS_PORTAL_TOKEN", HARNESS_ADMIN_TOKEN)
            .env_remove("BANALYTICS_PORTAL_CA_FILE")
            .output()?)
    };
    let out = environments(Some(&w.dir.path().join("tls/ca.pem")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.contains(&env),
        "environments with --ca-file: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = environments(None)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("UnknownIssuer"),
        "environments without --ca-file: {stderr}"
    );
    ensure!(b.stop()?.success());
    Ok(())
}

/// Operators behind an internal CA add it to the operating system's store
/// rather than to every program: the repository client trusts that store
/// too. `SSL_CERT_FILE` names the store's bundle to `rustls-native-certs`,
/// as it does to OpenSSL, so the box trusts the private CA here without
/// the repository `ca_file`.
#[test]
fn a_private_ca_in_the_system_trust_store_is_trusted_without_ca_file() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = tls_world()?;
    let env = env_uuid(1204);
    w.portal.publish_all(&w.files(), &set_v1())?;
    w.portal.assign_set(&env, &coords(&set_v1()))?;
    let mut b = w.tls_box(&env, false)?;
    let store = w.dir.path().join("tls/ca.pem");
    b.spawn_with_env(&[("SSL_CERT_FILE", store.to_str().expect("a UTF-8 path"))])?;
    let v = verdict(&w.portal, &mut b, &env, 0)?;
    ensure!(v.status == "installed", "{v}\n{}", b.log_tail(40));
    ensure!(b.installed()? == sorted(&set_v1()), "{:?}", b.installed()?);
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn without_the_repository_ca_file_the_box_names_the_certificate_and_installs_nothing() -> Result<()>
{
    let _machine = crate::machine::shared();
    let w = tls_world()?;
    let env = env_uuid(1202);
    w.portal.publish_all(&w.files(), &set_v1())?;
    w.portal.assign_set(&env, &coords(&set_v1()))?;
    // The portal link trusts the CA (so the verdict reaches the portal over
    // wss); the repository client does not.
    let mut b = w.tls_box(&env, false)?;
    b.spawn()?;
    let v = verdict(&w.portal, &mut b, &env, 0)?;
    ensure!(
        ["download_error", "installation_cancelled"].contains(&v.status.as_str()),
        "{v}"
    );
    ensure!(
        v.message.contains("certificate") && v.message.contains("UnknownIssuer"),
        "the refusal names the certificate: {v}"
    );
    ensure!(
        b.installed()?.is_empty(),
        "nothing installed: {:?}",
        b.installed()?
    );
    ensure!(
        !b.path().join("modules-download/alpha-1.0.jar").exists(),
        "nothing downloaded"
    );
    ensure!(b.is_running(), "the host keeps running");
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_redirect_from_the_https_repository_to_http_is_refused_and_the_active_set_keeps_running(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let w = tls_world()?;
    let env = env_uuid(1203);
    let mut b = w.install_v1(&env)?;
    // Q: a plain http server on loopback that would get the redirected
    // requests. Non-blocking, so that a connection made at any time is
    // still queued for `accept` at the end.
    let q = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    q.set_nonblocking(true)?;
    let q_url = format!("http://{}", q.local_addr()?);
    // Signed v2 (beta 2.0): the TUF targets and the portal's digests match
    // the bytes; only the transport changes.
    w.portal.publish_all(&w.files(), &set_v2()[1..])?;
    w.portal.set_fault_switches(&Faults {
        redirect_to: Some(q_url.clone()),
        ..Faults::default()
    })?;
    w.portal.assign_set(&env, &coords(&set_v2()))?;
    let seen = sync(&w.portal, &env)?;
    let v = verdict(&w.portal, &mut b, &env, seen)?;
    ensure!(
        v.status == "download_error" && v.module == "beta:2.0",
        "{v}\n{}",
        b.log_tail(40)
    );
    ensure!(
        v.message.contains("redirect from https to http refused"),
        "the refusal says why: {v}"
    );
    let redirected = w
        .portal
        .stats_report()?
        .paths
        .get(&set_v2()[1].repo_path())
        .map_or(0, |s| s.requests);
    ensure!(redirected > 0, "the portal redirected beta-2.0.jar");
    match q.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => anyhow::bail!("{q_url} got a connection from {peer}"),
        Err(e) => return Err(e.into()),
    }
    // The active set keeps running.
    ensure!(b.is_running(), "the host keeps running");
    ensure!(b.installed()? == sorted(&set_v1()), "{:?}", b.installed()?);
    let status = b.status()?;
    ensure!(
        status["host"]["running"] == true,
        "the host answers: {status}"
    );
    ensure!(b.stop()?.success());
    Ok(())
}
