//! gzip and tar, with caps on decompressed sizes (gzip-bomb safe).

use std::io::{self, Read, Write};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::error::{OciError, Result};

/// A reader that fails once more than `cap` bytes have been read from `inner`.
struct Capped<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Read at most remaining+1 bytes so that crossing the cap is detected.
        let want = buf
            .len()
            .min(usize::try_from(self.remaining.saturating_add(1)).unwrap_or(usize::MAX));
        let chunk = match buf.get_mut(..want) {
            Some(chunk) => chunk,
            None => buf, // `want` is at most `buf.len()`
        };
        let n = self.inner.read(chunk)?;
        if n as u64 > self.remaining {
            self.exceeded = true;
            return Err(io::Error::other("decompressed size cap exceeded"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Context for error messages about one archive.
pub(crate) struct Ctx<'a> {
    /// What is being decoded (`layer sha256:...`).
    pub what: &'a str,
    /// The reference being pulled.
    pub reference: &'a str,
    /// Decompressed cap in bytes.
    pub limit: u64,
    /// The knob that raises the cap.
    pub knob: &'a str,
}

impl Ctx<'_> {
    fn too_large(&self, what: &str) -> OciError {
        OciError::TooLarge {
            what: what.to_string(),
            reference: self.reference.into(),
            limit: self.limit,
            knob: self.knob.into(),
        }
    }
    fn bad(&self, detail: impl std::fmt::Display) -> OciError {
        OciError::BadArchive {
            what: self.what.into(),
            reference: self.reference.into(),
            detail: detail.to_string(),
        }
    }
}

/// Gunzips `data` (multi-member streams too), failing once the output exceeds `ctx.limit`.
pub(crate) fn gunzip_capped(data: &[u8], ctx: &Ctx<'_>) -> Result<Vec<u8>> {
    let mut reader = Capped {
        inner: MultiGzDecoder::new(data),
        remaining: ctx.limit,
        exceeded: false,
    };
    let mut out = Vec::new();
    match reader.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(_) if reader.exceeded => Err(ctx.too_large(&format!("decompressed {}", ctx.what))),
        Err(e) => Err(ctx.bad(format!("bad gzip data: {e}"))),
    }
}

/// Reads the first regular file of a tar stream (gzipped when `gzipped`), as kpt does:
/// directories are skipped, links and special files are errors. Returns `None` when the
/// archive has no regular file. Whiteout entries (`.wh.*`) are skipped.
pub(crate) fn first_regular_file(
    data: &[u8],
    gzipped: bool,
    ctx: &Ctx<'_>,
) -> Result<Option<Vec<u8>>> {
    // The tar stream holds the file plus headers and padding; allow a little slack.
    let stream_cap = ctx.limit.saturating_add(1 << 20);
    let inner: Box<dyn Read + '_> = if gzipped {
        Box::new(MultiGzDecoder::new(data))
    } else {
        Box::new(data)
    };
    let mut capped = Capped {
        inner,
        remaining: stream_cap,
        exceeded: false,
    };
    let result = read_first_file(&mut capped, ctx);
    match result {
        Err(_) if capped.exceeded => Err(ctx.too_large(&format!("decompressed {}", ctx.what))),
        other => other,
    }
}

fn read_first_file<R: Read>(reader: R, ctx: &Ctx<'_>) -> Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| ctx.bad(format!("bad tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ctx.bad(format!("bad tar: {e}")))?;
        let path = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "<unreadable name>".into());
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(ctx.bad(format!(
                "the archive holds a link '{path}' (links are not allowed)"
            )));
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(ctx.bad(format!("unsupported tar entry type {kind:?} for '{path}'")));
        }
        let base = path.rsplit('/').next().unwrap_or(&path);
        if base.starts_with(".wh.") {
            continue;
        }
        let size = entry.size();
        if size > ctx.limit {
            return Err(ctx.too_large(&format!("file '{path}' in {}", ctx.what)));
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(64 << 20));
        entry
            .read_to_end(&mut out)
            .map_err(|e| ctx.bad(format!("reading '{path}': {e}")))?;
        return Ok(Some(out));
    }
    Ok(None)
}

/// gzip-compresses `data` (deterministic: no name, mtime 0).
pub(crate) fn gzip(data: &[u8], level: Compression) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), level);
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// A tar holding one regular file `name` (mode 0644, owner 0:0, mtime 0), like kpt's push.
pub(crate) fn tar_single_file(name: &str, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::with_capacity(data.len() + 2048));
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, name, data)?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(limit: u64) -> Ctx<'static> {
        Ctx {
            what: "layer",
            reference: "reg/x:1",
            limit,
            knob: "max_module_bytes",
        }
    }

    #[test]
    fn gzip_round_trip_and_cap() {
        let data = vec![7u8; 10_000];
        let gz = gzip(&data, Compression::default());
        assert_eq!(gzip(&data, Compression::default()), gz, "deterministic");
        assert_eq!(gunzip_capped(&gz, &ctx(10_000)).unwrap(), data);
        let err = gunzip_capped(&gz, &ctx(9_999)).unwrap_err();
        assert!(
            matches!(err, OciError::TooLarge { limit: 9_999, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("max_module_bytes"));
    }

    #[test]
    fn gzip_bomb_is_stopped_at_the_cap() {
        // 64 MiB of zeros compresses to ~64 KiB; with a 1 MiB cap we must stop early.
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let err = gunzip_capped(&bomb, &ctx(1 << 20)).unwrap_err();
        assert!(matches!(err, OciError::TooLarge { .. }), "{err}");
        // the same bomb inside a tar layer
        let tar = tar_single_file("big.wasm", &vec![0u8; 8 << 20]).unwrap();
        let gz = gzip(&tar, Compression::best());
        let err = first_regular_file(&gz, true, &ctx(1 << 20)).unwrap_err();
        assert!(matches!(err, OciError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn bad_gzip_is_reported() {
        let err = gunzip_capped(b"definitely not gzip", &ctx(100)).unwrap_err();
        assert!(matches!(err, OciError::BadArchive { .. }), "{err}");
        let err = first_regular_file(b"garbage that is not gzip", true, &ctx(100)).unwrap_err();
        assert!(matches!(err, OciError::BadArchive { .. }), "{err}");
    }

    #[test]
    fn tar_first_regular_file() {
        let tar = tar_single_file("fn.wasm", b"\0asm\x01\0\0\0").unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.header().mode().unwrap(), 0o644);
        assert_eq!(e.path().unwrap().to_str(), Some("fn.wasm"));
        let gz = gzip(&tar, Compression::best());
        assert_eq!(
            first_regular_file(&gz, true, &ctx(100)).unwrap().unwrap(),
            b"\0asm\x01\0\0\0"
        );
        assert_eq!(
            first_regular_file(&tar, false, &ctx(100)).unwrap().unwrap(),
            b"\0asm\x01\0\0\0"
        );

        // directories are skipped, whiteouts skipped, the first file wins
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, "dir/", &[][..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        b.append_data(&mut h, "dir/.wh.old", &[][..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "dir/a", &b"one"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "dir/b", &b"two"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        assert_eq!(
            first_regular_file(&tar, false, &ctx(100)).unwrap().unwrap(),
            b"one"
        );
        // a file over the cap
        let err = first_regular_file(&tar, false, &ctx(2)).unwrap_err();
        assert!(matches!(err, OciError::TooLarge { .. }), "{err}");

        // symlinks are refused
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "/etc/passwd").unwrap();
        let tar = b.into_inner().unwrap();
        let err = first_regular_file(&tar, false, &ctx(100)).unwrap_err();
        assert!(err.to_string().contains("link"), "{err}");

        // empty archive: no file
        let tar = tar::Builder::new(Vec::new()).into_inner().unwrap();
        assert_eq!(first_regular_file(&tar, false, &ctx(100)).unwrap(), None);
    }
}
