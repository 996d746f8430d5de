//! Address ranges: a node's pod CIDR, the cluster's Service range.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The default Service range: on loopback, so ClusterIPs are reachable from the node itself
/// without root, as kube-proxy makes them on Kubernetes, and no packet leaves the machine.
pub const DEFAULT_SERVICE_CIDR: &str = "127.96.0.0/16";

/// The default range of node ports, as on Kubernetes.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// The `spec.controller` of the IngressClasses the nodes' ingress controller serves.
pub const INGRESS_CONTROLLER: &str = "shoal.dev/ingress-controller";

/// The IngressClass every cluster has, served by [`INGRESS_CONTROLLER`] and the default.
pub const INGRESS_CLASS: &str = "shoal";

/// Whether `ing` belongs to one of `classes` served by [`INGRESS_CONTROLLER`], by the class
/// it names in `spec.ingressClassName` or the legacy `kubernetes.io/ingress.class`
/// annotation.
pub fn is_shoal_ingress(
    ing: &k8s_openapi::api::networking::v1::Ingress,
    classes: &[&k8s_openapi::api::networking::v1::IngressClass],
) -> bool {
    let named = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()?
                .get("kubernetes.io/ingress.class")
                .map(String::as_str)
        });
    named.is_some_and(|n| {
        classes.iter().any(|c| {
            c.metadata.name.as_deref() == Some(n)
                && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(INGRESS_CONTROLLER)
        })
    })
}

/// An IPv4 CIDR such as `127.96.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    bits: u8,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IPv4 CIDR such as 127.96.0.0/16 (prefix 8 to 30)")]
pub struct BadCidr(pub String);

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(s.to_owned());
        let (addr, bits) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let bits: u8 = bits.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&bits) {
            return Err(bad());
        }
        let size = 1u32 << (32 - bits);
        Ok(Cidr {
            base: u32::from(addr) & !(size - 1),
            bits,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.bits)
    }
}

impl Cidr {
    /// How many addresses the range spans, network and broadcast included.
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.bits)
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(offset % self.size()))
    }

    /// The offset of `ip` in the range, if it is in it.
    pub fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let o = u32::from(ip).wrapping_sub(self.base);
        (o < self.size()).then_some(o)
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        match ip {
            std::net::IpAddr::V4(v4) => self.offset(v4).is_some(),
            std::net::IpAddr::V6(_) => false,
        }
    }

    /// Whether `ip` may be handed out: in the range, neither its network nor its broadcast
    /// address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip)
            .is_some_and(|o| o != 0 && o != self.size() - 1)
    }

    /// Its lower and upper halves; `None` for a range too small to halve (a /30).
    pub fn halves(&self) -> Option<(Cidr, Cidr)> {
        if self.bits >= 30 {
            return None;
        }
        let bits = self.bits + 1;
        let half = 1u32 << (32 - bits);
        Some((
            Cidr {
                base: self.base,
                bits,
            },
            Cidr {
                base: self.base + half,
                bits,
            },
        ))
    }

    /// The last address of the range.
    pub fn last(&self) -> Ipv4Addr {
        self.nth(self.size() - 1)
    }

    /// The first host address: the `kubernetes` Service's in a Service range.
    pub fn first_host(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// The tenth: the `kube-dns` Service's, as kubeadm picks it.
    pub fn dns_host(&self) -> Ipv4Addr {
        self.nth(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingresses_of_shoal_classes_are_recognized_by_name_or_annotation() {
        use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
        use serde_json::json;
        let classes: Vec<IngressClass> = serde_json::from_value(json!([
            {"metadata": {"name": "shoal"}, "spec": {"controller": INGRESS_CONTROLLER}},
            {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}},
        ]))
        .unwrap();
        let classes: Vec<&IngressClass> = classes.iter().collect();
        let ing = |spec: serde_json::Value, annotations: serde_json::Value| -> Ingress {
            serde_json::from_value(
                json!({"metadata": {"name": "i", "annotations": annotations}, "spec": spec}),
            )
            .unwrap()
        };
        assert!(is_shoal_ingress(
            &ing(json!({"ingressClassName": "shoal"}), json!({})),
            &classes
        ));
        assert!(!is_shoal_ingress(
            &ing(json!({"ingressClassName": "nginx"}), json!({})),
            &classes
        ));
        assert!(is_shoal_ingress(
            &ing(json!({}), json!({"kubernetes.io/ingress.class": "shoal"})),
            &classes
        ));
        assert!(!is_shoal_ingress(&ing(json!({}), json!({})), &classes));
    }

    #[test]
    fn parses_masks_and_names_the_well_known_addresses() {
        let (lo, hi) = "198.18.5.0/24".parse::<Cidr>().unwrap().halves().unwrap();
        assert_eq!(
            (lo.to_string(), hi.to_string()),
            ("198.18.5.0/25".into(), "198.18.5.128/25".into())
        );
        assert_eq!(lo.last().to_string(), "198.18.5.127");
        assert!("10.0.0.0/30".parse::<Cidr>().unwrap().halves().is_none());
        let c: Cidr = "127.96.3.7/16".parse().unwrap();
        assert_eq!(c.to_string(), "127.96.0.0/16");
        assert_eq!(c.first_host().to_string(), "127.96.0.1");
        assert_eq!(c.dns_host().to_string(), "127.96.0.10");
        assert!(c.is_host("127.96.255.254".parse().unwrap()));
        assert!(!c.is_host("127.96.255.255".parse().unwrap()));
        assert!(!c.is_host("127.96.0.0".parse().unwrap()));
        assert!(!c.contains("127.97.0.1".parse().unwrap()));
        for bad in [
            "127.96.0.0",
            "x/16",
            "127.96.0.0/31",
            "::1/64",
            "127.96.0.0/7",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
