//! Planning a takeoff: namespace defaulting, ownership and cross-namespace checks, type
//! resolution, and the release namespace itself.

use super::*;

/// Prepares rendered stages for a release exactly as Yoke does: splits Namespaces and CRDs
/// into pre-stages, marks ownership, refuses objects in other namespaces (unless
/// `cross_namespace`), defaults the namespace of namespaced objects (scope from discovery
/// or from CRDs in the same flight), drops server-managed metadata. Unknown kinds fail here,
/// before anything is applied.
pub async fn prepare_stages(
    conn: &Connection,
    rendered: Stages,
    release: &str,
    namespace: &str,
    cross_namespace: bool,
) -> Result<Stages> {
    let mut stages = rendered.with_prestages();
    for resource in stages.iter_mut() {
        ownership::add_ownership(resource, release, namespace);
    }
    if !cross_namespace {
        let outside: Vec<String> = stages
            .iter()
            .filter(|r| r.namespace().is_some_and(|ns| ns != namespace))
            .map(|r| format!("{} (namespace {})", r, r.namespace().unwrap_or("")))
            .collect();
        if !outside.is_empty() {
            return Err(Error::CrossNamespace {
                namespace: namespace.to_string(),
                objects: outside.join(", "),
            });
        }
    }
    // Scopes of custom resources whose CRD is in the flight.
    let mut crd_scopes: HashMap<(String, String), bool> = HashMap::new();
    for resource in stages.iter().filter(|r| r.is_crd()) {
        let spec = resource.as_map().get("spec");
        let scope = spec.and_then(|s| s.get("scope")).and_then(Value::as_str);
        if let Some((g, k)) = readiness::crd_group_kind(spec) {
            crd_scopes.insert((g.to_string(), k.to_string()), scope == Some("Namespaced"));
        }
    }
    let mut errors = Vec::new();
    for resource in stages.iter_mut() {
        if resource.name().is_empty() {
            errors.push(Error::BadObject {
                object: resource.to_string(),
                message: "the object has no metadata.name".into(),
            });
            continue;
        }
        let namespaced =
            match crd_scopes.get(&(resource.group().to_string(), resource.kind().to_string())) {
                Some(n) => *n,
                None => match conn.resolve_resource(resource).await {
                    Ok(r) => r.namespaced,
                    Err(e @ (Error::UnknownKind { .. } | Error::BadObject { .. })) => {
                        errors.push(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
        if namespaced && resource.namespace().is_none() {
            resource.set_namespace(namespace);
        }
        ownership::strip_server_fields(resource);
    }
    match errors.len() {
        0 => Ok(stages),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Many {
            summary: format!("{} objects cannot be applied", errors.len()),
            errors,
        }),
    }
}

pub(super) fn describe(resource: &Resource) -> String {
    let kind = if resource.group().is_empty() {
        resource.kind().to_string()
    } else {
        format!("{}.{}", resource.kind(), resource.group())
    };
    match resource.namespace() {
        Some(ns) => format!("{kind} {ns}/{}", resource.name()),
        None => format!("{kind} {}", resource.name()),
    }
}

/// Turns a failed object request into a one-line error about that object.
pub(super) fn object_error(
    conn: &Connection,
    err: kube::Error,
    resource: &Resource,
    verb: &str,
) -> Error {
    let object = describe(resource);
    if let kube::Error::Api(status) = &err {
        match status.code {
            422 | 400 => {
                return Error::Invalid {
                    object,
                    message: status.message.clone(),
                };
            }
            409 if status.reason == "Conflict" => {
                return Error::Conflict {
                    object,
                    message: status.message.clone(),
                };
            }
            _ => {}
        }
    }
    Error::from_kube(err, format!("{verb} {object}"), conn.server())
}

pub(super) fn many(summary: String, mut errors: Vec<Error>) -> Result<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Many { summary, errors }),
    }
}

pub(super) async fn resolve_stage(conn: &Connection, stage: &[Resource]) -> Result<Vec<Resolved>> {
    let mut out = Vec::with_capacity(stage.len());
    let mut cache: HashMap<(String, String), Resolved> = HashMap::new();
    for resource in stage {
        let key = (
            resource.api_version().to_string(),
            resource.kind().to_string(),
        );
        if let Some(r) = cache.get(&key) {
            out.push(r.clone());
            continue;
        }
        let resolved = conn.resolve_resource(resource).await?;
        cache.insert(key, resolved.clone());
        out.push(resolved);
    }
    Ok(out)
}

pub(super) async fn ensure_namespace(
    conn: &Connection,
    namespace: &str,
    poll: Duration,
) -> Result<()> {
    let api: Api<Namespace> = Api::all(conn.client.clone());
    let exists = api.get_opt(namespace).await.map_err(|e| {
        Error::from_kube(e, format!("reading namespace {namespace}"), conn.server())
    })?;
    if exists.is_none() {
        let ns = Namespace {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(namespace.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(Error::from_kube(
                    e,
                    format!("creating namespace {namespace}"),
                    conn.server(),
                ));
            }
        }
    }
    let ns = Resource::from_value(
        json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":namespace}}),
    )
    .map_err(|e| Error::BadObject {
        object: namespace.to_string(),
        message: e.to_string(),
    })?;
    wait_ready(
        conn,
        std::slice::from_ref(&ns),
        Duration::from_secs(60),
        poll,
    )
    .await
}
