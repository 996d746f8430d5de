//! Which pod the kubelet evicts first under node pressure, in Kubernetes' order: pods using
//! more than they request before pods within their requests (so Guaranteed pods, which use at
//! most what they request, go last), then lower priority first, then the ones furthest above
//! their requests.

/// A pod as the ranking sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub uid: String,
    pub priority: i32,
    /// What it uses of the resource under pressure, in bytes.
    pub usage: u64,
    /// What it requests of that resource, in bytes.
    pub request: u64,
}

/// Pods of this priority or higher (system-node-critical, system-cluster-critical) are never
/// evicted.
pub const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// `candidates` in eviction order (critical pods left out).
pub fn order(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.retain(|c| c.priority < CRITICAL_PRIORITY);
    candidates.sort_by(|a, b| {
        let exceeds = |c: &Candidate| c.usage > c.request;
        let above = |c: &Candidate| c.usage.saturating_sub(c.request);
        exceeds(b)
            .cmp(&exceeds(a))
            .then(a.priority.cmp(&b.priority))
            .then(above(b).cmp(&above(a)))
            .then(a.uid.cmp(&b.uid))
    });
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(uid: &str, priority: i32, usage: u64, request: u64) -> Candidate {
        Candidate {
            uid: uid.into(),
            priority,
            usage,
            request,
        }
    }

    #[test]
    fn pods_above_their_requests_go_first_then_by_priority_then_by_excess() {
        let guaranteed = c("guaranteed", 0, 60, 64);
        let best_effort_small = c("be-small", 0, 100, 0);
        let best_effort_big = c("be-big", 0, 900, 0);
        let burstable = c("burstable", 0, 300, 100);
        let important = c("important", 1000, 2000, 0);
        let critical = c("critical", CRITICAL_PRIORITY, 5000, 0);
        let got: Vec<String> = order(vec![
            guaranteed,
            best_effort_small,
            critical,
            burstable,
            important,
            best_effort_big,
        ])
        .into_iter()
        .map(|c| c.uid)
        .collect();
        assert_eq!(
            got,
            ["be-big", "burstable", "be-small", "important", "guaranteed"]
        );
    }
}
