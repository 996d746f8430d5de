//! Lease-based leader election, as Kubernetes' components do it (client-go's `leaderelection`
//! with a `coordination.k8s.io/v1` Lease): when several schedulers or controller-managers run,
//! one holds the Lease and works; the others wait and take over when it stops renewing.
//!
//! A candidate acquires the Lease when it is free, its own, or has not changed for
//! `lease_duration` as this candidate observed it (its own clock, so clocks need not agree);
//! the holder renews every `retry_period` and gives the work up when it cannot renew within
//! `renew_deadline`. Every write is a compare-and-swap on the Lease's resourceVersion. A
//! candidate stopping while it leads releases the Lease, so the next takes over at once.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where the Lease is and how it is held.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    /// `kube-scheduler`, `kube-controller-manager`.
    pub name: String,
    /// This candidate (`HOST_UUID`, as Kubernetes' components name themselves).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Election {
    /// Kubernetes' defaults (15 s lease, 10 s renew deadline, 2 s retry period) for the Lease
    /// `kube-system/NAME`, with a fresh identity on this host.
    pub fn new(name: &str) -> Self {
        Election {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: format!("{}_{}", host_name(), uuid::Uuid::new_v4()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Runs `work` while this candidate leads, until `stop`: the work gets a token cancelled
    /// when leadership is lost (then the candidate competes again and starts a new `work`
    /// once it leads again) or when `stop` is cancelled (then the Lease is released).
    pub async fn run<F, Fut>(self, client: kube::Client, stop: CancellationToken, work: F)
    where
        F: Fn(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let mut seen = Observed::default();
        loop {
            // Compete until this candidate holds the Lease.
            loop {
                if stop.is_cancelled() {
                    return;
                }
                match self.try_acquire_or_renew(&api, &mut seen).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, lease = %self.name, "cannot read the lease")
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(jittered(self.retry_period)) => {}
                }
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "successfully acquired lease");
            crate::Recorder::new(client.clone(), &self.name, None).record(
                &Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        uid: seen.uid.clone(),
                        ..Default::default()
                    },
                    spec: None,
                },
                None,
                crate::EventType::Normal,
                "LeaderElection",
                format!("{} became leader", self.identity),
            );
            let leading = stop.child_token();
            // The work runs in this task: whatever ends the election ends the work.
            let work_done = work(leading.clone());
            tokio::pin!(work_done);
            let mut finished = false;
            let mut renewed = Instant::now();
            loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        leading.cancel();
                        if !finished {
                            work_done.as_mut().await;
                        }
                        self.release(&api).await;
                        return;
                    }
                    () = work_done.as_mut(), if !finished => finished = true,
                    () = tokio::time::sleep(self.retry_period) => {
                        match self.try_acquire_or_renew(&api, &mut seen).await {
                            Ok(true) => renewed = Instant::now(),
                            Ok(false) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, lease = %self.name, "cannot renew the lease");
                                if renewed.elapsed() >= self.renew_deadline {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            tracing::error!(lease = %self.name, identity = %self.identity, "leaderelection lost");
            leading.cancel();
            if !finished {
                work_done.as_mut().await;
            }
        }
    }

    /// Takes or renews the Lease if it is free, ours, or expired as we observed it.
    async fn try_acquire_or_renew(
        &self,
        api: &Api<Lease>,
        seen: &mut Observed,
    ) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        // Whole seconds on the wire, rounded up (at least 1).
        let secs = i32::try_from(self.lease_duration.as_millis().div_ceil(1000))
            .unwrap_or(i32::MAX)
            .max(1);
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(l) => {
                    seen.update(&l);
                    Ok(true)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        seen.update(&lease);
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_for = Duration::from_secs(
            spec.lease_duration_seconds
                .map_or(0, |s| u64::try_from(s).unwrap_or(0)),
        );
        let expired = holder.is_empty() || seen.since.elapsed() >= held_for;
        if holder != self.identity && !expired {
            return Ok(false);
        }
        if holder != self.identity {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(MicroTime(now));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(MicroTime(now));
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                seen.update(&l);
                Ok(true)
            }
            // Someone else wrote it first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (holder cleared), if still ours.
    async fn release(&self, api: &Api<Lease>) {
        let Ok(Some(mut lease)) = api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if let Err(e) = api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, lease = %self.name, "cannot release the lease");
        }
    }
}

/// This machine's host name (the first part of a candidate's identity).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The Lease as this candidate last saw it change, by its own clock.
#[derive(Debug)]
struct Observed {
    version: Option<String>,
    uid: Option<String>,
    since: Instant,
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            version: None,
            uid: None,
            since: Instant::now(),
        }
    }
}

impl Observed {
    fn update(&mut self, lease: &Lease) {
        if lease.metadata.resource_version != self.version {
            self.version = lease.metadata.resource_version.clone();
            self.uid = lease.metadata.uid.clone();
            self.since = Instant::now();
        }
    }
}

/// Up to 20% more than `d`, so candidates do not retry in step.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d.mul_f64(f64::from(nanos % 1000) / 5000.0)
}
