//! Replays every saved fuzz input (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`)
//! through the same target bodies cargo-fuzz runs, on stable, as part of the normal suite:
//! a bug the fuzzers found and that was fixed stays fixed.

use std::path::{Path, PathBuf};
use std::time::Instant;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let body = hoist_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, body)| *body)
        .unwrap_or_else(|| panic!("no target {target}"));
    let corpus = inputs("corpus", target);
    let regressions = inputs("regressions", target);
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ is empty: seed it with `scripts/fuzz --seed` (see FUZZING.md)"
    );
    let start = Instant::now();
    for path in corpus.iter().chain(&regressions) {
        let data = match std::fs::read(path) {
            Ok(data) => data,
            // A fuzzer running on this corpus (scripts/fuzz) replaces files as it goes.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let outcome = std::panic::catch_unwind(|| body(&data));
        if outcome.is_err() {
            panic!(
                "{target}: input {} fails (reproduce: cargo +nightly fuzz run {target} {} in fuzz/)",
                path.display(),
                path.display()
            );
        }
    }
    eprintln!(
        "{target}: replayed {} corpus and {} regression inputs in {:?}",
        corpus.len(),
        regressions.len(),
        start.elapsed()
    );
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { replay(stringify!($name)); })*
    };
}

replay_tests!(
    wasm_sections,
    signature_payload,
    allow_url,
    checksum_infer,
    oci_manifest,
    oci_reference,
    oci_layer,
    flight_output,
    release_secret,
    kubeconfig,
);

#[cfg(feature = "wasm")]
replay_tests!(
    krm_resource_list,
    krm_package,
    policy_admission,
    gojs_values,
    opa_bridge,
);

#[test]
fn every_target_has_a_replay_test_and_a_wrapper() {
    let wrappers = fuzz_dir().join("fuzz_targets");
    for (name, _) in hoist_fuzz::TARGETS {
        let wrapper = wrappers.join(format!("{name}.rs"));
        assert!(wrapper.is_file(), "missing {}", wrapper.display());
    }
    let expected = if cfg!(feature = "wasm") { 15 } else { 10 };
    assert_eq!(
        hoist_fuzz::TARGETS.len(),
        expected,
        "add new targets to replay_tests!"
    );
}
