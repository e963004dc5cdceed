//! Service CIDRs and ClusterIP allocation.

use std::net::IpAddr;

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u128,
    prefix: u8,
    v6: bool,
}

impl Cidr {
    /// Parses `10.96.0.0/12` or `fd00::/108`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("service CIDR {s:?} has no /prefix"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("service CIDR {s:?} has an invalid address"))?;
        let prefix: u8 = len
            .parse()
            .map_err(|_| format!("service CIDR {s:?} has an invalid prefix length"))?;
        let (raw, bits, v6) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u8, false),
            IpAddr::V6(a) => (u128::from(a), 128u8, true),
        };
        if prefix > bits || bits - prefix < 2 {
            return Err(format!(
                "service CIDR {s:?} must leave room for addresses (prefix at most /{})",
                bits - 2
            ));
        }
        let host_bits = u32::from(bits - prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            !((1u128 << host_bits) - 1)
        };
        Ok(Cidr {
            base: raw & mask,
            prefix,
            v6,
        })
    }

    fn host_bits(self) -> u32 {
        u32::from(if self.v6 { 128 } else { 32 } - self.prefix)
    }

    /// The `n`-th address of the prefix (n = 1 is the `kubernetes` Service's IP).
    pub fn nth(self, n: u128) -> Option<IpAddr> {
        let size = 1u128.checked_shl(self.host_bits()).unwrap_or(u128::MAX);
        if n >= size.saturating_sub(1) {
            return None;
        }
        let raw = self.base + n;
        Some(if self.v6 {
            IpAddr::V6(raw.into())
        } else {
            IpAddr::V4((raw as u32).into())
        })
    }

    /// Is `ip` inside the prefix?
    pub fn contains(self, ip: &str) -> bool {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if !self.v6 => {
                let raw = u128::from(u32::from(a));
                raw >> self.host_bits() == self.base >> self.host_bits()
            }
            Ok(IpAddr::V6(a)) if self.v6 => {
                let raw = u128::from(a);
                self.host_bits() >= 128 || raw >> self.host_bits() == self.base >> self.host_bits()
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    /// `10.96.0.0/12`, as `--service-cluster-ip-range` spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = if self.v6 {
            IpAddr::V6(self.base.into())
        } else {
            IpAddr::V4(u32::try_from(self.base).unwrap_or(0).into())
        };
        write!(f, "{ip}/{}", self.prefix)
    }
}

impl Default for Cidr {
    /// kubeadm's default service CIDR, 10.96.0.0/12.
    fn default() -> Self {
        Cidr::parse("10.96.0.0/12").expect("valid literal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_address_and_membership() {
        let c = Cidr::default();
        assert_eq!(c.nth(1).unwrap().to_string(), "10.96.0.1");
        assert!(c.contains("10.100.3.4"));
        assert!(!c.contains("10.112.0.1"));
        let c6 = Cidr::parse("fd00:10:96::/112").unwrap();
        assert_eq!(c6.nth(1).unwrap().to_string(), "fd00:10:96::1");
        assert!(Cidr::parse("10.0.0.0/32").is_err());
        assert!(Cidr::parse("nonsense").is_err());
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert_eq!(c6.to_string(), "fd00:10:96::/112");
    }
}
