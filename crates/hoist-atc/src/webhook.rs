//! The HTTPS server: health, `/metrics`, admission webhooks (Airways, instances, Flights)
//! and the CRD conversion webhook, as Yoke's ATC serves them.

use crate::controller::{Atc, airway_resource, flight_request, instance_request};
use crate::deploy;
use crate::spec::{ANNOTATION_OVERRIDE_FLIGHT, ANNOTATION_OVERRIDE_MODE, AirwaySpec};
use crate::tls::TlsMaterial;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Serves the webhooks on `addr` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    tls: &TlsMaterial,
    atc: Arc<Atc>,
) -> Result<tokio::task::JoinHandle<()>, crate::tls::TlsError> {
    let config = tls.server_config()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::tls::TlsError(format!("cannot listen on {addr}: {e}")))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tracing::info!(%addr, "webhook server listening (HTTPS)");
    Ok(tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let atc = atc.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req| {
                    let atc = atc.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(req, atc).await) }
                });
                if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!("webhook connection ended: {e}");
                }
            });
        }
    }))
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", message.to_string())
}

fn handle(
    req: Request<Incoming>,
    atc: Arc<Atc>,
) -> futures::future::BoxFuture<'static, Response<Full<Bytes>>> {
    // Boxed here, where every lifetime is concrete: hyper's generic service bounds cannot
    // see that the release engine's futures are Send otherwise.
    Box::pin(handle_request(req, atc))
}

async fn handle_request(req: Request<Incoming>, atc: Arc<Atc>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/live") => return text(StatusCode::OK, "ok"),
        // A follower (leader election) is live but not ready: a Service then sends the
        // webhook calls to the leader only.
        (Method::GET, "/ready") => {
            return if atc.is_leading() {
                text(StatusCode::OK, "ok")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "following: another replica holds the leader lease",
                )
            };
        }
        (Method::GET, "/metrics") => {
            let body = atc.metrics.render(atc.modules.stats());
            return respond(StatusCode::OK, "text/plain; version=0.0.4", body);
        }
        (Method::POST, _) => {}
        _ => return text(StatusCode::NOT_FOUND, "not found"),
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            );
        }
    };
    if let Some(airway) = path.strip_prefix("/crdconvert/") {
        return convert(&atc, airway, body.to_vec()).await;
    }
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("the body is not an AdmissionReview: {e}"),
            );
        }
    };
    let Some(request) = review.get("request") else {
        return text(
            StatusCode::BAD_REQUEST,
            "the AdmissionReview has no request",
        );
    };
    let verdict: futures::future::BoxFuture<'_, Result<Verdict, String>> = match path.as_str() {
        "/validations/airways.yoke.cd" => Box::pin(validate_airway(&atc, request)),
        "/validations/flights.yoke.cd" => Box::pin(validate_flight(&atc, request)),
        "/validations/resources" => Box::pin(crate::children::validate_child(&atc, request)),
        "/validations/external-resources" => {
            Box::pin(crate::children::track_external(&atc, request))
        }
        other => match other.strip_prefix("/validations/") {
            Some(airway) => Box::pin(validate_instance(&atc, airway, request)),
            None => return text(StatusCode::NOT_FOUND, "not found"),
        },
    };
    let verdict = verdict.await;
    let verdict = match verdict {
        Ok(v) => v,
        Err(message) => return text(StatusCode::INTERNAL_SERVER_ERROR, &message),
    };
    atc.metrics
        .admission(&path, matches!(verdict, Verdict::Allow | Verdict::Warn(_)));
    let uid = request.get("uid").cloned().unwrap_or(Value::Null);
    let response = match verdict {
        Verdict::Allow => json!({"uid": uid, "allowed": true}),
        Verdict::Warn(warnings) => json!({"uid": uid, "allowed": true, "warnings": warnings}),
        Verdict::Deny {
            code,
            reason,
            message,
        } => json!({
            "uid": uid,
            "allowed": false,
            "status": {"status": "Failure", "code": code, "reason": reason, "message": message},
        }),
    };
    let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    respond(StatusCode::OK, "application/json", out.to_string())
}

/// An admission decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Allowed, with warnings for the client (`kubectl` prints them).
    Warn(Vec<String>),
    /// Denied.
    Deny {
        /// HTTP-style code.
        code: u16,
        /// `Invalid`, `Forbidden`, `BadRequest`.
        reason: &'static str,
        /// Why.
        message: String,
    },
}

/// A denial.
pub fn deny(code: u16, reason: &'static str, message: impl Into<String>) -> Verdict {
    Verdict::Deny {
        code,
        reason,
        message: message.into(),
    }
}

async fn load_module(
    atc: &Atc,
    location: &str,
    checksum: &str,
    insecure: bool,
) -> Result<(), crate::modules::ModuleError> {
    let modules = atc.modules.clone();
    let (location, checksum) = (location.to_string(), checksum.to_string());
    tokio::task::spawn_blocking(move || modules.load(&location, &checksum, insecure).map(|_| ()))
        .await
        .map_err(|e| crate::modules::ModuleError::Setup(format!("module task failed: {e}")))?
}

async fn validate_airway(atc: &Atc, request: &Value) -> Result<Verdict, String> {
    let Some(airway) = request.get("object") else {
        return Ok(Verdict::Allow);
    };
    let spec = match AirwaySpec::from_object(airway) {
        Ok(spec) => spec,
        Err(e) => return Ok(deny(422, "Invalid", e.to_string())),
    };
    let mut modules = vec![(
        spec.wasm_urls.flight.clone(),
        spec.wasm_urls.flight_checksum.clone(),
    )];
    if !spec.wasm_urls.converter.is_empty() {
        modules.push((
            spec.wasm_urls.converter.clone(),
            spec.wasm_urls.converter_checksum.clone(),
        ));
    }
    for (location, checksum) in modules {
        if let Err(e) = load_module(atc, &location, &checksum, spec.run.insecure).await {
            return Ok(deny(
                422,
                "Invalid",
                format!("failed to validate flight url: {e}"),
            ));
        }
    }
    let name = airway
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": spec.template,
    });
    let api: Api<DynamicObject> = Api::all_with(
        atc.conn.client.clone(),
        &crate::controller::api_resource(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    );
    let params = PatchParams::apply("yoke").force().dry_run();
    if let Err(e) = api.patch(name, &params, &Patch::Apply(&crd)).await {
        let message = match e {
            kube::Error::Api(s) => s.message,
            other => other.to_string(),
        };
        return Ok(deny(
            422,
            "Invalid",
            format!("invalid crd template: {message}"),
        ));
    }
    Ok(Verdict::Allow)
}

fn annotation<'a>(object: Option<&'a Value>, key: &str) -> Option<&'a str> {
    object?.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// Whether the requester may `update yoke.cd/v1alpha1 airways` (SubjectAccessReview).
async fn may_override(atc: &Atc, request: &Value) -> Result<bool, String> {
    let user = request.get("userInfo").cloned().unwrap_or(Value::Null);
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user.get("username").cloned().unwrap_or(Value::Null),
            "uid": user.get("uid").cloned().unwrap_or(Value::Null),
            "groups": user.get("groups").cloned().unwrap_or(Value::Null),
            "extra": user.get("extra").cloned().unwrap_or(Value::Null),
            "resourceAttributes": {"verb": "update", "group": "yoke.cd", "version": "v1alpha1", "resource": "airways"},
        }
    });
    let api: Api<DynamicObject> = Api::all_with(
        atc.conn.client.clone(),
        &crate::controller::api_resource(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
        ),
    );
    let object: DynamicObject = serde_json::from_value(review).map_err(|e| e.to_string())?;
    let answer = api
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| format!("SubjectAccessReview failed: {e}"))?;
    Ok(answer
        .data
        .pointer("/status/allowed")
        .and_then(Value::as_bool)
        == Some(true))
}

async fn validate_instance(
    atc: &Atc,
    airway_name: &str,
    request: &Value,
) -> Result<Verdict, String> {
    let Some(object) = request.get("object").filter(|o| !o.is_null()) else {
        return Ok(Verdict::Allow);
    };
    if object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        // Finalizer removal on a terminating instance: nothing will be rendered any more.
        return Ok(Verdict::Allow);
    }
    let old = request.get("oldObject").filter(|o| !o.is_null());
    let operation = request
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or("");
    let airways: Api<DynamicObject> = Api::all_with(atc.conn.client.clone(), &airway_resource());
    let airway = match airways.get_opt(airway_name).await {
        Ok(Some(a)) => serde_json::to_value(a).map_err(|e| e.to_string())?,
        Ok(None) => {
            return Ok(deny(
                404,
                "NotFound",
                format!("airway {airway_name} not found"),
            ));
        }
        Err(e) => return Err(format!("reading airway {airway_name}: {e}")),
    };
    let spec = match AirwaySpec::from_object(&airway) {
        Ok(s) => s,
        Err(e) => return Ok(deny(422, "Invalid", format!("airway {airway_name}: {e}"))),
    };
    let names = match spec.names() {
        Ok(n) => n,
        Err(e) => return Ok(deny(422, "Invalid", format!("airway {airway_name}: {e}"))),
    };

    let overrides_changed = [ANNOTATION_OVERRIDE_FLIGHT, ANNOTATION_OVERRIDE_MODE]
        .iter()
        .any(|key| match operation {
            "CREATE" => annotation(Some(object), key).is_some(),
            _ => annotation(Some(object), key) != annotation(old, key),
        });
    if overrides_changed && !may_override(atc, request).await? {
        return Ok(deny(
            403,
            "Forbidden",
            "user does not have permissions to create or update override annotations",
        ));
    }
    if spec.skip_admission_webhook {
        return Ok(Verdict::Allow);
    }
    let request = match instance_request(object, &spec, &names, true) {
        Ok(r) => r,
        Err(e) => return Ok(deny(422, "Invalid", e)),
    };
    if let Some(url) = annotation(Some(object), ANNOTATION_OVERRIDE_FLIGHT)
        && atc.modules.check_allowed(url).is_err()
    {
        return Ok(deny(
            403,
            "Forbidden",
            format!("module {url:?} not allowed"),
        ));
    }
    let deployed = deploy::deploy(&atc.conn, &atc.modules, &request).await;
    match deployed.result {
        Ok(applied) if applied.deferred.is_empty() => Ok(Verdict::Allow),
        Ok(applied) => Ok(Verdict::Warn(
            applied
                .deferred
                .iter()
                .map(|object| {
                    format!(
                        "{object}: its kind is defined by a CRD of an earlier stage of the flight and not served yet, so it was checked against that CRD instead of a server dry run"
                    )
                })
                .collect(),
        )),
        Err(e) => Ok(deny(
            422,
            "Invalid",
            format!(
                "applying resource returned errors during dry-run. Either the inputs are invalid or the package implementation has errors: {e}"
            ),
        )),
    }
}

async fn validate_flight(atc: &Atc, request: &Value) -> Result<Verdict, String> {
    let Some(object) = request.get("object").filter(|o| !o.is_null()) else {
        return Ok(Verdict::Allow);
    };
    let mut object = object.clone();
    if let (Some(map), Some(kind)) = (
        object.as_object_mut(),
        request.pointer("/kind/kind").and_then(Value::as_str),
    ) {
        map.insert("kind".into(), json!(kind));
    }
    let flight = match flight_request(&object, true) {
        Ok(r) => r,
        Err(e) => return Ok(deny(400, "BadRequest", e)),
    };
    if let Err(e) = atc.modules.check_allowed(&flight.location) {
        return Ok(deny(403, "Forbidden", e.to_string()));
    }
    let deployed = deploy::deploy(&atc.conn, &atc.modules, &flight).await;
    match deployed.result {
        Ok(_) => Ok(Verdict::Allow),
        Err(e) => Ok(deny(400, "BadRequest", e.to_string())),
    }
}

/// Runs the Airway's converter on the raw ConversionReview and returns its output.
async fn convert(atc: &Atc, airway_name: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let airways: Api<DynamicObject> = Api::all_with(atc.conn.client.clone(), &airway_resource());
    let airway = match airways.get_opt(airway_name).await {
        Ok(Some(a)) => serde_json::to_value(a).unwrap_or(Value::Null),
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("airway {airway_name} not found"),
            );
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reading airway {airway_name}: {e}"),
            );
        }
    };
    let spec = match AirwaySpec::from_object(&airway) {
        Ok(s) if !s.wasm_urls.converter.is_empty() => s,
        Ok(_) => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("airway {airway_name} has no converter"),
            );
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let modules = atc.modules.clone();
    let result = tokio::task::spawn_blocking(move || {
        let ready = modules
            .load(
                &spec.wasm_urls.converter,
                &spec.wasm_urls.converter_checksum,
                spec.run.insecure,
            )
            .map_err(|e| e.to_string())?;
        let flight = hoist_runtime::FlightSpec {
            what: &spec.wasm_urls.converter,
            release: "converter",
            namespace: "",
            args: &[],
            stdin: body,
            max_memory_bytes: spec.run.max_memory_mib * 1024 * 1024,
            timeout: Some(Duration::from_secs(10)),
            max_stdout_bytes: MAX_BODY,
            stderr: hoist_runtime::StderrMode::Capture,
            cluster: None,
        };
        hoist_runtime::run_flight(ready.engine, &ready.loaded, flight)
            .map(|out| out.stdout)
            .map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(stdout)) => respond(StatusCode::OK, "application/json", stdout),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("converter failed: {e}"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("converter task failed: {e}"),
        ),
    }
}
