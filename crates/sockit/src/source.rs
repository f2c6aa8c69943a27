//! Who the per-address limits count as one client: the connections an address may hold, its
//! streaming slots and partial uploads, its UDP echo budget and its login failures.
//!
//! An IPv4 address is one client. An IPv6 address is counted by its /64: one host, or one
//! site's network, is routinely given a whole /64 and may send from any address in it, so a
//! limit keyed on the full address would give such a client 2^64 shares. An IPv4 address
//! written as IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports) is the IPv4 address.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// One client, as the per-address limits count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

/// The bits of an IPv6 address that name its /64.
const V6_PREFIX: u128 = !((1 << 64) - 1);

impl Source {
    /// The client `ip` belongs to.
    #[must_use]
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => Source(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & V6_PREFIX))),
            },
        }
    }
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        Source::of(ip)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(ip: &str) -> Source {
        Source::of(ip.parse().unwrap())
    }

    #[test]
    fn an_ipv6_address_counts_as_its_slash_64() {
        assert_eq!(
            source("2001:db8:1:2::1"),
            source("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(
            source("2001:db8:1:2:3:4:5:6").to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn an_ipv4_address_is_itself_even_written_as_ipv6() {
        assert_eq!(source("::ffff:10.0.0.1"), source("10.0.0.1"));
        assert_ne!(source("10.0.0.1"), source("10.0.0.2"));
        assert_eq!(source("::ffff:10.0.0.1").to_string(), "10.0.0.1");
    }
}
