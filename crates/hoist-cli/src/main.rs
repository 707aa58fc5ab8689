//! `hoist`: WebAssembly as the package format for Kubernetes.
//!
//! A thin binary: argument parsing and wiring over the library crates (see ARCHITECTURE.md).

mod cmd;
mod flight;
mod kubecontext;
mod module_args;

use clap::{Parser, Subcommand};
use kubecontext::KubeTarget;
use std::path::PathBuf;
use std::process::ExitCode;

/// Render, deploy and verify Kubernetes packages written as sandboxed WebAssembly modules.
#[derive(Parser, Debug)]
#[command(name = "hoist", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Path to the kubeconfig [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use [default: the current context].
    #[arg(long, global = true, value_name = "NAME")]
    kube_context: Option<String>,

    /// More detail on stderr (-v: steps and timings, -vv: debug). HOIST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a flight and print the resources it would apply, stage by stage.
    Render(cmd::render::RenderArgs),
    /// Inspect or clean the compiled-module cache.
    Cache(cmd::cache::CacheArgs),
    /// Sign a module (Yoke-compatible signature section inside the module).
    Sign(cmd::sign::SignArgs),
    /// Verify a module's signature against public keys.
    Verify(cmd::sign::VerifyArgs),
    /// Push a module to an OCI registry (Yoke, Kubewarden or kpt format).
    #[command(alias = "stow")]
    Push(cmd::oci::PushArgs),
    /// Pull a module from an OCI registry (any of the three formats).
    Pull(cmd::oci::PullArgs),
    /// Render a flight and deploy it as a new revision of a release.
    #[command(visible_aliases = ["up", "apply"])]
    Takeoff(cmd::release::TakeoffArgs),
    /// Roll a release back to a stored revision (no module is run).
    #[command(visible_aliases = ["down", "restore", "rollback"])]
    Descent(cmd::release::DescentArgs),
    /// Delete a release: its resources and its history.
    #[command(visible_alias = "delete")]
    Mayday(cmd::release::MaydayArgs),
    /// List releases, list a release's revisions, show one, or diff two.
    #[command(visible_aliases = ["inspect", "history"])]
    Blackbox(cmd::release::BlackboxArgs),
    /// Show drift between a release's stored state and the cluster; --fix re-applies.
    #[command(visible_aliases = ["drift", "diff"])]
    Turbulence(cmd::release::TurbulenceArgs),
    /// Remove a release's lock left behind by an interrupted takeoff.
    #[command(visible_alias = "unlock")]
    Unlatch(cmd::release::UnlatchArgs),
    /// Run KRM functions on packages as kpt does (eval, render, source, sink, push, pull).
    Fn(cmd::krm::FnArgs),
    /// Evaluate Kubewarden admission policies (run, bench, annotate, inspect).
    Policy(cmd::policy::PolicyArgs),
    /// Run the in-cluster controller (Yoke's ATC: Airways and Flights), or print its manifests.
    Atc(cmd::atc::AtcArgs),
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // hoist's own crates at the chosen level; dependencies (kube's client logs every failed
    // request as ERROR) only with -vv, so a failure prints one line of ours, not dozens.
    let ours = |level: &str| {
        [
            "hoist",
            "hoist_cli",
            "hoist_oci",
            "hoist_provenance",
            "hoist_release",
            "hoist_resources",
            "hoist_runtime",
            "hoist_source",
            "hoist_modules",
            "hoist_gojs",
            "hoist_krm",
            "hoist_policy",
            "hoist_atc",
        ]
        .iter()
        .map(|target| format!("{target}={level}"))
        .collect::<Vec<_>>()
        .join(",")
    };
    let default = match verbose {
        0 => format!("off,{}", ours("warn")),
        1 => format!("off,{}", ours("info")),
        _ => "debug".to_string(),
    };
    let filter = std::env::var("HOIST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // One TLS crypto provider for every client (kube, reqwest, OCI); insurance against two
    // providers being compiled in.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kube = KubeTarget {
        kubeconfig: cli.kubeconfig,
        context: cli.kube_context,
    };
    // Commands with their own exit codes (kpt's and kwctl's) return them; the rest succeed
    // or fail.
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Render(args) => ok(cmd::render::run(args, &kube)),
        Command::Cache(args) => ok(cmd::cache::run(args)),
        Command::Sign(args) => ok(cmd::sign::run_sign(args)),
        Command::Verify(args) => ok(cmd::sign::run_verify(args)),
        Command::Push(args) => ok(cmd::oci::run_push(args)),
        Command::Pull(args) => ok(cmd::oci::run_pull(args)),
        Command::Takeoff(args) => ok(cmd::release::run_takeoff(args, &kube)),
        Command::Descent(args) => ok(cmd::release::run_descent(args, &kube)),
        Command::Mayday(args) => ok(cmd::release::run_mayday(args, &kube)),
        Command::Blackbox(args) => ok(cmd::release::run_blackbox(args, &kube)),
        Command::Turbulence(args) => ok(cmd::release::run_turbulence(args, &kube)),
        Command::Unlatch(args) => ok(cmd::release::run_unlatch(args, &kube)),
        Command::Fn(args) => cmd::krm::run(args, &kube),
        Command::Policy(args) => cmd::policy::run(args, &kube),
        Command::Atc(args) => cmd::atc::run(args, &kube),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hoist: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// `--help` everywhere: clap's own consistency checks, and every visible argument of
    /// every command says what it does (an undocumented flag prints as a bare name).
    #[test]
    fn every_command_and_argument_has_help() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        let mut stack = vec![(String::from("hoist"), cli)];
        while let Some((path, command)) = stack.pop() {
            if command.get_about().is_none() && path != "hoist" {
                missing.push(format!("{path} (the command)"));
            }
            for arg in command.get_arguments() {
                if !arg.is_hide_set() && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                stack.push((format!("{path} {}", sub.get_name()), sub.clone()));
            }
        }
        assert!(missing.is_empty(), "undocumented: {missing:#?}");
    }
}
