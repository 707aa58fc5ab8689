//! Targets for the crates that do not link wasmtime.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use hoist_provenance::allow::{AllowList, normalize_url};
use hoist_provenance::checksum::{Sha256Digest, infer_from_location};
use hoist_provenance::signature::{
    self, KeySet, MAX_SECTION_DATA, SECTION_NAME, SigningKey, VerifyingKey, section,
};

use crate::differential::{full_percent_decode, segment_glob};
use crate::{parts, text_part};

/// The smallest valid module: the preamble alone.
pub const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// Test keys (from `testdata/keys`) the signature target verifies against.
const ED25519_PUB: &[u8] = include_bytes!("../../../testdata/keys/test-ed25519.pub.pem");
const P256_PUB: &[u8] = include_bytes!("../../../testdata/keys/test-p256.pub.pem");
/// The Ed25519 signing key, for seeding the corpus with a valid signature.
pub const ED25519_KEY: &[u8] = include_bytes!("../../../testdata/keys/test-ed25519.pkcs8.pem");

/// Wasm section framing (`hoist-provenance`'s reader, the one signatures use), compared with
/// `hoist-oci`'s custom-section reader (the one `push` reads Kubewarden metadata with), and
/// signature stripping.
pub fn wasm_sections(data: &[u8]) {
    let scanned = section::scan(data);
    if let Ok(sections) = &scanned {
        let mut at = section::PREAMBLE_LEN;
        let mut first_by_name: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
        for s in sections {
            assert_eq!(s.range.start, at, "sections must tile the module");
            assert!(s.range.end > s.range.start && s.range.end <= data.len());
            if let Some(c) = &s.custom {
                assert_eq!(s.id, 0, "only section 0 is custom");
                let whole = data.get(s.range.clone()).unwrap_or_default();
                assert!(
                    whole.ends_with(c.data),
                    "custom data lies inside its section"
                );
                first_by_name.entry(c.name).or_insert(c.data);
            } else {
                assert_ne!(s.id, 0);
            }
            at = s.range.end;
        }
        assert_eq!(at, data.len(), "the scan covers the whole module");
        for (name, data_in_scan) in first_by_name {
            if let Ok(name) = std::str::from_utf8(name) {
                assert_eq!(
                    hoist_oci::custom_section(data, name),
                    Some(data_in_scan),
                    "hoist-oci and hoist-provenance disagree on custom section {name:?}"
                );
            }
        }
    }
    match signature::strip_signature(data) {
        Ok(stripped) => {
            assert!(scanned.is_ok());
            match stripped.signature_data {
                Some(sig) => {
                    assert!(sig.len() <= MAX_SECTION_DATA);
                    assert!(stripped.unsigned.len() < data.len());
                    let again = signature::strip_signature(&stripped.unsigned);
                    assert!(
                        matches!(&again, Ok(s) if s.signature_data.is_none() && s.unsigned == stripped.unsigned),
                        "stripping is idempotent"
                    );
                }
                None => {
                    assert_eq!(stripped.unsigned, data);
                    // Appending a signature section and stripping it gives the module back.
                    if let Ok(signed) =
                        section::append_custom_section(data, SECTION_NAME.as_bytes(), b"{}")
                    {
                        let back = signature::strip_signature(&signed);
                        assert!(
                            matches!(&back, Ok(s) if s.unsigned == data && s.signature_data == Some(b"{}".as_slice())),
                            "append then strip is the identity"
                        );
                    }
                }
            }
            let digest = signature::signed_digest(data);
            assert!(
                matches!(digest, Ok(d) if d == *Sha256Digest::of(&stripped.unsigned).as_bytes())
            );
            let _ = signature::read_signature(data);
        }
        Err(_) => assert!(signature::signed_digest(data).is_err()),
    }
}

fn fuzz_keys() -> KeySet {
    let mut keys = KeySet::new();
    for pem in [ED25519_PUB, P256_PUB] {
        if let Ok(k) = VerifyingKey::from_pem(pem) {
            keys.insert(k, None);
        }
    }
    keys
}

/// The signature payload (`{"Fingerprint","Signature"}` JSON in `yoke.schematics:signature`)
/// and PEM key parsing: a payload is put into a module as its signature section and read and
/// verified; the same bytes are also read as a PEM key.
pub fn signature_payload(data: &[u8]) {
    let _ = VerifyingKey::from_pem(data);
    let _ = SigningKey::from_pem(data);
    let Ok(module) = section::append_custom_section(EMPTY_MODULE, SECTION_NAME.as_bytes(), data)
    else {
        return;
    };
    match signature::read_signature(&module) {
        Ok(Some(payload)) => assert!(!payload.signature.is_empty()),
        Ok(None) => panic!("a module with a signature section read as unsigned"),
        Err(_) => {}
    }
    if signature::verify(&module, &fuzz_keys()).is_ok() {
        // A valid signature (the corpus holds one) must bind the module: appending any byte
        // sequence as another section changes the signed digest and must fail.
        let mut tampered = EMPTY_MODULE.to_vec();
        tampered.extend_from_slice(&[0, 1, 0]);
        let tampered = section::append_custom_section(&tampered, SECTION_NAME.as_bytes(), data);
        if let Ok(tampered) = tampered {
            assert!(signature::verify(&tampered, &fuzz_keys()).is_err());
        }
    }
}

/// Splits `scheme://authority/path` (as the raw URL is written).
fn raw_parts(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    Some((scheme, authority, path))
}

/// Allow lists, differentially: the production matcher (URL normalisation + globset) may
/// never allow a URL that a plain path-segment glob ([`segment_glob`]) refuses, normalisation
/// must keep the URL's structure (scheme, host, the same path segments), and for patterns
/// without classes or alternations both matchers must agree exactly. The module location goes
/// through `hoist_source::canonical_url` first, as the module pipeline does.
///
/// Input: `pattern NUL location`.
pub fn allow_url(data: &[u8]) {
    let p = parts(data, 2);
    let pattern = text_part(&p, 0);
    let location = text_part(&p, 1);
    let url = hoist_source::canonical_url(&location);
    let normalised = normalize_url(&url);
    if let Ok(n) = &normalised {
        assert_eq!(
            normalize_url(n).as_ref(),
            Ok(n),
            "normalisation is idempotent"
        );
        let (raw_scheme, raw_authority, raw_path) =
            raw_parts(&url).unwrap_or_else(|| panic!("{url:?} normalised without a scheme"));
        let (scheme, authority, path) =
            raw_parts(n).unwrap_or_else(|| panic!("normalised {n:?} has no scheme"));
        assert_eq!(scheme, raw_scheme.to_ascii_lowercase());
        assert!(!authority.contains('@') && !n.contains(['?', '#', '\\']));
        let raw_host = raw_authority
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(raw_authority, |(h, _)| h)
            .to_ascii_lowercase();
        let host = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(authority, |(h, _)| h);
        assert!(
            host == raw_host.strip_suffix('.').unwrap_or(&raw_host)
                // `file://localhost/` is `file:///`, and a host's one trailing dot is dropped
                // first, so `localhost.` is localhost too (found by fuzzing: finding 12).
                || (scheme == "file"
                    && host.is_empty()
                    && raw_host.strip_suffix('.').unwrap_or(&raw_host) == "localhost"),
            "host {raw_host:?} became {host:?}"
        );
        let raw_segments: Vec<&str> = raw_path.split('/').collect();
        let segments: Vec<&str> = path.split('/').collect();
        assert_eq!(raw_segments.len(), segments.len(), "{url:?} -> {n:?}");
        for (r, s) in raw_segments.iter().zip(&segments) {
            assert_eq!(full_percent_decode(r), full_percent_decode(s));
            assert!(*s != "." && *s != "..");
        }
    }
    let Ok(list) = AllowList::new([pattern.as_str()]) else {
        return;
    };
    let allowed = list.is_allowed(&url);
    let Some(glob) = list.patterns().first() else {
        return;
    };
    if allowed {
        let n = normalised
            .as_ref()
            .unwrap_or_else(|e| panic!("allowed an unnormalisable URL: {e}"));
        let plain = !glob.contains(['[', ']', '{', '}', '\\']);
        if plain {
            assert!(
                segment_glob(glob, n),
                "{glob:?} allowed {n:?} (from {url:?}), a plain segment glob refuses it"
            );
        }
    }
    if let Ok(n) = &normalised
        && !glob.contains(['[', ']', '{', '}', '\\'])
    {
        assert_eq!(
            allowed,
            segment_glob(glob, n),
            "{glob:?} vs {n:?}: allow list and plain glob disagree"
        );
    }
}

/// `sha256_` inference from module names: a digest is only ever taken from the name's own
/// `sha256_<64 hex>` (never from a query, a fragment, a directory or an OCI repository).
pub fn checksum_infer(data: &[u8]) {
    let location = String::from_utf8_lossy(data);
    let Some(digest) = infer_from_location(&location) else {
        return;
    };
    let hex = digest.to_hex();
    let lower = location.to_ascii_lowercase();
    let marker = format!("sha256_{hex}");
    // The scheme is case-sensitive, as in hoist-source (`Oci://x` is a local path).
    if location.starts_with("oci://")
        && let Some(reference) = lower.strip_prefix("oci://")
    {
        let last = reference.rsplit('/').next().unwrap_or_default();
        let tag = last.split('@').next().unwrap_or_default();
        assert!(
            tag.rsplit_once(':')
                .is_some_and(|(_, t)| t == marker.as_str()),
            "{location:?}: digest {hex} is not the tag"
        );
        return;
    }
    let path = match lower.split_once("://") {
        Some((_, rest)) => rest
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .split_once('/')
            .map(|(_, p)| p)
            .unwrap_or_default(),
        None => &lower,
    };
    let base = path.rsplit(['/', '\\']).next().unwrap_or_default();
    assert!(
        base.contains(&marker),
        "{location:?}: digest {hex} is not in the file name {base:?}"
    );
    assert_eq!(Sha256Digest::from_hex(&hex).ok(), Some(digest));
}

const CONTENT_TYPES: [Option<&str>; 7] = [
    None,
    Some(hoist_oci::OCI_MANIFEST),
    Some(hoist_oci::OCI_INDEX),
    Some(hoist_oci::DOCKER_MANIFEST),
    Some(hoist_oci::DOCKER_MANIFEST_LIST),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some("application/json"),
];

/// OCI manifests, indexes and their config/layer descriptors, as a pull classifies them,
/// plus registry error bodies. Input: one byte choosing the `Content-Type`, then the body.
pub fn oci_manifest(data: &[u8]) {
    use hoist_oci::fuzzing::{Classified, classify, manifest_media_type, parse_digest};
    let (selector, body) = data.split_first().unwrap_or((&0, &[]));
    let content_type = CONTENT_TYPES
        .get(usize::from(*selector) % CONTENT_TYPES.len())
        .copied()
        .flatten();
    let _ = manifest_media_type(body, content_type);
    let _ = hoist_oci::fuzzing::registry_message(body);
    let Ok(plan) = classify(body, content_type) else {
        return;
    };
    let digest_ok = |d: &hoist_oci::fuzzing::Descriptor| {
        assert!(parse_digest(&d.digest).is_ok(), "unchecked digest {d:?}");
    };
    match &plan {
        Classified::Yoke(d) => {
            digest_ok(d);
            assert_eq!(d.media_type, hoist_oci::YOKE_WASM_GZIP);
        }
        Classified::Kubewarden(d) => {
            digest_ok(d);
            assert_eq!(d.media_type, hoist_oci::WASM_CONTENT_LAYER);
        }
        Classified::KptIndex(d) => {
            digest_ok(d);
            assert!(
                d.media_type == hoist_oci::DOCKER_MANIFEST
                    || d.media_type == hoist_oci::OCI_MANIFEST
            );
            assert!(
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "js" && p.architecture == "wasm")
            );
        }
        Classified::KptImage(layers) => {
            assert!(!layers.is_empty());
            layers.iter().for_each(digest_ok);
        }
    }
}

/// OCI references (`oci://REGISTRY/REPO[:TAG][@sha256:DIGEST]`), digests, tags and
/// `WWW-Authenticate` challenges. A parsed reference prints as a string that parses back to
/// the same reference.
pub fn oci_reference(data: &[u8]) {
    use hoist_oci::fuzzing::{parse_challenge, parse_digest, validate_tag};
    let text = String::from_utf8_lossy(data);
    let _ = parse_challenge(&text);
    if let Ok(d) = parse_digest(&text) {
        assert_eq!(d.len(), "sha256:".len() + 64);
    }
    let Ok(reference) = hoist_oci::OciReference::parse(&text) else {
        return;
    };
    let printed = reference.to_string();
    let again = hoist_oci::OciReference::parse(&printed);
    assert_eq!(
        again.as_ref().ok(),
        Some(&reference),
        "{text:?} printed as {printed:?}"
    );
    if let Some(tag) = &reference.tag {
        assert!(validate_tag(tag).is_ok());
    }
    if let Some(d) = &reference.digest {
        assert!(parse_digest(d).is_ok());
    }
    assert!(!reference.host().is_empty());
    let _ = (
        reference.is_loopback(),
        reference.api_host(),
        reference.name(),
    );
}

/// The cap the layer target decompresses to.
pub const LAYER_CAP: u64 = 1 << 20;

/// Registry layers: Yoke's gzipped module and kpt's (gzipped) tar layers, with size caps.
/// Input: one byte choosing the decoder, then the layer.
pub fn oci_layer(data: &[u8]) {
    use hoist_oci::fuzzing::{first_regular_file, gunzip_capped};
    let (selector, layer) = data.split_first().unwrap_or((&0, &[]));
    match selector % 3 {
        0 => {
            if let Ok(out) = gunzip_capped(layer, LAYER_CAP) {
                assert!(out.len() as u64 <= LAYER_CAP);
            }
        }
        n => {
            if let Ok(Some(file)) = first_regular_file(layer, n == 1, LAYER_CAP) {
                assert!(file.len() as u64 <= LAYER_CAP);
            }
        }
    }
}

/// Flight output -> stages (JSON first, then YAML with serde-saphyr's budgets). Parsed
/// stages survive `to_json` and `to_yaml` unchanged, and pre-stages keep every object.
pub fn flight_output(data: &[u8]) {
    let Ok(stages) = hoist_resources::parse_flight_output(data) else {
        return;
    };
    let json = hoist_resources::to_json(&stages);
    match hoist_resources::parse_flight_output(json.as_bytes()) {
        Ok(again) => assert_eq!(again, stages, "JSON round trip of {json}"),
        Err(e) => panic!("hoist's own JSON does not parse: {e}\n{json}"),
    }
    // `to_yaml` is the display form (one stream, stage boundaries as comments): it reads back
    // as one stage holding every object in order.
    if stages.resource_count() > 0 {
        let yaml = hoist_resources::to_yaml(&stages);
        let flat = hoist_resources::Stages(vec![stages.iter().cloned().collect()]);
        match hoist_resources::parse_flight_output(yaml.as_bytes()) {
            Ok(again) => assert_eq!(again, flat, "YAML stream round trip of {yaml}"),
            Err(e) => panic!("hoist's own YAML does not parse: {e}\n{yaml}"),
        }
    }
    // Stages as a YAML sequence of sequences (what a YAML-printing flight writes) read back
    // as the same stages.
    if let Ok(yaml) = serde_saphyr::to_string(&stages.0) {
        match hoist_resources::parse_flight_output(yaml.as_bytes()) {
            Ok(again) => assert_eq!(again, stages, "YAML stages round trip of {yaml}"),
            Err(e) => panic!("YAML stages do not parse back: {e}\n{yaml}"),
        }
    }
    let count = stages.resource_count();
    let pre = stages.with_prestages();
    assert_eq!(pre.resource_count(), count);
}

/// Release revision Secrets in Yoke's format: `resources` data gzipped or plain JSON, nested
/// or flat; decoded stages encode and decode to themselves. The Secret's metadata comes from
/// `key=value` lines. Input: `resources-data NUL annotation-lines`.
pub fn release_secret(data: &[u8]) {
    use hoist_release::state::{
        KEY_RESOURCES, decode_stages, encode_stages, revision_from_secret, stages_from_secret,
    };
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    let p = parts(data, 2);
    let resources = p.first().copied().unwrap_or_default();
    let decoded = decode_stages(resources);
    if let Ok(stages) = &decoded {
        let encoded = encode_stages(stages);
        assert_eq!(decode_stages(&encoded).as_ref(), Ok(stages));
    }
    let annotations: BTreeMap<String, String> = text_part(&p, 1)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut secret = Secret::default();
    secret.metadata.name = Some("yoke.fuzz.1".into());
    secret.metadata.namespace = Some("default".into());
    secret.metadata.annotations = Some(annotations);
    secret.data = Some(BTreeMap::from([(
        KEY_RESOURCES.to_string(),
        ByteString(resources.to_vec()),
    )]));
    let _ = revision_from_secret(&secret, "fuzz");
    assert_eq!(stages_from_secret(&secret).ok(), decoded.ok());
}

thread_local! {
    static KUBECONFIG: Option<(tempfile::TempDir, PathBuf)> = tempfile::tempdir()
        .ok()
        .map(|d| { let p = d.path().join("config"); (d, p) });
}

/// Kubeconfig reading and context lookup (`--kubeconfig`, `--kube-context`), offline: the
/// settings and the context namespace agree. Input: `kubeconfig NUL context` (no context part
/// means the current context).
pub fn kubeconfig(data: &[u8]) {
    let p = parts(data, 2);
    // kube-client 5.0.0's `Kubeconfig::read_from` panics on a UTF-16 byte-order mark followed
    // by an odd number of bytes; hoist-release refuses such files first (regression input in
    // fuzz/regressions/kubeconfig).
    let context = p.get(1).map(|c| String::from_utf8_lossy(c).into_owned());
    KUBECONFIG.with(|k| {
        let Some((_, path)) = k else { return };
        let written = std::fs::File::create(path)
            .and_then(|mut f| f.write_all(p.first().copied().unwrap_or_default()));
        if written.is_err() {
            return;
        }
        let settings = hoist_release::kube_settings(Some(path), context.as_deref());
        let namespace = hoist_release::context_namespace(Some(path), context.as_deref());
        if let Ok(s) = settings {
            let ns = namespace.unwrap_or_else(|e| panic!("settings without a namespace: {e}"));
            assert_eq!(ns.as_deref().unwrap_or("default"), s.default_namespace);
        }
    });
}
