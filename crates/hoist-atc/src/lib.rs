//! The in-cluster controller, compatible with Yoke's ATC: Airways, Flights and ClusterFlights
//! become releases; admission and conversion webhooks over TLS.
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::string_slice
    )
)]

pub mod children;
pub mod controller;
pub mod crds;
pub mod deploy;
pub mod lease;
pub mod manifests;
pub mod metrics;
pub mod modules;
pub mod run;
pub mod spec;
pub mod status;
pub mod template;
pub mod tls;
pub mod track;
pub mod webhook;

pub use run::{AtcConfig, AtcError, TlsFiles, run};
