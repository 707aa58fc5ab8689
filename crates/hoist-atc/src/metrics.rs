//! Prometheus counters served on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    reconciles: u64,
    errors: u64,
    seconds: f64,
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
}

impl Metrics {
    /// Counts one reconcile of `kind` that took `took`.
    pub fn reconciled(&self, kind: &'static str, took: Duration) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let c = kinds.entry(kind).or_default();
        c.reconciles += 1;
        c.seconds += took.as_secs_f64();
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
}
