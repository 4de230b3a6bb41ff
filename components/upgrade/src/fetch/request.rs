//! Steps 2 and 3 of an attempt: ask for the rest of the file (`Range` and
//! `If-Range` when bytes are kept, sent again on every redirect hop), and
//! check the answer against what was asked before a byte of the body is
//! written.

use reqwest::header::{HeaderMap, HeaderName, CONTENT_RANGE, IF_RANGE, RANGE};
use reqwest::{Response, StatusCode};
use tokio::fs::File;
use tracing::{debug, info, warn};

use super::attempt::{Attempt, Kept};
use super::resume::{meta_path, write_meta};
use super::FetchError;

impl Attempt<'_> {
    /// Step 2: asks for the bytes from `offset`, resuming with `validator`
    /// when there is one, following redirects by the rule of
    /// [`redirect`](super::redirect()) for the expected digest's source (the
    /// server at the end of the chain answers, and its validator is the one
    /// kept); waits at most the connect and read timeouts for the response
    /// headers.
    pub(super) async fn request(
        &self,
        offset: u64,
        validator: Option<&str>,
    ) -> Result<Response, FetchError> {
        let url = self.url;
        let build = |hop: &str| {
            let request = self.client.get(hop);
            match validator {
                Some(validator) => request
                    .header(RANGE, format!("bytes={offset}-"))
                    .header(IF_RANGE, validator),
                None => request,
            }
        };
        let wait = self.cfg.connect_timeout + self.cfg.read_timeout;
        let chain = super::send(url, self.expected.digest_source, build);
        let response =
            tokio::time::timeout(wait, chain)
                .await
                .map_err(|_| FetchError::NoResponse {
                    url: url.to_owned(),
                    timeout: wait,
                })??;
        debug!(url, status = response.status().as_u16(), offset, "response");
        Ok(response)
    }

    /// Step 3: a `206` must start where the kept bytes end; a `200` starts
    /// over (nothing kept) and records its validator for a later resume;
    /// anything else is an error. Returns the file size the server
    /// announced, if any.
    pub(super) async fn check_answer(
        &self,
        response: &Response,
        file: &mut File,
        kept: &mut Kept,
    ) -> Result<Option<u64>, FetchError> {
        let url = self.url;
        let offset = kept.offset;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let header = header_str(response.headers(), CONTENT_RANGE).unwrap_or_default();
                match parse_content_range(&header) {
                    Some((start, total)) if start == offset => Ok(total),
                    _ => {
                        warn!(url, offset, content_range = %header, "content-range does not match the request");
                        Err(FetchError::BadContentRange {
                            url: url.to_owned(),
                            requested_start: offset,
                            content_range: header,
                        })
                    }
                }
            }
            StatusCode::OK => {
                if offset > 0 {
                    info!(url, offset, "server sent the whole file, starting over");
                    self.restart(file).await?;
                    *kept = Kept::nothing();
                }
                write_meta(&meta_path(self.partial), url, response.headers())
                    .await
                    .map_err(self.io("write", &meta_path(self.partial)))?;
                Ok(response.content_length())
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                Err(FetchError::RangeNotSatisfiable {
                    url: url.to_owned(),
                    start: offset,
                })
            }
            other => Err(if other == StatusCode::NOT_FOUND {
                FetchError::NotFound {
                    url: url.to_owned(),
                }
            } else {
                FetchError::HttpStatus {
                    url: url.to_owned(),
                    status: other.as_u16(),
                }
            }),
        }
    }
}

pub(super) fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`): `(START, TOTAL)`.
fn parse_content_range(header: &str) -> Option<(u64, Option<u64>)> {
    let rest = header.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok().filter(|&t| t > end)?),
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_start_and_total() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("bytes 0-9/5"), None);
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 0-9/10"), None);
        assert_eq!(parse_content_range(""), None);
    }
}
