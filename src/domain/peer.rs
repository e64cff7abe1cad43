//! A calling service's identity, as its verified client certificate names
//! it: its URI SANs (a SPIFFE id, say), or else its DNS SANs.

use std::fmt;

/// The names a peer goes by; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(Vec<String>);

impl PeerIdentity {
    /// From a certificate's SANs: the URI ones if it has any, else the DNS
    /// ones; `None` when it has neither.
    pub fn from_sans(uris: Vec<String>, dns_names: Vec<String>) -> Option<Self> {
        let names = if uris.is_empty() { dns_names } else { uris };
        (!names.is_empty()).then_some(Self(names))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// Whether one of its names is in `allowed` (exact match: no patterns,
    /// so nothing is allowed by accident).
    pub fn is_in(&self, allowed: &[String]) -> bool {
        self.0.iter().any(|name| allowed.iter().any(|a| a == name))
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_sans_win_over_dns_sans_and_match_exactly() {
        let spiffe = "spiffe://example.org/ns/billing/sa/api".to_owned();
        let peer = PeerIdentity::from_sans(vec![spiffe.clone()], vec!["billing.internal".into()])
            .expect("identity");
        assert_eq!(peer.names(), std::slice::from_ref(&spiffe));
        assert!(peer.is_in(&[spiffe]));
        assert!(!peer.is_in(&["billing.internal".into()]), "DNS names only without a URI");
        assert!(!peer.is_in(&["spiffe://example.org/ns/billing".into()]), "no prefixes");
        let dns = PeerIdentity::from_sans(vec![], vec!["a.internal".into(), "b.internal".into()])
            .expect("identity");
        assert!(dns.is_in(&["b.internal".into()]));
        assert_eq!(dns.to_string(), "a.internal,b.internal");
        assert_eq!(PeerIdentity::from_sans(vec![], vec![]), None);
    }
}
