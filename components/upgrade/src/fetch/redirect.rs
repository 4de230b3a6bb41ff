//! Redirects, followed by hand under one rule for every request of the
//! repository client.
//!
//! The client itself follows none ([`client`](super::client) sets
//! `Policy::none()`): a redirect rule that depends on where the artifact's
//! digest came from cannot be a per-client policy, and reqwest has no
//! per-request one. [`send`] follows a chain of at most
//! [`MAX_REDIRECTS`] hops, never from https to http, to the first host of
//! the chain always, and to another host (a CDN, an object store) only for
//! an artifact whose digest is authoritative ([`DigestSource::is_authoritative`]:
//! signed TUF metadata or the portal's frame). Then whoever serves the bytes
//! cannot change them unnoticed; with only the repository's own `.sha256`
//! file, the repository's host is the only one trusted to serve them.
//!
//! Every hop is a new request built by the caller for the new URL, so the
//! `Range` and `If-Range` of a resume go along. Credentials in the
//! repository URL (`https://user:pass@repo/...`, which reqwest turns into
//! an `Authorization` header) go along to the same scheme, host and port
//! only, as reqwest's own redirect handling does.

use reqwest::header::LOCATION;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use tracing::debug;

use super::{DigestSource, FetchError, MAX_REDIRECTS};

/// What the repository client does with one redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// Follow it.
    Follow,
    /// Fail the request with [`FetchError::RedirectRefused`], for this reason.
    Refuse(String),
}

/// The redirect rule for an artifact whose digest came from `digest`:
/// `previous` holds the URLs requested so far, the first one first, and
/// `next` is where the last one redirects. Refused: more than
/// [`MAX_REDIRECTS`] hops in all, any hop to http once https was used, a
/// hop to plain http off the machine from a chain that began on loopback
/// http, and a hop to another host than the first one's unless the digest
/// is authoritative.
pub fn redirect(previous: &[Url], next: &Url, digest: DigestSource) -> Redirect {
    let first_host = previous.first().and_then(|u| u.host_str());
    if previous.len() > MAX_REDIRECTS {
        Redirect::Refuse(format!("too many redirects (more than {MAX_REDIRECTS})"))
    } else if next.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
        Redirect::Refuse("redirect from https to http refused".into())
    } else if next.scheme() != "https"
        && !super::is_loopback(next)
        && previous.first().is_some_and(super::is_loopback)
    {
        // The configured URL was plain http only because it is loopback
        // (`check_transport`); a hop must not take it off the machine.
        Redirect::Refuse(format!(
            "redirect from a loopback http repository to plain http on {} refused",
            next.host_str().unwrap_or("(none)")
        ))
    } else if next.host_str() != first_host && !digest.is_authoritative() {
        Redirect::Refuse(format!(
            "redirect to another host {} refused: the artifact's digest is not from TUF or the portal ({digest})",
            next.host_str().unwrap_or("(none)")
        ))
    } else {
        Redirect::Follow
    }
}

/// Sends the request `build` makes for `url`, then for each redirect the
/// [`redirect`] rule follows, until an answer that is not a redirect.
///
/// A `301`, `302`, `303`, `307` or `308` with a usable `Location` (resolved
/// against the URL that answered) is a redirect; any other answer, also a
/// `3xx` without a `Location`, is returned for the caller to judge.
pub async fn send(
    url: &str,
    digest: DigestSource,
    build: impl Fn(&str) -> RequestBuilder,
) -> Result<Response, FetchError> {
    let first = Url::parse(url).ok();
    let mut previous: Vec<Url> = Vec::new();
    let mut current = url.to_owned();
    loop {
        let response = build(&current)
            .send()
            .await
            .map_err(|source| FetchError::Transport {
                url: current.clone(),
                source,
            })?;
        let Some(next) = location(&response) else {
            return Ok(response);
        };
        previous.push(response.url().clone());
        match redirect(&previous, &next, digest) {
            Redirect::Follow => {
                debug!(from = %current, to = %next, status = response.status().as_u16(), "following redirect");
                current = with_credentials_of(first.as_ref(), next).into();
            }
            Redirect::Refuse(reason) => {
                return Err(FetchError::RedirectRefused {
                    url: url.to_owned(),
                    location: next.into(),
                    reason,
                })
            }
        }
    }
}

/// `next` with the user name and password of `first` when it goes to the
/// same origin (scheme, host, port) and names no user of its own.
fn with_credentials_of(first: Option<&Url>, mut next: Url) -> Url {
    if let Some(first) = first.filter(|f| !f.username().is_empty()) {
        let same_origin = first.scheme() == next.scheme()
            && first.host_str() == next.host_str()
            && first.port_or_known_default() == next.port_or_known_default();
        if same_origin && next.username().is_empty() {
            // Only fails for URLs that cannot have a user (no host).
            let _ = next.set_username(first.username());
            let _ = next.set_password(first.password());
        }
    }
    next
}

/// Where a redirect answer points, resolved against the URL that answered.
fn location(response: &Response) -> Option<Url> {
    let redirects = matches!(
        response.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !redirects {
        return None;
    }
    let value = response.headers().get(LOCATION)?.to_str().ok()?;
    response.url().join(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_redirect_never_goes_from_https_to_http() {
        let https = [u("https://repo.example/a.jar")];
        for digest in [DigestSource::Tuf, DigestSource::Repository] {
            assert!(matches!(
                redirect(&https, &u("http://repo.example/a.jar"), digest),
                Redirect::Refuse(r) if r.contains("https to http")
            ));
            assert!(matches!(
                redirect(&https, &u("http://cdn.example/a.jar"), digest),
                Redirect::Refuse(r) if r.contains("https to http")
            ));
        }
        // Nor later in the chain.
        let chain = [u("https://repo.example/a"), u("https://cdn.example/a")];
        assert!(matches!(
            redirect(&chain, &u("http://cdn.example/b"), DigestSource::Tuf),
            Redirect::Refuse(_)
        ));
    }

    #[test]
    fn a_loopback_http_repository_never_redirects_to_plain_http_off_the_machine() {
        let local = [u("http://127.0.0.1:8080/a.jar")];
        for digest in [DigestSource::Tuf, DigestSource::Portal] {
            assert!(matches!(
                redirect(&local, &u("http://cdn.example/a.jar"), digest),
                Redirect::Refuse(r) if r.contains("loopback http repository to plain http on cdn.example")
            ));
            assert_eq!(
                redirect(&local, &u("https://cdn.example/a.jar"), digest),
                Redirect::Follow
            );
            assert_eq!(
                redirect(&local, &u("http://localhost:9000/a.jar"), digest),
                Redirect::Follow
            );
        }
        // A repository that is plain http off the machine was opted in
        // (`allow_insecure_http`): its hops are judged as before.
        let remote = [u("http://repo.example/a.jar")];
        assert_eq!(
            redirect(&remote, &u("http://cdn.example/a.jar"), DigestSource::Tuf),
            Redirect::Follow
        );
    }

    #[test]
    fn another_host_only_for_a_digest_from_tuf_or_the_portal() {
        let https = [u("https://repo.example/a.jar")];
        let cdn = u("https://cdn.example/a.jar");
        assert_eq!(redirect(&https, &cdn, DigestSource::Tuf), Redirect::Follow);
        assert_eq!(
            redirect(&https, &cdn, DigestSource::Portal),
            Redirect::Follow
        );
        for digest in [DigestSource::Repository, DigestSource::None] {
            match redirect(&https, &cdn, digest) {
                Redirect::Refuse(r) => {
                    assert!(r.contains("another host cdn.example"), "{r}");
                    assert!(r.contains("not from TUF or the portal"), "{r}");
                }
                other => panic!("{digest}: {other:?}"),
            }
            assert_eq!(
                redirect(&https, &u("https://repo.example/b/a.jar"), digest),
                Redirect::Follow
            );
        }
        let http = [u("http://127.0.0.1:8080/a.jar")];
        assert_eq!(
            redirect(&http, &u("http://127.0.0.1:8080/b.jar"), DigestSource::None),
            Redirect::Follow
        );
    }

    #[test]
    fn credentials_go_along_to_the_same_origin_only() {
        let first = u("https://box:secret@repo.example/repo/a.jar");
        let carried = with_credentials_of(Some(&first), u("https://repo.example/b/a.jar"));
        assert_eq!(carried.as_str(), "https://box:secret@repo.example/b/a.jar");
        for other in [
            "https://cdn.example/a.jar",
            "https://repo.example:8443/a.jar",
            "http://repo.example/a.jar",
        ] {
            assert_eq!(with_credentials_of(Some(&first), u(other)), u(other));
        }
        let plain = u("https://repo.example/a.jar");
        let next = u("https://repo.example/b.jar");
        assert_eq!(with_credentials_of(Some(&plain), next.clone()), next);
    }

    #[test]
    fn at_most_max_redirects_hops_in_all() {
        let hop = u("https://repo.example/a.jar");
        let cdn = u("https://cdn.example/a.jar");
        let full: Vec<_> = (0..MAX_REDIRECTS).map(|_| hop.clone()).collect();
        assert_eq!(redirect(&full, &cdn, DigestSource::Tuf), Redirect::Follow);
        let over: Vec<_> = (0..=MAX_REDIRECTS).map(|_| hop.clone()).collect();
        assert!(matches!(
            redirect(&over, &hop, DigestSource::Tuf),
            Redirect::Refuse(r) if r.contains("too many")
        ));
    }
}
