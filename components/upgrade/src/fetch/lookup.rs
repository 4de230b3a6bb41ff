//! The small requests that look an artifact up before it is downloaded:
//! whether it exists ([`probe`]), how large it is ([`content_length`]) and
//! which digest the repository gives for it ([`fetch_sha256_file`]).
//!
//! They follow redirects by the same rule as the download
//! ([`redirect`](super::redirect())): `content_length` for the digest the
//! download will have, the others as for an artifact without an
//! authoritative digest, since that is where they are asked. A redirect to
//! another host is then [`FetchError::RedirectRefused`], the same error the
//! download would end with, before a byte of it moves.

use reqwest::StatusCode;
use tracing::debug;

use super::{DigestSource, FetchError, MAX_DIGEST_FILE_BYTES, SMALL_REQUEST_TIMEOUT};

/// Fetches `{url}.sha256`: a hex SHA-256 digest, optionally followed by white
/// space and a file name. `Ok(None)` when the repository answers 404.
#[tracing::instrument(skip(client))]
pub async fn fetch_sha256_file(
    client: &reqwest::Client,
    url: &str,
) -> Result<Option<banalytics_home::Sha256>, FetchError> {
    let digest_url = format!("{url}.sha256");
    let transport = |source| FetchError::Transport {
        url: digest_url.clone(),
        source,
    };
    let mut response = super::send(&digest_url, DigestSource::None, |hop| {
        client.get(hop).timeout(SMALL_REQUEST_TIMEOUT)
    })
    .await?;
    match response.status() {
        StatusCode::NOT_FOUND => {
            debug!(url = %digest_url, "no digest file");
            return Ok(None);
        }
        StatusCode::OK => {}
        other => {
            return Err(FetchError::HttpStatus {
                url: digest_url,
                status: other.as_u16(),
            })
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_DIGEST_FILE_BYTES {
            return Err(FetchError::DigestFileTooLarge {
                url: digest_url,
                limit: MAX_DIGEST_FILE_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    match parse_digest_file(&body) {
        Some(digest) => Ok(Some(digest)),
        None => Err(FetchError::BadDigest {
            content: String::from_utf8_lossy(&body[..body.len().min(100)]).into_owned(),
            url: digest_url,
        }),
    }
}

/// Whether `url` exists: `HEAD`, `true` on success, `false` on 404, an error
/// otherwise (contracts section 4: any other failure is an error).
///
/// It is asked only where no digest from TUF or the portal is known (the
/// original portal's packages, a native build without one), so a redirect
/// to another host is refused ([`FetchError::RedirectRefused`]): the
/// download of that artifact would be refused the same way.
#[tracing::instrument(skip(client))]
pub async fn probe(client: &reqwest::Client, url: &str) -> Result<bool, FetchError> {
    let status = head(client, url, DigestSource::None).await?.status();
    if status == StatusCode::NOT_FOUND {
        Ok(false)
    } else if status.is_success() {
        Ok(true)
    } else {
        Err(FetchError::HttpStatus {
            url: url.to_owned(),
            status: status.as_u16(),
        })
    }
}

/// The size `HEAD` announces for `url` (`Content-Length`), for the
/// free-space check of artifacts whose size nobody declared. `None` when
/// the server does not say, or does not answer `HEAD` with a success.
/// Redirects are followed as the download of an artifact whose digest came
/// from `digest` follows them: to another host only from TUF or the portal,
/// else [`FetchError::RedirectRefused`].
#[tracing::instrument(skip(client))]
pub async fn content_length(
    client: &reqwest::Client,
    url: &str,
    digest: DigestSource,
) -> Result<Option<u64>, FetchError> {
    let response = head(client, url, digest).await?;
    if !response.status().is_success() {
        return Ok(None);
    }
    Ok(response
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok()))
}

/// A `HEAD` request for `url` with the small-request timeout per hop,
/// following redirects for a digest from `digest`.
async fn head(
    client: &reqwest::Client,
    url: &str,
    digest: DigestSource,
) -> Result<reqwest::Response, FetchError> {
    super::send(url, digest, |hop| {
        client.head(hop).timeout(SMALL_REQUEST_TIMEOUT)
    })
    .await
}

/// The digest at the start of a `.sha256` file.
fn parse_digest_file(body: &[u8]) -> Option<banalytics_home::Sha256> {
    let text = std::str::from_utf8(body).ok()?;
    banalytics_home::Sha256::parse(text.split_whitespace().next()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn digest() -> banalytics_home::Sha256 {
        banalytics_home::Sha256::parse(DIGEST).unwrap()
    }

    #[test]
    fn digest_file_accepts_bare_digest_and_digest_with_file_name() {
        assert_eq!(parse_digest_file(DIGEST.as_bytes()), Some(digest()));
        let with_name = format!("{}  core-1.0.jar\n", DIGEST.to_uppercase());
        assert_eq!(parse_digest_file(with_name.as_bytes()), Some(digest()));
        assert_eq!(
            parse_digest_file(format!("\n\t{DIGEST}\n").as_bytes()),
            Some(digest())
        );
    }

    #[test]
    fn digest_file_refuses_non_digests() {
        assert_eq!(parse_digest_file(b""), None);
        assert_eq!(parse_digest_file(b"<html>not found</html>"), None);
        assert_eq!(parse_digest_file(&DIGEST.as_bytes()[..63]), None);
        assert_eq!(parse_digest_file(format!("{DIGEST}0").as_bytes()), None);
        assert_eq!(parse_digest_file(DIGEST.replace('f', "g").as_bytes()), None);
    }
}
