//! The node's memory for pods, charged as it is used.
//!
//! A runtime that sees every byte its guests take (the Wasm runtime sees every linear-memory
//! and table growth) charges each container's growth to the container's own limit
//! (`resources.limits.memory`, across all its instances) and to one [`MemoryBudget`] for the
//! whole node: `capacity - kube-reserved - system-reserved`. A growth that would pass either
//! fails in the guest, which the runtime reports as `OOMKilled`, so a pod without a limit may
//! use what is free but never what is reserved for the control plane and the system. The
//! kubelet reads [`MemoryBudget::stats`] as its `memory.available` eviction signal.
//!
//! Charging is a compare-and-swap on two counters; releasing, two subtractions.

use crate::NodeMemory;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// All pods' memory on a node; cheap to share.
#[derive(Debug)]
pub struct MemoryBudget {
    /// `u64::MAX`: no budget.
    limit: AtomicU64,
    used: AtomicU64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget {
            limit: AtomicU64::new(u64::MAX),
            used: AtomicU64::new(0),
        }
    }
}

impl MemoryBudget {
    pub fn new(limit: Option<u64>) -> Arc<Self> {
        let b = Arc::new(MemoryBudget::default());
        b.set_limit(limit);
        b
    }

    /// Sets the budget (`None`: unlimited); memory already used stays charged.
    pub fn set_limit(&self, limit: Option<u64>) {
        self.limit
            .store(limit.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|l| *l != u64::MAX)
    }

    /// Charges `bytes` if they fit under the budget.
    pub fn try_charge(&self, bytes: u64) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|after| *after <= limit)
            })
            .is_ok()
    }

    /// Charges `bytes` whatever the budget says (host-side state an instance needs to exist;
    /// its growth is what the budget refuses).
    pub fn charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget and what is used of it (the budget reads as the machine's memory when
    /// there is none).
    pub fn stats(&self) -> NodeMemory {
        NodeMemory {
            limit_bytes: self
                .limit()
                .unwrap_or_else(|| total_memory().unwrap_or(u64::MAX)),
            used_bytes: self.used(),
        }
    }
}

/// Why a growth was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The container's `resources.limits.memory`.
    Limit,
    /// The node's memory for pods.
    Node,
}

impl Exhausted {
    /// The message of the `OOMKilled` termination.
    pub fn message(self) -> &'static str {
        match self {
            Exhausted::Limit => "the container reached its memory limit",
            Exhausted::Node => {
                "the node's memory for pods is exhausted (capacity less kube-reserved and system-reserved)"
            }
        }
    }
}

/// One container's memory: its limit and what all its instances use together.
#[derive(Debug)]
pub struct ContainerMemory {
    limit: Option<u64>,
    used: AtomicU64,
    cpu_nanos: AtomicU64,
    budget: Arc<MemoryBudget>,
}

impl ContainerMemory {
    pub fn new(limit: Option<u64>, budget: Arc<MemoryBudget>) -> Arc<Self> {
        Arc::new(ContainerMemory {
            limit,
            used: AtomicU64::new(0),
            cpu_nanos: AtomicU64::new(0),
            budget,
        })
    }

    /// Adds CPU time the container's instances ran (the runtime's CPU accounting, which is
    /// also what enforces `limits.cpu`).
    pub fn charge_cpu(&self, ran: std::time::Duration) {
        self.cpu_nanos
            .fetch_add(ran.as_nanos() as u64, Ordering::Relaxed);
    }

    /// CPU time its instances have run, in nanoseconds, since the container was created.
    pub fn cpu_nanos(&self) -> u64 {
        self.cpu_nanos.load(Ordering::Relaxed)
    }

    /// Charges a growth of `bytes` to the container and the node, or refuses it.
    pub fn grow(&self, bytes: u64) -> Result<(), Exhausted> {
        let limit = self.limit.unwrap_or(u64::MAX);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|after| *after <= limit)
            })
            .map_err(|_| Exhausted::Limit)?;
        if !self.budget.try_charge(bytes) {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Exhausted::Node);
        }
        Ok(())
    }

    /// Charges `bytes` the container needs to exist at all (never refused).
    pub fn charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        self.budget.charge(bytes);
    }

    /// Gives `bytes` back (an instance ended).
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
        self.budget.release(bytes);
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Whose memory an account is: a container of a sandbox of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub sandbox: crate::SandboxId,
    /// The pod's uid.
    pub uid: String,
    pub container: String,
}

struct Account {
    owner: Owner,
    memory: Arc<ContainerMemory>,
    removed: bool,
}

/// Every container's memory account, from its creation until it has given its memory back:
/// a removed container whose instances are still being torn down keeps counting for its pod,
/// so what the stats report matches what the budget holds (an eviction waits for it).
#[derive(Default)]
pub struct Accounts {
    accounts: std::sync::Mutex<Vec<Account>>,
}

impl Accounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Account>> {
        // Only list updates run under the lock.
        self.accounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts counting `memory` for `owner`.
    pub fn open(&self, owner: Owner, memory: Arc<ContainerMemory>) {
        self.lock().push(Account {
            owner,
            memory,
            removed: false,
        });
    }

    /// The container is removed; its account goes once its memory is back.
    pub fn close(&self, memory: &Arc<ContainerMemory>) {
        for a in self.lock().iter_mut() {
            if Arc::ptr_eq(&a.memory, memory) {
                a.removed = true;
            }
        }
    }

    /// Every container of the sandbox is removed.
    pub fn close_sandbox(&self, sandbox: &crate::SandboxId) {
        for a in self.lock().iter_mut() {
            if a.owner.sandbox == *sandbox {
                a.removed = true;
            }
        }
    }

    /// Per sandbox: its pod and what its containers hold (a container restarted counts once,
    /// its largest run).
    pub fn stats(&self) -> Vec<crate::SandboxStats> {
        let mut accounts = self.lock();
        accounts.retain(|a| !a.removed || a.memory.used() > 0);
        // Per sandbox: the pod's uid, and per container (memory bytes, CPU nanoseconds).
        type Usage<'a> = std::collections::BTreeMap<&'a str, (u64, u64)>;
        let mut by_sandbox: std::collections::BTreeMap<&crate::SandboxId, (&str, Usage<'_>)> =
            Default::default();
        for a in accounts.iter() {
            let (_, containers) = by_sandbox
                .entry(&a.owner.sandbox)
                .or_insert((a.owner.uid.as_str(), Default::default()));
            let e = containers.entry(a.owner.container.as_str()).or_default();
            // The latest run's memory (the largest, while an old run is torn down) and CPU.
            e.0 = e.0.max(a.memory.used());
            e.1 = if a.removed {
                e.1
            } else {
                e.1.max(a.memory.cpu_nanos())
            };
        }
        by_sandbox
            .into_iter()
            .map(|(id, (uid, containers))| crate::SandboxStats {
                id: id.clone(),
                uid: uid.to_owned(),
                memory_bytes: containers.values().map(|c| c.0).sum(),
                containers: containers
                    .into_iter()
                    .map(|(n, (memory_bytes, cpu_nanos))| crate::ContainerStats {
                        name: n.to_owned(),
                        memory_bytes,
                        cpu_nanos,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Total memory of the machine, from `/proc/meminfo`.
pub fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_refused_past_the_container_limit_or_the_node_budget() {
        let node = MemoryBudget::new(Some(100));
        let a = ContainerMemory::new(Some(60), node.clone());
        let b = ContainerMemory::new(None, node.clone());
        assert_eq!(a.grow(50), Ok(()));
        assert_eq!(a.grow(20), Err(Exhausted::Limit));
        assert_eq!(b.grow(40), Ok(()));
        assert_eq!(b.grow(20), Err(Exhausted::Node), "50 + 40 + 20 > 100");
        assert_eq!(node.used(), 90);
        a.release(50);
        assert_eq!(b.grow(20), Ok(()));
        assert_eq!((a.used(), b.used(), node.used()), (0, 60, 60));
        // Overhead is charged even past the budget; growth then waits for room.
        b.charge(50);
        assert_eq!(node.used(), 110);
        assert_eq!(b.grow(1), Err(Exhausted::Node));
        assert_eq!(
            node.stats(),
            NodeMemory {
                limit_bytes: 100,
                used_bytes: 110
            }
        );
    }

    #[test]
    fn a_removed_container_counts_until_its_memory_is_back() {
        let node = MemoryBudget::new(None);
        let accounts = Accounts::default();
        let owner = |c: &str| Owner {
            sandbox: crate::SandboxId("sb".into()),
            uid: "uid".into(),
            container: c.into(),
        };
        let a = ContainerMemory::new(None, node.clone());
        let b = ContainerMemory::new(None, node.clone());
        accounts.open(owner("a"), a.clone());
        accounts.open(owner("b"), b.clone());
        a.grow(10).unwrap();
        b.grow(5).unwrap();
        let s = &accounts.stats()[0];
        assert_eq!((s.uid.as_str(), s.memory_bytes), ("uid", 15));
        accounts.close(&a);
        assert_eq!(
            accounts.stats()[0].memory_bytes,
            15,
            "still being torn down"
        );
        a.release(10);
        let c = &accounts.stats()[0].containers;
        assert_eq!(
            (c.len(), c[0].name.as_str(), c[0].memory_bytes),
            (1, "b", 5)
        );
        accounts.close_sandbox(&crate::SandboxId("sb".into()));
        b.release(5);
        assert!(accounts.stats().is_empty());
    }
}
