//! Release commands: `takeoff`, `descent`, `mayday`, `blackbox`, `turbulence`, `unlatch`.
//!
//! Each builds its own multi-thread tokio runtime. Flights are rendered on the calling
//! thread outside the runtime (cluster lookups from the flight block on the runtime's
//! handle). Progress goes to stderr, data to stdout.

use crate::flight::{FlightArgs, render_flight, run_flight_raw};
use crate::kubecontext::KubeTarget;
use anyhow::{Context, bail};
use hoist_release::{
    Connection, DescentOptions, PruneOptions, ReleaseClusterAccess, ResourceMatcher, Source,
    TakeoffOptions, WaitOptions,
};
use hoist_runtime::host::ClusterAccess;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

macro_rules! short_time {
    ($time:expr) => {
        $time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    };
}

/// The global `--kubeconfig` / `--kube-context` flags.
pub type GlobalKube = KubeTarget;

/// When to colour diffs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// When stdout is a terminal and NO_COLOR is unset.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// Output format of `blackbox`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InspectFormat {
    /// Human-readable table (stages as YAML when showing one revision).
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Arguments of `hoist takeoff`.
#[derive(clap::Args, Debug)]
pub struct TakeoffArgs {
    /// Release name.
    #[arg(value_name = "RELEASE")]
    pub release: String,

    #[command(flatten)]
    pub flight: FlightArgs,

    #[command(flatten)]
    pub gate: crate::cmd::policy::GateArgs,

    /// Release namespace [default: the kubeconfig context's namespace, else `default`].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,

    /// Print the flight's raw output and stop (no cluster changes).
    #[arg(long)]
    pub stdout: bool,

    /// Accept a module whose content differs from what an earlier revision recorded for the
    /// same URL (digest pinning: http(s) URLs and OCI semver tags are pinned by default).
    #[arg(long)]
    pub allow_repin: bool,

    /// Server-side dry run only: nothing changes, no revision is recorded.
    #[arg(long)]
    pub dry: bool,

    /// Skip the server-side dry run before applying each stage.
    #[arg(long)]
    pub skip_dry_run: bool,

    /// Print the diff between the active revision and the new resources, and stop.
    #[arg(long)]
    pub diff_only: bool,

    /// Write the rendered resources to DIR/RELEASE/ (one file per object), or to stdout
    /// with `-`, and stop.
    #[arg(long, value_name = "DIR|-")]
    pub out: Option<String>,

    /// Take over fields owned by other field managers (server-side apply force).
    #[arg(long)]
    pub force_conflicts: bool,

    /// Take over objects owned by another release or by no release.
    #[arg(long)]
    pub force_ownership: bool,

    /// Hold the release lock during the takeoff (a concurrent locked takeoff fails).
    #[arg(long)]
    pub lock: bool,

    /// Create the release namespace if it does not exist.
    #[arg(long)]
    pub create_namespace: bool,

    /// Allow objects in namespaces other than the release namespace.
    #[arg(long)]
    pub cross_namespace: bool,

    /// Wait up to this long for every stage (including the last) to become ready
    /// [default: 30s between stages, no wait after the last; 0 never waits].
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,

    /// Readiness poll interval.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub poll: String,

    /// Revisions kept after a successful takeoff (0 keeps all).
    #[arg(long, value_name = "N", default_value_t = hoist_release::DEFAULT_HISTORY_CAP)]
    pub history_cap: usize,

    /// Delete CRDs that leave the release instead of orphaning them.
    #[arg(long)]
    pub remove_crds: bool,

    /// Delete Namespaces that leave the release instead of orphaning them.
    #[arg(long)]
    pub remove_namespaces: bool,

    /// Let the flight read the cluster (k8s_lookup, k8s_rest_mapping): objects of this
    /// release, plus those matched by --resource-access.
    #[arg(long)]
    pub cluster_access: bool,

    /// Extra objects the flight may read: [namespace/]Kind.group[:name], `*` wildcards
    /// (repeatable; implies --cluster-access).
    #[arg(long, value_name = "MATCHER")]
    pub resource_access: Vec<String>,

    /// Colour diffs.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Lines of context in diffs.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub context: usize,
}

/// Arguments of `hoist descent`.
#[derive(clap::Args, Debug)]
pub struct DescentArgs {
    /// Release name.
    #[arg(value_name = "RELEASE")]
    pub release: String,
    /// Revision to restore (1 is the oldest kept; see `hoist blackbox RELEASE`).
    #[arg(value_name = "REVISION")]
    pub revision: usize,
    /// Release namespace [default: the kubeconfig context's namespace].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Wait up to this long for every stage to become ready [default: 30s between stages].
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
    /// Readiness poll interval.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub poll: String,
    /// Hold the release lock.
    #[arg(long)]
    pub lock: bool,
    /// Delete CRDs that leave the release instead of orphaning them.
    #[arg(long)]
    pub remove_crds: bool,
    /// Delete Namespaces that leave the release instead of orphaning them.
    #[arg(long)]
    pub remove_namespaces: bool,
}

/// Arguments of `hoist mayday`.
#[derive(clap::Args, Debug)]
pub struct MaydayArgs {
    /// Release name.
    #[arg(value_name = "RELEASE")]
    pub release: String,
    /// Release namespace [default: the kubeconfig context's namespace].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Also delete the release's CRDs and Namespaces.
    #[arg(long)]
    pub remove_all: bool,
    /// Also delete the release's CRDs (otherwise orphaned).
    #[arg(long)]
    pub remove_crds: bool,
    /// Also delete the release's Namespaces (otherwise orphaned).
    #[arg(long)]
    pub remove_namespaces: bool,
}

/// Arguments of `hoist blackbox`.
#[derive(clap::Args, Debug)]
pub struct BlackboxArgs {
    /// Release to inspect [default: list releases].
    #[arg(value_name = "RELEASE")]
    pub release: Option<String>,
    /// Revision to show.
    #[arg(value_name = "REV")]
    pub revision: Option<usize>,
    /// Second revision: show the diff REV → REV-TO-DIFF.
    #[arg(value_name = "REV-TO-DIFF")]
    pub diff_to: Option<usize>,
    /// Namespace [default: the context's namespace for a release; all namespaces for the list].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = InspectFormat::Table)]
    pub output: InspectFormat,
    /// Colour diffs.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Lines of context in diffs.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub context: usize,
}

/// Arguments of `hoist turbulence`.
#[derive(clap::Args, Debug)]
pub struct TurbulenceArgs {
    /// Release name.
    #[arg(value_name = "RELEASE")]
    pub release: String,
    /// Release namespace [default: the kubeconfig context's namespace].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Re-apply (with force) the objects that drifted.
    #[arg(long)]
    pub fix: bool,
    /// Colour diffs.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Lines of context in diffs.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub context: usize,
}

/// Arguments of `hoist unlatch`.
#[derive(clap::Args, Debug)]
pub struct UnlatchArgs {
    /// Release name.
    #[arg(value_name = "RELEASE")]
    pub release: String,
    /// Release namespace [default: the kubeconfig context's namespace].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!("invalid {flag} {text:?}: use a duration such as 30s, 500ms or 2m")
    })
}

fn wait_options(wait: &Option<String>, poll: &str) -> anyhow::Result<WaitOptions> {
    let poll = duration("--poll", poll)?;
    if poll.is_zero() {
        bail!("--poll must be greater than zero");
    }
    Ok(WaitOptions {
        wait: wait.as_deref().map(|w| duration("--wait", w)).transpose()?,
        poll,
    })
}

fn progress() -> hoist_release::Progress {
    Arc::new(|line: &str| eprintln!("{line}"))
}

async fn connect(kube: &GlobalKube) -> anyhow::Result<Connection> {
    Ok(hoist_release::connect(kube.kubeconfig.as_deref(), kube.context.as_deref()).await?)
}

fn namespace_of(explicit: &Option<String>, kube: &GlobalKube) -> String {
    explicit.clone().unwrap_or_else(|| kube.default_namespace())
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Digest pinning: refuses a module whose URL an earlier revision of this release used with
/// other content (both digests in the message), unless `allow_repin`.
async fn check_digest_pin(
    conn: &Connection,
    release: &str,
    namespace: &str,
    module: &crate::flight::ModuleInfo,
    allow_repin: bool,
) -> anyhow::Result<()> {
    use hoist_release::pin::PinCheckError;
    let source = Source {
        url: module.url.clone(),
        checksum: module.sha1.clone(),
        sha256: Some(module.sha256.clone()),
    };
    match hoist_release::pin::check_digest_pin(conn, release, namespace, &source).await {
        Ok(_) => Ok(()),
        Err(PinCheckError::Changed(e)) if allow_repin => {
            eprintln!("warning: {e}; continuing because of --allow-repin");
            Ok(())
        }
        Err(PinCheckError::Changed(e)) => Err(anyhow::Error::new(e).context(format!(
            "digest pinning refused {} for release {release}: the module at that URL changed since an earlier revision; if the change is intended, re-run with --allow-repin",
            module.url
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Runs `hoist takeoff`.
pub fn run_takeoff(args: TakeoffArgs, kube: &GlobalKube) -> anyhow::Result<()> {
    let namespace = namespace_of(&args.namespace, kube);
    let release = args.release.clone();
    let matchers = args
        .resource_access
        .iter()
        .map(|m| m.parse::<ResourceMatcher>())
        .collect::<Result<Vec<_>, _>>()?;
    let cluster_access = args.cluster_access || !matchers.is_empty();
    let wait = wait_options(&args.wait, &args.poll)?;
    let rt = runtime()?;

    // Connect first only when the flight may read the cluster.
    let mut conn = None;
    let access: Option<Arc<dyn ClusterAccess>> = if cluster_access {
        let c = rt.block_on(connect(kube))?;
        let access = ReleaseClusterAccess::new(
            c.clone(),
            rt.handle().clone(),
            &release,
            &namespace,
            matchers,
        );
        conn = Some(c);
        Some(Arc::new(access))
    } else {
        None
    };

    if args.stdout {
        let raw = run_flight_raw(&args.flight, &release, &namespace, access)?;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&raw)?;
        stdout.flush()?;
        return Ok(());
    }

    // Policies load (and their settings are checked) before the flight runs.
    let gate = args.gate.load(&args.flight, &namespace)?;
    let rendered = render_flight(&args.flight, &release, &namespace, access)?;

    if let Some(out) = &args.out {
        let mut stages = rendered.stages.with_prestages();
        if let Some(gate) = &gate {
            // --out touches no cluster: every object is sent as a CREATE.
            let user = crate::cmd::policy::offline_user(kube);
            stages =
                crate::cmd::policy::gate_stages(gate, stages, &hoist_policy::gate::Offline, &user)?;
        }
        let mut stdout = std::io::stdout().lock();
        let written = hoist_release::write_out(&stages, &release, out, &mut stdout)?;
        stdout.flush()?;
        if out != "-" {
            eprintln!(
                "wrote {} file(s) under {}",
                written.len(),
                std::path::Path::new(out).join(&release).display()
            );
        }
        return Ok(());
    }

    let source = match &rendered.module {
        Some(m) => Source {
            url: m.url.clone(),
            checksum: m.sha1.clone(),
            sha256: Some(m.sha256.clone()),
        },
        None => Source::default(),
    };

    let (conn, stages) = rt.block_on(async {
        let conn = match conn {
            Some(c) => c,
            None => connect(kube).await?,
        };
        if let Some(module) = &rendered.module {
            check_digest_pin(&conn, &release, &namespace, module, args.allow_repin).await?;
        }
        let stages = hoist_release::prepare_stages(
            &conn,
            rendered.stages,
            &release,
            &namespace,
            args.cross_namespace,
        )
        .await?;
        anyhow::Ok((conn, stages))
    })?;
    // The gate runs on the objects as they would be applied (namespaces defaulted, ownership
    // marks added), before any dry run; it blocks on the runtime for its cluster lookups, so
    // it runs here, outside it.
    let (stages, policies) = match &gate {
        Some(gate) => {
            let user = rt
                .block_on(hoist_policy::kube::whoami(&conn))
                .unwrap_or_else(|e| {
                    tracing::warn!("cannot ask the API server who the user is ({e}); using the kubeconfig's user name");
                    crate::cmd::policy::offline_user(kube)
                });
            let view = hoist_policy::kube::KubeView::new(conn.clone(), rt.handle().clone());
            let stages = crate::cmd::policy::gate_stages(gate, stages, &view, &user)
                .with_context(|| format!("takeoff of {release} stopped by the policy gate"))?;
            (stages, Some(gate.annotation()))
        }
        None => (stages, None),
    };
    rt.block_on(async {
        if args.diff_only {
            let diff = hoist_release::diff_against_active(
                &conn,
                &release,
                &namespace,
                &stages,
                args.context,
                args.color.enabled(),
            )
            .await?;
            if diff.is_empty() {
                eprintln!("no differences from the active revision of {release}");
            }
            return print(&diff);
        }
        let mut opts = TakeoffOptions::new(&release, &namespace);
        opts.source = source;
        opts.dry_run = args.dry;
        opts.skip_dry_run = args.skip_dry_run;
        opts.force_conflicts = args.force_conflicts;
        opts.force_ownership = args.force_ownership;
        opts.cross_namespace = args.cross_namespace;
        opts.create_namespace = args.create_namespace;
        opts.lock = args.lock;
        opts.wait = wait;
        opts.history_cap = args.history_cap;
        opts.prune = PruneOptions {
            remove_crds: args.remove_crds,
            remove_namespaces: args.remove_namespaces,
        };
        opts.progress = progress();
        opts.policies = policies;
        let outcome = hoist_release::takeoff(&conn, &stages, &opts).await?;
        if outcome.dry_run {
            eprintln!("successful dry-run takeoff of {release} ({} objects)", stages.resource_count());
        } else if outcome.noop {
            eprintln!("{release} is up to date: resources are the same as the active revision, no new revision");
        } else if let Some(revision) = &outcome.revision {
            eprintln!(
                "successful takeoff of {release}: revision {} in namespace {namespace} ({} objects{}{})",
                revision.id,
                revision.resources,
                if outcome.pruned.is_empty() { String::new() } else { format!(", {} pruned", outcome.pruned.len()) },
                if outcome.orphaned.is_empty() { String::new() } else { format!(", {} orphaned", outcome.orphaned.len()) },
            );
        }
        Ok(())
    })
}

/// Runs `hoist descent`.
pub fn run_descent(args: DescentArgs, kube: &GlobalKube) -> anyhow::Result<()> {
    let namespace = namespace_of(&args.namespace, kube);
    let opts = DescentOptions {
        wait: wait_options(&args.wait, &args.poll)?,
        lock: args.lock,
        prune: PruneOptions {
            remove_crds: args.remove_crds,
            remove_namespaces: args.remove_namespaces,
        },
        progress: progress(),
        ..Default::default()
    };
    runtime()?.block_on(async {
        let conn = connect(kube).await?;
        let revision =
            hoist_release::descent(&conn, &args.release, &namespace, args.revision, &opts).await?;
        eprintln!(
            "successful descent of {} to revision {} ({} objects)",
            args.release, revision.id, revision.resources
        );
        Ok(())
    })
}

/// Runs `hoist mayday`.
pub fn run_mayday(args: MaydayArgs, kube: &GlobalKube) -> anyhow::Result<()> {
    let namespace = namespace_of(&args.namespace, kube);
    let prune = PruneOptions {
        remove_crds: args.remove_all || args.remove_crds,
        remove_namespaces: args.remove_all || args.remove_namespaces,
    };
    runtime()?.block_on(async {
        let conn = connect(kube).await?;
        let outcome = hoist_release::mayday(&conn, &args.release, &namespace, prune, &progress()).await?;
        if !outcome.found {
            eprintln!("mayday: nothing to do, no release {} in namespace {namespace}", args.release);
        } else {
            eprintln!(
                "deleted release {} from namespace {namespace}: {} object(s) removed, {} orphaned, {} revision(s) deleted",
                args.release,
                outcome.pruned.removed.len(),
                outcome.pruned.orphaned.len(),
                outcome.revisions
            );
        }
        Ok(())
    })
}

fn to_format(value: &impl serde::Serialize, format: InspectFormat) -> anyhow::Result<String> {
    Ok(match format {
        InspectFormat::Yaml => serde_saphyr::to_string(value)?,
        _ => format!("{}\n", serde_json::to_string_pretty(value)?),
    })
}

fn table(rows: Vec<Vec<String>>) -> String {
    let columns = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == columns {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs `hoist blackbox`.
pub fn run_blackbox(args: BlackboxArgs, kube: &GlobalKube) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let conn = connect(kube).await?;
        let Some(release_name) = &args.release else {
            let releases = hoist_release::list_releases(&conn, args.namespace.as_deref()).await?;
            if args.output != InspectFormat::Table {
                return print(&to_format(&releases, args.output)?);
            }
            if releases.is_empty() {
                eprintln!("no releases found");
                return Ok(());
            }
            let mut rows = vec![vec![
                "NAMESPACE".to_string(),
                "RELEASE".into(),
                "REVISIONS".into(),
                "ACTIVE".into(),
                "ACTIVE SINCE".into(),
                "RESOURCES".into(),
            ]];
            for r in &releases {
                rows.push(vec![
                    r.namespace.clone(),
                    r.name.clone(),
                    r.revisions.to_string(),
                    r.active
                        .as_ref()
                        .map(|a| a.id.to_string())
                        .unwrap_or_default(),
                    r.active
                        .as_ref()
                        .map(|a| short_time!(a.active_at))
                        .unwrap_or_default(),
                    r.active
                        .as_ref()
                        .map(|a| a.resources.to_string())
                        .unwrap_or_default(),
                ]);
            }
            return print(&table(rows));
        };
        let namespace = namespace_of(&args.namespace, kube);
        let release = hoist_release::load_release(&conn, release_name, &namespace).await?;
        if release.history.is_empty() {
            bail!("release {release_name} not found in namespace {namespace} (no revisions)");
        }
        let get = |id: usize| {
            release.revision(id).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "release {release_name} has no revision {id} (valid: 1 to {})",
                    release.history.len()
                )
            })
        };
        match (args.revision, args.diff_to) {
            (None, _) => {
                if args.output != InspectFormat::Table {
                    return print(&to_format(&release, args.output)?);
                }
                let active = release.active().map(|a| a.id);
                let gated = release.history.iter().any(|r| r.policies.is_some());
                let mut header = vec![
                    "ID".to_string(),
                    "CREATED".into(),
                    "ACTIVE SINCE".into(),
                    "RESOURCES".into(),
                    "SOURCE".into(),
                ];
                if gated {
                    header.push("POLICIES".into());
                }
                let mut rows = vec![header];
                for r in &release.history {
                    let marker = if Some(r.id) == active {
                        " (active)"
                    } else {
                        ""
                    };
                    let mut row = vec![
                        format!("{}{marker}", r.id),
                        short_time!(r.created_at),
                        short_time!(r.active_at),
                        r.resources.to_string(),
                        if r.source.url.is_empty() {
                            "stdin".to_string()
                        } else {
                            r.source.url.clone()
                        },
                    ];
                    if gated {
                        row.push(crate::cmd::policy::policies_summary(r.policies.as_deref()));
                    }
                    rows.push(row);
                }
                print(&table(rows))
            }
            (Some(id), None) => {
                let revision = get(id)?;
                let stages = hoist_release::revision_stages(&conn, &revision).await?;
                match args.output {
                    InspectFormat::Table | InspectFormat::Yaml => {
                        print(&hoist_resources::to_yaml(&stages))
                    }
                    InspectFormat::Json => print(&hoist_resources::to_json(&stages)),
                }
            }
            (Some(a), Some(b)) => {
                let (ra, rb) = (get(a)?, get(b)?);
                let sa = hoist_release::revision_stages(&conn, &ra).await?;
                let sb = hoist_release::revision_stages(&conn, &rb).await?;
                let diff = hoist_release::diff_stages(
                    &format!("revision {a}"),
                    &sa,
                    &format!("revision {b}"),
                    &sb,
                    args.context,
                    args.color.enabled(),
                );
                if diff.is_empty() {
                    eprintln!("revisions {a} and {b} are identical");
                }
                print(&diff)
            }
        }
    })
}

/// Runs `hoist turbulence`.
pub fn run_turbulence(args: TurbulenceArgs, kube: &GlobalKube) -> anyhow::Result<()> {
    let namespace = namespace_of(&args.namespace, kube);
    runtime()?.block_on(async {
        let conn = connect(kube).await?;
        let report = hoist_release::turbulence(
            &conn,
            &args.release,
            &namespace,
            args.fix,
            args.context,
            args.color.enabled(),
        )
        .await?;
        if report.drifted.is_empty() {
            eprintln!(
                "no turbulence detected: {} matches its active revision",
                args.release
            );
            return Ok(());
        }
        if args.fix {
            for object in &report.fixed {
                eprintln!("fixed drift of {object}");
            }
            return Ok(());
        }
        print(&report.diff)
    })
}

/// Runs `hoist unlatch`.
pub fn run_unlatch(args: UnlatchArgs, kube: &GlobalKube) -> anyhow::Result<()> {
    let namespace = namespace_of(&args.namespace, kube);
    runtime()?.block_on(async {
        let conn = connect(kube).await?;
        if hoist_release::unlatch(&conn, &args.release, &namespace).await? {
            eprintln!(
                "removed the lock of release {} in namespace {namespace}",
                args.release
            );
        } else {
            eprintln!(
                "release {} in namespace {namespace} was not locked",
                args.release
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_tables() {
        assert_eq!(duration("--wait", "0").unwrap(), Duration::ZERO);
        assert_eq!(
            duration("--wait", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert!(
            duration("--wait", "soon")
                .unwrap_err()
                .to_string()
                .contains("invalid --wait")
        );
        assert!(wait_options(&None, "0").is_err());
        let t = table(vec![
            vec!["A".into(), "BB".into()],
            vec!["ccc".into(), "d".into()],
        ]);
        assert_eq!(t, "A     BB\nccc   d\n");
    }
}
