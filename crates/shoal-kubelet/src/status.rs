//! A pod's containers as the worker tracks them, and the pod status they add up to.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Container;
use serde_json::{Value, json};
use shoal_runtime::ContainerId;
use std::collections::HashMap;
use tokio::time::Instant;

/// How a container ended one run.
#[derive(Debug, Clone)]
pub struct Term {
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub container_id: Option<String>,
}

/// The typed lifecycle state of one container.
#[derive(Debug, Clone)]
pub enum State {
    Waiting { reason: String, message: String },
    Running { started_at: Timestamp },
    Terminated(Term),
}

/// One container of the pod, across its restarts.
#[derive(Debug)]
pub struct Ctr {
    pub spec: Container,
    pub init: bool,
    /// An ephemeral container (`kubectl debug`): runs once, never restarts, and is not part of
    /// the pod's phase or readiness.
    pub ephemeral: bool,
    pub state: State,
    pub last: Option<Term>,
    pub restarts: i32,
    /// Has run at least once (a later start is a restart).
    pub ever_ran: bool,
    pub ready: bool,
    /// The startup probe has passed (or there is none).
    pub started: bool,
    /// Will not run again (completed, or failed under a policy that does not restart it).
    pub done: bool,
    pub image_id: String,
    pub id: Option<ContainerId>,
    /// Counts starts, so reports about an earlier run are ignored.
    pub run: u64,
    /// The next start is not before this (crash-loop and pull back-off).
    pub retry_at: Option<Instant>,
    pub backoff: std::time::Duration,
    pub probes: Option<tokio::task::AbortHandle>,
}

impl Ctr {
    /// An ephemeral container, as a container of the pod (the fields they share).
    pub fn ephemeral(spec: Container) -> Self {
        let mut c = Self::new(spec, false);
        c.ephemeral = true;
        c
    }

    pub fn new(spec: Container, init: bool) -> Self {
        Self {
            spec,
            init,
            ephemeral: false,
            state: State::Waiting {
                reason: if init {
                    "PodInitializing".into()
                } else {
                    "ContainerCreating".into()
                },
                message: String::new(),
            },
            last: None,
            restarts: 0,
            ever_ran: false,
            ready: false,
            started: false,
            done: false,
            image_id: String::new(),
            id: None,
            run: 0,
            retry_at: None,
            backoff: std::time::Duration::ZERO,
            probes: None,
        }
    }

    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Finished with exit code 0 and will not run again.
    pub fn succeeded(&self) -> bool {
        self.done && matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }

    pub fn failed(&self) -> bool {
        self.done && matches!(&self.state, State::Terminated(t) if t.exit_code != 0)
    }
}

fn ts(t: Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}

fn term_json(t: &Term) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "startedAt": ts(t.started_at),
        "finishedAt": ts(t.finished_at),
    });
    if !t.message.is_empty() {
        v["message"] = json!(t.message);
    }
    if let Some(id) = &t.container_id {
        v["containerID"] = json!(id);
    }
    v
}

fn state_json(s: &State) -> Value {
    match s {
        State::Waiting { reason, message } if message.is_empty() => {
            json!({"waiting": {"reason": reason}})
        }
        State::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        State::Running { started_at } => json!({"running": {"startedAt": ts(*started_at)}}),
        State::Terminated(t) => json!({ "terminated": term_json(t) }),
    }
}

/// `status.containerStatuses[]` for one container.
pub fn container_status(c: &Ctr, runtime: &str) -> Value {
    let mut v = json!({
        "name": c.spec.name,
        "image": c.spec.image.clone().unwrap_or_default(),
        "imageID": c.image_id,
        "ready": c.ready,
        "restartCount": c.restarts,
        "started": c.running() && c.started,
        "state": state_json(&c.state),
        "lastState": c.last.as_ref().map_or(json!({}), |t| json!({"terminated": term_json(t)})),
    });
    if let Some(id) = &c.id {
        v["containerID"] = json!(format!("{runtime}://{id}"));
    }
    v
}

/// Kubernetes' pod phase from its containers (ephemeral ones do not count).
pub fn phase(ctrs: &[Ctr], failed: bool) -> &'static str {
    let owned: Vec<&Ctr> = ctrs.iter().filter(|c| !c.ephemeral).collect();
    let ctrs = owned;
    if failed || ctrs.iter().any(|c| c.init && c.failed()) {
        return "Failed";
    }
    if !ctrs.iter().filter(|c| c.init).all(|c| c.succeeded()) {
        return "Pending";
    }
    let main: Vec<&Ctr> = ctrs.iter().copied().filter(|c| !c.init).collect();
    if main.iter().any(|c| !c.ever_ran && !c.done) {
        return "Pending";
    }
    if main.iter().all(|c| c.done) {
        return if main.iter().any(|c| c.failed()) {
            "Failed"
        } else {
            "Succeeded"
        };
    }
    "Running"
}

/// The pod's conditions, keeping each one's transition time while its status holds.
pub fn conditions(
    ctrs: &[Ctr],
    phase: &str,
    scheduled_at: Timestamp,
    history: &mut HashMap<&'static str, (bool, Timestamp)>,
) -> Value {
    let now = Timestamp::now();
    let mut at = |ty: &'static str, ok: bool| {
        let e = history.entry(ty).or_insert((ok, now));
        if e.0 != ok {
            *e = (ok, now);
        }
        e.1
    };
    let terminal = phase == "Succeeded" || phase == "Failed";
    let unready_init: Vec<&str> = ctrs
        .iter()
        .filter(|c| c.init && !c.succeeded())
        .map(|c| c.spec.name.as_str())
        .collect();
    let unready: Vec<&str> = ctrs
        .iter()
        .filter(|c| !c.init && !c.ephemeral && !c.ready)
        .map(|c| c.spec.name.as_str())
        .collect();
    let initialized = unready_init.is_empty();
    let ready = unready.is_empty() && !terminal;
    let mut out = vec![
        json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": ts(scheduled_at)}),
    ];
    let mut push = |ty: &'static str, ok: bool, reason: &str, message: String| {
        let t = at(ty, ok);
        let mut c = json!({"type": ty, "status": if ok {"True"} else {"False"}, "lastProbeTime": null, "lastTransitionTime": ts(t)});
        if !ok {
            c["reason"] = json!(reason);
            if !message.is_empty() {
                c["message"] = json!(message);
            }
        }
        out.push(c);
    };
    push(
        "Initialized",
        initialized,
        "ContainersNotInitialized",
        format!(
            "containers with incomplete status: [{}]",
            unready_init.join(" ")
        ),
    );
    let (reason, message) = if terminal {
        ("PodCompleted", String::new())
    } else {
        (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    };
    push("ContainersReady", ready, reason, message.clone());
    push("Ready", ready, reason, message);
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(init: bool) -> Ctr {
        Ctr::new(
            Container {
                name: "c".into(),
                ..Default::default()
            },
            init,
        )
    }

    fn exit(c: &mut Ctr, code: i32, done: bool) {
        let now = Timestamp::now();
        c.ever_ran = true;
        c.done = done;
        c.state = State::Terminated(Term {
            exit_code: code,
            reason: "x".into(),
            message: String::new(),
            started_at: now,
            finished_at: now,
            container_id: None,
        });
    }

    #[test]
    fn phases_follow_kubernetes() {
        let mut cs = vec![ctr(true), ctr(false)];
        assert_eq!(phase(&cs, false), "Pending");
        exit(&mut cs[0], 0, true);
        assert_eq!(
            phase(&cs, false),
            "Pending",
            "main container not started yet"
        );
        cs[1].ever_ran = true;
        cs[1].state = State::Running {
            started_at: Timestamp::now(),
        };
        assert_eq!(phase(&cs, false), "Running");
        exit(&mut cs[1], 1, false);
        assert_eq!(phase(&cs, false), "Running", "restarting after a crash");
        exit(&mut cs[1], 1, true);
        assert_eq!(phase(&cs, false), "Failed");
        exit(&mut cs[1], 0, true);
        assert_eq!(phase(&cs, false), "Succeeded");
        assert_eq!(phase(&cs, true), "Failed", "deadline exceeded");
        let mut bad_init = vec![ctr(true), ctr(false)];
        exit(&mut bad_init[0], 2, true);
        assert_eq!(phase(&bad_init, false), "Failed");
    }

    #[test]
    fn transition_times_hold_while_status_holds() {
        let cs = vec![ctr(false)];
        let mut h = HashMap::new();
        let t0 = Timestamp::now();
        let a = conditions(&cs, "Pending", t0, &mut h);
        let b = conditions(&cs, "Pending", t0, &mut h);
        assert_eq!(a, b);
        assert_eq!(a[3]["status"], "False");
        assert_eq!(a[3]["message"], "containers with unready status: [c]");
    }
}
