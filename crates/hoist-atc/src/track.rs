//! What the admission webhooks for children and external objects need to know about
//! instances: their effective mode, their Airway, and the objects their flight looked up in
//! its last run (dynamic and subscription modes re-run when one of those changes).

use crate::spec::{Mode, object_ref};
use hoist_runtime::host::{ClusterAccess, HostError, LookupRequest};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// One instance, as the webhooks see it.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The Airway it belongs to.
    pub airway: String,
    /// Its namespace (`None` when cluster-scoped).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its effective mode (override annotation, else the Airway's).
    pub mode: Mode,
    /// Its release and release namespace.
    pub release: (String, String),
    /// References (`<ns>/<Kind.group>:<name>`) of the objects its flight looked up.
    pub lookups: HashSet<String>,
}

/// The instances the controller reconciled, by instance reference.
#[derive(Debug, Default)]
pub struct Tracker {
    instances: Mutex<HashMap<String, Tracked>>,
}

impl Tracker {
    /// Records (or refreshes) an instance after a reconcile. `lookups` replace the previous
    /// ones after a successful run and add to them after a failed one (as Yoke does).
    pub fn record(&self, reference: &str, mut entry: Tracked, succeeded: bool) {
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        if !succeeded && let Some(previous) = instances.get(reference) {
            entry.lookups.extend(previous.lookups.iter().cloned());
        }
        instances.insert(reference.to_string(), entry);
    }

    /// Forgets an instance (deleted, or its Airway is gone).
    pub fn forget(&self, reference: &str) {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(reference);
    }

    /// Forgets every instance of `airway`.
    pub fn forget_airway(&self, airway: &str) {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| t.airway != airway);
    }

    /// The instance with this reference.
    pub fn get(&self, reference: &str) -> Option<Tracked> {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reference)
            .cloned()
    }

    /// Dynamic and subscription instances whose flight looked up `object`.
    pub fn watching(&self, object: &str) -> Vec<Tracked> {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| matches!(t.mode, Mode::Dynamic | Mode::Subscription))
            .filter(|t| t.lookups.contains(object))
            .cloned()
            .collect()
    }

    /// How many instances are tracked.
    pub fn len(&self) -> usize {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cluster access that remembers what the flight looked up (found or not), so a later change
/// to those objects can re-run it.
pub struct RecordingAccess {
    inner: Arc<dyn ClusterAccess>,
    release_namespace: String,
    seen: Arc<Mutex<HashSet<String>>>,
}

impl RecordingAccess {
    /// Wraps `inner`; lookups are added to `seen`. A lookup without namespace is recorded
    /// both cluster-scoped and in the release namespace (its scope is not known here).
    pub fn new(
        inner: Arc<dyn ClusterAccess>,
        release_namespace: &str,
        seen: Arc<Mutex<HashSet<String>>>,
    ) -> RecordingAccess {
        RecordingAccess {
            inner,
            release_namespace: release_namespace.to_string(),
            seen,
        }
    }
}

impl ClusterAccess for RecordingAccess {
    fn lookup(&self, request: &LookupRequest) -> Result<Vec<u8>, HostError> {
        let (group, _) = hoist_release::split_api_version(&request.api_version);
        let mut refs = vec![object_ref(
            group,
            &request.kind,
            Some(request.namespace.as_str()),
            &request.name,
        )];
        if request.namespace.is_empty() {
            refs.push(object_ref(
                group,
                &request.kind,
                Some(&self.release_namespace),
                &request.name,
            ));
        }
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(refs);
        self.inner.lookup(request)
    }

    fn rest_mapping(&self, group_or_api_version: &str, kind: &str) -> Result<Vec<u8>, HostError> {
        self.inner.rest_mapping(group_or_api_version, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl ClusterAccess for Nothing {
        fn lookup(&self, request: &LookupRequest) -> Result<Vec<u8>, HostError> {
            Err(HostError::NotFound(request.name.clone()))
        }
        fn rest_mapping(&self, _: &str, _: &str) -> Result<Vec<u8>, HostError> {
            Err(HostError::NotFound(String::new()))
        }
    }

    fn tracked(mode: Mode, lookups: &[&str]) -> Tracked {
        Tracked {
            airway: "backends.examples.com".into(),
            namespace: Some("default".into()),
            name: "x".into(),
            mode,
            release: ("r".into(), "default".into()),
            lookups: lookups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn lookups_are_recorded_even_when_not_found() {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let access = RecordingAccess::new(Arc::new(Nothing), "default", seen.clone());
        let request = LookupRequest {
            name: "cfg".into(),
            namespace: String::new(),
            kind: "ConfigMap".into(),
            api_version: "v1".into(),
        };
        assert!(access.lookup(&request).is_err());
        let request = LookupRequest {
            name: "web".into(),
            namespace: "apps".into(),
            kind: "Deployment".into(),
            api_version: "apps/v1".into(),
        };
        assert!(access.lookup(&request).is_err());
        let seen = seen.lock().unwrap();
        for r in [
            "/ConfigMap:cfg",
            "default/ConfigMap:cfg",
            "apps/Deployment.apps:web",
        ] {
            assert!(seen.contains(r), "{r} in {seen:?}");
        }
    }

    #[test]
    fn only_dynamic_and_subscription_instances_watch_their_lookups() {
        let tracker = Tracker::default();
        tracker.record("a", tracked(Mode::Dynamic, &["default/Secret:s"]), true);
        tracker.record("b", tracked(Mode::Standard, &["default/Secret:s"]), true);
        tracker.record(
            "c",
            tracked(Mode::Subscription, &["default/Secret:s"]),
            true,
        );
        assert_eq!(tracker.watching("default/Secret:s").len(), 2);
        assert!(tracker.watching("default/Secret:other").is_empty());
        // A failed run adds to what was looked up; a successful one replaces it.
        tracker.record("a", tracked(Mode::Dynamic, &["default/Secret:t"]), false);
        assert_eq!(tracker.get("a").unwrap().lookups.len(), 2);
        tracker.record("a", tracked(Mode::Dynamic, &["default/Secret:t"]), true);
        assert_eq!(tracker.get("a").unwrap().lookups.len(), 1);
        tracker.forget_airway("backends.examples.com");
        assert!(tracker.is_empty());
    }
}
