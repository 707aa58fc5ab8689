//! One module per group of subcommands.

pub mod cache;
pub mod oci;
pub mod release;
pub mod render;
pub mod sign;
