//! Scale to zero: the annotations a Deployment opts in with, and the activity Leases the
//! nodes' front doors (the ingress controller) renew while requests for it arrive, which the
//! controller-manager reads to decide it has been idle long enough.

use std::time::Duration;

/// On a Deployment: how long without requests (a duration such as `30s` or `5m`) before it
/// is scaled to zero replicas; the next request scales it back to one.
pub const SCALE_TO_ZERO_AFTER: &str = "shoal.dev/scale-to-zero-after";

/// On a Deployment: the requests in flight one pod should carry (Knative's
/// `autoscaling.knative.dev/target`); with it, replicas follow the observed concurrency.
pub const TARGET_CONCURRENCY: &str = "shoal.dev/target-concurrency";

/// On a Deployment with [`TARGET_CONCURRENCY`]: the most replicas (default 10).
pub const MAX_SCALE: &str = "shoal.dev/max-scale";

/// On a Deployment that wakes from zero: `"true"` lets the node's front door answer
/// requests arriving while it has no ready pod with a standby instance of its HTTP component,
/// made from the pod template with no pod (see `shoal_runtime::local_http`): no volumes, no
/// network, output discarded, literal environment only.
pub const ANSWER_WHILE_WAKING: &str = "shoal.dev/answer-while-waking";

/// A `"true"`/`"false"` annotation's value.
pub fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be \"true\" or \"false\"".into()),
    }
}

/// On an activity Lease: the Deployment it reports for.
pub const ACTIVITY_OF: &str = "shoal.dev/activity-of";

/// On an activity Lease: the average requests in flight over the last report period.
pub const CONCURRENCY: &str = "shoal.dev/concurrency";

/// The activity Lease of `deployment` reported by `node`.
pub fn activity_lease(deployment: &str, node: &str) -> String {
    format!("{deployment}.activity.{node}")
}

/// A [`SCALE_TO_ZERO_AFTER`] value: a positive duration such as `30s`, `5m` or `1h30m`.
pub fn idle_after(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|_| "must be a duration such as 30s or 5m".to_owned())?;
    Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "must be a positive duration".to_owned())
}

/// A [`TARGET_CONCURRENCY`] or [`MAX_SCALE`] value: a positive number.
pub fn positive(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| "must be a positive number".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_periods_are_positive_durations() {
        assert_eq!(idle_after("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(idle_after("1m30s"), Ok(Duration::from_secs(90)));
        assert!(idle_after("0s").is_err());
        assert!(idle_after("-5s").is_err());
        assert!(idle_after("soon").is_err());
        assert_eq!(positive("2.5"), Ok(2.5));
        assert!(positive("0").is_err());
        assert!(positive("NaN").is_err());
    }
}
