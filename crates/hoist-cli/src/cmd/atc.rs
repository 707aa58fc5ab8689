//! `hoist atc`: the in-cluster controller (Yoke's ATC), and its install manifests.

use crate::kubecontext::KubeTarget;
use std::process::ExitCode;

/// Arguments of `hoist atc`.
#[derive(clap::Args, Debug)]
pub struct AtcArgs {
    /// Arguments (the controller is being built; see issue 9).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `hoist atc`.
pub fn run(_args: AtcArgs, _kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`hoist atc` is not implemented yet")
}
