//! Property test (issue 11): push -> pull of random bytes through the REAL registry gives
//! the same bytes, in each of the three layouts (Yoke, Kubewarden, kpt).
//!
//! Inputs are a valid Wasm header followed by a random payload, of random sizes from the bare
//! header up to a few MiB, plus payloads that look like custom sections (so Kubewarden's
//! metadata reader and kpt's tar writer see section-shaped bytes). The case count is small so
//! the test stays fast; the seed is printed and can be replayed with `HOIST_PROPS_SEED=N`.
//!
//! Environment: `HOIST_TEST_REGISTRY` (a plain-http registry on 127.0.0.1, started by
//! `scripts/test` or `eval "$(scripts/registry start)"`). Without it the test skips, or fails
//! under `CI=true`.

use std::time::{SystemTime, UNIX_EPOCH};

use hoist_oci::{ModuleFormat, PullOptions, PushOptions, pull_module, push_module};
use sha2::{Digest, Sha256};

fn registry() -> Option<String> {
    match std::env::var("HOIST_TEST_REGISTRY") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "HOIST_TEST_REGISTRY is not set: start a registry with \
                     `eval \"$(scripts/registry start)\"` (scripts/test does)"
                );
            }
            eprintln!(
                "SKIP: HOIST_TEST_REGISTRY is not set (start one with scripts/registry start)"
            );
            None
        }
    }
}

/// SplitMix64: small, seedable, good enough to spread sizes and bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Random bytes, fewer than `n` of them.
    fn some_bytes(&mut self, n: u64) -> Vec<u8> {
        let len = self.below(n) as usize;
        self.bytes(len)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// A Wasm header (magic and version 1) followed by `payload`.
fn with_header(payload: &[u8]) -> Vec<u8> {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    wasm.extend_from_slice(payload);
    wasm
}

/// A custom section `name` holding `body`, with LEB128 sizes.
fn custom_section(name: &[u8], body: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(body);
    let mut out = vec![0u8];
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// The cases: fixed edge sizes plus random ones, each with random bytes.
fn cases(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut cases = vec![
        ("bare header".to_string(), with_header(&[])),
        ("header + 1 byte".to_string(), with_header(&rng.bytes(1))),
    ];
    for _ in 0..2 {
        let len = rng.below(4096) as usize;
        cases.push((format!("{len} random bytes"), with_header(&rng.bytes(len))));
    }
    // Section-shaped: a Kubewarden metadata section with random (mostly non-JSON) bytes,
    // and one with JSON annotations, then random trailing bytes.
    let junk = rng.some_bytes(300);
    let mut shaped = custom_section(b"io.kubewarden.metadata", &junk);
    shaped.extend_from_slice(&rng.some_bytes(200));
    cases.push(("random metadata section".to_string(), with_header(&shaped)));
    let meta = br#"{"annotations":{"io.kubewarden.policy.title":"props"}}"#;
    let mut shaped = custom_section(b"io.kubewarden.metadata", meta);
    shaped.extend_from_slice(&rng.some_bytes(64));
    cases.push(("JSON metadata section".to_string(), with_header(&shaped)));
    let len = (1 << 20) + rng.below(2 << 20) as usize;
    cases.push((
        format!("{len} random bytes (MiB)"),
        with_header(&rng.bytes(len)),
    ));
    cases
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_random_bytes_gives_the_same_bytes_in_every_layout() {
    let Some(reg) = registry() else { return };
    let seed = std::env::var("HOIST_PROPS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("props: seed {seed} (replay with HOIST_PROPS_SEED={seed})");
    let mut rng = Rng(seed);
    let cases = cases(&mut rng);
    let cache = tempfile::tempdir().expect("temp dir");
    let run = format!("{}-{seed}", std::process::id());
    let mut checked = 0;
    for format in [
        ModuleFormat::Yoke,
        ModuleFormat::Kubewarden,
        ModuleFormat::Kpt,
    ] {
        for (i, (what, wasm)) in cases.iter().enumerate() {
            let context = format!("seed {seed}, {format} layout, case {i} ({what})");
            let reference = format!("oci://{reg}/hoist-props/{format}-{run}:case-{i}");
            let pushed = push_module(
                wasm,
                &reference,
                &PushOptions {
                    format,
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{context}: push {reference}: {e}"));

            // By tag, without a cache: every byte crosses the registry.
            let pulled = pull_module(&reference, &PullOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{context}: pull {reference}: {e}"));
            assert_eq!(pulled.format, format, "{context}: pulled layout");
            assert_eq!(
                sha(&pulled.wasm),
                sha(wasm),
                "{context}: pulled bytes differ (len {} vs {})",
                pulled.wasm.len(),
                wasm.len()
            );
            assert_eq!(&pulled.wasm, wasm, "{context}");

            // By the digest the push reported, through a cache: the first pull downloads and
            // stores, the second answers from the cache; both give the same bytes.
            let opts = PullOptions {
                cache_dir: Some(cache.path().to_path_buf()),
                ..Default::default()
            };
            let pinned = format!("oci://{}", pushed.reference);
            for round in ["first", "cached"] {
                let again = pull_module(&pinned, &opts)
                    .await
                    .unwrap_or_else(|e| panic!("{context}: {round} pull of {pinned}: {e}"));
                assert_eq!(again.wasm, *wasm, "{context}: {round} pull of {pinned}");
                assert_eq!(again.from_cache, round == "cached", "{context}: {round}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * cases.len());
}
