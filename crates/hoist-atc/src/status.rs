//! `Ready` conditions with Yoke's reasons, merged into `status.conditions` by type.

use serde_json::{Value, json};

/// Condition reasons Yoke writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Work is under way.
    InProgress,
    /// Done and ready.
    Ready,
    /// Failed (the message says why).
    Error,
    /// Being deleted.
    Terminating,
}

impl Reason {
    /// The reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InProgress => "InProgress",
            Reason::Ready => "Ready",
            Reason::Error => "Error",
            Reason::Terminating => "Terminating",
        }
    }
}

/// A `Ready` condition.
pub fn ready_condition(reason: Reason, message: &str, generation: i64) -> Value {
    json!({
        "type": "Ready",
        "status": if reason == Reason::Ready { "True" } else { "False" },
        "reason": reason.as_str(),
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// Merges `new` conditions over `existing` by `type`. A condition whose status, reason and
/// message did not change keeps its `lastTransitionTime`. Returns the merged list and
/// whether anything changed.
pub fn merge_conditions(existing: &[Value], new: &[Value]) -> (Vec<Value>, bool) {
    let mut out: Vec<Value> = existing.to_vec();
    let mut changed = false;
    for condition in new {
        let kind = condition.get("type").and_then(Value::as_str).unwrap_or("");
        match out
            .iter_mut()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        {
            Some(old) => {
                let same = ["status", "reason", "message", "observedGeneration"]
                    .iter()
                    .all(|f| old.get(*f) == condition.get(*f));
                if !same {
                    let mut updated = condition.clone();
                    if old.get("status") == condition.get("status")
                        && let (Some(map), Some(t)) =
                            (updated.as_object_mut(), old.get("lastTransitionTime"))
                    {
                        map.insert("lastTransitionTime".into(), t.clone());
                    }
                    *old = updated;
                    changed = true;
                }
            }
            None => {
                out.push(condition.clone());
                changed = true;
            }
        }
    }
    (out, changed)
}

/// The `Ready` condition of an object's status, if any: `(status == "True", reason)`.
pub fn ready_of(object: &Value) -> Option<(bool, String)> {
    let condition = object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))?;
    Some((
        condition.get("status").and_then(Value::as_str) == Some("True"),
        condition
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_by_type_keeps_transition_time_when_status_is_unchanged() {
        let old = vec![
            json!({"type": "Ready", "status": "False", "reason": "InProgress", "message": "a", "observedGeneration": 1, "lastTransitionTime": "T0"}),
            json!({"type": "Custom", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "T0"}),
        ];
        let (merged, changed) =
            merge_conditions(&old, &[ready_condition(Reason::InProgress, "a", 1)]);
        assert!(!changed);
        assert_eq!(merged, old);
        let (merged, changed) =
            merge_conditions(&old, &[ready_condition(Reason::Error, "boom", 1)]);
        assert!(changed);
        assert_eq!(merged[0]["reason"], json!("Error"));
        assert_eq!(merged[0]["lastTransitionTime"], json!("T0"));
        let (merged, _) = merge_conditions(&old, &[ready_condition(Reason::Ready, "ok", 1)]);
        assert_ne!(merged[0]["lastTransitionTime"], json!("T0"));
        assert_eq!(merged[0]["status"], json!("True"));
        assert_eq!(merged[1]["type"], json!("Custom"));
        assert_eq!(
            ready_of(&json!({"status": {"conditions": merged}})),
            Some((true, "Ready".into()))
        );
    }
}
