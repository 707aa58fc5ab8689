//! The on-disk cache of compiled modules.
//!
//! Layout: one directory, two files per entry:
//!
//! - `<module sha256>.<compiler>.<config key>.cwasm`: wasmtime's serialized code, loaded with
//!   a memory map (no copy, ~1 ms for a 10 MB Go flight);
//! - the same name ending in `.sum`: the XXH3-128 digest of the compiled code as loaded,
//!   written after the code, and on its second line the code file's identity (device, inode,
//!   size, mtime, ctime) when the digest was last checked. A load whose file still has that
//!   identity skips re-hashing the code (2-3 ms and a page fault per code page for a 30 MB
//!   Go flight, a tenth of a warm render); any other load hashes it, so a damaged or replaced
//!   entry is recompiled rather than executed. Every write through the filesystem changes the
//!   ctime, which user space cannot set back, so an edited file is always re-hashed. The
//!   `.sum` file's mtime records when the entry was last used (`hoist cache ls`).
//!
//! The config key is a digest of the hoist version, the compiler and wasmtime's
//! `precompile_compatibility_hash` (wasmtime version, compiler settings, CPU features), so an
//! upgrade or a machine with other CPU features never loads code built for something else.
//! Every write goes to a temporary file in the same directory and is renamed into place, so
//! concurrent hoist processes never see a half-written entry.

use sha2::{Digest, Sha256};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use wasmtime::{Engine, Module};

use crate::engine::{Compiler, EngineError, TimeLimits, flight_engine};

/// Problems with the cache itself (never fatal for a render: hoist then compiles).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directory cannot be created or read.
    #[error("cache directory {path}: {error}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The cache directory is writable by other users: loading code from it would let them
    /// run code as you.
    #[error(
        "cache directory {path} is writable by other users; refusing to load compiled code from it (chmod go-w it, or set HOIST_CACHE_DIR)"
    )]
    Insecure {
        /// The directory.
        path: PathBuf,
    },
    /// An entry exists but cannot be used; it has been removed.
    #[error("{path}: {reason}")]
    Unusable {
        /// The entry's code file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// Writing an entry failed.
    #[error("writing {path}: {error}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// One cached compiled module, as listed by `hoist cache ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// SHA-256 of the Wasm module (hex).
    pub module_sha256: String,
    /// The compiler that produced the code.
    pub compiler: String,
    /// Digest of hoist version + compiler + wasmtime settings and CPU features.
    pub config_key: String,
    /// Whether this entry is usable by the running hoist (same config key).
    pub current: bool,
    /// Size of the compiled code in bytes.
    pub size: u64,
    /// Last use (or write) time.
    pub modified: Option<SystemTime>,
    /// Path of the code file.
    pub path: PathBuf,
}

/// `<compiler>.<config key>`: the part of an entry's file name that says which engine
/// configuration can load it. The key covers the hoist version, the compiler, what the
/// runtime adds to modules, and wasmtime's own compatibility hash (version, settings, CPU).
fn entry_suffix(engine: &Engine, compiler: Compiler) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    crate::HOIST_VERSION.hash(&mut hasher);
    compiler.name().hash(&mut hasher);
    // What the runtime adds to a module before compiling it (go_resume's exports).
    "go-resume-exports-2".hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let key = hex::encode(hasher.0.finalize().get(..8).unwrap_or_default());
    format!("{}.{key}", compiler.name())
}

/// The compiled-module cache in one directory.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
    /// `<compiler>.<config key>`, set once the engine is known.
    suffix: Option<String>,
    /// The suffixes of the entries [`ModuleCache::list`] calls current: this engine's, or with
    /// [`ModuleCache::for_listing`] every configuration this hoist builds.
    usable: Vec<String>,
    /// How old a code file's ctime must be before its identity is trusted (see `file_stamp`).
    settle: std::time::Duration,
}

impl ModuleCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModuleCache {
            dir: dir.into(),
            suffix: None,
            usable: Vec::new(),
            settle: STAMP_SETTLE,
        }
    }

    /// A handle on `dir` for [`ModuleCache::list`] and [`ModuleCache::clean`], in which an
    /// entry is current when any engine this hoist builds can load it: Cranelift code (what
    /// the tiered pipeline upgrades to, and `HOIST_COMPILER=cranelift`) and Winch code, each
    /// with and without time limits ([`TimeLimits`]). A handle made for one engine would
    /// call the others' entries stale, and `clean --stale` would delete code in use.
    pub fn for_listing(dir: impl Into<PathBuf>) -> Result<ModuleCache, EngineError> {
        let mut cache = ModuleCache::new(dir);
        for compiler in [Compiler::Cranelift, Compiler::Winch] {
            for time_limits in [TimeLimits::Enforceable, TimeLimits::Unenforceable] {
                let engine = flight_engine(compiler, None, time_limits)?;
                cache.usable.push(entry_suffix(&engine, compiler));
            }
        }
        Ok(cache)
    }

    /// The default location: `$HOIST_CACHE_DIR/modules`, else `<XDG cache dir>/hoist/modules`
    /// (`~/.cache/hoist/modules` on Linux); `None` when no home directory is known.
    pub fn default_dir() -> Option<PathBuf> {
        hoist_cache_root().map(|root| root.join("modules"))
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn for_engine(mut self, engine: &Engine, compiler: Compiler) -> Self {
        let suffix = entry_suffix(engine, compiler);
        self.usable = vec![suffix.clone()];
        self.suffix = Some(suffix);
        self
    }

    fn entry_path(&self, sha256_hex: &str) -> Option<PathBuf> {
        let suffix = self.suffix.as_ref()?;
        // Only a well-formed digest may become a file name.
        if sha256_hex.len() != 64 || !sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.dir.join(format!("{sha256_hex}.{suffix}.cwasm")))
    }

    /// Loads the compiled module for `sha256_hex`, `Ok(None)` when there is no entry.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        sha256_hex: &str,
    ) -> Result<Option<Module>, CacheError> {
        Ok(self
            .load_entry(engine, sha256_hex)?
            .map(|(module, _)| module))
    }

    /// [`Self::load`], also saying whether the code was hashed (`false`: the file's identity
    /// matched the one recorded when its digest was last checked).
    fn load_entry(
        &self,
        engine: &Engine,
        sha256_hex: &str,
    ) -> Result<Option<(Module, bool)>, CacheError> {
        let Some(path) = self.entry_path(sha256_hex) else {
            return Ok(None);
        };
        if !path.exists() {
            return Ok(None);
        }
        self.check_dir_permissions()?;
        let sum_path = path.with_extension("sum");
        let unusable = |reason: String| {
            remove_entry(&path);
            CacheError::Unusable {
                path: path.clone(),
                reason,
            }
        };
        let recorded = match fs::read_to_string(&sum_path) {
            Ok(sum) => Sum::parse(&sum),
            Err(e) => return Err(unusable(format!("no code digest ({e})"))),
        };
        // SAFETY: the file is in hoist's own cache directory (not writable by others, checked
        // above) and was written by `store`. Before the module is returned, its code is either
        // hashed and compared with the digest recorded at write time, or the open file still
        // has the identity recorded when that digest was last checked (no write since). No
        // code runs before that check.
        let (module, stamp) = unsafe { self.map_code(engine, &path) }.map_err(unusable)?;
        let verified_by_stamp = stamp.is_some() && stamp == recorded.stamp;
        if !verified_by_stamp {
            let actual = code_digest(&module);
            if actual != recorded.digest {
                return Err(unusable(
                    "compiled code does not match its recorded digest".to_string(),
                ));
            }
            // Remember this file's identity, so the next load need not hash it again.
            if stamp.is_some() {
                let _ = write_atomic(&self.dir, &sum_path, Sum::render(&actual, stamp).as_bytes());
            }
        }
        // Mark as used so `hoist cache ls` shows recency: the `.sum` file's mtime, never the
        // code file's (that would change its identity). Failure is harmless.
        let _ = fs::File::options()
            .append(true)
            .open(&sum_path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Ok(Some((module, !verified_by_stamp)))
    }

    /// Writes `compiled` (from `engine.precompile_module`) for `sha256_hex` and returns the
    /// module loaded from the written file.
    pub(crate) fn store(
        &self,
        engine: &Engine,
        sha256_hex: &str,
        compiled: &[u8],
    ) -> Result<Module, CacheError> {
        let path = self
            .entry_path(sha256_hex)
            .ok_or_else(|| CacheError::Unusable {
                path: self.dir.clone(),
                reason: format!("{sha256_hex:?} is not a SHA-256 digest"),
            })?;
        create_private_dir(&self.dir)?;
        self.check_dir_permissions()?;
        write_atomic(&self.dir, &path, compiled)?;
        let unusable = |reason: String| CacheError::Unusable {
            path: path.clone(),
            reason,
        };
        // SAFETY: we wrote this file from the engine's own output an instant ago.
        let (module, stamp) = unsafe { self.map_code(engine, &path) }.map_err(unusable)?;
        write_atomic(
            &self.dir,
            &path.with_extension("sum"),
            Sum::render(&code_digest(&module), stamp).as_bytes(),
        )?;
        Ok(module)
    }

    /// Maps a code file and reads its identity (see `file_stamp`) from the same open file, so
    /// the file whose identity is checked is the file that runs.
    ///
    /// # Safety
    ///
    /// As [`Module::deserialize_open_file`]: the file must hold code this engine produced, and
    /// the caller must verify it before running any of it.
    unsafe fn map_code(
        &self,
        engine: &Engine,
        path: &Path,
    ) -> Result<(Module, Option<String>), String> {
        let file = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let stamp = file
            .metadata()
            .ok()
            .and_then(|m| file_stamp(&m, self.settle));
        // SAFETY: passed on to the caller (see above).
        let module =
            unsafe { Module::deserialize_open_file(engine, file) }.map_err(|e| format!("{e:#}"))?;
        Ok((module, stamp))
    }

    /// Lists the entries in the directory (entries of other hoist versions and compilers too).
    pub fn list(&self) -> Result<Vec<CacheEntry>, CacheError> {
        let read = match fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(CacheError::Dir {
                    path: self.dir.clone(),
                    error,
                });
            }
        };
        let mut entries = Vec::new();
        for item in read.flatten() {
            let path = item.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".cwasm") else {
                continue;
            };
            let mut parts = stem.splitn(3, '.');
            let (Some(sha), Some(compiler), Some(key)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let meta = item.metadata().ok();
            // Last use is the `.sum` file's mtime (see `load`); older entries: the code's.
            let used = fs::metadata(path.with_extension("sum"))
                .and_then(|m| m.modified())
                .ok();
            entries.push(CacheEntry {
                module_sha256: sha.to_string(),
                compiler: compiler.to_string(),
                config_key: key.to_string(),
                current: self.usable.contains(&format!("{compiler}.{key}")),
                size: meta.as_ref().map(|m| m.len()).unwrap_or(0),
                modified: used.or_else(|| meta.and_then(|m| m.modified().ok())),
                path: path.clone(),
            });
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.modified));
        Ok(entries)
    }

    /// Removes entries: all of them, or with `only_stale` those the running hoist cannot use.
    /// Returns how many entries and bytes were removed.
    pub fn clean(&self, only_stale: bool) -> Result<(usize, u64), CacheError> {
        let mut removed = (0, 0);
        for entry in self.list()? {
            if only_stale && entry.current {
                continue;
            }
            remove_entry(&entry.path);
            removed.0 += 1;
            removed.1 += entry.size;
        }
        if !only_stale {
            // The digest memo kept next to the entries (see hoist-source's DigestMemo).
            let _ = fs::remove_dir_all(self.dir.join("digests"));
        }
        // Leftover temporary files of interrupted writes.
        if let Ok(read) = fs::read_dir(&self.dir) {
            for item in read.flatten() {
                let name = item.file_name();
                if name.to_string_lossy().starts_with(".tmp") {
                    let _ = fs::remove_file(item.path());
                }
            }
        }
        Ok(removed)
    }

    fn check_dir_permissions(&self) -> Result<(), CacheError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = fs::metadata(&self.dir).map_err(|error| CacheError::Dir {
                path: self.dir.clone(),
                error,
            })?;
            if meta.permissions().mode() & 0o022 != 0 {
                return Err(CacheError::Insecure {
                    path: self.dir.clone(),
                });
            }
        }
        Ok(())
    }
}

/// `$HOIST_CACHE_DIR`, else `<XDG cache dir>/hoist`.
/// hoist's cache root, shared by every cache (compiled modules, OCI downloads, digests):
/// `$HOIST_CACHE_DIR`, else `<user cache dir>/hoist`.
pub fn hoist_cache_root() -> Option<PathBuf> {
    match std::env::var_os("HOIST_CACHE_DIR") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => dirs::cache_dir().map(|d| d.join("hoist")),
    }
}

/// A `.sum` file: the code digest, and the identity of the code file it was last checked on.
struct Sum {
    digest: String,
    stamp: Option<String>,
}

impl Sum {
    fn parse(text: &str) -> Sum {
        let mut lines = text.lines();
        Sum {
            digest: lines.next().unwrap_or_default().trim().to_string(),
            stamp: lines
                .next()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        }
    }

    fn render(digest: &str, stamp: Option<String>) -> String {
        match stamp {
            Some(stamp) => format!("{digest}\n{stamp}\n"),
            None => format!("{digest}\n"),
        }
    }
}

/// A file changed less than this long ago has no trusted identity yet (see `file_stamp`).
const STAMP_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The identity of a file's content without reading it: device, inode, size, mtime and ctime
/// (to the nanosecond). `None` where the platform has no ctime, so the code is always hashed,
/// and `None` while the ctime is less than `settle` old: file timestamps come from a coarse
/// clock on many kernels, so a write in the same tick as the one we recorded could keep the
/// same ctime (git's "racy" index entries). A settled file that changes gets a later ctime.
fn file_stamp(meta: &fs::Metadata, settle: std::time::Duration) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ctime = SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(
            u64::try_from(meta.ctime()).ok()?,
            u32::try_from(meta.ctime_nsec()).ok()?,
        ))?;
        let age = SystemTime::now().duration_since(ctime).ok()?;
        if age < settle {
            return None;
        }
        Some(format!(
            "dev={} ino={} size={} mtime={}.{:09} ctime={}.{:09}",
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
    {
        let _ = (meta, settle);
        None
    }
}

fn code_digest(module: &Module) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(module.text()))
}

fn remove_entry(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("sum"));
}

fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|error| CacheError::Dir {
        path: dir.to_path_buf(),
        error,
    })
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let write_err = |error| CacheError::Write {
        path: path.to_path_buf(),
        error,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp")
        .tempfile_in(dir)
        .map_err(write_err)?;
    tmp.write_all(bytes).map_err(write_err)?;
    tmp.as_file().sync_data().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// Feeds `Hash` impls into SHA-256 so cache keys are stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(
            digest
                .get(..8)
                .and_then(|d| d.try_into().ok())
                .unwrap_or([0; 8]),
        )
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CacheStatus, FlightEngine};

    const WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

    fn replace(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("corrupt");
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn miss_then_hit_then_recovery_from_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = wat::parse_str(WAT).unwrap();
        let digest = sha(&wasm);
        let engine =
            FlightEngine::new(Compiler::Winch, Some(ModuleCache::new(dir.path()))).unwrap();

        let first = engine.load(&wasm, &digest, "m").unwrap();
        assert_eq!(first.cache_status, CacheStatus::Miss);
        let second = engine.load(&wasm, &digest, "m").unwrap();
        assert_eq!(second.cache_status, CacheStatus::Hit);

        let entries = engine.cache().unwrap().list().unwrap();
        assert_eq!(entries.len(), 1);
        assert!(entries[0].current);
        assert_eq!(entries[0].module_sha256, digest);

        // Garbage over the code: rejected by wasmtime, removed, recompiled. (Entries are
        // replaced, never rewritten in place: a live memory map of a truncated file faults.)
        drop((first, second));
        replace(&entries[0].path, b"garbage");
        assert_eq!(
            engine.load(&wasm, &digest, "m").unwrap().cache_status,
            CacheStatus::Recovered
        );
        assert_eq!(
            engine.load(&wasm, &digest, "m").unwrap().cache_status,
            CacheStatus::Hit
        );

        // A flipped byte inside the code itself passes wasmtime's checks but not ours.
        let mut bytes = fs::read(&entries[0].path).unwrap();
        let text = engine
            .load(&wasm, &digest, "m")
            .unwrap()
            .module
            .text()
            .to_vec();
        let at = bytes
            .windows(text.len().min(16))
            .position(|w| w == &text[..text.len().min(16)])
            .expect("code bytes are in the file");
        bytes[at] ^= 0xff;
        replace(&entries[0].path, &bytes);
        assert_eq!(
            engine.load(&wasm, &digest, "m").unwrap().cache_status,
            CacheStatus::Recovered
        );

        // A missing digest file is treated the same.
        fs::remove_file(entries[0].path.with_extension("sum")).unwrap();
        assert_eq!(
            engine.load(&wasm, &digest, "m").unwrap().cache_status,
            CacheStatus::Recovered
        );
    }

    #[test]
    fn a_settled_unchanged_entry_is_not_rehashed_and_any_write_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = wat::parse_str(WAT).unwrap();
        let digest = sha(&wasm);
        let engine =
            FlightEngine::new(Compiler::Winch, Some(ModuleCache::new(dir.path()))).unwrap();
        let text = engine
            .load(&wasm, &digest, "m")
            .unwrap()
            .module
            .text()
            .to_vec();
        let mut cache = engine.cache().unwrap().clone();
        let entry = cache.list().unwrap().remove(0);
        let hashed = |cache: &ModuleCache| {
            cache
                .load_entry(engine.engine(), &digest)
                .map(|loaded| loaded.map(|(_, hashed)| hashed))
        };

        // Just written: too fresh to trust its identity (coarse file clocks), so hashed.
        assert_eq!(hashed(&cache).unwrap(), Some(true));
        assert_eq!(hashed(&cache).unwrap(), Some(true));
        // Settled: hashed once more, which records the identity; then trusted.
        cache.settle = std::time::Duration::ZERO;
        assert_eq!(hashed(&cache).unwrap(), Some(true));
        assert_eq!(hashed(&cache).unwrap(), Some(false));
        assert_eq!(hashed(&cache).unwrap(), Some(false));
        let sum = fs::read_to_string(entry.path.with_extension("sum")).unwrap();
        assert!(sum.lines().nth(1).unwrap().contains("ino="), "{sum}");

        // The same bytes under a new inode (a copied cache): hashed again, then trusted.
        let bytes = fs::read(&entry.path).unwrap();
        replace(&entry.path, &bytes);
        assert_eq!(hashed(&cache).unwrap(), Some(true));
        assert_eq!(hashed(&cache).unwrap(), Some(false));

        // A code byte flipped in place (same inode, same size): the write moved the ctime,
        // so the code is hashed, fails, and the entry is removed.
        let at = bytes
            .windows(text.len().min(16))
            .position(|w| w == &text[..text.len().min(16)])
            .expect("code bytes are in the file");
        {
            use std::io::{Seek, SeekFrom};
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(&entry.path)
                .unwrap();
            f.seek(SeekFrom::Start(at as u64)).unwrap();
            f.write_all(&[bytes[at] ^ 0xff]).unwrap();
        }
        let err = hashed(&cache).unwrap_err();
        assert!(err.to_string().contains("recorded digest"), "{err}");
        assert!(!entry.path.exists());
    }

    #[test]
    fn compilers_do_not_share_entries_and_clean_removes_stale() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = wat::parse_str(WAT).unwrap();
        let digest = sha(&wasm);
        let winch = FlightEngine::new(Compiler::Winch, Some(ModuleCache::new(dir.path()))).unwrap();
        let cranelift =
            FlightEngine::new(Compiler::Cranelift, Some(ModuleCache::new(dir.path()))).unwrap();
        assert_eq!(
            winch.load(&wasm, &digest, "m").unwrap().cache_status,
            CacheStatus::Miss
        );
        assert_eq!(
            cranelift.load(&wasm, &digest, "m").unwrap().cache_status,
            CacheStatus::Miss
        );
        assert_eq!(winch.cache().unwrap().list().unwrap().len(), 2);
        assert_eq!(winch.cache().unwrap().clean(true).unwrap().0, 1);
        let left = winch.cache().unwrap().list().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].compiler, "winch");
        assert_eq!(winch.cache().unwrap().clean(false).unwrap().0, 1);
        assert!(winch.cache().unwrap().list().unwrap().is_empty());
    }

    #[test]
    fn a_listing_handle_calls_every_configuration_of_this_hoist_current() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = wat::parse_str(WAT).unwrap();
        let digest = sha(&wasm);
        for (compiler, time_limits) in [
            (Compiler::Cranelift, TimeLimits::Enforceable),
            (Compiler::Winch, TimeLimits::Enforceable),
            (Compiler::Cranelift, TimeLimits::Unenforceable),
        ] {
            let engine = FlightEngine::configured(
                compiler,
                Some(ModuleCache::new(dir.path())),
                None,
                time_limits,
            )
            .unwrap();
            engine.load(&wasm, &digest, "m").unwrap();
        }
        // An entry another hoist build (another config key) left behind.
        let foreign = dir
            .path()
            .join(format!("{digest}.winch.0123456789abcdef.cwasm"));
        fs::write(&foreign, b"old code").unwrap();
        let cache = ModuleCache::for_listing(dir.path()).unwrap();
        let entries = cache.list().unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries.iter().filter(|e| e.current).count(),
            3,
            "{entries:?}"
        );
        assert_eq!(
            cache.clean(true).unwrap().0,
            1,
            "only the foreign entry is stale"
        );
        assert!(!foreign.exists());
        assert_eq!(cache.list().unwrap().len(), 3);
    }

    #[test]
    fn world_writable_cache_is_refused_but_render_still_works() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let wasm = wat::parse_str(WAT).unwrap();
        let digest = sha(&wasm);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let engine =
            FlightEngine::new(Compiler::Winch, Some(ModuleCache::new(dir.path()))).unwrap();
        let loaded = engine.load(&wasm, &digest, "m").unwrap();
        assert_eq!(loaded.cache_status, CacheStatus::Disabled);
    }

    #[test]
    fn bad_digests_never_become_paths() {
        let cache = ModuleCache::new("/tmp/x").for_engine(&Engine::default(), Compiler::Winch);
        assert!(cache.entry_path("../../etc/passwd").is_none());
        assert!(cache.entry_path(&"g".repeat(64)).is_none());
        assert!(cache.entry_path(&"a".repeat(64)).is_some());
    }
}
