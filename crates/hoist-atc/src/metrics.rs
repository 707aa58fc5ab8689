//! Prometheus counters served on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the reconcile-duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    reconciles: u64,
    errors: u64,
    seconds: f64,
    /// Reconciles per bucket of [`DURATION_BUCKETS`] (not cumulative; the last slot counts
    /// those above every bound).
    buckets: [u64; DURATION_BUCKETS.len() + 1],
}

/// Reconcile counters per kind.
#[derive(Debug, Default)]
pub struct Metrics {
    kinds: Mutex<BTreeMap<&'static str, Counts>>,
    admissions: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Reconciles running now.
    pub in_flight: std::sync::atomic::AtomicI64,
    /// Re-runs requested by the child and external-object webhooks, not handed to the work
    /// queue yet.
    pub pending: std::sync::atomic::AtomicI64,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: std::sync::atomic::AtomicI64,
}

impl Metrics {
    /// Counts one reconcile of `kind` that took `took`.
    pub fn reconciled(&self, kind: &'static str, took: Duration) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let c = kinds.entry(kind).or_default();
        c.reconciles += 1;
        let secs = took.as_secs_f64();
        c.seconds += secs;
        let slot = DURATION_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Some(n) = c.buckets.get_mut(slot) {
            *n += 1;
        }
    }

    /// Counts one failed reconcile of `kind`.
    pub fn error(&self, kind: &'static str) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        kinds.entry(kind).or_default().errors += 1;
    }

    /// Counts one admission review on `path`, allowed or not.
    pub fn admission(&self, path: &str, allowed: bool) {
        let mut admissions = self.admissions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = admissions.entry(path.to_string()).or_default();
        if allowed {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    /// The Prometheus text exposition, with module cache counters.
    pub fn render(&self, modules: crate::modules::ModuleStats) -> String {
        let mut out = String::new();
        let kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner()).clone();
        out.push_str("# HELP hoist_atc_reconciles_total Reconciles run, by kind.\n# TYPE hoist_atc_reconciles_total counter\n");
        for (kind, c) in &kinds {
            let _ = writeln!(
                out,
                "hoist_atc_reconciles_total{{kind=\"{kind}\"}} {}",
                c.reconciles
            );
        }
        out.push_str("# HELP hoist_atc_reconcile_errors_total Failed reconciles, by kind.\n# TYPE hoist_atc_reconcile_errors_total counter\n");
        for (kind, c) in &kinds {
            let _ = writeln!(
                out,
                "hoist_atc_reconcile_errors_total{{kind=\"{kind}\"}} {}",
                c.errors
            );
        }
        out.push_str("# HELP hoist_atc_reconcile_seconds_total Time spent reconciling, by kind.\n# TYPE hoist_atc_reconcile_seconds_total counter\n");
        for (kind, c) in &kinds {
            let _ = writeln!(
                out,
                "hoist_atc_reconcile_seconds_total{{kind=\"{kind}\"}} {:.6}",
                c.seconds
            );
        }
        out.push_str("# HELP hoist_atc_reconcile_duration_seconds How long reconciles take, by kind.\n# TYPE hoist_atc_reconcile_duration_seconds histogram\n");
        for (kind, c) in &kinds {
            let mut cumulative = 0u64;
            for (bound, n) in DURATION_BUCKETS.iter().zip(c.buckets.iter()) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "hoist_atc_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "hoist_atc_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}\nhoist_atc_reconcile_duration_seconds_sum{{kind=\"{kind}\"}} {:.6}\nhoist_atc_reconcile_duration_seconds_count{{kind=\"{kind}\"}} {}",
                c.reconciles, c.seconds, c.reconciles
            );
        }
        let admissions = self
            .admissions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.push_str("# HELP hoist_atc_admissions_total Admission reviews answered, by path and verdict.\n# TYPE hoist_atc_admissions_total counter\n");
        for (path, (allowed, denied)) in &admissions {
            let _ = writeln!(
                out,
                "hoist_atc_admissions_total{{path=\"{path}\",allowed=\"true\"}} {allowed}"
            );
            let _ = writeln!(
                out,
                "hoist_atc_admissions_total{{path=\"{path}\",allowed=\"false\"}} {denied}"
            );
        }
        let gauge = |n: &std::sync::atomic::AtomicI64| n.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP hoist_atc_reconciles_in_flight Reconciles running now.\n# TYPE hoist_atc_reconciles_in_flight gauge\nhoist_atc_reconciles_in_flight {}",
            gauge(&self.in_flight)
        );
        let _ = writeln!(
            out,
            "# HELP hoist_atc_queue_pending Re-runs requested by webhooks and not yet queued.\n# TYPE hoist_atc_queue_pending gauge\nhoist_atc_queue_pending {}",
            gauge(&self.pending)
        );
        let _ = writeln!(
            out,
            "# HELP hoist_atc_leader 1 while this replica reconciles (holds the leader Lease).\n# TYPE hoist_atc_leader gauge\nhoist_atc_leader {}",
            gauge(&self.leader)
        );
        out.push_str("# HELP hoist_atc_module_loads_total Module loads, by outcome (cache: compiled code from the module cache).\n# TYPE hoist_atc_module_loads_total counter\n");
        for (outcome, n) in [
            ("cache", modules.cache_hits),
            ("compiled", modules.compiles),
            ("failed", modules.failures),
        ] {
            let _ = writeln!(
                out,
                "hoist_atc_module_loads_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.reconciled("Airway", Duration::from_millis(1500));
        m.error("Airway");
        m.admission("/validations/x", false);
        let text = m.render(crate::modules::ModuleStats {
            cache_hits: 3,
            compiles: 1,
            failures: 0,
        });
        assert!(
            text.contains("hoist_atc_reconciles_total{kind=\"Airway\"} 1"),
            "{text}"
        );
        assert!(text.contains("hoist_atc_reconcile_errors_total{kind=\"Airway\"} 1"));
        assert!(text.contains("hoist_atc_reconcile_seconds_total{kind=\"Airway\"} 1.5"));
        assert!(text.contains("path=\"/validations/x\",allowed=\"false\"} 1"));
        assert!(text.contains("hoist_atc_module_loads_total{outcome=\"cache\"} 3"));
    }

    #[test]
    fn the_duration_histogram_is_cumulative() {
        let m = Metrics::default();
        for ms in [3, 40, 40, 700, 120_000] {
            m.reconciled("Instance", Duration::from_millis(ms));
        }
        let text = m.render(crate::modules::ModuleStats::default());
        let bucket = |le: &str| {
            let prefix = format!(
                "hoist_atc_reconcile_duration_seconds_bucket{{kind=\"Instance\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no bucket {le}:\n{text}"))
                .to_string()
        };
        assert_eq!(bucket("0.005"), "1");
        assert_eq!(bucket("0.025"), "1");
        assert_eq!(bucket("0.05"), "3");
        assert_eq!(bucket("1"), "4");
        assert_eq!(bucket("60"), "4");
        assert_eq!(bucket("+Inf"), "5");
        assert!(text.contains("hoist_atc_reconcile_duration_seconds_count{kind=\"Instance\"} 5"));
        assert!(
            text.contains("hoist_atc_reconcile_duration_seconds_sum{kind=\"Instance\"} 120.783")
        );
        assert!(text.contains("# TYPE hoist_atc_reconcile_duration_seconds histogram"));
    }
}
