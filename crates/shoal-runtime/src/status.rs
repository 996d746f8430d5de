//! A container's status as every backend keeps it: Created → Running → Exited, observable, with
//! Exited final (a later report cannot overwrite how the container ended).

use crate::{ContainerId, ContainerState, ContainerStatus, Result, RuntimeError, now_nanos};
use tokio::sync::watch;

/// One container's status; clones share it.
#[derive(Clone)]
pub struct StatusCell(watch::Sender<ContainerStatus>);

impl StatusCell {
    /// A container just created from an image with `image_digest`.
    pub fn created(id: &ContainerId, name: &str, image_digest: String) -> Self {
        Self(
            watch::channel(ContainerStatus {
                id: id.clone(),
                name: name.to_owned(),
                state: ContainerState::Created,
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                image_digest,
            })
            .0,
        )
    }

    pub fn get(&self) -> ContainerStatus {
        self.0.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<ContainerStatus> {
        self.0.subscribe()
    }

    /// Refuses to start a container twice.
    pub fn ensure_created(&self) -> Result<()> {
        let st = self.0.borrow();
        if st.state == ContainerState::Created {
            Ok(())
        } else {
            Err(RuntimeError::WrongState {
                id: st.id.clone(),
                state: st.state,
                wanted: "created",
            })
        }
    }

    pub fn mark_running(&self) {
        self.0.send_modify(|st| {
            st.state = ContainerState::Running;
            st.started_at = now_nanos();
        });
    }

    /// Records the exit, unless the container has already exited.
    pub fn finish(&self, code: i32, reason: &str, message: String) {
        self.0.send_if_modified(|s| {
            if s.exited() {
                return false;
            }
            s.state = ContainerState::Exited;
            s.finished_at = now_nanos();
            s.exit_code = code;
            s.reason = reason.to_owned();
            s.message = message;
            true
        });
    }
}

/// Waits on `rx` until the container `id` has exited; `ContainerNotFound` if it is removed
/// first.
pub async fn wait_exited(
    mut rx: watch::Receiver<ContainerStatus>,
    id: &ContainerId,
) -> Result<ContainerStatus> {
    let st = rx
        .wait_for(ContainerStatus::exited)
        .await
        .map_err(|_| RuntimeError::ContainerNotFound(id.clone()))?;
    Ok(st.clone())
}
