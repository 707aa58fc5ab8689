//! Property tests: signing then verifying succeeds for every key type, on arbitrary
//! well-framed modules, and any single-byte change outside the signature section makes
//! verification fail.

use std::path::Path;

use hoist_provenance::signature::{self, KeySet, SECTION_NAME, SigningKey, section};
use proptest::prelude::*;

const KEYS: [&str; 5] = [
    "test-rsa2048.pkcs8.pem",
    "test-p256.pkcs8.pem",
    "test-p384.pkcs8.pem",
    "test-p521.pkcs8.pem",
    "test-ed25519.pkcs8.pem",
];

fn key(name: &str) -> (SigningKey, KeySet) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/keys")
        .join(name);
    let signing = SigningKey::from_pem_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut keys = KeySet::new();
    keys.insert(signing.verifying_key().clone(), None);
    (signing, keys)
}

/// A module with the Wasm preamble and arbitrary sections (custom ones with arbitrary names,
/// never the signature's), framed correctly.
fn module() -> impl Strategy<Value = Vec<u8>> {
    let section = (
        0u8..13,
        "[a-z.:]{0,12}",
        prop::collection::vec(any::<u8>(), 0..64),
    );
    prop::collection::vec(section, 0..6).prop_map(|sections| {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        for (id, name, payload) in sections {
            if id == 0 {
                m = section::append_custom_section(&m, name.as_bytes(), &payload).unwrap();
            } else {
                m.push(id);
                section::write_u32(&mut m, payload.len() as u32);
                m.extend_from_slice(&payload);
            }
        }
        m
    })
}

fn signature_range(signed: &[u8]) -> std::ops::Range<usize> {
    section::scan(signed)
        .unwrap()
        .into_iter()
        .find(|s| {
            s.custom
                .as_ref()
                .is_some_and(|c| c.name == SECTION_NAME.as_bytes())
        })
        .map(|s| s.range)
        .expect("a signed module has a signature section")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sign_then_verify_for_every_key_type(
        module in module(),
        which in 0..KEYS.len(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let (signing, keys) = key(KEYS[which]);
        let signed = signature::sign(&module, &signing).unwrap();
        let verified = signature::verify(&signed, &keys);
        prop_assert!(verified.is_ok(), "{}: {:?}", KEYS[which], verified.err());
        // Signing is idempotent on the content: the unsigned part is the module.
        prop_assert_eq!(signature::strip_signature(&signed).unwrap().unsigned, module.clone());

        // One byte changed outside the signature section: verification must fail.
        let sig = signature_range(&signed);
        let outside: Vec<usize> = (0..signed.len()).filter(|i| !sig.contains(i)).collect();
        let i = outside[at.index(outside.len())];
        let mut tampered = signed.clone();
        tampered[i] ^= flip;
        prop_assert!(
            signature::verify(&tampered, &keys).is_err(),
            "{}: byte {} ^ {:#x} still verifies",
            KEYS[which],
            i,
            flip
        );
    }
}
