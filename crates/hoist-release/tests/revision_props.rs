//! Property test (issue 11): a revision Secret encodes and decodes back to the same stages
//! and metadata, in Yoke's format, with both compressions Yoke has written (gzipped JSON, and
//! the plain JSON of older Yoke), nested `[][]object` and the oldest flat `[]object`, and after
//! the Secret crosses the Kubernetes API as JSON (base64 data).
//!
//! Objects are random JSON full of strings that look like other types, unicode, escapes and
//! extreme numbers. The seed is printed; replay a failure with `HOIST_PROPS_SEED=N`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use hoist_release::state::{
    ANNOTATION_RESOURCES, KEY_RESOURCES, Source, decode_stages, encode_stages, format_time,
    parse_time, revision_from_secret, revision_secret, stages_from_secret,
};
use hoist_resources::{Resource, Stages};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Map, Value};

const CASES: usize = 1000;

/// SplitMix64: small, seedable, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TRICKY: &[&str] = &[
    "",
    "yes",
    "No",
    "on",
    "~",
    "null",
    "true",
    "0755",
    "0x1F",
    "1e3",
    ".inf",
    "-",
    "a: b",
    "#x",
    "\"",
    "\\",
    "'q'",
    "&a",
    "*a",
    "---",
    "2026-11-30",
    " lead",
    "trail ",
    "multi\nline\n",
    "tab\there",
    "\u{0}",
    "\u{1f}",
    "\u{7f}",
    "é",
    "日本",
    "🦀",
    "\u{feff}bom",
    "\u{2028}",
    "</script>",
    "{\"json\":1}",
    "[1,2]",
];

fn string(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => (*rng.pick(TRICKY)).to_string(),
        1 => {
            // Random printable ASCII.
            let len = rng.below(16);
            (0..len)
                .map(|_| char::from(b' ' + rng.below(95) as u8))
                .collect()
        }
        _ => {
            // Random scalar values, any plane.
            let len = rng.below(6);
            (0..len)
                .filter_map(|_| char::from_u32(rng.below(0x11_0000) as u32))
                .collect()
        }
    }
}

fn number(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => Value::from(rng.next() as i64),
        1 => Value::from(rng.next()),
        2 => Value::from(rng.below(1000) as i64 - 500),
        3 => Value::from(f64::from_bits(rng.next())), // NaN/inf become null, as in JSON
        4 => Value::from((rng.next() as i64) as f64 / 1e6),
        _ => rng_pick_number(rng),
    }
}

/// Numbers at the edges of JSON and f64 (including one serde_json once failed to round trip).
fn rng_pick_number(rng: &mut Rng) -> Value {
    let fixed = [
        Value::from(0.1),
        Value::from(-0.0),
        Value::from(f64::MAX),
        Value::from(f64::MIN_POSITIVE),
        Value::from(5e-324),
        Value::from(3.352_771_243_709_564_2e-40),
        Value::from(9_007_199_254_740_993u64),
        Value::from(i64::MIN),
        Value::from(u64::MAX),
    ];
    rng.pick(&fixed).clone()
}

fn value(rng: &mut Rng, depth: usize) -> Value {
    let leaf_only = depth == 0;
    match rng.below(if leaf_only { 4 } else { 6 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => number(rng),
        3 => Value::String(string(rng)),
        4 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        _ => Value::Object(
            (0..rng.below(4))
                .map(|_| (string(rng), value(rng, depth - 1)))
                .collect::<Map<_, _>>(),
        ),
    }
}

fn resource(rng: &mut Rng, serial: usize) -> Resource {
    let mut map = Map::new();
    for _ in 0..rng.below(4) {
        map.insert(string(rng), value(rng, 3));
    }
    let kinds = [
        "ConfigMap",
        "Namespace",
        "CustomResourceDefinition",
        "Deployment",
    ];
    let kind = if rng.below(3) == 0 {
        let s = string(rng);
        if s.is_empty() { "X".to_string() } else { s }
    } else {
        (*rng.pick(&kinds)).to_string()
    };
    map.insert("kind".into(), Value::String(kind));
    map.insert("apiVersion".into(), Value::String(string(rng)));
    let mut metadata = Map::new();
    metadata.insert(
        "name".into(),
        Value::String(format!("o{serial}-{}", string(rng))),
    );
    if rng.below(2) == 0 {
        metadata.insert("namespace".into(), Value::String(string(rng)));
    }
    if rng.below(3) == 0 {
        metadata.insert("labels".into(), value(rng, 2));
    }
    map.insert("metadata".into(), Value::Object(metadata));
    Resource::from_value(Value::Object(map)).expect("the object has a kind")
}

fn stages(rng: &mut Rng) -> Stages {
    let mut serial = 0;
    Stages(
        (0..rng.below(4))
            .map(|_| {
                (0..rng.below(5))
                    .map(|_| {
                        serial += 1;
                        resource(rng, serial)
                    })
                    .collect()
            })
            .collect(),
    )
}

fn time(rng: &mut Rng) -> DateTime<Utc> {
    // 1970 .. 2200, with any nanosecond (Go's RFC3339Nano keeps them).
    let secs = rng.below(7_258_118_400) as i64;
    let nanos = match rng.below(3) {
        0 => 0,
        1 => rng.below(1000) as u32 * 1_000_000,
        _ => rng.below(1_000_000_000) as u32,
    };
    Utc.timestamp_opt(secs, nanos)
        .single()
        .expect("in range by construction")
}

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(level));
    encoder.write_all(data).expect("write to a Vec");
    encoder.finish().expect("finish a Vec")
}

/// The Secret as the API server stores and returns it: JSON with base64 data.
fn through_api(secret: &Secret) -> Secret {
    let json = serde_json::to_vec(secret).expect("a Secret serialises");
    serde_json::from_slice(&json).expect("a Secret deserialises")
}

fn with_data(secret: &Secret, data: Vec<u8>) -> Secret {
    let mut copy = secret.clone();
    copy.data = Some([(KEY_RESOURCES.to_string(), ByteString(data))].into());
    copy
}

fn seed() -> u64 {
    let seed = std::env::var("HOIST_PROPS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("revision_props: seed {seed} (replay with HOIST_PROPS_SEED={seed})");
    seed
}

#[test]
fn revision_secret_round_trips_in_every_form_yoke_writes() {
    let seed = seed();
    let mut rng = Rng(seed);
    for case in 0..CASES {
        let context = format!("seed {seed}, case {case}");
        let stages = stages(&mut rng);
        let release = format!("rel-{}", string(&mut rng));
        let namespace = format!("ns{}", rng.below(100));
        let source = Source {
            url: string(&mut rng),
            checksum: format!("{:040x}", rng.next()),
            sha256: (rng.below(2) == 0).then(|| format!("{:064x}", rng.next())),
        };
        let created_at = time(&mut rng);

        // The Secret hoist writes (gzip, as Yoke), after a trip through the API as JSON.
        let secret = through_api(&revision_secret(
            &release, &namespace, &source, created_at, &stages,
        ));
        assert_eq!(
            stages_from_secret(&secret).as_ref().ok(),
            Some(&stages),
            "{context}: gzip Secret"
        );
        let revision = revision_from_secret(&secret, "fallback")
            .unwrap_or_else(|e| panic!("{context}: revision metadata: {e}"));
        assert_eq!(revision.release, release, "{context}");
        assert_eq!(revision.namespace, namespace, "{context}");
        assert_eq!(revision.source, source, "{context}");
        assert_eq!(revision.created_at, created_at, "{context}: created-at");
        assert_eq!(revision.active_at, created_at, "{context}: active-at");
        assert_eq!(revision.resources, stages.resource_count(), "{context}");
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get(ANNOTATION_RESOURCES),
            Some(&stages.resource_count().to_string()),
            "{context}"
        );
        assert_eq!(parse_time(&format_time(created_at)), Some(created_at));

        // encode -> decode directly, and encoding is deterministic.
        let encoded = encode_stages(&stages);
        assert!(encoded.starts_with(&[0x1f, 0x8b]), "{context}: gzip magic");
        assert_eq!(decode_stages(&encoded).as_ref(), Ok(&stages), "{context}");
        assert_eq!(encoded, encode_stages(&stages), "{context}: deterministic");

        // Plain JSON (older Yoke), and gzip at any level another writer may use.
        let json = serde_json::to_vec(&stages).expect("stages serialise");
        let plain = through_api(&with_data(&secret, json.clone()));
        assert_eq!(
            stages_from_secret(&plain).as_ref().ok(),
            Some(&stages),
            "{context}: plain JSON Secret"
        );
        let level = rng.below(10) as u32;
        let other = through_api(&with_data(&secret, gzip(&json, level)));
        assert_eq!(
            stages_from_secret(&other).as_ref().ok(),
            Some(&stages),
            "{context}: gzip level {level}"
        );

        // The oldest flat `[]object` form, plain and gzipped, is one stage.
        if let Some(first) = stages.0.first().filter(|s| !s.is_empty()) {
            let flat = serde_json::to_vec(first).expect("a stage serialises");
            let one = Stages(vec![first.clone()]);
            assert_eq!(decode_stages(&flat).as_ref(), Ok(&one), "{context}: flat");
            assert_eq!(
                decode_stages(&gzip(&flat, 6)).as_ref(),
                Ok(&one),
                "{context}: flat gzip"
            );
        }
    }
}

#[test]
fn a_damaged_revision_secret_is_an_error_never_a_panic_or_other_stages() {
    let seed = seed();
    let mut rng = Rng(seed ^ 0x5eed);
    for case in 0..CASES {
        let context = format!("seed {seed}, case {case}");
        let stages = stages(&mut rng);
        let mut encoded = encode_stages(&stages);
        // Truncate the gzip stream anywhere after the magic, or flip one byte of its body.
        if rng.below(2) == 0 {
            let keep = 2 + rng.below(encoded.len().saturating_sub(10).max(1));
            encoded.truncate(keep);
            assert!(
                decode_stages(&encoded).is_err(),
                "{context}: a gzip stream cut at {keep} bytes decoded"
            );
        } else {
            // Bytes 10.. are the deflate body and the CRC-32/length trailer: any change there
            // is caught by deflate or the CRC, so the result is never different stages.
            let at = 10 + rng.below(encoded.len() - 10);
            encoded[at] ^= 1 << rng.below(8);
            if let Ok(decoded) = decode_stages(&encoded) {
                assert_eq!(
                    decoded, stages,
                    "{context}: a flipped byte {at} decoded differently"
                );
            }
        }
    }
}
