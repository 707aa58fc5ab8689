//! One module pipeline for every guest kind (flights, KRM functions, policies, the
//! controller): source -> checksum / allow list / signature -> compiled-module cache -> engine.
#![warn(missing_docs)]
