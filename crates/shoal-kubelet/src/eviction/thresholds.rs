//! The kubelet's reservation and eviction flags, parsed as Kubernetes spells them:
//! `--kube-reserved cpu=500m,memory=1Gi,ephemeral-storage=1Gi` (and `--system-reserved`), and
//! `--eviction-hard memory.available<100Mi,nodefs.available<10%`.

use std::str::FromStr;

/// Why a flag value was refused; the message names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FlagError(pub String);

/// Resources kept from pods (`--kube-reserved`, `--system-reserved`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

impl std::ops::Add for Reserved {
    type Output = Reserved;
    fn add(self, o: Reserved) -> Reserved {
        Reserved {
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory_bytes: self.memory_bytes + o.memory_bytes,
            ephemeral_storage_bytes: self.ephemeral_storage_bytes + o.ephemeral_storage_bytes,
        }
    }
}

impl FromStr for Reserved {
    type Err = FlagError;
    fn from_str(s: &str) -> Result<Self, FlagError> {
        let mut r = Reserved::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| FlagError(format!("{item:?}: expected RESOURCE=QUANTITY")))?;
            let bad =
                |e: shoal_api::quantity::QuantityError| FlagError(format!("{name}={value}: {e}"));
            match name {
                "cpu" => r.cpu_millis = shoal_api::quantity::millis(value).map_err(bad)?,
                "memory" => r.memory_bytes = shoal_api::quantity::bytes(value).map_err(bad)?,
                "ephemeral-storage" => {
                    r.ephemeral_storage_bytes = shoal_api::quantity::bytes(value).map_err(bad)?
                }
                // Process ids are not a resource a Wasm pod takes.
                "pid" => {}
                other => {
                    return Err(FlagError(format!(
                        "unknown resource {other:?}: use cpu, memory, ephemeral-storage or pid"
                    )));
                }
            }
        }
        Ok(r)
    }
}

/// A threshold: an amount, or a share of the resource's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantity {
    Bytes(u64),
    Percent(f64),
}

impl Quantity {
    /// The threshold in bytes for a resource of `capacity` bytes.
    pub fn of(self, capacity: u64) -> u64 {
        match self {
            Quantity::Bytes(b) => b,
            Quantity::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quantity::Bytes(b) => f.write_str(&quantity(*b)),
            Quantity::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `bytes` as Kubernetes prints an amount of memory: the largest binary suffix that divides it.
pub fn quantity(bytes: u64) -> String {
    for (suffix, unit) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    if bytes >= 1 << 10 {
        return format!("{}Ki", bytes >> 10);
    }
    bytes.to_string()
}

/// Hard eviction thresholds (`--eviction-hard`): the signals Shoal watches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// `memory.available<...`: the pods' memory budget less what they use.
    pub memory_available: Option<Quantity>,
    /// `nodefs.available<...`: free space of the file system the node's data lives on.
    pub nodefs_available: Option<Quantity>,
}

/// Signals Kubernetes has that Shoal accepts and does not watch (a Wasm node has no separate
/// image file system, and pods take no process ids).
const UNWATCHED: &[&str] = &[
    "imagefs.available",
    "imagefs.inodesFree",
    "nodefs.inodesFree",
    "pid.available",
];

impl FromStr for Thresholds {
    type Err = FlagError;
    fn from_str(s: &str) -> Result<Self, FlagError> {
        let mut t = Thresholds::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (signal, value) = item.split_once('<').ok_or_else(|| {
                FlagError(format!(
                    "{item:?}: expected SIGNAL<QUANTITY, such as memory.available<100Mi"
                ))
            })?;
            let value = value.trim();
            let q = if let Some(p) = value.strip_suffix('%') {
                let p: f64 = p
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=100.0).contains(p))
                    .ok_or_else(|| FlagError(format!("{item:?}: a percentage is 0-100%")))?;
                Quantity::Percent(p)
            } else {
                Quantity::Bytes(
                    shoal_api::quantity::bytes(value)
                        .map_err(|e| FlagError(format!("{item:?}: {e}")))?,
                )
            };
            match signal.trim() {
                "memory.available" => t.memory_available = Some(q),
                "nodefs.available" => t.nodefs_available = Some(q),
                s if UNWATCHED.contains(&s) => {}
                other => {
                    return Err(FlagError(format!(
                        "unknown eviction signal {other:?}: use memory.available or nodefs.available"
                    )));
                }
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_and_thresholds_parse_as_kubernetes_spells_them() {
        let r: Reserved = "cpu=500m, memory=1Gi,ephemeral-storage=2Gi,pid=1000"
            .parse()
            .unwrap();
        assert_eq!(
            r,
            Reserved {
                cpu_millis: 500,
                memory_bytes: 1 << 30,
                ephemeral_storage_bytes: 2 << 30
            }
        );
        assert!("gpu=1".parse::<Reserved>().unwrap_err().0.contains("gpu"));
        assert!("memory".parse::<Reserved>().is_err());
        let t: Thresholds = "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%"
            .parse()
            .unwrap();
        assert_eq!(t.memory_available, Some(Quantity::Bytes(100 << 20)));
        assert_eq!(t.nodefs_available, Some(Quantity::Percent(10.0)));
        assert_eq!(Quantity::Percent(10.0).of(1000), 100);
        assert!("memory.available>1Gi".parse::<Thresholds>().is_err());
        assert!("memory.free<1Gi".parse::<Thresholds>().is_err());
        assert!("nodefs.available<150%".parse::<Thresholds>().is_err());
        assert_eq!(quantity(512 << 20), "512Mi");
        assert_eq!(quantity((1 << 30) + 4096), "1048580Ki");
    }
}
