//! hoist-source
