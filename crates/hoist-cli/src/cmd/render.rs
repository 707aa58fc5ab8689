//! `hoist render`: run a flight and print the stages it would apply.

use crate::flight::{FlightArgs, render_for_output};
use crate::kubecontext::KubeTarget;
use std::io::Write;

/// Output formats for data.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataFormat {
    /// Multi-document YAML, a comment line opening each stage.
    #[default]
    Yaml,
    /// JSON: an array of stages, each an array of objects.
    Json,
}

/// Arguments of `hoist render`.
#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// Release name: the flight's argv[0] and YOKE_RELEASE [default: the module's file stem].
    #[arg(long, short = 'r', value_name = "NAME")]
    pub release: Option<String>,

    /// Release namespace [default: the kubeconfig context's namespace, else `default`].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = DataFormat::Yaml)]
    pub output: DataFormat,

    #[command(flatten)]
    pub flight: FlightArgs,

    #[command(flatten)]
    pub gate: crate::cmd::policy::GateArgs,
}

/// Runs `hoist render`.
pub fn run(args: RenderArgs, kube: &KubeTarget) -> anyhow::Result<()> {
    let release = args
        .release
        .clone()
        .unwrap_or_else(|| args.flight.default_release_name());
    let namespace = match &args.namespace {
        Some(ns) => ns.clone(),
        None => kube.default_namespace(),
    };
    // Policies load (and their settings are checked) before the flight runs.
    let gate = args.gate.load(&args.flight, &namespace)?;
    let rendered = render_for_output(&args.flight, &release, &namespace)?;
    let mut stages = rendered.stages.with_prestages();
    if let Some(gate) = &gate {
        // No cluster: every object is sent as a CREATE.
        let user = crate::cmd::policy::offline_user(kube);
        stages =
            crate::cmd::policy::gate_stages(gate, stages, &hoist_policy::gate::Offline, &user)?;
    }
    let text = match args.output {
        DataFormat::Yaml => hoist_resources::to_yaml(&stages),
        DataFormat::Json => hoist_resources::to_json(&stages),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
