//! Waiting for a stage to become ready before the next one is applied.

use super::*;

/// Waits until every object of `stage` is ready, or `timeout` passes.
pub async fn wait_ready(
    conn: &Connection,
    stage: &[Resource],
    timeout: Duration,
    poll: Duration,
) -> Result<()> {
    let resolved = resolve_stage(conn, stage).await?;
    // A wait too long for the clock to represent never ends on time.
    let deadline = Instant::now().checked_add(timeout);
    let mut pending: Vec<usize> = (0..stage.len()).collect();
    let mut reasons: HashMap<usize, String> = HashMap::new();
    loop {
        let mut still = Vec::new();
        for &i in &pending {
            let (Some(resource), Some(res)) = (stage.get(i), resolved.get(i)) else {
                continue;
            };
            let ns = namespace_for(res, resource);
            let live = conn
                .get_object(res, ns, resource.name())
                .await
                .map_err(|e| object_error(conn, e, resource, "checking readiness of"))?;
            let verdict = match &live {
                None => Readiness::NotReady("it does not exist".into()),
                Some(live) => readiness::evaluate(live),
            };
            let verdict = match verdict {
                Readiness::NeedsEndpointSlice => {
                    endpoint_slice_readiness(conn, ns.unwrap_or(""), resource.name()).await?
                }
                Readiness::NeedsDiscovery { kind, api_versions } => {
                    match discovery_pending(conn, &kind, &api_versions).await? {
                        Some(reason) => Readiness::NotReady(reason),
                        None => Readiness::Ready,
                    }
                }
                v => v,
            };
            match verdict {
                Readiness::Ready => {}
                Readiness::Failed(reason) => {
                    return Err(Error::NotReady {
                        message: format!("{} failed: {reason}", describe(resource)),
                    });
                }
                Readiness::NotReady(reason) => {
                    reasons.insert(i, reason);
                    still.push(i);
                }
                Readiness::NeedsEndpointSlice | Readiness::NeedsDiscovery { .. } => {
                    unreachable!("resolved above")
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let list: Vec<String> = pending
                .iter()
                .map(|i| {
                    format!(
                        "{} ({})",
                        stage.get(*i).map(describe).unwrap_or_default(),
                        reasons.get(i).cloned().unwrap_or_default()
                    )
                })
                .collect();
            return Err(Error::NotReady {
                message: format!("not ready after {}: {}", humanize(timeout), list.join(", ")),
            });
        }
        let sleep = deadline.map_or(poll, |d| {
            poll.min(d.saturating_duration_since(Instant::now()))
        });
        tokio::time::sleep(sleep.max(Duration::from_millis(10))).await;
    }
}

pub(super) fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

pub(super) async fn endpoint_slice_readiness(
    conn: &Connection,
    namespace: &str,
    service: &str,
) -> Result<Readiness> {
    let Some(res) = conn.resolve("discovery.k8s.io/v1", "EndpointSlice").await? else {
        return Ok(Readiness::Ready);
    };
    let selector = format!("kubernetes.io/service-name={service}");
    let items = conn
        .list_objects(&res, Some(namespace), Some(&selector))
        .await
        .map_err(|e| {
            Error::from_kube(
                e,
                format!("listing EndpointSlices of Service {namespace}/{service}"),
                conn.server(),
            )
        })?;
    Ok(if items.is_empty() {
        Readiness::NotReady("no EndpointSlice yet".into())
    } else {
        Readiness::Ready
    })
}

/// Why the cluster's discovery is not yet serving an established CRD's `kind` in every one
/// of `api_versions` (see [`Readiness::NeedsDiscovery`]), or `None` once it is. A miss
/// refreshes the cached discovery, so the next stage resolves its custom resources from a
/// fresh view.
pub async fn discovery_pending(
    conn: &Connection,
    kind: &str,
    api_versions: &[String],
) -> Result<Option<String>> {
    for api_version in api_versions {
        if conn.resolve(api_version, kind).await?.is_none() {
            return Ok(Some(format!(
                "established, but the API server's discovery does not serve {kind} in {api_version} yet"
            )));
        }
    }
    Ok(None)
}
