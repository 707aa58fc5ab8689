//! Writes the seed corpus (`fuzz/corpus/<target>/seed-*`) from `testdata/`, the peers'
//! test data (when unpacked, see FUZZING.md) and hand-written shapes of every input kind.
//! Run by `scripts/fuzz --seed`; existing seeds are overwritten, fuzzer finds are kept.
//!
//! Usage: `cargo run -p hoist-fuzz --example seed [PEERS_DIR]`

use std::io::Write;
use std::path::{Path, PathBuf};

use hoist_provenance::signature::{self, SigningKey, section};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Seeds {
    target: &'static str,
    n: usize,
}

impl Seeds {
    fn new(target: &'static str) -> Seeds {
        let dir = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        Seeds { target, n: 0 }
    }
    fn add(&mut self, name: &str, data: impl AsRef<[u8]>) {
        self.n += 1;
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let path = root()
            .join("fuzz/corpus")
            .join(self.target)
            .join(format!("seed-{:03}-{safe}", self.n));
        std::fs::write(path, data).unwrap();
    }
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

fn files(dir: &Path, ext: &[&str], max: u64) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p, ext, max));
        } else if ext.iter().any(|x| p.to_string_lossy().ends_with(x))
            && p.metadata().map(|m| m.len() <= max).unwrap_or(false)
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn tar_one(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

fn main() {
    let peers = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/fuzz/peers"));
    let testdata = root().join("testdata");
    let key = SigningKey::from_pem(hoist_fuzz::ED25519_KEY).unwrap();
    let p256 = SigningKey::from_pem_file(&testdata.join("keys/test-p256.pkcs8.pem")).unwrap();

    // Modules: the WAT fixtures, signed and with Kubewarden metadata.
    let mut modules: Vec<(String, Vec<u8>)> =
        vec![("empty".into(), hoist_fuzz::EMPTY_MODULE.to_vec())];
    for wat in files(&testdata.join("wat"), &[".wat"], 1 << 16) {
        let wasm = wat::parse_file(&wat).unwrap();
        modules.push((wat.file_stem().unwrap().to_string_lossy().into(), wasm));
    }
    let mut s = Seeds::new("wasm_sections");
    for (name, m) in &modules {
        s.add(name, m);
        let signed = signature::sign(m, &key).unwrap();
        s.add(&format!("{name}-signed"), &signed);
        let meta = section::append_custom_section(
            m,
            b"io.kubewarden.metadata",
            br#"{"rules":[],"mutating":false,"annotations":{"a":"b"}}"#,
        )
        .unwrap();
        s.add(&format!("{name}-kwmeta"), meta);
    }
    // The start of a real Go flight (section framing of a 2 MB module, cut short).
    if let Ok(real) = std::fs::read(root().join("target/testdata/echo.wasm")) {
        s.add("go-flight-prefix", real.get(..4096).unwrap_or(&real));
    }

    let mut s = Seeds::new("signature_payload");
    for k in [&key, &p256] {
        let signed = signature::sign(hoist_fuzz::EMPTY_MODULE, k).unwrap();
        let stripped = signature::strip_signature(&signed).unwrap();
        s.add("payload", stripped.signature_data.unwrap());
    }
    s.add("empty-signature", br#"{"Fingerprint":"x","Signature":""}"#);
    for pem in files(&testdata.join("keys"), &[".pem"], 1 << 14) {
        s.add(
            &pem.file_name().unwrap().to_string_lossy(),
            std::fs::read(&pem).unwrap(),
        );
    }

    let mut s = Seeds::new("allow_url");
    for (p, u) in [
        ("oci://ghcr.io/yokecd/*", "oci://ghcr.io/yokecd/atc:v1.2.3"),
        ("oci://ghcr.io/yokecd/*", "oci://ghcr.io/yokecd/team/mod:v1"),
        (
            "oci://ghcr.io/example/module:1.*",
            "oci://ghcr.io/example/module:1.2.3",
        ),
        (
            "https://some-domain.com/modules/*",
            "https://some-domain.com/modules/app.wasm.gz",
        ),
        (
            "https://some-domain.com/modules/*.wasm",
            "https://SOME-domain.com.:443/modules/%61pp.wasm",
        ),
        (
            "https://h.example/m/*",
            "https://good.example@h.example/m/x.wasm",
        ),
        (
            "https://h.example/m/*",
            "https://h.example/m/..%2Fevil.wasm",
        ),
        ("https://h.example/m/*", "https://h.example/m/a.php?x=.wasm"),
        (
            "file:///opt/modules/*",
            "file://localhost/opt/modules/a.wasm",
        ),
        ("file:///opt/modules/*", "/opt/modules/../etc/passwd"),
        (
            "http://[::1]:8080/{a,b}/[!x]*",
            "http://[::1]:8080/a/y.wasm",
        ),
        ("oci://127.0.0.1:5000/**", "oci://127.0.0.1:5000/a/b:c"),
        ("https://h/?", "https://h/%7e"),
    ] {
        s.add(p, join(&[p.as_bytes(), u.as_bytes()]));
    }

    let hex = "a".repeat(64);
    let mut s = Seeds::new("checksum_infer");
    for l in [
        format!("oci://ghcr.io/org/mod:sha256_{hex}"),
        format!("oci://ghcr.io/org/sha256_{hex}/mod:v1@sha256:{hex}"),
        format!("https://h.example/m/flight_sha256_{hex}.wasm.gz?x=sha256_{hex}"),
        format!("/tmp/sha256_{hex}.wasm"),
        format!("C:\\mods\\sha256_{}.wasm", hex.to_uppercase()),
        format!("https://h/sha256_{hex}/x.wasm#sha256_{hex}"),
    ] {
        s.add(&l, l.as_bytes());
    }

    let d = format!("sha256:{}", "1".repeat(64));
    let mut s = Seeds::new("oci_manifest");
    let manifest = |config: &str, layer: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"{config}","digest":"{d}","size":2}},"layers":[{{"mediaType":"{layer}","digest":"{d}","size":10,"annotations":{{"a":"b"}}}}]}}"#
        )
    };
    s.add(
        "yoke",
        [
            &[0u8][..],
            manifest(hoist_oci::YOKE_CONFIG, hoist_oci::YOKE_WASM_GZIP).as_bytes(),
        ]
        .concat(),
    );
    s.add(
        "kubewarden",
        [
            &[1u8][..],
            manifest(hoist_oci::WASM_CONFIG, hoist_oci::WASM_CONTENT_LAYER).as_bytes(),
        ]
        .concat(),
    );
    s.add(
        "kpt-image",
        [
            &[3u8][..],
            manifest(
                hoist_oci::DOCKER_IMAGE_CONFIG,
                hoist_oci::DOCKER_LAYER_TAR_GZIP,
            )
            .as_bytes(),
        ]
        .concat(),
    );
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{d}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{d}","size":5,"platform":{{"architecture":"wasm","os":"js"}}}}]}}"#
    );
    s.add("kpt-index", [&[4u8][..], index.as_bytes()].concat());
    s.add(
        "no-media-type",
        [&[2u8][..], br#"{"schemaVersion":2,"manifests":[]}"#].concat(),
    );
    s.add(
        "errors",
        [
            &[6u8][..],
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        ]
        .concat(),
    );

    let mut s = Seeds::new("oci_reference");
    for r in [
        "oci://ghcr.io/yokecd/atc:v1.2.3",
        "oci://127.0.0.1:5000/hoist/echo:latest@sha256:1111111111111111111111111111111111111111111111111111111111111111",
        "oci://[::1]:5000/a/b/c",
        "docker.io/library/x",
        "localhost/x:sha256_abc",
        "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull,push\"",
        "Basic realm=\"x\\\"y\"",
        "sha256:1111111111111111111111111111111111111111111111111111111111111111",
    ] {
        s.add(r, r);
    }

    let mut s = Seeds::new("oci_layer");
    let wasm = modules.get(1).map(|(_, m)| m.clone()).unwrap_or_default();
    s.add("yoke-gzip", [&[0u8][..], &gzip(&wasm)].concat());
    s.add(
        "yoke-multi-member",
        [&[0u8][..], &gzip(b"ab"), &gzip(b"cd")].concat(),
    );
    s.add(
        "kpt-tar-gz",
        [&[1u8][..], &gzip(&tar_one("fn.wasm", &wasm))].concat(),
    );
    s.add("tar", [&[2u8][..], &tar_one("dir/.wh.x", b"")[..]].concat());

    // Flight output: real manifests from testdata and the peers, and the shapes Yoke accepts.
    let mut yaml_docs = files(
        &testdata.join("krm/packages"),
        &[".yaml", "Kptfile"],
        1 << 14,
    );
    yaml_docs.extend(
        files(&peers.join("krm-functions-catalog"), &[".yaml"], 1 << 13)
            .into_iter()
            .take(20),
    );
    let mut s = Seeds::new("flight_output");
    for f in &yaml_docs {
        s.add(
            &f.file_name().unwrap().to_string_lossy(),
            std::fs::read(f).unwrap(),
        );
    }
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"n"},"data":{"a":"yes","b":"0755","c":"1e3"}}"#;
    let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"n"}}"#;
    s.add("json-stream", format!("{cm}\n{ns}\n"));
    s.add("json-array", format!("[{cm},{ns}]"));
    s.add("json-stages", format!("[[{ns}],[{cm}],[]]"));
    s.add("yaml-stages", "- - apiVersion: v1\n    kind: Namespace\n    metadata: {name: n}\n- - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: c}\n    data: {a: on, b: 'no', c: ~}\n");
    s.add(
        "yaml-anchors",
        "a: &x {kind: ConfigMap, apiVersion: v1, metadata: {name: a}}\n---\n*x\n",
    );

    let mut s = Seeds::new("release_secret");
    let stages_json = format!("[[{ns}],[{cm}]]");
    let ann = format!(
        "internal.yoke/created-at=2026-11-30T12:00:00.123456789Z\ninternal.yoke/active-at=2026-11-30T12:00:01+02:00\ninternal.yoke/source-url=oci://r/x:v1\ninternal.yoke/source-checksum={}\ninternal.yoke/resources=2\nhoist.dev/module-sha256={hex}",
        "b".repeat(40)
    );
    s.add(
        "gzip",
        join(&[&gzip(stages_json.as_bytes()), ann.as_bytes()]),
    );
    s.add("plain", join(&[stages_json.as_bytes(), ann.as_bytes()]));
    s.add(
        "flat",
        join(&[
            format!("[{cm}]").as_bytes(),
            b"internal.yoke/created-at=bad",
        ]),
    );
    s.add("null", b"null");

    let mut s = Seeds::new("kubeconfig");
    let kc = "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n- name: a\n  context: {cluster: c, user: u, namespace: team}\n- name: b\n  context: {cluster: missing, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {token: abc}\n";
    s.add("current", kc);
    s.add("named", join(&[kc.as_bytes(), b"b"]));
    s.add("json", r#"{"apiVersion":"v1","kind":"Config","current-context":"x","contexts":[{"name":"x","context":{"cluster":"c","namespace":""}}],"clusters":[{"name":"c","cluster":{"server":"http://127.0.0.1:1"}}]}"#);

    let mut s = Seeds::new("krm_resource_list");
    for f in &yaml_docs {
        s.add(
            &f.file_name().unwrap().to_string_lossy(),
            std::fs::read(f).unwrap(),
        );
    }
    s.add("resource-list", format!("apiVersion: config.kubernetes.io/v1\nkind: ResourceList\nitems:\n- {cm}\nfunctionConfig:\n  apiVersion: v1\n  kind: ConfigMap\n  data: {{namespace: staging}}\nresults:\n- message: m\n  severity: error\n  resourceRef: {{apiVersion: v1, kind: ConfigMap, name: c}}\n  field: {{path: data.a}}\n"));
    s.add("resource-list-json", format!(r#"{{"apiVersion":"config.kubernetes.io/v1","kind":"ResourceList","items":[{cm}],"results":{{"items":[{{"message":"old sdk"}}]}}}}"#));

    let mut s = Seeds::new("krm_package");
    let pkg = testdata.join("krm/packages/app");
    let read = |p: &str| std::fs::read(pkg.join(p)).unwrap_or_default();
    s.add(
        "app",
        join(&[
            &read("Kptfile"),
            &read("resources.yaml"),
            &read("config.yaml"),
        ]),
    );
    s.add(
        "db",
        join(&[&read("db/Kptfile"), &read("db/statefulset.yaml")]),
    );
    s.add(
        "quoted",
        join(&[
            b"apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: x\n",
            b"a: 'yes'\nb: \"on\"\nc: 0755\n# comment\n---\nkind: X\n",
        ]),
    );

    let mut s = Seeds::new("policy_admission");
    for f in files(
        &peers.join("kubewarden-policies"),
        &[".json", "metadata.yml"],
        1 << 14,
    )
    .into_iter()
    .take(40)
    {
        let raw = u8::from(f.to_string_lossy().contains("raw"));
        s.add(
            &f.file_name().unwrap().to_string_lossy(),
            [&[raw][..], &std::fs::read(&f).unwrap()].concat(),
        );
    }
    s.add("review", [&[0u8][..], br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"name":"p"}},"oldObject":null}}"#].concat());
    s.add("metadata", [&[0u8][..], b"rules:\n- apiGroups: ['']\n  apiVersions: [v1]\n  resources: [pods]\n  operations: [CREATE]\nmutating: false\nexecutionMode: kubewarden-wapc\nannotations:\n  io.kubewarden.policy.title: x\n"].concat());

    let mut s = Seeds::new("gojs_values");
    s.add(
        "store-load",
        [
            0u8, 6, 0, 7, 4, 3, b'a', b'b', b'c', 0, 9, 2, 7, 0, 0, 0, 5, 6, 9, 9,
        ],
    );
    s.add(
        "numbers",
        [
            3u8, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 3, 1, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 9, 7, 9,
        ],
    );
    s.add(
        "arrays",
        [6u8, 7, 3, 5, 0, 0, 0, 0, 0, 0, 0, 5, 7, 4, 4, 7, 7],
    );

    let mut s = Seeds::new("opa_bridge");
    s.add("opa-response", [&[0u8][..], br#"[{"result":{"response":{"uid":"x","allowed":false,"status":{"message":"no","code":403},"patchType":"JSONPatch","patch":"W10="}}}]"#].concat());
    s.add(
        "gatekeeper",
        [
            &[0u8][..],
            br#"[{"result":[{"msg":"a"},{"msg":"b","details":{}}]}]"#,
        ]
        .concat(),
    );
    s.add(
        "sprintf",
        [
            &[0u8][..],
            br#"["%s is %d (%v) %q %x %%", ["a", 1, {"b": [1.5]}, "q", 255]]"#,
        ]
        .concat(),
    );
    s.add(
        "semver",
        [&[12u8][..], br#"["1.2.3-rc.1+b", "1.10.0"]"#].concat(),
    );
    s.add("regex", [&[14u8][..], br#"["a+|(b)", "caab"]"#].concat());
    s.add(
        "by-name",
        [&[0u8][..], b"yaml.unmarshal\0[\"a: [1, 2]\\nb: yes\"]"].concat(),
    );
    s.add("urlquery", [&[9u8][..], br#"["a%2Bb+c%zz"]"#].concat());

    eprintln!(
        "seed corpus written to {}",
        root().join("fuzz/corpus").display()
    );
}
