//! `hoist policy`: Kubewarden admission policies (run, bench, annotate, inspect).

use crate::kubecontext::KubeTarget;
use std::process::ExitCode;

/// Arguments of `hoist policy`.
#[derive(clap::Args, Debug)]
pub struct PolicyArgs {
    /// Arguments (the verbs are being built; see issue 8).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `hoist policy`.
pub fn run(_args: PolicyArgs, _kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`hoist policy` is not implemented yet")
}
