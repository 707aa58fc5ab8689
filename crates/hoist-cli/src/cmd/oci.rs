//! `hoist push` (alias `stow`) and `hoist pull`: modules in OCI registries.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hoist_oci::{ModuleFormat, PullOptions, PushOptions};

/// The artifact layout to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Yoke's `stow` format (config application/vnd.yoke.config.v1+json, gzipped layer).
    Yoke,
    /// Kubewarden's format (application/vnd.wasm.content.layer.v1+wasm).
    Kubewarden,
    /// kpt's format (index with a wasm/js platform, gzipped tar layer).
    Kpt,
}

impl From<FormatArg> for ModuleFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Yoke => ModuleFormat::Yoke,
            FormatArg::Kubewarden => ModuleFormat::Kubewarden,
            FormatArg::Kpt => ModuleFormat::Kpt,
        }
    }
}

/// `hoist push FILE oci://REGISTRY/REPO[:TAG]`
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// The Wasm module to push.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Destination: oci://REGISTRY/REPO[:TAG] (tag `latest` when omitted).
    #[arg(value_name = "oci://REF")]
    pub reference: String,
    /// Artifact format. yoke also tags `latest` and `sha256_<hex of the module>`.
    #[arg(long, value_enum, default_value_t = FormatArg::Yoke)]
    pub format: FormatArg,
    /// Extra tag to apply (repeatable).
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    pub tags: Vec<String>,
    /// Manifest annotation KEY=VALUE (repeatable; Kubewarden policies carry their metadata here).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Use plain http for this registry (loopback registries always use http).
    #[arg(long)]
    pub insecure: bool,
}

/// `hoist pull oci://REGISTRY/REPO[:TAG][@sha256:DIGEST] FILE`
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Source: oci://REGISTRY/REPO[:TAG][@sha256:DIGEST]; Yoke, Kubewarden and kpt formats.
    #[arg(value_name = "oci://REF")]
    pub reference: String,
    /// Where to write the module (`-` for stdout).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Overwrite FILE if it exists.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Use plain http for this registry (loopback registries always use http).
    #[arg(long)]
    pub insecure: bool,
    /// Do not touch the network: use the cache (a tag uses the digest it last resolved to).
    #[arg(long)]
    pub offline: bool,
    /// Download cache (default: $HOIST_CACHE_DIR/oci, else the user cache dir's hoist/oci).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the download cache.
    #[arg(long, conflicts_with_all = ["offline", "cache_dir"])]
    pub no_cache: bool,
    /// Cap on a manifest's size, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = hoist_oci::DEFAULT_MAX_MANIFEST_BYTES)]
    pub max_manifest_bytes: u64,
    /// Cap on a blob's size as stored (compressed), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = hoist_oci::DEFAULT_MAX_BLOB_BYTES)]
    pub max_blob_bytes: u64,
    /// Cap on the decompressed module, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = hoist_oci::DEFAULT_MAX_MODULE_BYTES)]
    pub max_module_bytes: u64,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs `hoist push`.
pub fn run_push(args: PushArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read the module {}", args.file.display()))?;
    if !wasm.starts_with(b"\0asm") {
        bail!(
            "{} is not a Wasm binary (no \\0asm header); build the module first (gzipped files must be decompressed)",
            args.file.display()
        );
    }
    let mut annotations = BTreeMap::new();
    for a in &args.annotations {
        let Some((k, v)) = a.split_once('=') else {
            bail!("--annotation '{a}' must be KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--annotation '{a}' has an empty key");
        }
        annotations.insert(k.to_string(), v.to_string());
    }
    let opts = PushOptions {
        format: args.format.into(),
        extra_tags: args.tags.clone(),
        insecure: args.insecure,
        annotations,
        file_name: args
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string),
    };
    eprintln!(
        "pushing {} ({} bytes) to {} as {}",
        args.file.display(),
        wasm.len(),
        args.reference,
        opts.format
    );
    let pushed = runtime()?
        .block_on(hoist_oci::push_module(&wasm, &args.reference, &opts))
        .with_context(|| {
            format!(
                "push of {} to {} failed",
                args.file.display(),
                args.reference
            )
        })?;
    eprintln!("tags: {}", pushed.tags.join(", "));
    println!("oci://{}", pushed.reference);
    Ok(())
}

/// Runs `hoist pull`.
pub fn run_pull(args: PullArgs) -> anyhow::Result<()> {
    let to_stdout = args.file == Path::new("-");
    if !to_stdout && !args.force && args.file.exists() {
        bail!(
            "{} already exists; pass -f/--force to overwrite it",
            args.file.display()
        );
    }
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir
            .clone()
            .or_else(hoist_modules::default_oci_cache_dir)
    };
    let opts = PullOptions {
        insecure: args.insecure,
        offline: args.offline,
        cache_dir,
        max_manifest_bytes: args.max_manifest_bytes,
        max_blob_bytes: args.max_blob_bytes,
        max_module_bytes: args.max_module_bytes,
    };
    let pulled = runtime()?
        .block_on(hoist_oci::pull_module(&args.reference, &opts))
        .with_context(|| format!("pull of {} failed", args.reference))?;
    if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(&pulled.wasm)
            .context("cannot write the module to stdout")?;
        out.flush().context("cannot write the module to stdout")?;
    } else {
        write_file(&args.file, &pulled.wasm, args.force)?;
    }
    eprintln!(
        "pulled {} ({} format, {} bytes{}) -> {}",
        pulled.resolved,
        pulled.format,
        pulled.wasm.len(),
        if pulled.from_cache {
            ", from cache"
        } else {
            ""
        },
        if to_stdout {
            "stdout".to_string()
        } else {
            args.file.display().to_string()
        }
    );
    Ok(())
}

/// Writes `data` to `path` atomically: a temporary file next to it, then a rename (or, without
/// `force`, a hard link, which fails instead of replacing an existing file).
fn write_file(path: &Path, data: &[u8], force: bool) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("module");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.hoist-pull-{}-{nanos}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        if force {
            std::fs::rename(&tmp, path)
        } else {
            std::fs::hard_link(&tmp, path)?;
            std::fs::remove_file(&tmp)
        }
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bail!(
                "{} already exists; pass -f/--force to overwrite it",
                path.display()
            );
        }
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}
