//! `hoist fn`: KRM functions, kpt-compatible (eval, render, source, sink, push, pull).

use crate::kubecontext::KubeTarget;
use std::process::ExitCode;

/// Arguments of `hoist fn`.
#[derive(clap::Args, Debug)]
pub struct FnArgs {
    /// Arguments (the verbs are being built; see issue 7).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `hoist fn`.
pub fn run(_args: FnArgs, _kube: &KubeTarget) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`hoist fn` is not implemented yet")
}
