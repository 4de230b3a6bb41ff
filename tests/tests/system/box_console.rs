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

/// A box with the probe and a console on a free loopback port, started:
/// its home, its process and the console's base URL.
fn console_box() -> Result<(TempHome, banalytics_tests::BoxProcess, String)> {
    let port = free_port()?;
    let home = TempHome::new(&format!(
        "[console]\nlisten = \"127.0.0.1:{port}\"\n\n[components.probe]\nkind = \"probe\"\n"
    ))?;
    let b = home.start(0)?;
    Ok((home, b, format!("http://127.0.0.1:{port}")))
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
    let (home, _b, base) = console_box()?;
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

/// The `data-sse` URL of a page's live region.
fn stream_url(page: &str) -> Result<String> {
    let (_, rest) = page.split_once("data-sse=\"").context("a live region")?;
    let url = rest.split('"').next().context("the attribute's end")?;
    Ok(url.replace("&amp;", "&"))
}

/// The next event of a Server-Sent Events stream within `within`, or
/// `None`: its `id` and its data.
async fn next_event(
    r: &mut reqwest::Response,
    within: std::time::Duration,
) -> Result<Option<(String, String)>> {
    let mut text = String::new();
    let ends = tokio::time::Instant::now() + within;
    while !text.contains("\n\n") {
        match tokio::time::timeout_at(ends, r.chunk()).await {
            Err(_) => return Ok(None),
            Ok(chunk) => text.push_str(&String::from_utf8_lossy(
                &chunk?.context("the stream ended")?,
            )),
        }
    }
    let field = |name: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(name))
            .map(|v| v.strip_prefix(' ').unwrap_or(v))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Some((field("id:"), field("data:"))))
}

/// A live region is sent only when it differs from what the browser
/// shows: not right after the page that rendered it (which would swap a
/// button under the user's pointer and lose the keyboard focus), then on a
/// change (a new line in the log), with its version as the event's id, and not again
/// to a stream reopened with that id as `Last-Event-ID`.
#[test]
fn a_live_region_is_sent_only_when_it_changed() -> Result<()> {
    let _machine = crate::machine::shared();
    let (home, _b, base) = console_box()?;
    let out = home.cli(&["console-url"])?;
    let link = String::from_utf8(out.stdout)?.trim().to_owned();
    // Four renders of the region (one each `LIVE_EVERY`, 500 ms).
    let quiet = std::time::Duration::from_secs(2);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let c = client();
        let cookie = session_cookie(&c.get(&link).send().await?).context("a session")?;
        let get = |path: String, last: Option<String>| {
            let mut r = c.get(format!("{base}{path}")).header("cookie", &cookie);
            if let Some(id) = last {
                r = r.header("last-event-id", id);
            }
            r.send()
        };
        let page = get("/console/log".into(), None).await?.text().await?;
        let url = stream_url(&page)?;
        ensure!(url.contains("view=log&") && url.contains("&seen="), "{url}");
        let mut stream = get(url.clone(), None).await?;
        ensure!(stream.status() == 200, "stream: {}", stream.status());
        let first = next_event(&mut stream, quiet).await?;
        ensure!(
            first.is_none(),
            "the page's own region sent again: {first:?}"
        );

        // A change: the probe logs its busy drill.
        let pong = home.exchange(
            "probe.busy-drill",
            serde_json::json!({"to": "probe", "seq": 1, "hold": true}),
            "probe.pong",
            std::time::Duration::from_secs(10),
        )?;
        ensure!(pong.is_ok(), "the probe answered the drill: {pong:?}");
        let (id, data) = next_event(&mut stream, quiet * 10)
            .await?
            .context("no event after the busy drill")?;
        ensure!(data.contains("busy drill"), "{data}");
        ensure!(id.len() == 16, "the event's id is its version: {id:?}");

        let mut again = get(url, Some(id)).await?;
        let first = next_event(&mut again, quiet).await?;
        ensure!(
            first.is_none(),
            "a reconnection sent what it had: {first:?}"
        );
        Ok(())
    })
}
