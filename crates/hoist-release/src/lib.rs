//! hoist-release
