//! One module per group of subcommands.

pub mod cache;
pub mod oci;
pub mod render;
pub mod sign;
pub mod release;
