//! The box's own web console (issue 23), access side, with the real host:
//! off unless `[console]` is configured; a listen address off loopback
//! without TLS refused at start; a one-time `console-url` link opens a
//! session once; a wrong token, a foreign `Origin` and an 11th login in a
//! minute are refused; with a certificate it serves https, also on a
//! network address, and its cookie is `Secure`.

use std::net::TcpListener;

use anyhow::{ensure, Context, Result};
use banalytics_tests::TempHome;

/// A free loopback port (bound and let go: the box binds it next).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

fn session_cookie(r: &reqwest::Response) -> Option<String> {
    let set = r.headers().get("set-cookie")?.to_str().ok()?.to_owned();
    ensure_cookie_flags(&set).ok()?;
    Some(set.split(';').next()?.to_owned())
}

fn ensure_cookie_flags(set: &str) -> Result<()> {
    ensure!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "cookie flags: {set}"
    );
    Ok(())
}

#[test]
fn the_console_is_off_unless_configured() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = TempHome::new("[components.probe]\nkind = \"probe\"\n")?;
    let b = home.start(0)?;
    let url = home.cli(&["console-url"])?;
    ensure!(!url.status.success(), "console-url without a console fails");
    ensure!(
        String::from_utf8_lossy(&url.stderr).contains("the console is off"),
        "{}",
        String::from_utf8_lossy(&url.stderr)
    );
    ensure!(!b.log().contains("console listening"), "{}", b.log());
    ensure!(
        !home.path().join("state/console-token").exists(),
        "no token without a console"
    );
    Ok(())
}

#[test]
fn a_network_listen_address_without_tls_is_refused_at_start() -> Result<()> {
    let _machine = crate::machine::shared();
    let port = free_port()?;
    let home = TempHome::new(&format!(
        "[log]\nlevel = \"info\"\n\n[console]\nlisten = \"0.0.0.0:{port}\"\n"
    ))?;
    let out = home.cli(&["run"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "exit {:?}: {err}", out.status);
    ensure!(
        err.contains("box.toml:5")
            && err.contains("tls_cert")
            && err.contains("allow_insecure_http"),
        "the error names the line and what would be accepted: {err}"
    );
    // Accepted with the switch, with a warning.
    std::fs::write(
        home.path().join("config/box.toml"),
        format!("[console]\nlisten = \"0.0.0.0:{port}\"\nallow_insecure_http = true\n"),
    )?;
    let b = home.start(1)?;
    ensure!(
        b.log().contains("plain http on a network address"),
        "{}",
        b.log()
    );
    Ok(())
}

#[test]
fn a_login_link_works_once_and_wrong_tokens_foreign_origins_and_an_eleventh_login_are_refused(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let port = free_port()?;
    let home = TempHome::new(&format!(
        "[console]\nlisten = \"127.0.0.1:{port}\"\n\n[components.probe]\nkind = \"probe\"\n"
    ))?;
    let _b = home.start(0)?;
    let base = format!("http://127.0.0.1:{port}");
    let token_file = home.path().join("state/console-token");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)?.permissions().mode();
        ensure!(mode & 0o777 == 0o600, "token mode {mode:o}");
    }
    let out = home.cli(&["console-url"])?;
    let link = String::from_utf8(out.stdout)?.trim().to_owned();
    ensure!(
        link.starts_with(&format!("{base}/console/login?code=")),
        "{link}"
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let c = client();
        // Nothing without a session.
        let r = c.get(format!("{base}/console/upgrade")).send().await?;
        ensure!(r.status() == 303, "no session: {}", r.status());
        // 1: the link opens a session.
        let r = c.get(&link).send().await?;
        ensure!(r.status() == 303, "link: {}", r.status());
        let cookie = session_cookie(&r).context("a session cookie")?;
        let page = c
            .get(format!("{base}/console"))
            .header("cookie", &cookie)
            .send()
            .await?;
        ensure!(page.status() == 200);
        let text = page.text().await?;
        ensure!(
            text.contains("probe") && text.contains("Components"),
            "{text}"
        );
        // 2: the same link again is refused.
        let r = c.get(&link).send().await?;
        ensure!(r.status() == 401, "a used link: {}", r.status());
        // 3: a wrong token.
        let r = c
            .post(format!("{base}/console/login"))
            .form(&[("token", "not-the-token")])
            .send()
            .await?;
        ensure!(r.status() == 401, "wrong token: {}", r.status());
        // A POST from another origin, with a good session.
        let r = c
            .post(format!("{base}/console/components/probe/restart"))
            .header("cookie", &cookie)
            .header("origin", "http://evil.example")
            .send()
            .await?;
        ensure!(r.status() == 403, "foreign origin: {}", r.status());
        // From its own origin it goes through.
        let r = c
            .post(format!("{base}/console/components/probe/restart"))
            .header("cookie", &cookie)
            .header("origin", &base)
            .send()
            .await?;
        ensure!(r.status() == 303, "own origin: {}", r.status());
        // 4 to 10: wrong tokens; 11: even the right token is refused.
        for n in 4..=10 {
            let r = c
                .post(format!("{base}/console/login"))
                .form(&[("token", "not-the-token")])
                .send()
                .await?;
            ensure!(r.status() == 401, "login {n}: {}", r.status());
        }
        let token = std::fs::read_to_string(&token_file)?;
        let r = c
            .post(format!("{base}/console/login"))
            .form(&[("token", token.trim())])
            .send()
            .await?;
        ensure!(r.status() == 429, "the 11th login: {}", r.status());
        Ok(())
    })
}

#[test]
fn with_a_certificate_the_console_serves_https_on_a_network_address_and_its_cookie_is_secure(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let port = free_port()?;
    let home = TempHome::new("")?;
    let ca = banalytics_tests::tls::PrivateCa::new("box console test CA")?;
    ca.write(&home.path().join("config/tls"))?;
    std::fs::write(
        home.path().join("config/box.toml"),
        format!("[console]\nlisten = \"0.0.0.0:{port}\"\ntls_cert = \"config/tls/cert.pem\"\ntls_key = \"config/tls/key.pem\"\n"),
    )?;
    let b = home.start(0)?;
    ensure!(
        !b.log().contains("plain http"),
        "no warning with TLS: {}",
        b.log()
    );
    let out = home.cli(&["console-url"])?;
    let link = String::from_utf8(out.stdout)?.trim().to_owned();
    ensure!(
        link.starts_with(&format!("https://localhost:{port}/console/login?code=")),
        "{link}"
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes())?)
            .build()?;
        let r = c.get(&link).send().await?;
        ensure!(r.status() == 303, "link over https: {}", r.status());
        let set = r
            .headers()
            .get("set-cookie")
            .context("a cookie")?
            .to_str()?
            .to_owned();
        ensure!(
            set.contains("; Secure"),
            "the cookie is Secure over https: {set}"
        );
        let plain = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/console/login"))
            .send()
            .await;
        ensure!(
            !plain.is_ok_and(|r| r.status().is_success()),
            "no plain http on the TLS port"
        );
        Ok(())
    })
}
