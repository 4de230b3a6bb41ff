//! The transport rule of the upgrade center's URLs against the real box
//! (issue 21, item 3): a URL is judged by the host the HTTP client would
//! connect to, read with the same (WHATWG) rules.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Result};
use banalytics_tests::{box_bin, TempHome, DEADLINE};

#[test]
fn a_repository_url_that_only_looks_loopback_is_refused_at_start_naming_its_line() -> Result<()> {
    let _machine = crate::machine::shared();
    // In TOML `\\` is one backslash: the URL is `http://evil.example\@127.0.0.1/repo`,
    // whose host for the client is evil.example.
    let home = TempHome::new(
        "[log]\nlevel = \"info\"\n\n[components.upgrade-center]\nkind = \"software-upgrade-center\"\nrepository_url = \"http://evil.example\\\\@127.0.0.1/repo\"\n",
    )?;
    let mut child = Command::new(box_bin())
        .arg("--home")
        .arg(home.path())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > DEADLINE {
            child.kill()?;
            child.wait()?;
            bail!(
                "the box started with a repository it would reach over plain http on evil.example"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("piped"), &mut stderr)?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    let file = home.path().join("config/box.toml");
    let expected = format!(
        "{}:6:18: repository_url = \"http://evil.example\\\\@127.0.0.1/repo\" is not accepted: plain http to \"evil.example\", which is not loopback",
        file.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected}\nin {stderr}"
    );
    Ok(())
}
