//! The files drill: what a hostile component would try on the box's own
//! files, and what any component may do, each attempt's outcome reported.
//! Isolated (`isolation = "process"`), the sandbox refuses the first kind;
//! in process, nothing does.

use std::{collections::BTreeMap, io::Write, path::Path};

/// The attempts, by name: `ok`, or the error the system answered. Names
/// are paths relative to the home; the temporary folder is `TMPDIR`.
pub fn drill(home: &Path) -> BTreeMap<String, String> {
    let root = home.join("state/tuf/root.json");
    let forged = home.join("data/sample-forged-root.json");
    let mut out = BTreeMap::new();
    let mut note = |name: &str, result: std::io::Result<()>| {
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        out.insert(name.to_owned(), outcome);
    };
    note(
        "write state/tuf/root.json",
        std::fs::OpenOptions::new()
            .write(true)
            .open(&root)
            .and_then(|mut f| f.write_all(b"{\"forged\": true}")),
    );
    note("truncate state/tuf/root.json", truncate(&root));
    note(
        "rename over state/tuf/root.json",
        std::fs::write(&forged, b"{\"forged\": true}")
            .and_then(|()| std::fs::rename(&forged, &root)),
    );
    let _ = std::fs::remove_file(&forged);
    note("unlink state/tuf/root.json", std::fs::remove_file(&root));
    note("read state/tuf/root.json", std::fs::read(&root).map(drop));
    note(
        "read config/box.toml",
        std::fs::read(home.join("config/box.toml")).map(drop),
    );
    note(
        "write modules/sample-drill.txt",
        std::fs::write(home.join("modules/sample-drill.txt"), b"drill"),
    );
    note(
        "remove modules/modules-info.properties",
        std::fs::remove_file(home.join("modules/modules-info.properties")),
    );
    note(
        "write data/sample-drill.txt",
        std::fs::write(home.join("data/sample-drill.txt"), b"drill"),
    );
    note(
        "create /dev/null",
        std::fs::File::create("/dev/null").and_then(|mut f| f.write_all(b"drill")),
    );
    note(
        "write TMPDIR/sample-drill.txt",
        std::fs::write(std::env::temp_dir().join("sample-drill.txt"), b"drill"),
    );
    out
}

/// `truncate(2)` to 0 bytes, without opening the file for writing first.
#[cfg(unix)]
fn truncate(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated path that lives across the call.
    if unsafe { libc::truncate(c.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Windows has no `truncate(2)`: the drill opens the file for writing.
#[cfg(windows)]
fn truncate(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)
}
