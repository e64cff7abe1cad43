//! Who the client is: the peer's address, or, behind trusted proxies, the
//! first untrusted hop of `x-forwarded-for`.

use std::{fmt, net::IpAddr, str::FromStr};

/// An address block (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("not an IP address")]
    Address,
    #[error("prefix length out of range")]
    Prefix,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| CidrError::Address)?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| CidrError::Prefix)?,
            None => max,
        };
        if prefix > max {
            return Err(CidrError::Prefix);
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, canonical(address)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) as the IPv4 they are.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: `peer`, unless it is a trusted proxy, in which
/// case the `x-forwarded-for` hops are read from the nearest (rightmost)
/// back, skipping trusted proxies, and the first other address is the
/// client. A malformed hop ends the walk there (whatever is left of it was
/// written by the client and proves nothing); if every hop is trusted, the
/// farthest one is the client.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |a: IpAddr| trusted.iter().any(|c| c.contains(a));
    let peer = canonical(peer);
    let Some(header) = forwarded_for.filter(|_| is_trusted(peer)) else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        let Ok(address) = hop.trim().parse::<IpAddr>().map(canonical) else {
            break;
        };
        client = address;
        if !is_trusted(address) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    #[test]
    fn blocks_parse_and_contain() {
        let block: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(block.contains(ip("10.200.1.2")));
        assert!(block.contains(ip("::ffff:10.1.1.1")), "v4-mapped v6 counts as v4");
        assert!(!block.contains(ip("11.0.0.1")));
        let one: Cidr = "192.168.1.7".parse().expect("cidr");
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let v6: Cidr = "2001:db8::/32".parse().expect("cidr");
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("8.8.8.8")));
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Prefix));
        assert_eq!("ten/8".parse::<Cidr>(), Err(CidrError::Address));
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let proxy = ip("10.0.0.2");
        // A client that forges hops to its left changes nothing.
        let header = "6.6.6.6, 203.0.113.9, 10.0.0.1";
        assert_eq!(client_address(proxy, Some(header), &trusted), ip("203.0.113.9"));
        // An untrusted peer's header is ignored.
        assert_eq!(client_address(ip("198.51.100.1"), Some(header), &trusted), ip("198.51.100.1"));
        // Only proxies: the farthest one.
        assert_eq!(client_address(proxy, Some("10.9.9.9, 10.0.0.1"), &trusted), ip("10.9.9.9"));
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_address(proxy, Some("1.2.3.4, junk, 10.0.0.1"), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(client_address(proxy, None, &trusted), proxy);
        assert_eq!(client_address(proxy, Some("203.0.113.9"), &[]), proxy, "nothing trusted");
    }

    proptest! {
        /// Whatever the header says, the answer is the peer or one of the
        /// header's addresses, and never a trusted proxy while an
        /// untrusted address stands nearer than any garbage.
        #[test]
        fn any_header_yields_the_peer_or_one_of_its_hops(
            hops in proptest::collection::vec(
                prop_oneof![
                    (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
                    (1u8..=9, 0u8..=255).prop_map(|(a, b)| format!("{a}.1.1.{b}")),
                    "[ -~]{0,12}",
                ],
                0..6,
            )
        ) {
            let trusted = cidrs(&["10.0.0.0/8"]);
            let header = hops.join(",");
            let peer = ip("10.0.0.2");
            let client = client_address(peer, Some(&header), &trusted);
            let named = hops.iter().filter_map(|h| h.trim().parse::<IpAddr>().ok()).any(|h| h == client);
            prop_assert!(client == peer || named, "{client} from {header:?}");
            let first_untrusted = hops
                .iter()
                .rev()
                .map_while(|h| h.trim().parse::<IpAddr>().ok())
                .find(|a| !trusted[0].contains(*a));
            if let Some(expected) = first_untrusted {
                prop_assert_eq!(client, expected);
            }
        }
    }
}
