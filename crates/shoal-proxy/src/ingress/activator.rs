//! Scale to zero at the front door, in Knative's activator's role: requests for a Service
//! whose scale-to-zero Deployment ([`Wake`]) is at zero are held while the Deployment is
//! scaled to one, then forwarded; and every request for such a Deployment is counted, so
//! that the node can report the Deployment's activity — when it last had a request and how
//! many it had in flight on average — in an activity Lease per node, which the
//! controller-manager's scale-to-zero controller reads to scale idle Deployments to zero
//! and busy ones by their concurrency.

use crate::wake::Wake;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use shoal_api::serverless::{ACTIVITY_OF, CONCURRENCY, activity_lease};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often activity is reported (while there is some).
pub const REPORT_PERIOD: Duration = Duration::from_secs(2);

/// The field manager of the activity Leases.
const MANAGER: &str = "shoal-ingress";

/// One Deployment's requests on this node since the last report.
#[derive(Debug)]
struct Activity {
    in_flight: u64,
    requests: u64,
    /// The integral of `in_flight` over time since the last report, in request-seconds.
    busy: f64,
    changed: Instant,
    since: Instant,
    /// A scale-up asked for and not yet seen through (one at a time).
    waking: bool,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Activity {
            in_flight: 0,
            requests: 0,
            busy: 0.0,
            changed: now,
            since: now,
            waking: false,
        }
    }

    fn advance(&mut self, now: Instant) {
        self.busy += self.in_flight as f64 * now.duration_since(self.changed).as_secs_f64();
        self.changed = now;
    }
}

/// See the module documentation.
pub struct Activator {
    client: kube::Client,
    node: String,
    activity: Mutex<HashMap<Wake, Activity>>,
}

/// A request in flight for a Deployment; counted until dropped.
pub struct InFlight {
    activator: Arc<Activator>,
    wake: Wake,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut all = self.activator.lock();
        if let Some(a) = all.get_mut(&self.wake) {
            a.advance(Instant::now());
            a.in_flight = a.in_flight.saturating_sub(1);
        }
    }
}

impl Activator {
    pub fn new(client: kube::Client, node: &str) -> Arc<Self> {
        Arc::new(Activator {
            client,
            node: node.to_owned(),
            activity: Mutex::default(),
        })
    }

    /// The client it scales and reports with (the ingress controller's identity).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Wake, Activity>> {
        self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request for `wake` until the guard drops.
    pub fn begin(self: &Arc<Self>, wake: &Wake) -> InFlight {
        let now = Instant::now();
        let mut all = self.lock();
        let a = all
            .entry(wake.clone())
            .or_insert_with(|| Activity::new(now));
        a.advance(now);
        a.in_flight += 1;
        a.requests += 1;
        InFlight {
            activator: self.clone(),
            wake: wake.clone(),
        }
    }

    /// Scales `wake` to one replica if it is at zero (once at a time): its activity is
    /// reported first, so it is not found idle the moment it wakes.
    pub fn wake(self: &Arc<Self>, wake: &Wake) {
        {
            let now = Instant::now();
            let mut all = self.lock();
            let a = all
                .entry(wake.clone())
                .or_insert_with(|| Activity::new(now));
            if a.waking {
                return;
            }
            a.waking = true;
        }
        let this = self.clone();
        let wake = wake.clone();
        tokio::spawn(async move {
            let result = this.scale_up(&wake).await;
            if let Err(e) = &result {
                tracing::warn!(namespace = %wake.namespace, deployment = %wake.deployment, error = %e, "cannot scale a Deployment up from zero");
            }
            if let Some(a) = this.lock().get_mut(&wake) {
                a.waking = false;
            }
        });
    }

    async fn scale_up(&self, wake: &Wake) -> Result<(), kube::Error> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &wake.namespace);
        // From zero to one in one request: the test fails (and nothing changes) if anyone
        // scaled it meanwhile. The Lease goes alongside, so it is not found idle at once.
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/spec/replicas", "value": 0},
            {"op": "replace", "path": "/spec/replicas", "value": 1},
        ]))
        .expect("a well-formed JSON patch");
        let (params, patch) = (PatchParams::default(), Patch::<()>::Json(patch));
        let (renewed, scaled) = tokio::join!(
            self.renew(wake, 1.0),
            api.patch_scale(&wake.deployment, &params, &patch)
        );
        renewed?;
        match scaled {
            Ok(_) => {
                tracing::info!(namespace = %wake.namespace, deployment = %wake.deployment, "scaled up from zero for a request");
                Ok(())
            }
            // Not at zero (any more): someone else scaled it.
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes this node's activity Lease for `wake`: renewed now, with the concurrency seen.
    async fn renew(&self, wake: &Wake, concurrency: f64) -> Result<(), kube::Error> {
        let name = activity_lease(&wake.deployment, &self.node);
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": wake.namespace,
                "labels": {ACTIVITY_OF: wake.deployment},
                "annotations": {CONCURRENCY: format!("{concurrency:.2}")},
                // Deleted with its Deployment.
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": wake.deployment, "uid": wake.uid}],
            },
            "spec": {
                "holderIdentity": self.node,
                "renewTime": now,
                "leaseDurationSeconds": REPORT_PERIOD.as_secs() * 2,
            },
        });
        Api::<Lease>::namespaced(self.client.clone(), &wake.namespace)
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(lease),
            )
            .await?;
        Ok(())
    }

    /// Reports activity every [`REPORT_PERIOD`] until `stop`: a Lease renewed for every
    /// Deployment that had requests (or has some in flight) since the last report.
    pub async fn report(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(REPORT_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let due: Vec<(Wake, f64)> = {
                let mut all = self.lock();
                all.retain(|_, a| a.in_flight > 0 || a.requests > 0 || a.waking);
                all.iter_mut()
                    .map(|(w, a)| {
                        a.advance(now);
                        let period = now.duration_since(a.since).as_secs_f64().max(0.001);
                        let avg = a.busy / period;
                        a.busy = 0.0;
                        a.requests = 0;
                        a.since = now;
                        (w.clone(), avg)
                    })
                    .collect()
            };
            for (w, concurrency) in due {
                if let Err(e) = self.renew(&w, concurrency).await {
                    tracing::warn!(namespace = %w.namespace, deployment = %w.deployment, error = %e, "cannot report a Deployment's activity");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_the_time_average_of_requests_in_flight() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        a.in_flight = 2;
        a.advance(t0 + Duration::from_secs(1));
        a.in_flight = 0;
        a.advance(t0 + Duration::from_secs(4));
        assert!((a.busy - 2.0).abs() < 1e-9, "{}", a.busy);
    }
}
