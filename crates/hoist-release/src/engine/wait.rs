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
                Readiness::NeedsEndpointSlice => unreachable!("resolved above"),
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
