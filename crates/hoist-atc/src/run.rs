//! Starting and stopping the controller.

use crate::controller::{self, Atc};
use crate::lease::{Elector, LeaseSettings};
use crate::modules::{ModuleSettings, Modules};
use crate::template::{WebhookTarget, Webhooks};
use crate::tls::TlsMaterial;
use hoist_release::Connection;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AtcError(pub String);

/// TLS files (`TLS_CA_CERT`, `TLS_SERVER_CERT`, `TLS_SERVER_KEY`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct AtcConfig {
    /// Address the HTTPS server listens on.
    pub listen: SocketAddr,
    /// Where the API server reaches the webhooks.
    pub target: WebhookTarget,
    /// TLS files; `None` makes a self-signed CA at start.
    pub tls: Option<TlsFiles>,
    /// Module pipeline settings.
    pub modules: ModuleSettings,
    /// Concurrent reconciles per controller.
    pub concurrency: u16,
    /// Leader election: `None` reconciles at once (one replica, as Yoke's ATC); `Some` waits
    /// for the Lease and reconciles only while holding it.
    pub leader_election: Option<LeaseSettings>,
}

impl AtcConfig {
    /// The names the self-signed server certificate is made for.
    pub fn certificate_names(&self) -> Vec<String> {
        match &self.target {
            WebhookTarget::Service {
                name, namespace, ..
            } => vec![
                name.clone(),
                format!("{name}.{namespace}"),
                format!("{name}.{namespace}.svc"),
            ],
            WebhookTarget::Url(url) => {
                let host = url
                    .split("://")
                    .nth(1)
                    .unwrap_or(url)
                    .split('/')
                    .next()
                    .unwrap_or("");
                let host = match host.rsplit_once(':') {
                    Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
                    _ => host,
                };
                vec![host.trim_matches(['[', ']']).to_string()]
            }
        }
    }
}

/// Runs the controller until `shutdown` resolves, then removes the global webhook
/// configurations (as Yoke does on graceful shutdown).
///
/// With leader election the HTTPS server starts at once on every replica (`/live`), but only
/// the Lease holder applies the CRDs and webhook configurations, reconciles, and reports
/// `/ready` (so an in-cluster Service sends the webhook calls to the leader, whose in-memory
/// child tracking serves dynamic and subscription modes). Losing the Lease ends the process
/// with an error (a restart competes again); a graceful shutdown releases the Lease and
/// leaves the global webhook configurations in place for the next leader.
pub async fn run(
    conn: Connection,
    config: AtcConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), AtcError> {
    let tls = match &config.tls {
        Some(files) => TlsMaterial::from_files(&files.ca, &files.cert, &files.key),
        None => TlsMaterial::self_signed(&config.certificate_names()),
    }
    .map_err(|e| AtcError(e.to_string()))?;
    let modules = Modules::new(&config.modules).map_err(|e| AtcError(e.to_string()))?;
    let own_user = own_user(&conn).await;
    tracing::info!(
        user = own_user.as_deref().unwrap_or("?"),
        "the controller's own requests skip its webhooks"
    );
    let webhooks = Webhooks {
        target: config.target.clone(),
        ca_pem: tls.ca_pem.clone(),
        own_user,
    };
    let elector = config
        .leader_election
        .clone()
        .map(|settings| Elector::new(conn.client.clone(), settings));
    let atc = Atc::new(
        conn,
        std::sync::Arc::new(modules),
        webhooks,
        config.concurrency,
    );
    atc.set_leading(elector.is_none());
    let server = crate::webhook::serve(config.listen, &tls, atc.clone())
        .await
        .map_err(|e| AtcError(e.to_string()))?;

    // Shutdown and loss of the Lease both stop the controllers; `stop` says which.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(Stop::Running);
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(Stop::Shutdown);
    });
    let stopped = |rx: &tokio::sync::watch::Receiver<Stop>| until_stopped(rx.clone());

    let elector = elector.map(std::sync::Arc::new);
    if let Some(elector) = &elector {
        let settings = elector.settings();
        tracing::info!(
            lease = %format!("{}/{}", settings.namespace, settings.name),
            identity = %settings.identity,
            "waiting to become the leader"
        );
        tokio::select! {
            _ = elector.acquire() => {}
            _ = stopped(&stop_rx) => {
                server.abort();
                return Ok(());
            }
        }
        atc.set_leading(true);
        tracing::info!(identity = %settings.identity, "leading");
        let holder = elector.clone();
        let lost_tx = stop_tx.clone();
        let rx = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                reason = holder.hold() => {
                    let _ = lost_tx.send(Stop::Lost(reason));
                }
                _ = until_stopped(rx) => {}
            }
        });
    }

    controller::apply_controller_crds(atc.conn.client.clone())
        .await
        .map_err(|e| AtcError(format!("applying the Airway/Flight CRDs: {e}")))?;
    controller::apply_global_webhooks(&atc)
        .await
        .map_err(|e| AtcError(format!("applying the webhook configurations: {e}")))?;
    tracing::info!("controller started");
    let controllers = controller::run_controllers(atc.clone(), stopped(&stop_rx));
    tokio::pin!(controllers);
    let grace_over = {
        let rx = stop_rx.clone();
        async move {
            until_stopped(rx).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        _ = &mut controllers => {}
        _ = grace_over => tracing::warn!(
            "reconciles still running {SHUTDOWN_GRACE:?} after the stop; not waiting for them any longer"
        ),
    }
    atc.set_leading(false);
    let why = stop_rx.borrow().clone();
    let result = match (why, &elector) {
        (Stop::Lost(reason), _) => Err(AtcError(format!(
            "stopped reconciling: {reason}; exiting so that a restarted process competes for the lease again"
        ))),
        (_, Some(elector)) => {
            tracing::info!(
                "shutting down: releasing the leader lease (the global webhook configurations stay for the next leader)"
            );
            elector.release().await.map_err(|e| AtcError(e.to_string()))
        }
        (_, None) => {
            tracing::info!("shutting down: removing the global webhook configurations");
            controller::delete_global_webhooks(&atc)
                .await
                .map_err(|e| AtcError(e.to_string()))
        }
    };
    server.abort();
    result
}

/// Resolves once `rx` says anything but `Running` (or its sender is gone).
async fn until_stopped(mut rx: tokio::sync::watch::Receiver<Stop>) {
    loop {
        if *rx.borrow_and_update() != Stop::Running {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// How long a stop waits for running reconciles to finish (a Pod's default termination
/// grace period is 30 s; the Lease is released and the webhooks handled after this).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the controllers stop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    Running,
    Shutdown,
    Lost(String),
}

/// The user name the API server knows the controller by (a SelfSubjectReview), so its own
/// writes skip the webhooks on children (as Yoke's match condition on its service account).
async fn own_user(conn: &Connection) -> Option<String> {
    let resource = crate::controller::api_resource(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
    );
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(conn.client.clone(), &resource);
    let review: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
        "metadata": {},
    }))
    .ok()?;
    match api.create(&kube::api::PostParams::default(), &review).await {
        Ok(answer) => answer
            .data
            .pointer("/status/userInfo/username")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        Err(e) => {
            tracing::warn!(
                "cannot learn the controller's own user name (SelfSubjectReview): {e}; its own writes will reach its webhooks"
            );
            None
        }
    }
}

/// Resolves on SIGINT or SIGTERM (graceful shutdown).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_follow_the_target() {
        let config = |target| AtcConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            target,
            tls: None,
            modules: ModuleSettings::default(),
            concurrency: 1,
            leader_election: None,
        };
        assert_eq!(
            config(WebhookTarget::Url("https://127.0.0.1:3000".into())).certificate_names(),
            vec!["127.0.0.1"]
        );
        assert_eq!(
            config(WebhookTarget::Service {
                name: "atc".into(),
                namespace: "atc".into(),
                port: 80
            })
            .certificate_names(),
            vec!["atc", "atc.atc", "atc.atc.svc"]
        );
    }
}
