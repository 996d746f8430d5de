//! Pod addresses from a node's pod CIDR.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum IpPoolError {
    #[error("{0:?} is not an IPv4 CIDR such as 127.64.0.0/16")]
    BadCidr(String),
    #[error("{0} is exhausted")]
    Exhausted(String),
}

/// Hands out the addresses of an IPv4 CIDR, skipping the network address and the first host
/// (the node's own), and takes them back.
#[derive(Debug)]
pub struct IpPool {
    cidr: String,
    base: u32,
    size: u32,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    used: BTreeSet<u32>,
    next: u32,
}

impl IpPool {
    pub fn new(cidr: &str) -> Result<Self, IpPoolError> {
        let bad = || IpPoolError::BadCidr(cidr.to_owned());
        let (addr, bits) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let bits: u32 = bits.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&bits) {
            return Err(bad());
        }
        let size = 1u32 << (32 - bits);
        let base = u32::from(addr) & !(size - 1);
        Ok(IpPool {
            cidr: cidr.to_owned(),
            base,
            size,
            state: Mutex::new(PoolState {
                used: BTreeSet::new(),
                next: 2,
            }),
        })
    }

    pub fn cidr(&self) -> &str {
        &self.cidr
    }

    /// The next free address, round-robin so a released address is not reused at once.
    pub fn allocate(&self) -> Result<IpAddr, IpPoolError> {
        let mut s = self.state.lock().expect("ip pool lock is never poisoned");
        let hosts = self.size - 3; // network, node, broadcast
        for _ in 0..hosts {
            let offset = s.next;
            s.next = if s.next + 1 >= self.size - 1 {
                2
            } else {
                s.next + 1
            };
            if s.used.insert(offset) {
                return Ok(IpAddr::V4(Ipv4Addr::from(self.base + offset)));
            }
        }
        Err(IpPoolError::Exhausted(self.cidr.clone()))
    }

    /// Whether `ip` is in the CIDR.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => u32::from(v4).wrapping_sub(self.base) < self.size,
            IpAddr::V6(_) => false,
        }
    }

    pub fn release(&self, ip: IpAddr) {
        if let IpAddr::V4(v4) = ip {
            let offset = u32::from(v4).wrapping_sub(self.base);
            self.state
                .lock()
                .expect("ip pool lock is never poisoned")
                .used
                .remove(&offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_addresses_and_reuses_released_ones_last() {
        let pool = IpPool::new("127.64.0.0/29").unwrap();
        let a: Vec<IpAddr> = (0..5).map(|_| pool.allocate().unwrap()).collect();
        assert_eq!(a[0].to_string(), "127.64.0.2");
        assert_eq!(a[4].to_string(), "127.64.0.6");
        assert!(pool.allocate().is_err());
        pool.release(a[1]);
        assert_eq!(pool.allocate().unwrap(), a[1]);
        assert!(pool.contains(a[0]) && pool.contains("127.64.0.7".parse().unwrap()));
        assert!(!pool.contains("127.64.0.8".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_cidrs() {
        for c in ["127.64.0.0", "x/16", "127.64.0.0/31", "::1/64"] {
            assert!(IpPool::new(c).is_err(), "{c}");
        }
    }
}
