//! Binary deltas for native artifacts: a changed core or plugin library
//! moves as a patch from the installed build, not whole.
//!
//! A portal may publish, beside a native build, patches from earlier
//! builds of the same module and platform (contracts, "Patches"): the
//! main artifact's repository path with `.from-{version}-{sha256}.zstpatch`
//! appended, naming the installed file it applies to by its version and
//! SHA-256. [`offer`] names the patch for a module whose installed build
//! differs from the target's; [`fetch_and_apply`] fetches it through the
//! same engine as a file (resume, bandwidth cap, download window,
//! free-space reserve, retries) and applies it into the download cache,
//! where the result lands exactly where the downloaded file would, after
//! the same check against the target's own SHA-256 (from TUF when set).
//! Every failure is a reason for the caller, which then fetches the whole
//! file: a patch can make a synchronisation cheaper, never fail it.
//!
//! The patch format: a zstd skippable frame holding a JSON header (source
//! and target digests and sizes, the segment and margin), then one zstd
//! frame per segment of the target, each compressed with the source's
//! bytes around the segment's offset as its reference prefix (zstd's
//! `--patch-from`, one segment at a time). Cutting the target in segments
//! bounds the memory of applying it whatever the file's size, which one
//! frame over the whole source would not: its window would have to hold
//! the whole source. [`MEMORY_BOUND`] states the bound.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
};

use banalytics_home::{coords::ModuleName, Sha256};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::{
    cache::CachedFile,
    coords,
    fetch::{self, DigestSource, Expected, FetchConfig, FetchError},
    layout::Layout,
    plan::{Fetch, ResolvedModule, Target},
    record::SetRecord,
    tuf::TrustedTargets,
};

/// Largest segment of the target a patch may use: the decoder's output
/// buffer holds one segment.
pub(crate) const MAX_SEGMENT: u64 = 8 * 1024 * 1024;

/// Largest margin of source bytes on each side of a segment's offset: a
/// build whose code moved by less than this still finds it.
pub(crate) const MAX_MARGIN: u64 = 8 * 1024 * 1024;

/// The decoder's largest window, 32 MiB: a segment's reference prefix
/// ([`MAX_SEGMENT`] + 2 × [`MAX_MARGIN`]) and the segment itself.
pub(crate) const WINDOW_LOG_MAX: u32 = 25;

/// Memory that applying a patch takes at most, whatever the file's size:
/// the reference prefix (at most 24 MiB, read from the installed file for
/// each segment), the decoder's buffer (one segment, 8 MiB) and its tables
/// and the I/O buffers (under 1 MiB).
pub(crate) const MEMORY_BOUND: u64 = MAX_SEGMENT + 2 * MAX_MARGIN + MAX_SEGMENT + 1024 * 1024;

// The goal (README, "Patches"): under 64 MiB whatever the file's size.
const _: () = assert!(MEMORY_BOUND < 64 * 1024 * 1024);

/// Largest header read: a few digests and numbers.
pub(crate) const MAX_HEADER_BYTES: u32 = 4096;

/// The skippable frame's magic (zstd reserves 0x184D2A50 to 0x184D2A5F).
const HEADER_MAGIC: u32 = 0x184D_2A5B;

/// The format's version in the header.
const FORMAT: u32 = 1;

/// The repository path suffix of the patch from the build `from_version`
/// whose SHA-256 is `from_sha256` to the main artifact whose suffix is
/// `main_suffix`: `{main_suffix}.from-{from_version}-{from_sha256}.zstpatch`.
pub(crate) fn patch_suffix(main_suffix: &str, from_version: &str, from_sha256: &Sha256) -> String {
    format!("{main_suffix}.from-{from_version}-{from_sha256}.zstpatch")
}

/// An installed main artifact a patch can start from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Its module's version.
    pub version: String,
    /// Its recorded SHA-256.
    pub sha256: Sha256,
    /// Its recorded size.
    pub size: u64,
    /// The file in the active set.
    pub path: PathBuf,
}

/// Where the patch for a module is, as far as resolving knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PatchAt {
    /// A target of the verified TUF metadata: its length and SHA-256.
    Trusted(Target),
    /// The repository is TUF-signed and lists no such target: it is never
    /// fetched.
    NotATarget {
        /// The target name looked for.
        path: String,
    },
    /// No TUF: its `.sha256` and size are asked at download time.
    Repository {
        /// The patch's URL.
        url: String,
    },
}

/// A patch that could replace the download of a module's main artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offer {
    /// The installed build it starts from.
    pub source: Source,
    /// Where it is.
    pub at: PatchAt,
}

pub(crate) use banalytics_messages::status::DeltaReport;

/// The main artifacts of the active set by module, whatever its version
/// ([`ModuleName`]), from its hash record; empty without one.
pub(crate) fn installed_sources(layout: &Layout) -> HashMap<ModuleName, Source> {
    let dir = layout.modules();
    let Ok(Some(record)) = SetRecord::load(&dir) else {
        return HashMap::new();
    };
    record
        .modules
        .into_iter()
        .map(|(coords, m)| {
            let source = Source {
                version: coords.version().to_owned(),
                sha256: m.main.sha256,
                size: m.main.size,
                path: dir.join(&m.main.name),
            };
            (coords.module_name(), source)
        })
        .collect()
}

/// The patch to ask for `resolved`'s main artifact on `platform`: only for
/// a native module whose target digest is known and whose installed build
/// (in `sources`) is another. With `trusted` metadata the patch must be
/// one of its targets.
pub(crate) fn offer(
    resolved: &ResolvedModule,
    platform: &str,
    sources: &HashMap<ModuleName, Source>,
    repository_url: &str,
    trusted: Option<&TrustedTargets>,
) -> Option<Offer> {
    let module = &resolved.module;
    let target_sha = resolved.main.expected.sha256?;
    if !module.is_native() {
        return None;
    }
    let source = sources.get(&module.coords.module_name())?;
    if source.sha256 == target_sha {
        return None;
    }
    let suffix = patch_suffix(
        &module.main_suffix(platform),
        &source.version,
        &source.sha256,
    );
    let path = coords::maven_path(&module.coords, &suffix);
    let at = match trusted {
        Some(trusted) => match trusted.get(&path) {
            Some(t) => PatchAt::Trusted(Target {
                url: format!("{repository_url}/{}", t.path),
                expected: Expected {
                    sha256: Some(t.sha256),
                    size: Some(t.length),
                    digest_source: DigestSource::Tuf,
                },
            }),
            None => PatchAt::NotATarget { path },
        },
        None => PatchAt::Repository {
            url: format!("{repository_url}/{path}"),
        },
    };
    Some(Offer {
        source: source.clone(),
        at,
    })
}

/// `resolved` with the patch each module's main artifact could come from
/// ([`offer`]), against the active set's builds.
pub(crate) async fn with_offers(
    layout: &Layout,
    repository_url: &str,
    platform: &str,
    trusted: Option<&TrustedTargets>,
    mut resolved: Vec<ResolvedModule>,
) -> Vec<ResolvedModule> {
    if !resolved.iter().any(|r| r.module.is_native()) {
        return resolved;
    }
    let layout = layout.clone();
    let sources = crate::blocking::off_thread(move || installed_sources(&layout)).await;
    for r in &mut resolved {
        r.patch = offer(r, platform, &sources, repository_url, trusted);
    }
    resolved
}

/// What a patch made: the file in the cache, and the patch's bytes.
pub(crate) struct Patched {
    /// The verified file, now at the cache name.
    pub cached: CachedFile,
    /// Bytes that came over the network for the patch.
    pub transferred: u64,
    /// The patch's size.
    pub patch_bytes: u64,
    /// How long applying it took.
    pub apply: std::time::Duration,
}

/// Fetches `offer`'s patch into `cache` and applies it to make `f`'s file
/// at its cache name, verified against `f`'s SHA-256 and size. `Err` is
/// the reason to fetch the whole file instead; nothing of the attempt is
/// left but a patch partial a retry resumes.
pub(crate) async fn fetch_and_apply(
    client: &reqwest::Client,
    config: &FetchConfig,
    cache: &Path,
    f: &Fetch,
    offer: &Offer,
    progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
) -> Result<Patched, NoPatch> {
    let want = Wanted {
        sha256: f.target.expected.sha256.ok_or(NoPatch::NoDigest)?,
        size: f.target.expected.size,
    };
    let patch = locate(client, offer).await?;
    if let (Some(p), Some(s)) = (patch.expected.size, want.size) {
        if p >= s {
            return Err(NoPatch::NotSmaller { patch: p, file: s });
        }
    }
    let need = patch.expected.size.unwrap_or(0) + want.size.unwrap_or(0);
    match config.space.room_for(cache, need) {
        Ok(Ok(())) => {}
        Ok(Err(free)) => {
            return Err(NoPatch::NoRoom {
                need,
                reserve: config.space.min_free,
                free,
            })
        }
        Err(source) => {
            return Err(NoPatch::Io {
                what: format!("free space of {}", cache.display()),
                source,
            })
        }
    }
    let partial = cache.join(format!("{}.zstpatch.partial", f.cache_name));
    let got = fetch::download(
        client,
        &patch.url,
        &partial,
        &patch.expected,
        config,
        progress,
    )
    .await
    .map_err(NoPatch::Fetch)?;
    let out = cache.join(format!("{}.patched", f.cache_name));
    let (source, patch_file, made) = (offer.source.clone(), partial.clone(), out.clone());
    let started = std::time::Instant::now();
    let applied =
        crate::blocking::off_thread(move || apply(&source, &patch_file, &made, &want)).await;
    let apply = started.elapsed();
    let _ = std::fs::remove_file(&partial);
    let _ = std::fs::remove_file(fetch::meta_path(&partial));
    let cached = match applied {
        Ok(cached) => cached,
        Err(e) => {
            let _ = std::fs::remove_file(&out);
            return Err(NoPatch::Apply(e));
        }
    };
    let dest = cache.join(&f.cache_name);
    std::fs::rename(&out, &dest).map_err(|source| NoPatch::Io {
        what: format!("rename to {}", dest.display()),
        source,
    })?;
    crate::layout::sync_dir(cache).map_err(|source| NoPatch::Io {
        what: format!("fsync {}", cache.display()),
        source,
    })?;
    Ok(Patched {
        cached,
        transferred: got.bytes_transferred,
        patch_bytes: got.size,
        apply,
    })
}

/// The patch's URL and what it must be: from TUF, or asked of the
/// repository (`.sha256`, `HEAD`).
async fn locate(client: &reqwest::Client, offer: &Offer) -> Result<Target, NoPatch> {
    match &offer.at {
        PatchAt::Trusted(t) => Ok(t.clone()),
        PatchAt::NotATarget { path } => Err(NoPatch::NotATarget {
            from: offer.source.version.clone(),
            path: path.clone(),
        }),
        PatchAt::Repository { url } => {
            let sha = fetch::fetch_sha256_file(client, url)
                .await
                .map_err(NoPatch::Lookup)?
                .ok_or_else(|| NoPatch::NotPublished {
                    from: offer.source.version.clone(),
                    url: url.clone(),
                })?;
            let size = fetch::content_length(client, url, DigestSource::Repository)
                .await
                .map_err(NoPatch::Lookup)?;
            Ok(Target {
                url: url.clone(),
                expected: Expected {
                    sha256: Some(sha),
                    size,
                    digest_source: DigestSource::Repository,
                },
            })
        }
    }
}

/// Reads `buf.len()` bytes of `file` at `offset`, without moving its
/// cursor (the platform's positioned read).
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match file.seek_read(&mut buf[done..], offset + done as u64)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => done += n,
            }
        }
        Ok(())
    }
}

/// What the result must be.
#[derive(Debug, Clone)]
struct Wanted {
    sha256: Sha256,
    size: Option<u64>,
}

/// The header, the first (skippable) frame of a patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    format: u32,
    from_sha256: Sha256,
    from_size: u64,
    sha256: Sha256,
    size: u64,
    segment: u64,
    margin: u64,
}

/// Why no patch made the file ([`fetch_and_apply`]): the reason the whole
/// file is fetched instead, as the delta report gives it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoPatch {
    /// The target file's digest is not known, so a result cannot be
    /// verified.
    #[error("the file's SHA-256 is not known")]
    NoDigest,
    /// The repository's TUF metadata does not list the patch.
    #[error("no patch from {from}: {path} is not a target of the repository's TUF metadata")]
    NotATarget {
        /// The installed version the patch would start from.
        from: String,
        /// The patch's target path.
        path: String,
    },
    /// The repository has no patch from the installed version.
    #[error("no patch from {from} published ({url})")]
    NotPublished {
        /// The installed version.
        from: String,
        /// Where the patch's digest was looked for.
        url: String,
    },
    /// Asking the repository for the patch failed.
    #[error("looking for a patch: {0}")]
    Lookup(FetchError),
    /// The patch would save nothing.
    #[error("the patch ({patch} bytes) is not smaller than the file ({file} bytes)")]
    NotSmaller {
        /// The patch's size.
        patch: u64,
        /// The file's size.
        file: u64,
    },
    /// The disk cannot take the patch and its result.
    #[error("no room for the patch and the file it makes: {need} bytes and the reserve of {reserve} bytes, {free} bytes free")]
    NoRoom {
        /// The bytes needed.
        need: u64,
        /// The free space kept (`min_free_space`).
        reserve: u64,
        /// The bytes free.
        free: u64,
    },
    /// The patch's download failed.
    #[error("the patch could not be fetched: {0}")]
    Fetch(FetchError),
    /// The patch did not make the file.
    #[error("the patch did not apply: {0}")]
    Apply(ApplyError),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, and on what.
        what: String,
        /// The cause.
        source: io::Error,
    },
}

/// Why a patch did not make the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    /// Reading or writing failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The patch is not in the format, or asks for more than the bounds.
    #[error("bad patch: {0}")]
    Format(String),
    /// The installed file is not the one the patch starts from.
    #[error("the installed file {path} has SHA-256 {actual}, the patch starts from {expected}")]
    NotTheSource {
        /// The installed file.
        path: PathBuf,
        /// The patch's source digest.
        expected: Sha256,
        /// The file's digest.
        actual: Sha256,
    },
    /// The result is not the target.
    #[error("the result has SHA-256 {actual} and {size} bytes, the file must have {expected}")]
    Mismatch {
        /// The target's digest.
        expected: Sha256,
        /// The result's digest.
        actual: Sha256,
        /// The result's size.
        size: u64,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ApplyError {
    let what = what.into();
    move |source| ApplyError::Io { what, source }
}

/// Reads the header frame.
fn read_header(input: &mut impl Read) -> Result<Header, ApplyError> {
    let mut head = [0u8; 8];
    input
        .read_exact(&mut head)
        .map_err(io_err("reading the patch header"))?;
    let magic = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if magic != HEADER_MAGIC {
        return Err(ApplyError::Format(format!(
            "no header frame (magic {magic:#x})"
        )));
    }
    if len > MAX_HEADER_BYTES {
        return Err(ApplyError::Format(format!(
            "a header of {len} bytes (at most {MAX_HEADER_BYTES})"
        )));
    }
    let mut body = vec![0u8; len as usize];
    input
        .read_exact(&mut body)
        .map_err(io_err("reading the patch header"))?;
    let header: Header =
        serde_json::from_slice(&body).map_err(|e| ApplyError::Format(e.to_string()))?;
    if header.format != FORMAT {
        return Err(ApplyError::Format(format!(
            "format {} (this box reads {FORMAT})",
            header.format
        )));
    }
    if header.segment == 0 || header.segment > MAX_SEGMENT || header.margin > MAX_MARGIN {
        return Err(ApplyError::Format(format!(
            "segments of {} bytes with margins of {} bytes exceed the memory bound (at most {MAX_SEGMENT} and {MAX_MARGIN})",
            header.segment, header.margin
        )));
    }
    Ok(header)
}

/// The source bytes a segment at `start` of `len` bytes is compressed
/// against: `margin` bytes on each side of the same offset, within the
/// source. The portal cuts them the same way.
fn prefix_range(start: u64, len: u64, margin: u64, source_len: u64) -> (u64, u64) {
    let from = start.saturating_sub(margin).min(source_len);
    let to = (start + len + margin).min(source_len);
    (from, to)
}

/// A writer that hashes what it writes and counts it.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Applies the patch file `patch` to the installed file `source` into
/// `out` (created, fsynced), in at most [`MEMORY_BOUND`] of memory, and
/// checks the result against `want` exactly as a downloaded file is
/// checked: SHA-256 and size.
fn apply(
    source: &Source,
    patch: &Path,
    out: &Path,
    want: &Wanted,
) -> Result<CachedFile, ApplyError> {
    let mut input =
        BufReader::new(File::open(patch).map_err(io_err(format!("opening {}", patch.display())))?);
    let header = read_header(&mut input)?;
    if header.sha256 != want.sha256 || want.size.is_some_and(|s| s != header.size) {
        return Err(ApplyError::Format(format!(
            "it makes {} ({} bytes), not the file wanted ({})",
            header.sha256, header.size, want.sha256
        )));
    }
    let src = File::open(&source.path).map_err(io_err(format!(
        "opening the installed file {}",
        source.path.display()
    )))?;
    let actual = Sha256::of_reader(&mut &src)
        .map_err(io_err(format!("reading {}", source.path.display())))?;
    if actual != header.from_sha256 {
        return Err(ApplyError::NotTheSource {
            path: source.path.clone(),
            expected: header.from_sha256,
            actual,
        });
    }
    let source_len = src
        .metadata()
        .map_err(io_err(format!("reading {}", source.path.display())))?
        .len();
    let file = File::create(out).map_err(io_err(format!("creating {}", out.display())))?;
    let mut writer = Hashing {
        inner: io::BufWriter::new(file),
        hasher: sha2::Sha256::new(),
        written: 0,
    };
    let mut prefix = Vec::new();
    let mut start = 0;
    while start < header.size {
        let len = header.segment.min(header.size - start);
        let (from, to) = prefix_range(start, len, header.margin, source_len);
        prefix.resize((to - from) as usize, 0);
        read_exact_at(&src, &mut prefix, from)
            .map_err(io_err(format!("reading {}", source.path.display())))?;
        let made = segment(&mut input, &prefix, len, &mut writer)
            .map_err(io_err(format!("segment at {start}")))?;
        if made != len {
            return Err(ApplyError::Format(format!(
                "the segment at {start} made {made} bytes, not {len}"
            )));
        }
        start += len;
    }
    let rest = input.fill_buf().map_err(io_err("reading the patch"))?;
    if !rest.is_empty() {
        return Err(ApplyError::Format("bytes after the last segment".into()));
    }
    writer
        .flush()
        .map_err(io_err(format!("writing {}", out.display())))?;
    let Hashing {
        inner,
        hasher,
        written,
    } = writer;
    let file = inner.into_inner().map_err(|e| ApplyError::Io {
        what: format!("writing {}", out.display()),
        source: e.into_error(),
    })?;
    file.sync_all()
        .map_err(io_err(format!("fsync {}", out.display())))?;
    let sha256 = Sha256::from_hasher(hasher);
    if sha256 != want.sha256 || want.size.is_some_and(|s| s != written) {
        return Err(ApplyError::Mismatch {
            expected: want.sha256,
            actual: sha256,
            size: written,
        });
    }
    Ok(CachedFile {
        sha256,
        size: written,
    })
}

/// Decodes one segment's frame against `prefix`, writing at most `len` + 1
/// bytes (one more shows a frame that makes too much); the bytes written.
fn segment(
    input: &mut BufReader<File>,
    prefix: &[u8],
    len: u64,
    out: &mut impl Write,
) -> io::Result<u64> {
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(input, prefix)?.single_frame();
    decoder.window_log_max(WINDOW_LOG_MAX)?;
    io::copy(&mut decoder.take(len + 1), out)
}

/// The upgrade center's hostile loopback repository, for the tests of
/// [`fetch_and_apply`].
/// (Shared with the integration tests, whose items it makes `pub`.)
#[cfg(test)]
#[path = "../tests/repo/mod.rs"]
#[allow(unreachable_pub)]
mod repo;

#[cfg(test)]
mod tests {
    use super::*;

    /// The portal's side, for the tests: a patch of `target` from `source`.
    pub(crate) fn make(source: &[u8], target: &[u8], segment: u64, margin: u64) -> Vec<u8> {
        let header = Header {
            format: FORMAT,
            from_sha256: Sha256::of(source),
            from_size: source.len() as u64,
            sha256: Sha256::of(target),
            size: target.len() as u64,
            segment,
            margin,
        };
        let json = serde_json::to_vec(&header).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        for (i, chunk) in target.chunks(segment as usize).enumerate() {
            let start = i as u64 * segment;
            let (from, to) = prefix_range(start, chunk.len() as u64, margin, source.len() as u64);
            let prefix = &source[from as usize..to as usize];
            let mut enc =
                zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), 3, prefix).unwrap();
            enc.include_checksum(true).unwrap();
            enc.set_pledged_src_size(Some(chunk.len() as u64)).unwrap();
            let window = (prefix.len() + chunk.len())
                .next_power_of_two()
                .trailing_zeros();
            enc.window_log(window.clamp(10, WINDOW_LOG_MAX)).unwrap();
            enc.long_distance_matching(true).unwrap();
            enc.write_all(chunk).unwrap();
            out.extend_from_slice(&enc.finish().unwrap());
        }
        out
    }

    /// Pseudo-random bytes, as a build's are to a compressor.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    struct Case {
        dir: tempfile::TempDir,
        source: Source,
        target: Vec<u8>,
    }

    fn case(source: &[u8], target: Vec<u8>) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banalytics-box");
        std::fs::write(&path, source).unwrap();
        let source = Source {
            version: "1.0".into(),
            sha256: Sha256::of(source),
            size: source.len() as u64,
            path,
        };
        Case {
            dir,
            source,
            target,
        }
    }

    impl Case {
        fn apply(&self, patch: &[u8]) -> Result<CachedFile, ApplyError> {
            let file = self.dir.path().join("p.zstpatch");
            std::fs::write(&file, patch).unwrap();
            let want = Wanted {
                sha256: Sha256::of(&self.target),
                size: Some(self.target.len() as u64),
            };
            apply(&self.source, &file, &self.dir.path().join("out"), &want)
        }

        fn made(&self) -> Vec<u8> {
            std::fs::read(self.dir.path().join("out")).unwrap()
        }
    }

    /// A source of three segments and a target with a few bytes changed,
    /// some inserted (every later offset moves) and a tail appended.
    fn small_change() -> (Vec<u8>, Vec<u8>) {
        let source = noise(5 * 1024 * 1024 / 2, 7);
        let mut target = source.clone();
        target[100_000..100_016].copy_from_slice(b"another version!");
        target.splice(1_000_000..1_000_000, noise(3000, 9));
        target.extend_from_slice(b"\nbanalytics core 2.0\n");
        (source, target)
    }

    #[test]
    fn a_patch_makes_the_targets_exact_bytes_and_is_a_fraction_of_the_file() {
        let (source, target) = small_change();
        let patch = make(&source, &target, 1024 * 1024, 1024 * 1024);
        let case = case(&source, target.clone());
        let cached = case.apply(&patch).unwrap();
        assert_eq!(case.made(), target);
        assert_eq!(cached.size, target.len() as u64);
        assert_eq!(cached.sha256, Sha256::of(&target));
        assert!(
            (patch.len() as u64) * 100 < target.len() as u64,
            "a patch of {} bytes for {} bytes with a few changes",
            patch.len(),
            target.len()
        );
    }

    #[test]
    fn a_corrupted_patch_does_not_apply() {
        let (source, target) = small_change();
        let mut patch = make(&source, &target, 1024 * 1024, 1024 * 1024);
        let n = patch.len();
        patch[n / 2] ^= 0x55;
        let case = case(&source, target);
        let err = case.apply(&patch).unwrap_err();
        assert!(
            matches!(err, ApplyError::Io { .. } | ApplyError::Mismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_patch_from_another_build_is_refused_before_it_is_decoded() {
        let (source, target) = small_change();
        let other = noise(source.len(), 11);
        let patch = make(&other, &target, 1024 * 1024, 1024 * 1024);
        let case = case(&source, target);
        let err = case.apply(&patch).unwrap_err();
        assert!(
            matches!(&err, ApplyError::NotTheSource { expected, actual, .. }
                if *expected == Sha256::of(&other) && *actual == case.source.sha256),
            "{err}"
        );
    }

    #[test]
    fn a_patch_for_another_target_or_beyond_the_memory_bound_is_refused() {
        let (source, target) = small_change();
        let case = case(&source, target.clone());
        let mut other = target.clone();
        other[0] ^= 1;
        let err = case
            .apply(&make(&source, &other, 1024 * 1024, 0))
            .unwrap_err();
        assert!(
            matches!(err, ApplyError::Format(ref m) if m.contains("not the file wanted")),
            "{err}"
        );
        let err = case
            .apply(&make(&source, &target, 2 * MAX_SEGMENT, 0))
            .unwrap_err();
        assert!(
            matches!(err, ApplyError::Format(ref m) if m.contains("memory bound")),
            "{err}"
        );
    }

    #[test]
    fn the_patch_name_says_the_version_and_digest_it_applies_to() {
        let sha: Sha256 = "AB".repeat(32).parse().unwrap();
        assert_eq!(
            patch_suffix("-x86_64-unknown-linux-gnu.bin", "1.0", &sha),
            format!(
                "-x86_64-unknown-linux-gnu.bin.from-1.0-{}.zstpatch",
                "ab".repeat(32)
            )
        );
    }

    /// A repository serving core 2.0's build and (when `patch`) its patch
    /// from the installed 1.0, as the portal names them.
    struct Served {
        repo: super::repo::Repo,
        case: Case,
        patch: Vec<u8>,
        patch_path: String,
        full_path: String,
        offer: Offer,
        fetch: Fetch,
    }

    async fn served(with_patch: bool) -> Served {
        let (source, target) = small_change();
        let patch = make(&source, &target, 1024 * 1024, 1024 * 1024);
        let case = case(&source, target.clone());
        let repo = super::repo::Repo::start().await;
        let full_path =
            "com/banalytics/box/core/2.0/core-2.0-x86_64-unknown-linux-gnu.bin".to_owned();
        let patch_path = format!(
            "com/banalytics/box/core/2.0/core-2.0-x86_64-unknown-linux-gnu{}",
            patch_suffix(".bin", "1.0", &case.source.sha256)
        );
        repo.put(&full_path, target.clone(), true);
        if with_patch {
            repo.put(&patch_path, patch.clone(), true);
        }
        let offer = Offer {
            source: case.source.clone(),
            at: PatchAt::Repository {
                url: repo.url_of(&patch_path),
            },
        };
        let fetch = Fetch {
            target: Target {
                url: repo.url_of(&full_path),
                expected: Expected {
                    sha256: Some(Sha256::of(&target)),
                    size: Some(target.len() as u64),
                    digest_source: DigestSource::Portal,
                },
            },
            cache_name: "banalytics-box".into(),
        };
        Served {
            repo,
            case,
            patch,
            patch_path,
            full_path,
            offer,
            fetch,
        }
    }

    fn config() -> FetchConfig {
        FetchConfig {
            connect_timeout: std::time::Duration::from_secs(2),
            read_timeout: std::time::Duration::from_secs(2),
            min_throughput_bytes_per_s: 0,
            max_attempts: 3,
            base_backoff: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_millis(40),
            ..FetchConfig::default()
        }
    }

    impl Served {
        fn cache(&self) -> PathBuf {
            let cache = self.case.dir.path().join("modules-download");
            std::fs::create_dir_all(&cache).unwrap();
            cache
        }

        async fn run(&self, config: &FetchConfig) -> Result<Patched, NoPatch> {
            let client = fetch::client(config).unwrap();
            fetch_and_apply(
                &client,
                config,
                &self.cache(),
                &self.fetch,
                &self.offer,
                &|_, _| {},
            )
            .await
        }
    }

    #[tokio::test]
    async fn a_patch_cut_mid_body_is_resumed_and_makes_the_file_where_the_download_would_land() {
        let s = served(true).await;
        let cut = s.patch.len() / 2;
        s.repo.set(&s.patch_path, |b| {
            // The size's `HEAD` is the first answer counted, the first
            // `GET` the second.
            b.truncate_next = 2;
            b.truncate_at = cut;
        });
        let done = s.run(&config()).await.unwrap();
        assert_eq!(done.patch_bytes, s.patch.len() as u64);
        assert_eq!(
            std::fs::read(s.cache().join("banalytics-box")).unwrap(),
            s.case.target
        );
        let gets: Vec<_> = s
            .repo
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path == s.patch_path)
            .collect();
        assert_eq!(gets.len(), 2, "{gets:?}");
        assert_eq!(
            gets[1].range.as_deref(),
            Some(format!("bytes={cut}-").as_str())
        );
        assert_eq!(
            s.repo.bytes_for(&s.patch_path),
            s.patch.len() as u64,
            "no byte twice"
        );
        assert_eq!(
            s.repo.bytes_for(&s.full_path),
            0,
            "the full file was not fetched"
        );
        let left: Vec<_> = std::fs::read_dir(s.cache())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["banalytics-box"], "nothing of the patch is left");
    }

    #[tokio::test]
    async fn no_room_for_the_patch_and_its_result_is_a_reason_before_a_byte_of_it_moves() {
        let s = served(true).await;
        let probe: fetch::space::SpaceProbe = std::sync::Arc::new(|_: &Path| Ok(100 * 1024 * 1024));
        let config = FetchConfig {
            space: fetch::space::Space::new(99 * 1024 * 1024, probe),
            ..config()
        };
        let reason = s.run(&config).await.err().unwrap().to_string();
        assert!(reason.contains("no room for the patch"), "{reason}");
        assert_eq!(s.repo.bytes_for(&s.patch_path), 0);
    }

    #[tokio::test]
    async fn a_repository_without_the_patch_is_a_reason_after_one_request() {
        let s = served(false).await;
        let reason = s.run(&config()).await.err().unwrap().to_string();
        assert!(reason.contains("no patch from 1.0 published"), "{reason}");
        let asked: Vec<_> = s.repo.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(asked, [format!("{}.sha256", s.patch_path)]);
    }
}
