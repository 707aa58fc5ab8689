//! `hoist atc`: the in-cluster controller (Yoke's ATC), and its install manifests.
//!
//! Configuration as Yoke's ATC: every flag also reads Yoke's environment variable (`PORT`,
//! `KUBE`, `CONCURRENCY`, `CACHE_FS`, `MODULE_ALLOW_LIST`, `MODULE_VERIFICATION_KEYS_PATH`,
//! `TLS_CA_CERT`, `TLS_SERVER_CERT`, `TLS_SERVER_KEY`, `SVC_NAME`, `SVC_NAMESPACE`,
//! `SVC_PORT`). Without TLS files a self-signed CA is made at start; without a Service the
//! webhooks are reached at `--webhook-url` (a controller running outside the cluster).

use crate::kubecontext::KubeTarget;
use anyhow::{Context, bail};
use hoist_atc::modules::ModuleSettings;
use hoist_atc::template::WebhookTarget;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `hoist atc`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AtcArgs {
    #[command(subcommand)]
    command: Option<AtcCommand>,

    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand, Debug)]
enum AtcCommand {
    /// Print the manifests that install the controller in a cluster (ServiceAccount,
    /// ClusterRoleBinding, Service, Deployment), as YAML.
    Manifests(ManifestArgs),
}

#[derive(clap::Args, Debug)]
struct ManifestArgs {
    /// Release name: objects are named `<release>-atc...`.
    #[arg(long, default_value = "atc")]
    release: String,
    /// Namespace to install into.
    #[arg(long, short = 'n', default_value = "atc")]
    namespace: String,
    /// Container image that runs `hoist`.
    #[arg(long, default_value = "ghcr.io/hoist/hoist:latest")]
    image: String,
    /// Container port of the HTTPS server.
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Allow-list globs for modules (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    module_allow_list: Vec<String>,
    /// Concurrent reconciles.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Replicas; more than one runs them with leader election (a Lease).
    #[arg(long, default_value_t = 1)]
    replicas: u16,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Port of the HTTPS server (webhooks, /live, /ready, /metrics).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,

    /// Address to listen on [default: 127.0.0.1 with --webhook-url on a loopback address,
    /// else 0.0.0.0].
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,

    /// Kubeconfig to use (Yoke's KUBE); without one (and without --kubeconfig/KUBECONFIG) the
    /// in-cluster configuration.
    #[arg(long, env = "KUBE", value_name = "PATH")]
    kube: Option<PathBuf>,

    /// Concurrent reconciles per kind [default: number of CPUs].
    #[arg(long, env = "CONCURRENCY")]
    concurrency: Option<u16>,

    /// Compiled-module cache directory, shared with the CLI [default: the CLI's].
    #[arg(
        long = "cache-dir",
        env = "CACHE_FS",
        value_name = "DIR",
        alias = "cache-fs"
    )]
    cache_dir: Option<PathBuf>,

    /// Only run modules whose URL matches one of these globs (`*` stays within one `/`
    /// segment; comma-separated).
    #[arg(
        long,
        env = "MODULE_ALLOW_LIST",
        value_delimiter = ',',
        value_name = "GLOBS"
    )]
    module_allow_list: Vec<String>,

    /// JSON array of PEM public keys (Yoke's format), or a PEM file: every module must be
    /// signed by one of them (allow-listed modules too).
    #[arg(
        long,
        env = "MODULE_VERIFICATION_KEYS_PATH",
        value_name = "PATH",
        alias = "module-verification-keys-path"
    )]
    module_verification_keys: Option<PathBuf>,

    /// CA certificate (PEM) given to the API server as caBundle.
    #[arg(long, env = "TLS_CA_CERT", value_name = "PATH")]
    tls_ca_cert: Option<PathBuf>,
    /// Server certificate (PEM).
    #[arg(long, env = "TLS_SERVER_CERT", value_name = "PATH")]
    tls_server_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "TLS_SERVER_KEY", value_name = "PATH")]
    tls_server_key: Option<PathBuf>,

    /// Service the API server calls the webhooks through (in cluster).
    #[arg(long, env = "SVC_NAME")]
    svc_name: Option<String>,
    /// Namespace of that Service.
    #[arg(long, env = "SVC_NAMESPACE")]
    svc_namespace: Option<String>,
    /// Port of that Service.
    #[arg(long, env = "SVC_PORT", default_value_t = 80)]
    svc_port: u16,

    /// Base URL the API server calls the webhooks at, for a controller running outside the
    /// cluster (e.g. https://127.0.0.1:3000).
    #[arg(
        long,
        env = "HOIST_ATC_WEBHOOK_URL",
        value_name = "URL",
        conflicts_with = "svc_name"
    )]
    webhook_url: Option<String>,

    /// Run as one of several replicas: reconcile only while holding a coordination.k8s.io
    /// Lease (the others wait, serve /live, and answer /ready with 503 so a Service sends the
    /// webhook calls to the leader).
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease [default: POD_NAMESPACE, SVC_NAMESPACE, else `default`].
    #[arg(long, value_name = "NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, value_name = "NAME", default_value = "hoist-atc")]
    leader_election_id: String,
    /// How long a leader's Lease stays valid without a renewal: the longest a handover takes
    /// after the leader dies (renewed every third of it).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: std::time::Duration,
    /// This replica's identity in the Lease [default: HOSTNAME (the pod name) plus the
    /// process id].
    #[arg(long, value_name = "ID")]
    leader_identity: Option<String>,
}

/// Runs `hoist atc`.
pub fn run(args: AtcArgs, kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(AtcCommand::Manifests(m)) => print_manifests(m),
        None => run_controller(args.run, kube),
    }
}

fn print_manifests(args: ManifestArgs) -> anyhow::Result<ExitCode> {
    let objects = hoist_atc::manifests::install_manifests(&hoist_atc::manifests::InstallOptions {
        release: args.release,
        namespace: args.namespace,
        image: args.image,
        port: args.port,
        module_allow_list: args.module_allow_list,
        concurrency: args.concurrency,
        replicas: args.replicas,
    });
    let yaml =
        serde_saphyr::to_string_multiple(&objects).context("writing the manifests as YAML")?;
    print!("{yaml}");
    Ok(ExitCode::SUCCESS)
}

/// Yoke's `MODULE_VERIFICATION_KEYS_PATH` holds a JSON array of PEM strings; a plain PEM file
/// (one or more keys) is accepted too.
fn read_keys(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the module verification keys {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        let keys: Vec<String> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a JSON array of PEM public keys (Yoke's MODULE_VERIFICATION_KEYS_PATH format)",
                path.display()
            )
        })?;
        return Ok(keys);
    }
    let mut keys = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END ") {
            keys.push(std::mem::take(&mut current));
        }
    }
    if keys.is_empty() {
        bail!("{} holds no PEM public key", path.display());
    }
    Ok(keys)
}

fn is_loopback_url(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url);
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

fn run_controller(args: RunArgs, kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    let target = match (&args.webhook_url, &args.svc_name, &args.svc_namespace) {
        (Some(url), _, _) => {
            if !url.starts_with("https://") {
                bail!(
                    "--webhook-url {url:?} must be an https:// URL (the API server only calls webhooks over TLS)"
                );
            }
            WebhookTarget::Url(url.clone())
        }
        (None, Some(name), Some(namespace)) => WebhookTarget::Service {
            name: name.clone(),
            namespace: namespace.clone(),
            port: args.svc_port,
        },
        _ => bail!(
            "the API server needs an address for the webhooks: pass --webhook-url https://HOST:PORT (controller outside the cluster) or --svc-name and --svc-namespace (SVC_NAME, SVC_NAMESPACE in cluster)"
        ),
    };
    let listen = args.listen.unwrap_or_else(|| {
        let loopback = matches!(&target, WebhookTarget::Url(u) if is_loopback_url(u));
        let ip = if loopback {
            [127, 0, 0, 1]
        } else {
            [0, 0, 0, 0]
        };
        SocketAddr::from((ip, args.port))
    });
    let tls = match (
        &args.tls_ca_cert,
        &args.tls_server_cert,
        &args.tls_server_key,
    ) {
        (Some(ca), Some(cert), Some(key)) => Some(hoist_atc::TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, None) => None,
        _ => bail!(
            "give all three of --tls-ca-cert, --tls-server-cert and --tls-server-key (TLS_CA_CERT, TLS_SERVER_CERT, TLS_SERVER_KEY), or none to make a self-signed CA"
        ),
    };
    let verification_keys = match &args.module_verification_keys {
        Some(path) => read_keys(path)?,
        None => Vec::new(),
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency = args
        .concurrency
        .unwrap_or_else(|| u16::try_from(cpus).unwrap_or(u16::MAX))
        .max(1);
    let config = hoist_atc::AtcConfig {
        listen,
        target,
        tls,
        modules: ModuleSettings {
            allow: args.module_allow_list.clone(),
            verification_keys,
            cache_dir: args
                .cache_dir
                .clone()
                .or_else(hoist_runtime::ModuleCache::default_dir),
            oci_cache_dir: hoist_runtime::ModuleCache::default_dir()
                .and_then(|dir| dir.parent().map(|root| root.join("oci"))),
        },
        concurrency,
        leader_election: args.leader_elect.then(|| hoist_atc::lease::LeaseSettings {
            namespace: args
                .leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .or_else(|| args.svc_namespace.clone())
                .unwrap_or_else(|| "default".into()),
            name: args.leader_election_id.clone(),
            identity: args.leader_identity.clone().unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hoist-atc".into());
                format!("{host}_{}", std::process::id())
            }),
            duration: args.lease_duration,
        }),
    };
    if args.lease_duration < std::time::Duration::from_secs(1) {
        bail!(
            "--lease-duration {:?} is too short: the Lease records whole seconds (use at least 1s)",
            args.lease_duration
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let kubeconfig = args.kube.clone().or_else(|| kube.kubeconfig.clone());
        let in_cluster = kubeconfig.is_none()
            && std::env::var_os("KUBECONFIG").is_none()
            && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let conn = if in_cluster {
            hoist_release::atc_support::connect_in_cluster()?
        } else {
            hoist_release::connect(kubeconfig.as_deref(), kube.context.as_deref()).await?
        };
        eprintln!(
            "hoist atc: controller for {} (webhooks on https://{listen})",
            conn.server()
        );
        hoist_atc::run(conn, config, hoist_atc::run::shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_yoke_json_or_pem() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("keys.json");
        std::fs::write(
            &json,
            r#"["-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\n"]"#,
        )
        .unwrap();
        assert_eq!(read_keys(&json).unwrap().len(), 1);
        let pem = dir.path().join("keys.pem");
        std::fs::write(&pem, "-----BEGIN PUBLIC KEY-----\nA\n-----END PUBLIC KEY-----\n-----BEGIN PUBLIC KEY-----\nB\n-----END PUBLIC KEY-----\n").unwrap();
        assert_eq!(read_keys(&pem).unwrap().len(), 2);
        std::fs::write(&pem, "nothing").unwrap();
        assert!(
            read_keys(&pem)
                .unwrap_err()
                .to_string()
                .contains("no PEM public key")
        );
        assert!(is_loopback_url("https://127.0.0.1:3000"));
        assert!(!is_loopback_url("https://atc.example:3000"));
    }
}
