//! The Unix control channel: a Unix socket under the home (mode 0600, in
//! the 0700 `state/` folder).

use std::{io, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use tokio::net::{UnixListener, UnixStream};

/// The host's end: accepts one connection per request.
pub struct Listener(UnixListener);

/// One accepted connection.
pub type Stream = UnixStream;

/// The CLI's end of one connection.
pub type Client = std::os::unix::net::UnixStream;

/// Binds the socket, replacing a stale one (the caller holds the home lock,
/// so no other host uses it).
pub fn bind(path: &Path) -> io::Result<Listener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Listener(listener))
}

impl Listener {
    /// The next connection.
    pub async fn accept(&mut self) -> io::Result<Stream> {
        Ok(self.0.accept().await?.0)
    }
}

/// Connects to the host at `path`, reads time out after `timeout`;
/// `Ok(None)` when no host listens there.
pub fn connect(path: &Path, timeout: Duration) -> io::Result<Option<Client>> {
    let stream = match Client::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(io::Error::new(e.kind(), not_yours(path, &e)))
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(timeout))?;
    Ok(Some(stream))
}

/// The error for a socket this user may not open: it is its owner's only
/// (mode 0600 in a 0700 home), so it names the command to run as that owner
/// (the packaged box's `sudo -u banalytics banalytics-box status`). `--home`
/// is added when `$BANALYTICS_HOME` does not name this home.
fn not_yours(socket: &Path, cause: &io::Error) -> String {
    let home = socket.parent().and_then(Path::parent).unwrap_or(socket);
    let owner = std::fs::metadata(home)
        .ok()
        .and_then(|m| user_name(std::os::unix::fs::MetadataExt::uid(&m)))
        .unwrap_or_else(|| "OWNER".into());
    let from_env = std::env::var_os("BANALYTICS_HOME").is_some_and(|h| Path::new(&h) == home);
    let home_arg = if from_env {
        String::new()
    } else {
        format!(" --home {}", home.display())
    };
    format!(
        "{cause}: the control socket is open to the home's owner only; \
         run `sudo -u {owner} banalytics-box{home_arg} status`"
    )
}

/// The login name of `uid`, from the password database.
pub(crate) fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); it is
    // only read after getpwuid_r filled it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found = std::ptr::null_mut();
    // SAFETY: `pwd`, `buf` and `found` outlive the call, and `buf.len()` is
    // the buffer's size; the strings it sets point into `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_of_another_user_names_the_command_to_run_as_its_owner() {
        let home = tempfile::tempdir().unwrap();
        let socket = home.path().join("state/control.sock");
        let cause = io::Error::from(io::ErrorKind::PermissionDenied);
        // SAFETY: getuid cannot fail.
        let me = user_name(unsafe { libc::getuid() }).expect("this user has a name");
        assert_eq!(
            not_yours(&socket, &cause),
            format!(
                "{cause}: the control socket is open to the home's owner only; \
                 run `sudo -u {me} banalytics-box --home {} status`",
                home.path().display()
            )
        );
    }
}
