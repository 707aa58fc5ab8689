//! KRM functions as kpt runs them: ResourceLists, Kptfile pipelines, `fn eval` and `fn render`.
#![warn(missing_docs)]
