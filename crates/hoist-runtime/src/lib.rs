//! hoist-runtime
