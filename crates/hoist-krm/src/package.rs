//! Reading a kpt package directory into annotated items, and writing items back to files.

use crate::resource_list::{
    self as rl, ID, INDEX, LEGACY_ID, LEGACY_INDEX, LEGACY_PATH, PACKAGE_PATH, PATH, SEQ_INDENT,
};
use crate::{preserve, yaml};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// The Kptfile's file name.
pub const KPTFILE: &str = "Kptfile";

/// Failures reading or writing a package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not valid YAML/JSON or holds something other than objects.
    #[error("{path} is not a valid KRM file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A resource's path annotation points outside the package.
    #[error(
        "resource {resource} has path annotation {path:?}, which is outside the package {package}: a function may not move resources out of their package"
    )]
    OutsidePackage {
        /// The resource.
        resource: String,
        /// The annotation value.
        path: String,
        /// The package.
        package: String,
    },
    /// The output directory exists already.
    #[error("output directory {0} already exists: choose a new directory for -o")]
    OutputExists(PathBuf),
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PackageError + 'a {
    move |source| PackageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The files a package read produced, to decide later what changed.
#[derive(Debug, Default, Clone)]
pub struct Originals {
    /// rel path -> the documents read from it (without annotations).
    pub files: BTreeMap<String, Vec<Value>>,
    /// rel path -> the file's text, for comment-preserving write-back.
    pub texts: BTreeMap<String, String>,
}

impl Originals {
    /// Takes in what another read of other files produced (a subpackage read apart).
    pub fn append(&mut self, other: &mut Originals) {
        self.files.append(&mut other.files);
        self.texts.append(&mut other.texts);
    }
}

/// Patterns from `.krmignore` (gitignore-like, the subset kpt packages use).
struct Ignore {
    globs: globset::GlobSet,
}

impl Ignore {
    fn load(dir: &Path) -> Ignore {
        let mut b = globset::GlobSetBuilder::new();
        if let Ok(text) = std::fs::read_to_string(dir.join(".krmignore")) {
            for line in text.lines() {
                let p = line.trim();
                if p.is_empty() || p.starts_with('#') {
                    continue;
                }
                let p = p.trim_start_matches('/').trim_end_matches('/');
                for pat in [
                    p.to_string(),
                    format!("{p}/**"),
                    format!("**/{p}"),
                    format!("**/{p}/**"),
                ] {
                    if let Ok(g) = globset::Glob::new(&pat) {
                        b.add(g);
                    }
                }
            }
        }
        Ignore {
            globs: b.build().unwrap_or_else(|_| globset::GlobSet::empty()),
        }
    }

    fn ignored(&self, rel: &str) -> bool {
        self.globs.is_match(rel)
    }
}

fn is_krm_file(name: &str) -> bool {
    name == KPTFILE || name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}

/// Lists the KRM files of the package at `root` (slash-separated, relative to `root`),
/// sorted. With `subpackages`, descends into directories that have their own Kptfile.
pub fn list_files(root: &Path, subpackages: bool) -> Result<Vec<String>, PackageError> {
    let mut out = Vec::new();
    walk(root, root, "", subpackages, &Ignore::load(root), &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    subpackages: bool,
    ignore: &Ignore,
    out: &mut Vec<String>,
) -> Result<(), PackageError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io("could not read directory", dir))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        if ignore.ignored(&rel) {
            continue;
        }
        let path = entry.path();
        let ft = match entry.file_type() {
            Ok(ft) => ft,
            Err(_) => continue,
        };
        if ft.is_dir() || (ft.is_symlink() && path.is_dir()) {
            if path.join(KPTFILE).is_file() && !subpackages {
                continue;
            }
            walk(root, &path, &format!("{rel}/"), subpackages, ignore, out)?;
        } else if is_krm_file(&name) {
            out.push(rel);
        }
    }
    let _ = root;
    Ok(())
}

/// Direct subpackages of `dir` (directories with a Kptfile, at any depth below non-package
/// directories), as slash paths relative to `dir`, sorted.
pub fn direct_subpackages(dir: &Path) -> Result<Vec<String>, PackageError> {
    let mut out = Vec::new();
    find_subpackages(dir, "", &Ignore::load(dir), &mut out)?;
    out.sort();
    Ok(out)
}

fn find_subpackages(
    dir: &Path,
    prefix: &str,
    ignore: &Ignore,
    out: &mut Vec<String>,
) -> Result<(), PackageError> {
    let entries = std::fs::read_dir(dir).map_err(io("could not read directory", dir))?;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        let rel = format!("{prefix}{name}");
        if ignore.ignored(&rel) {
            continue;
        }
        if path.join(KPTFILE).is_file() {
            out.push(rel);
        } else {
            find_subpackages(&path, &format!("{rel}/"), ignore, out)?;
        }
    }
    Ok(())
}

/// Reads the package at `root` into items annotated with their path (relative to `root`,
/// prefixed with `prefix`) and index, in both kpt's internal and legacy forms.
pub fn read_package(
    root: &Path,
    subpackages: bool,
    prefix: &str,
    originals: &mut Originals,
) -> Result<Vec<Value>, PackageError> {
    let mut items = Vec::new();
    for rel in list_files(root, subpackages)? {
        let path = root.join(&rel);
        let text = std::fs::read_to_string(&path).map_err(io("could not read", &path))?;
        let docs = yaml::parse_all(&text).map_err(|message| PackageError::Parse {
            path: path.clone(),
            message,
        })?;
        let full = format!("{prefix}{rel}");
        for (i, doc) in docs.iter().enumerate() {
            if !doc.is_object() {
                return Err(PackageError::Parse {
                    path: path.clone(),
                    message: format!("document {i} is not a mapping"),
                });
            }
            let mut item = doc.clone();
            annotate(&mut item, &full, i);
            items.push(item);
        }
        originals.texts.insert(full.clone(), text);
        originals.files.insert(full, docs);
    }
    Ok(items)
}

/// Sets the path and index annotations (internal and legacy).
pub fn annotate(item: &mut Value, path: &str, index: usize) {
    rl::set_annotation(item, PATH, path);
    rl::set_annotation(item, INDEX, &index.to_string());
    rl::set_annotation(item, LEGACY_PATH, path);
    rl::set_annotation(item, LEGACY_INDEX, &index.to_string());
}

/// Every annotation kpt uses only in flight (removed before writing files).
pub const INTERNAL_ANNOTATIONS: &[&str] = &[
    PATH,
    INDEX,
    LEGACY_PATH,
    LEGACY_INDEX,
    ID,
    LEGACY_ID,
    SEQ_INDENT,
    PACKAGE_PATH,
];

/// The item's path and index (internal form first, then legacy), with kyaml's default for
/// items a function created without a path: `[namespace/]kind_name.yaml`.
pub fn path_and_index(item: &Value) -> (String, usize) {
    let path = rl::annotation(item, PATH)
        .or_else(|| rl::annotation(item, LEGACY_PATH))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let kind = rl::field(item, &["kind"]).unwrap_or("").to_lowercase();
            let name = rl::field(item, &["metadata", "name"]).unwrap_or("");
            let file = format!("{kind}_{name}.yaml");
            match rl::field(item, &["metadata", "namespace"]) {
                Some(ns) if !ns.is_empty() => format!("{ns}/{file}"),
                _ => file,
            }
        });
    let index = rl::annotation(item, INDEX)
        .or_else(|| rl::annotation(item, LEGACY_INDEX))
        .and_then(|i| i.parse().ok())
        .unwrap_or(usize::MAX);
    (path, index)
}

/// Keeps the internal and legacy path/index annotations in sync after a function ran: a form
/// the function dropped or left alone takes the other's value.
pub fn sync_annotations(item: &mut Value, before: Option<(&str, &str)>) {
    for (new, old) in [(PATH, LEGACY_PATH), (INDEX, LEGACY_INDEX)] {
        let n = rl::annotation(item, new).map(str::to_string);
        let o = rl::annotation(item, old).map(str::to_string);
        match (n, o) {
            (Some(n), None) => rl::set_annotation(item, old, &n),
            (None, Some(o)) => rl::set_annotation(item, new, &o),
            (Some(n), Some(o)) if n != o => {
                // The form that still has the input's value is the stale one.
                let original = before.map(|b| if new == PATH { b.0 } else { b.1 });
                if original == Some(n.as_str()) {
                    rl::set_annotation(item, new, &o);
                } else {
                    rl::set_annotation(item, old, &n);
                }
            }
            _ => {}
        }
    }
}

/// Checks that a path annotation stays inside the package (relative, no `..`).
pub fn check_inside(item: &Value, path: &str, package: &str) -> Result<(), PackageError> {
    let p = Path::new(path);
    let bad = p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if bad || path.is_empty() {
        return Err(PackageError::OutsidePackage {
            resource: rl::describe(item),
            path: path.into(),
            package: package.into(),
        });
    }
    Ok(())
}

/// Groups items into files by path annotation, ordered by index, with in-flight annotations
/// removed.
pub fn group_files(
    items: &[Value],
    package: &str,
) -> Result<BTreeMap<String, Vec<Value>>, PackageError> {
    Ok(group_files_indexed(items, package)?
        .into_iter()
        .map(|(path, docs)| (path, docs.into_iter().map(|(_, d)| d).collect()))
        .collect())
}

/// [`group_files`], keeping each document's index annotation (its place in the file it was
/// read from; `usize::MAX` for a new resource).
fn group_files_indexed(
    items: &[Value],
    package: &str,
) -> Result<BTreeMap<String, Vec<(usize, Value)>>, PackageError> {
    let mut files: BTreeMap<String, Vec<(usize, usize, Value)>> = BTreeMap::new();
    for (n, item) in items.iter().enumerate() {
        let (path, index) = path_and_index(item);
        check_inside(item, &path, package)?;
        let mut clean = item.clone();
        rl::remove_annotations(&mut clean, INTERNAL_ANNOTATIONS);
        files.entry(path).or_default().push((index, n, clean));
    }
    Ok(files
        .into_iter()
        .map(|(path, mut docs)| {
            docs.sort_by_key(|(index, n, _)| (*index, *n));
            (path, docs.into_iter().map(|(i, _, d)| (i, d)).collect())
        })
        .collect())
}

/// A changed file written again with its original text's comments, formatting, field order
/// and sequence indentation carried over to each document that came from it (matched by the
/// index annotation). Falls back to [`render_file`] for JSON and when the original text and
/// documents do not line up.
fn render_preserving(path: &str, text: &str, old: &[Value], docs: &[(usize, Value)]) -> String {
    let plain = || {
        render_file(
            path,
            &docs.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        )
    };
    if path.ends_with(".json") {
        return plain();
    }
    let split = preserve::split_documents(text);
    if split.len() != old.len() {
        return plain();
    }
    let indent = preserve::detect_seq_indent(text);
    let mut out: Vec<String> = Vec::with_capacity(docs.len());
    for (index, doc) in docs {
        let s = match (split.get(*index), old.get(*index)) {
            (Some(t), Some(o)) => preserve::carry_over(&t.text, o, doc, indent),
            _ => yaml::emit_with(doc, indent == preserve::SeqIndent::Compact),
        };
        out.push(s);
    }
    out.join("---\n")
}

/// Renders one file's documents (JSON for `.json`, YAML otherwise).
pub fn render_file(path: &str, docs: &[Value]) -> String {
    if let (true, [doc]) = (path.ends_with(".json"), docs) {
        let mut s = serde_json::to_string_pretty(doc).unwrap_or_default();
        s.push('\n');
        s
    } else {
        yaml::emit_all(docs)
    }
}

/// What writing a package did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    /// Files written (changed or new).
    pub written: Vec<String>,
    /// Files left byte-identical because their resources did not change.
    pub unchanged: Vec<String>,
    /// Files deleted because all their resources were removed.
    pub deleted: Vec<String>,
}

/// Writes `items` into `root` in place: changed and new files are written, files whose
/// documents did not change are left byte-identical, and files that lost all their resources
/// are deleted. Only paths under `scope` (a slash prefix, "" for all) are touched.
pub fn write_in_place(
    root: &Path,
    items: &[Value],
    originals: &Originals,
    package_name: &str,
) -> Result<WriteSummary, PackageError> {
    let files = group_files_indexed(items, package_name)?;
    let mut summary = WriteSummary::default();
    for (path, docs) in &files {
        let old = originals.files.get(path);
        if let Some(old) = old
            && old.len() == docs.len()
            && old.iter().zip(docs).all(|(o, (_, d))| same_document(o, d))
        {
            summary.unchanged.push(path.clone());
            continue;
        }
        let full = root.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io("could not create directory", parent))?;
        }
        let text = match (old, originals.texts.get(path)) {
            (Some(old), Some(text)) => render_preserving(path, text, old, docs),
            _ => render_file(
                path,
                &docs.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
            ),
        };
        std::fs::write(&full, text).map_err(io("could not write", &full))?;
        summary.written.push(path.clone());
    }
    let kept: BTreeSet<&String> = files.keys().collect();
    for path in originals.files.keys() {
        if !kept.contains(path) {
            let full = root.join(path);
            std::fs::remove_file(&full).map_err(io("could not delete", &full))?;
            summary.deleted.push(path.clone());
        }
    }
    Ok(summary)
}

/// Whether a document read back from a function is the one the file holds. A `metadata:`
/// that is not a map in the file (null, or a stray scalar) comes back absent: the path
/// annotations hoist adds, and removes again, need a map there, so the original value never
/// reached a function. Such a file is left byte-identical instead of being rewritten
/// (fuzz finding 7).
fn same_document(original: &Value, returned: &Value) -> bool {
    if original == returned {
        return true;
    }
    match original.as_object() {
        Some(map) if map.get("metadata").is_some_and(|m| !m.is_object()) => {
            let mut without = map.clone();
            without.shift_remove("metadata");
            returned.as_object() == Some(&without)
        }
        _ => false,
    }
}

/// Writes `items` into a new directory `dir` (which must not exist).
pub fn write_to_dir(dir: &Path, items: &[Value], package_name: &str) -> Result<(), PackageError> {
    if dir.exists() {
        return Err(PackageError::OutputExists(dir.to_path_buf()));
    }
    let files = group_files(items, package_name)?;
    for (path, docs) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io("could not create directory", parent))?;
        }
        std::fs::write(&full, render_file(path, docs)).map_err(io("could not write", &full))?;
    }
    if files.is_empty() {
        std::fs::create_dir_all(dir).map_err(io("could not create directory", dir))?;
    }
    Ok(())
}

/// `-o unwrap`: the items as a multi-document YAML stream without path/index annotations.
pub fn unwrap(items: &[Value]) -> String {
    let docs: Vec<Value> = items
        .iter()
        .map(|i| {
            let mut c = i.clone();
            rl::remove_annotations(&mut c, INTERNAL_ANNOTATIONS);
            c
        })
        .collect();
    yaml::emit_all(&docs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_annotates_and_writes_back_only_what_changed() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "Kptfile",
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: app\n",
        );
        let a = "# keep me\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
        write(d.path(), "a.yaml", a);
        write(
            d.path(),
            "b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n",
        );
        write(
            d.path(),
            "ignored/x.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        );
        write(d.path(), ".krmignore", "ignored\n");
        write(
            d.path(),
            "sub/Kptfile",
            "apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: sub\n",
        );
        write(d.path(), "notes.txt", "not krm");

        let mut orig = Originals::default();
        let local = read_package(d.path(), false, "", &mut orig).unwrap();
        assert_eq!(local.len(), 4, "Kptfile, a, b(2); not sub, not ignored");
        let mut orig_all = Originals::default();
        let all = read_package(d.path(), true, "", &mut orig_all).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(rl::annotation(&all[2], PATH), Some("b.yaml"));
        assert_eq!(rl::annotation(&all[3], INDEX), Some("1"));
        assert_eq!(rl::annotation(&all[3], LEGACY_INDEX), Some("1"));
        assert_eq!(
            direct_subpackages(d.path()).unwrap(),
            vec!["sub".to_string()]
        );

        // Change the Secret, delete a.yaml's resource, add a new one without a path.
        let mut items: Vec<Value> = local.clone();
        items.retain(|i| rl::field(i, &["metadata", "name"]) != Some("a"));
        for i in items.iter_mut() {
            if rl::field(i, &["kind"]) == Some("Secret") {
                i["metadata"]["namespace"] = json!("prod");
            }
        }
        items.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}}));
        let kptfile_before = std::fs::read(d.path().join("Kptfile")).unwrap();
        let s = write_in_place(d.path(), &items, &orig, "app").unwrap();
        assert_eq!(s.deleted, vec!["a.yaml".to_string()]);
        assert_eq!(s.unchanged, vec!["Kptfile".to_string()]);
        assert_eq!(
            s.written,
            vec!["b.yaml".to_string(), "service_svc.yaml".to_string()]
        );
        assert_eq!(
            std::fs::read(d.path().join("Kptfile")).unwrap(),
            kptfile_before
        );
        let b = std::fs::read_to_string(d.path().join("b.yaml")).unwrap();
        assert!(
            b.contains("namespace: prod") && !b.contains("config.kubernetes.io"),
            "{b}"
        );
        assert!(!d.path().join("a.yaml").exists());
    }

    #[test]
    fn rejects_paths_outside_the_package() {
        let item = json!({"kind": "ConfigMap", "metadata": {"name": "a", "annotations": {PATH: "../x.yaml"}}});
        let e = group_files(&[item], "app").unwrap_err();
        assert!(e.to_string().contains("outside the package"), "{e}");
        let item = json!({"kind": "ConfigMap", "metadata": {"name": "a", "annotations": {PATH: "/etc/x.yaml"}}});
        assert!(group_files(&[item], "app").is_err());
    }

    #[test]
    fn syncs_legacy_and_internal_annotations() {
        let mut i =
            json!({"metadata": {"annotations": {LEGACY_PATH: "x.yaml", LEGACY_INDEX: "0"}}});
        sync_annotations(&mut i, None);
        assert_eq!(rl::annotation(&i, PATH), Some("x.yaml"));
        let mut i = json!({"metadata": {"annotations": {PATH: "new.yaml", LEGACY_PATH: "old.yaml", INDEX: "0", LEGACY_INDEX: "0"}}});
        sync_annotations(&mut i, Some(("old.yaml", "0")));
        assert_eq!(rl::annotation(&i, LEGACY_PATH), Some("new.yaml"));
    }
}
