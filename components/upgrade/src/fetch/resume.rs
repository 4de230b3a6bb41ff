//! Step 1 of an attempt: decide what of the partial can be kept.
//!
//! A partial is resumed only with the validator (strong ETag, else
//! Last-Modified) of the response that started it, kept in the meta file
//! beside it ([`meta_path`]), so that `If-Range` makes the server send the
//! whole file again if it changed. A partial that already holds the
//! declared size is only verified.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use reqwest::header::{HeaderMap, ETAG, LAST_MODIFIED};
use sha2::{Digest, Sha256};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::{info, warn};

use super::attempt::{Attempt, Kept};
use super::request::header_str;
use super::{Downloaded, FetchError, MAX_META_BYTES};

/// Buffer used to hash the prefix of a partial file before resuming.
const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// First line of a `{partial}.meta` file, before its format number
/// ([`banalytics_home::format::PARTIAL_META`]).
const META_MAGIC: &str = "banalytics-partial-meta ";

/// First line of a `{partial}.meta` file this core writes.
const META_HEADER: &str = "banalytics-partial-meta 1";

/// Last line of a `{partial}.meta` file: its absence means a torn write.
const META_END: &str = "end";

/// What step 1 decided.
pub(super) enum Partial {
    /// The partial already held the declared size and matched: done.
    Complete(Downloaded),
    /// Ask for the bytes after `kept`, with `validator` when some are kept.
    Resume {
        /// The bytes kept and their hash.
        kept: Kept,
        /// The `If-Range` validator; `None` when nothing is kept.
        validator: Option<String>,
    },
}

impl Attempt<'_> {
    /// Step 1: keeps the partial's bytes only when they can be extended
    /// (not past the declared size, with a usable validator), and verifies
    /// a partial that already holds the declared size.
    pub(super) async fn keep_partial(&self, file: &mut File) -> Result<Partial, FetchError> {
        let url = self.url;
        if let Some(newer) = newer_meta(&meta_path(self.partial)).await {
            warn!(path = %newer.path.display(), format = newer.format, known = newer.known, "partial download of a newer format left as it is; not downloaded");
            return Err(FetchError::NewerFormat(newer));
        }
        let mut offset = file
            .metadata()
            .await
            .map_err(self.io("stat", self.partial))?
            .len();
        if let Some(size) = self.expected.size {
            if offset > size {
                warn!(
                    url,
                    offset, size, "partial larger than the declared size, starting over"
                );
                self.restart(file).await?;
                offset = 0;
            } else if offset == size {
                let actual = banalytics_home::Sha256::from_hasher(
                    hash_prefix(file, size, self.partial).await?,
                );
                if self.matches_expected(actual) {
                    info!(url, size, "partial already complete, verified");
                    self.finish(file).await?;
                    return Ok(Partial::Complete(self.done(actual, size, size)));
                }
                warn!(url, size, %actual, "complete partial does not match, starting over");
                self.restart(file).await?;
                offset = 0;
            }
        }
        let validator = if offset > 0 {
            read_meta(&meta_path(self.partial), url).await
        } else {
            None
        };
        if offset > 0 && validator.is_none() {
            info!(
                url,
                offset, "partial without a usable validator, starting over"
            );
            self.restart(file).await?;
            offset = 0;
        }
        let hasher = hash_prefix(file, offset, self.partial).await?;
        Ok(Partial::Resume {
            kept: Kept { offset, hasher },
            validator,
        })
    }
}

/// The file beside `partial` that keeps the URL and validator (ETag or
/// Last-Modified) of the response that started it, so that a later process
/// can resume with `If-Range`. [`download`](super::download) removes it on
/// success.
pub fn meta_path(partial: &Path) -> PathBuf {
    let mut name = partial.as_os_str().to_owned();
    name.push(".meta");
    PathBuf::from(name)
}

pub(super) async fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Hashes the first `len` bytes of `file` and leaves it positioned at `len`.
async fn hash_prefix(file: &mut File, len: u64, path: &Path) -> Result<Sha256, FetchError> {
    let io = |op| {
        move |source| FetchError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let mut hasher = Sha256::new();
    file.seek(SeekFrom::Start(0)).await.map_err(io("seek"))?;
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let mut left = len;
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = file.read(&mut buffer[..want]).await.map_err(io("read"))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        left -= read as u64;
    }
    file.seek(SeekFrom::Start(len)).await.map_err(io("seek"))?;
    Ok(hasher)
}

/// The `If-Range` validator of a response: a strong ETag, else Last-Modified.
fn validator(headers: &HeaderMap) -> Option<String> {
    header_str(headers, ETAG)
        .filter(|etag| !etag.starts_with("W/") && !etag.is_empty())
        .or_else(|| header_str(headers, LAST_MODIFIED).filter(|lm| !lm.is_empty()))
}

/// Writes the meta file for a response that starts a partial, or removes it
/// when the response has no validator (such a partial cannot be resumed).
pub(super) async fn write_meta(path: &Path, url: &str, headers: &HeaderMap) -> std::io::Result<()> {
    match validator(headers) {
        Some(validator) if !url.contains('\n') && !validator.contains('\n') => {
            let text = format!("{META_HEADER}\nurl={url}\nvalidator={validator}\n{META_END}\n");
            tokio::fs::write(path, text).await
        }
        _ => remove_if_exists(path).await,
    }
}

/// The validator kept for `url`, if the meta file is ours, whole, and for
/// this URL.
async fn read_meta(path: &Path, url: &str) -> Option<String> {
    let file = File::open(path).await.ok()?;
    let mut text = String::new();
    file.take(MAX_META_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .await
        .ok()?;
    if text.len() > MAX_META_BYTES {
        return None;
    }
    parse_meta(&text, url)
}

/// `Some` when the meta file `path` is of a format above the one this core
/// writes: its header names a higher number (or none that is a number).
async fn newer_meta(path: &Path) -> Option<banalytics_home::format::NewerFormat> {
    let mut head = String::new();
    File::open(path)
        .await
        .ok()?
        .take(64)
        .read_to_string(&mut head)
        .await
        .ok()?;
    let number = head.lines().next()?.strip_prefix(META_MAGIC)?;
    let known = banalytics_home::format::PARTIAL_META;
    let format = number.trim().parse().unwrap_or(u32::MAX);
    (format > known).then(|| banalytics_home::format::NewerFormat {
        path: path.to_owned(),
        format,
        known,
    })
}

fn parse_meta(text: &str, url: &str) -> Option<String> {
    let mut lines = text.lines();
    if lines.next()? != META_HEADER {
        return None;
    }
    let kept_url = lines.next()?.strip_prefix("url=")?;
    let validator = lines.next()?.strip_prefix("validator=")?;
    if lines.next()? != META_END || kept_url != url || validator.is_empty() {
        return None;
    }
    Some(validator.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_used_only_whole_and_for_the_same_url() {
        let text = format!("{META_HEADER}\nurl=http://r/a.jar\nvalidator=\"v1\"\n{META_END}\n");
        assert_eq!(
            parse_meta(&text, "http://r/a.jar").as_deref(),
            Some("\"v1\"")
        );
        assert_eq!(parse_meta(&text, "http://r/b.jar"), None);
        let torn = format!("{META_HEADER}\nurl=http://r/a.jar\nvalidator=\"v1\"\n");
        assert_eq!(parse_meta(&torn, "http://r/a.jar"), None);
        assert_eq!(parse_meta("garbage", "http://r/a.jar"), None);
    }

    #[test]
    fn validator_prefers_strong_etag_then_last_modified() {
        let mut headers = HeaderMap::new();
        assert_eq!(validator(&headers), None);
        headers.insert(
            LAST_MODIFIED,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            validator(&headers).as_deref(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT")
        );
        headers.insert(ETAG, "W/\"weak\"".parse().unwrap());
        assert_eq!(
            validator(&headers).as_deref(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT")
        );
        headers.insert(ETAG, "\"strong\"".parse().unwrap());
        assert_eq!(validator(&headers).as_deref(), Some("\"strong\""));
    }

    #[test]
    fn meta_path_appends_to_the_partial_name() {
        assert_eq!(
            meta_path(Path::new("/d/x.jar.partial")),
            PathBuf::from("/d/x.jar.partial.meta")
        );
    }
}
