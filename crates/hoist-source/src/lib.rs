//! Where modules come from: local files, `file://`, gzip, `http(s)://` and `oci://`.
//!
//! [`fetch`] reads a module from a location exactly as Yoke understands it, decompresses it
//! when the name ends in `.gz` (or an HTTP server says `Content-Encoding: gzip`) with a cap on
//! the decompressed size, and checks its SHA-256 against `--checksum` and against the digest
//! its name promises (`sha256_<hex>`), before anything runs. OCI references are resolved by a
//! pluggable [`OciFetcher`] so this crate needs no registry client of its own.
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::string_slice
    )
)]

use hoist_provenance::checksum::{self, ChecksumMismatch, Sha256Digest};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Limits and switches for fetching.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Largest module accepted, after decompression.
    pub max_module_bytes: u64,
    /// Connect + total timeout for HTTP downloads.
    pub http_timeout: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            max_module_bytes: 512 * 1024 * 1024,
            http_timeout: Duration::from_secs(60),
        }
    }
}

/// A module's bytes and where they came from.
#[derive(Debug, Clone)]
pub struct FetchedModule {
    /// The Wasm bytes (decompressed).
    pub wasm: Vec<u8>,
    /// The location as the user gave it (for messages).
    pub location: String,
    /// The canonical URL recorded in release history: `file:///abs/path` for local files,
    /// otherwise the URL as given.
    pub url: String,
    /// SHA-256 of `wasm`.
    pub sha256: Sha256Digest,
    /// For OCI sources: the manifest digest reference actually pulled
    /// (`registry/repo@sha256:…`).
    pub resolved: Option<String>,
}

/// Fetches `oci://` references; implemented by the CLI on top of `hoist-oci`.
pub trait OciFetcher {
    /// Pulls the module at `reference` (with its `oci://` prefix). Returns the decompressed
    /// Wasm bytes and the resolved digest reference.
    fn fetch(&self, reference: &str) -> Result<(Vec<u8>, String), String>;
}

/// Why a module could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The location is malformed or uses an unknown scheme.
    #[error("{location}: {reason}")]
    BadLocation {
        /// The location.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local file could not be read.
    #[error("cannot read module {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The module is larger than allowed.
    #[error("module {location} is larger than {limit_mib} MiB{detail}; refusing to load it")]
    TooLarge {
        /// The location.
        location: String,
        /// The cap.
        limit_mib: u64,
        /// Extra context (e.g. "after decompression").
        detail: String,
    },
    /// gzip data is truncated or corrupt.
    #[error(
        "module {location} is not valid gzip data ({reason}): the download or file is truncated or corrupt"
    )]
    Gzip {
        /// The location.
        location: String,
        /// The decoder's message.
        reason: String,
    },
    /// The HTTP request failed.
    #[error("could not download {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong, with a hint.
        reason: String,
    },
    /// The OCI pull failed.
    #[error("{0}")]
    Oci(String),
    /// The checksum does not match.
    #[error(transparent)]
    Checksum(#[from] ChecksumMismatch),
}

/// Fetches the module at `location`, verifies `explicit_checksum` and the inferred one, and
/// returns its bytes. `oci` handles `oci://` references.
pub fn fetch(
    location: &str,
    explicit_checksum: Option<&Sha256Digest>,
    options: &SourceOptions,
    oci: Option<&dyn OciFetcher>,
) -> Result<FetchedModule, SourceError> {
    let (wasm, url, resolved) = if let Some(rest) = location.strip_prefix("file://") {
        let path = PathBuf::from(rest);
        let wasm = read_file(location, &path, options)?;
        (wasm, file_url(&path), None)
    } else if location.starts_with("https://") || location.starts_with("http://") {
        (download(location, options)?, location.to_string(), None)
    } else if location.starts_with("oci://") {
        let Some(oci) = oci else {
            return Err(SourceError::BadLocation {
                location: location.into(),
                reason: "OCI sources are not available here".into(),
            });
        };
        let (wasm, resolved) = oci.fetch(location).map_err(SourceError::Oci)?;
        if wasm.len() as u64 > options.max_module_bytes {
            return Err(too_large(location, options, ""));
        }
        (wasm, location.to_string(), Some(resolved))
    } else if let Some((scheme, _)) = location.split_once("://") {
        return Err(SourceError::BadLocation {
            location: location.into(),
            reason: format!(
                "unsupported scheme {scheme:?}: use a path, file://, http://, https:// or oci://"
            ),
        });
    } else {
        let path = PathBuf::from(location);
        let wasm = read_file(location, &path, options)?;
        (wasm, file_url(&path), None)
    };
    let sha256 = checksum::verify(&wasm, location, explicit_checksum)?;
    Ok(FetchedModule {
        wasm,
        location: location.to_string(),
        url,
        sha256,
        resolved,
    })
}

/// The URL a location is recorded and allow-listed as: `file:///absolute/path` for local
/// files (paths and `file://`), the location itself for URLs and OCI references.
pub fn canonical_url(location: &str) -> String {
    if let Some(rest) = location.strip_prefix("file://") {
        file_url(Path::new(rest))
    } else if location.contains("://") {
        location.to_string()
    } else {
        file_url(Path::new(location))
    }
}

fn file_url(path: &Path) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("file://{}", absolute.display())
}

fn too_large(location: &str, options: &SourceOptions, detail: &str) -> SourceError {
    SourceError::TooLarge {
        location: location.to_string(),
        limit_mib: options.max_module_bytes / (1024 * 1024),
        detail: detail.to_string(),
    }
}

/// Is the name (path part, without query) one that Yoke gunzips?
fn is_gzip_name(location: &str) -> bool {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.ends_with(".gz")
}

fn read_file(location: &str, path: &Path, options: &SourceOptions) -> Result<Vec<u8>, SourceError> {
    let read_err = |error| SourceError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_dir() {
        return Err(SourceError::BadLocation {
            location: location.into(),
            reason: "is a directory, not a Wasm module".into(),
        });
    }
    if is_gzip_name(location) {
        return gunzip_capped(location, file, options);
    }
    if meta.len() > options.max_module_bytes {
        return Err(too_large(location, options, ""));
    }
    let mut wasm = Vec::with_capacity(meta.len() as usize);
    file.take(options.max_module_bytes + 1)
        .read_to_end(&mut wasm)
        .map_err(read_err)?;
    if wasm.len() as u64 > options.max_module_bytes {
        return Err(too_large(location, options, ""));
    }
    Ok(wasm)
}

/// Decompresses gzip from `reader`, refusing to produce more than the module cap (a gzip
/// bomb stops at the cap, not at the end of memory).
fn gunzip_capped(
    location: &str,
    reader: impl Read,
    options: &SourceOptions,
) -> Result<Vec<u8>, SourceError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(reader).take(options.max_module_bytes + 1);
    let mut wasm = Vec::new();
    decoder
        .read_to_end(&mut wasm)
        .map_err(|e| SourceError::Gzip {
            location: location.into(),
            reason: e.to_string(),
        })?;
    if wasm.len() as u64 > options.max_module_bytes {
        return Err(too_large(location, options, " after decompression"));
    }
    Ok(wasm)
}

fn download(url: &str, options: &SourceOptions) -> Result<Vec<u8>, SourceError> {
    let http_err = |reason: String| SourceError::Http {
        url: url.to_string(),
        reason,
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(options.http_timeout.min(Duration::from_secs(15)))
        .timeout(options.http_timeout)
        .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| http_err(format!("cannot create an HTTP client: {e}")))?;
    let response = client.get(url).send().map_err(|e| {
        let hint = if e.is_connect() {
            "the server is unreachable: check the URL and that the host is up"
        } else if e.is_timeout() {
            "the request timed out"
        } else {
            "the request failed"
        };
        http_err(format!("{hint} ({})", error_chain(&e)))
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(http_err(format!("the server answered {status}")));
    }
    let gzip_encoded = response
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if let Some(len) = response.content_length()
        && len > options.max_module_bytes
        && !gzip_encoded
    {
        return Err(too_large(url, options, ""));
    }
    if gzip_encoded || is_gzip_name(url) {
        return gunzip_capped(url, response, options);
    }
    let mut wasm = Vec::new();
    response
        .take(options.max_module_bytes + 1)
        .read_to_end(&mut wasm)
        .map_err(|e| http_err(format!("the download was interrupted ({e})")))?;
    if wasm.len() as u64 > options.max_module_bytes {
        return Err(too_large(url, options, ""));
    }
    Ok(wasm)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Remembers the SHA-256 of local module files by their identity on disk (device, inode,
/// size, modification and change times), so that a warm render of an unchanged file does not
/// read and hash it again. The change time (ctime) cannot be set by unprivileged users, so a
/// file whose content changed never matches an old entry (git and ccache rely on the same).
/// Entries live in a private directory; a group- or world-writable directory is ignored.
#[derive(Debug, Clone)]
pub struct DigestMemo {
    dir: PathBuf,
}

impl DigestMemo {
    /// A memo in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DigestMemo { dir: dir.into() }
    }

    /// The digest recorded for the local file at `location`, if the file is unchanged since.
    /// Returns `None` for URLs, `.gz` files' changes, unknown files, or any doubt.
    pub fn lookup(&self, location: &str) -> Option<Sha256Digest> {
        let entry = self.entry_for(location)?;
        if !self.dir_is_private() {
            return None;
        }
        let text = std::fs::read_to_string(entry).ok()?;
        Sha256Digest::from_hex(text.trim()).ok()
    }

    /// Records `digest` for the local file at `location` (best effort: failures are ignored,
    /// the memo is only a shortcut).
    pub fn record(&self, location: &str, digest: &Sha256Digest) {
        let Some(entry) = self.entry_for(location) else {
            return;
        };
        // A file changed within the last moments could change again within the same
        // timestamp tick (coarse on some filesystems) without its identity changing: only
        // remember files that have been still for a while ("racy git").
        if local_path(location).is_none_or(|path| recently_changed(&path)) {
            return;
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        if builder.create(&self.dir).is_err() || !self.dir_is_private() {
            return;
        }
        let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, digest.to_hex()).is_ok() && std::fs::rename(&tmp, &entry).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    fn entry_for(&self, location: &str) -> Option<PathBuf> {
        let path = local_path(location)?;
        let identity = file_identity(&path)?;
        let key = Sha256Digest::of(identity.as_bytes()).to_hex();
        key.get(..40).map(|k| self.dir.join(k))
    }

    fn dir_is_private(&self) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            match std::fs::metadata(&self.dir) {
                Ok(meta) => meta.permissions().mode() & 0o022 == 0,
                Err(_) => false,
            }
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}

/// The local path of a location (plain path or `file://`), `None` for URLs.
fn local_path(location: &str) -> Option<PathBuf> {
    if let Some(rest) = location.strip_prefix("file://") {
        Some(PathBuf::from(rest))
    } else if location.contains("://") {
        None
    } else {
        Some(PathBuf::from(location))
    }
}

/// Changed (content or metadata) less than [`RACY_WINDOW`] ago, or unknown.
fn recently_changed(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return true;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(i64::MAX);
        now - meta.mtime().max(meta.ctime()) < RACY_WINDOW.as_secs() as i64
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        true
    }
}

/// How long a file must have been unchanged before its digest is remembered: more than the
/// coarsest timestamp granularity of common filesystems (FAT: 2 s).
const RACY_WINDOW: Duration = Duration::from_secs(3);

#[cfg(unix)]
fn file_identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let canonical = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&canonical).ok()?;
    if !meta.is_file() {
        return None;
    }
    Some(format!(
        "{}\0{}:{}:{}:{}.{}:{}.{}",
        canonical.display(),
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    ))
}

#[cfg(not(unix))]
fn file_identity(_: &Path) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn digest_memo_forgets_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, MODULE).unwrap();
        let memo = DigestMemo::new(dir.path().join("memo"));
        let location = path.to_str().unwrap();
        assert_eq!(memo.lookup(location), None);
        let digest = Sha256Digest::of(MODULE);
        // Just written: too recent to remember.
        memo.record(location, &digest);
        assert_eq!(memo.lookup(location), None);
        std::thread::sleep(RACY_WINDOW + std::time::Duration::from_millis(1100));
        memo.record(location, &digest);
        assert_eq!(memo.lookup(location), Some(digest));
        assert_eq!(memo.lookup(&format!("file://{location}")), Some(digest));
        // Same size, new content: the change time moves, the entry no longer applies.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"\0asm\x01\0\0\x01").unwrap();
        assert_eq!(memo.lookup(location), None);
        // URLs are never memoised.
        memo.record("https://h/m.wasm", &digest);
        assert_eq!(memo.lookup("https://h/m.wasm"), None);
    }

    #[test]
    fn reads_paths_and_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, MODULE).unwrap();
        let opts = SourceOptions::default();
        let by_path = fetch(path.to_str().unwrap(), None, &opts, None).unwrap();
        assert_eq!(by_path.wasm, MODULE);
        assert!(by_path.url.starts_with("file:///"), "{}", by_path.url);
        let by_url = fetch(&format!("file://{}", path.display()), None, &opts, None).unwrap();
        assert_eq!(by_url.sha256, by_path.sha256);
    }

    #[test]
    fn gunzips_by_name_and_caps_bombs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm.gz");
        std::fs::write(&path, gz(MODULE)).unwrap();
        let opts = SourceOptions::default();
        assert_eq!(
            fetch(path.to_str().unwrap(), None, &opts, None)
                .unwrap()
                .wasm,
            MODULE
        );

        let bomb = gz(&vec![0u8; 8 * 1024 * 1024]);
        let bomb_path = dir.path().join("bomb.wasm.gz");
        std::fs::write(&bomb_path, &bomb).unwrap();
        let small = SourceOptions {
            max_module_bytes: 1024 * 1024,
            ..SourceOptions::default()
        };
        let err = fetch(bomb_path.to_str().unwrap(), None, &small, None).unwrap_err();
        assert!(matches!(err, SourceError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("after decompression"));

        let truncated = dir.path().join("t.wasm.gz");
        let full = gz(&[7u8; 4096]);
        std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
        let err = fetch(truncated.to_str().unwrap(), None, &opts, None).unwrap_err();
        assert!(matches!(err, SourceError::Gzip { .. }), "{err}");
    }

    #[test]
    fn checksums_explicit_and_inferred() {
        let dir = tempfile::tempdir().unwrap();
        let actual = Sha256Digest::of(MODULE);
        let wrong = Sha256Digest::of(b"other");
        let named = dir.path().join(format!("m_sha256_{wrong}.wasm"));
        std::fs::write(&named, MODULE).unwrap();
        let opts = SourceOptions::default();
        let err = fetch(named.to_str().unwrap(), None, &opts, None).unwrap_err();
        assert!(matches!(err, SourceError::Checksum(_)), "{err}");
        let good = dir.path().join(format!("m_sha256_{actual}.wasm.gz"));
        std::fs::write(&good, gz(MODULE)).unwrap();
        assert!(fetch(good.to_str().unwrap(), None, &opts, None).is_ok());
        assert!(fetch(good.to_str().unwrap(), Some(&wrong), &opts, None).is_err());
    }

    #[test]
    fn errors_name_the_input() {
        let opts = SourceOptions::default();
        let err = fetch("/nonexistent/m.wasm", None, &opts, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/m.wasm"), "{err}");
        let err = fetch("ftp://x/m.wasm", None, &opts, None).unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
        // A closed port on loopback: refused at once.
        let err = fetch("http://127.0.0.1:9/m.wasm", None, &opts, None).unwrap_err();
        assert!(err.to_string().contains("unreachable"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = fetch(dir.path().to_str().unwrap(), None, &opts, None).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn http_downloads_plain_and_gzip_from_a_real_local_server() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body_gz = gz(MODULE);
        let server = std::thread::spawn(move || {
            for (i, stream) in listener.incoming().take(3).enumerate() {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let (headers, body): (&str, Vec<u8>) = match i {
                    0 => ("", MODULE.to_vec()),
                    1 => ("Content-Encoding: gzip\r\n", body_gz.clone()),
                    _ => ("", b"nope".to_vec()),
                };
                let status = if i == 2 { "404 Not Found" } else { "200 OK" };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        let opts = SourceOptions::default();
        let url = format!("http://{addr}/m.wasm");
        assert_eq!(fetch(&url, None, &opts, None).unwrap().wasm, MODULE);
        assert_eq!(fetch(&url, None, &opts, None).unwrap().wasm, MODULE);
        let err = fetch(&url, None, &opts, None).unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
        server.join().unwrap();
    }
}
