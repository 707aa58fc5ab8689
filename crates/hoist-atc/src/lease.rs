//! Leader election with a `coordination.k8s.io/v1` Lease, so two or more replicas of the
//! controller are safe: only the holder of the Lease reconciles.
//!
//! The algorithm is client-go's: a candidate takes the Lease when nobody holds it or when the
//! holder's record has not changed for a whole lease duration *as observed by the candidate's
//! own clock* (so clock skew between machines does not matter); the holder renews it every
//! `renew_every`; every write carries the `resourceVersion` it read, so two candidates never
//! both win (the API server refuses the second write with a conflict). A holder that cannot
//! renew for `renew_deadline` (shorter than the lease duration) steps down before anybody else
//! may take over. On a graceful shutdown the holder releases the Lease (empty holder), so a
//! follower takes over at its next attempt instead of after a whole lease duration.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the Lease is contended for.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the Lease's `holderIdentity`), unique per process.
    pub identity: String,
    /// How long a holder's record stays valid without a renewal.
    pub duration: Duration,
}

impl LeaseSettings {
    /// How often the holder renews (and a follower retries): a third of the duration, at
    /// least 200 ms.
    pub fn retry_period(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(200))
    }

    /// How long the holder keeps trying to renew before it steps down: two thirds of the
    /// duration, so it stops before anybody may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// Why leadership could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused or failed a Lease request.
    #[error("Lease {namespace}/{name}: {source}")]
    Api {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// One candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The holder record last seen (holder, renew time, transitions) and when this process saw
    /// it change: the lease expires `duration` after that, by this process's clock.
    observed: Mutex<Option<(String, Instant)>>,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This process holds the Lease (took or renewed it).
    Leading,
    /// Somebody else holds it (their identity, if any).
    Following(Option<String>),
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    /// A candidate for `settings` on `client`.
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }

    fn record(spec: &LeaseSpec) -> String {
        format!(
            "{}|{}|{}",
            spec.holder_identity.as_deref().unwrap_or(""),
            spec.renew_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            spec.lease_transitions.unwrap_or(0)
        )
    }

    /// Whether the holder's record has gone unrenewed for a lease duration (by this
    /// process's clock, counted from when it first saw the record).
    fn expired(&self, spec: &LeaseSpec) -> bool {
        let record = Self::record(spec);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.duration, Duration::from_secs);
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match observed.as_ref() {
            Some((seen, at)) if *seen == record => at.elapsed() >= duration,
            _ => {
                *observed = Some((record, Instant::now()));
                false
            }
        }
    }

    /// One attempt to take or renew the Lease. A conflict (somebody else wrote it first) is
    /// `Following`, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, LeaseError> {
        let me = &self.settings.identity;
        let existing = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.error(e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(secs(self.settings.duration)),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Following(None)),
                Err(e) => Err(self.error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let renewing = holder.as_deref() == Some(me.as_str());
        if !renewing && holder.is_some() && !self.expired(&spec) {
            return Ok(Attempt::Following(holder));
        }
        let mut next = spec.clone();
        next.holder_identity = Some(me.clone());
        next.lease_duration_seconds = Some(secs(self.settings.duration));
        next.renew_time = Some(now());
        if !renewing {
            next.acquire_time = Some(now());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !renewing {
                    tracing::info!(
                        lease = %format!("{}/{}", self.settings.namespace, self.settings.name),
                        previous = holder.as_deref().unwrap_or("nobody"),
                        "took the leader lease"
                    );
                }
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Following(holder)),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Waits until this process holds the Lease, retrying every retry period; API errors
    /// are logged and retried.
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => return,
                Ok(Attempt::Following(holder)) => {
                    if holder != last_holder {
                        tracing::info!(
                            holder = holder.as_deref().unwrap_or("?"),
                            "waiting for the leader lease"
                        );
                        last_holder = holder;
                    }
                }
                Err(e) => tracing::warn!("cannot take the leader lease: {e}; retrying"),
            }
            tokio::time::sleep(self.settings.retry_period()).await;
        }
    }

    /// Renews the Lease every retry period while this process holds it; returns (with the
    /// reason) when leadership is lost: somebody else holds the Lease, or renewing failed
    /// for longer than the renew deadline.
    pub async fn hold(&self) -> String {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry_period()).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => last_renewed = Instant::now(),
                Ok(Attempt::Following(holder)) => {
                    return format!(
                        "the leader lease is held by {}",
                        holder.as_deref().unwrap_or("another replica")
                    );
                }
                Err(e) => {
                    if last_renewed.elapsed() >= self.settings.renew_deadline() {
                        return format!(
                            "the leader lease could not be renewed for {:?}: {e}",
                            last_renewed.elapsed()
                        );
                    }
                    tracing::warn!("renewing the leader lease failed: {e}; retrying");
                }
            }
        }
    }

    /// Gives the Lease up (empty holder), if this process holds it, so a follower takes over
    /// at its next attempt.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_follow_the_duration() {
        let s = LeaseSettings {
            namespace: "n".into(),
            name: "l".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
        };
        assert_eq!(s.retry_period(), Duration::from_secs(5));
        assert_eq!(s.renew_deadline(), Duration::from_secs(10));
        let short = LeaseSettings {
            duration: Duration::from_millis(300),
            ..s
        };
        assert_eq!(short.retry_period(), Duration::from_millis(200));
    }
}
