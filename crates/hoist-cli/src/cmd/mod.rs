//! One module per group of subcommands.

pub mod atc;
pub mod cache;
pub mod krm;
pub mod oci;
pub mod policy;
pub mod release;
pub mod render;
pub mod sign;
