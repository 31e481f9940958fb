//! The source networks an app password may be used from (`apppass add --from`): a list of
//! IPv4 and IPv6 networks, matched against the literal address in PAM_RHOST.
//!
//! Stored as its canonical text (`192.0.2.0/24,2001:db8::/48`, a single address without
//! its prefix length); the empty text is "from anywhere".

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most networks one app password may have: enough for an office's ranges, small
/// enough that a login's check costs nothing next to its hash.
pub const MAX_NETWORKS: usize = 32;

/// One network: its address with the bits past `prefix` cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask4(a, self.prefix) == n,
            (IpAddr::V6(n), IpAddr::V6(a)) => mask6(a, self.prefix) == n,
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

fn mask4(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let bits = u32::from(a);
    Ipv4Addr::from(match prefix {
        0 => 0,
        p => bits & (u32::MAX << (32 - u32::from(p.min(32)))),
    })
}

fn mask6(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(a);
    Ipv6Addr::from(match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p.min(128)))),
    })
}

/// An address as the kernel sees it: an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`,
/// what a dual-stack socket reports for an IPv4 peer) is that IPv4 address.
fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Why a list of networks was refused: the entry, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworksError(String);

impl fmt::Display for NetworksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NetworksError {}

/// A list of source networks; empty: from anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Networks(Vec<Net>);

impl Networks {
    /// Reads a comma-separated list of addresses and CIDR networks (`192.0.2.0/24`,
    /// `2001:db8::/48`, `198.51.100.7`). Host bits past the prefix are cleared and
    /// repeats dropped; anything else (a host name, a bad prefix length, an empty entry)
    /// is refused with the entry named.
    pub fn parse(text: &str) -> Result<Networks, NetworksError> {
        let err = |m: String| Err(NetworksError(m));
        let mut nets = Vec::new();
        for entry in text.split(',').map(str::trim) {
            if entry.is_empty() {
                return err(format!(
                    "--from: an empty entry in {text:?}: give addresses or networks separated by commas, like 192.0.2.0/24,2001:db8::/48"
                ));
            }
            let (addr, prefix) = match entry.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (entry, None),
            };
            let Ok(addr) = addr.parse::<IpAddr>() else {
                return err(format!(
                    "--from: {entry:?} is not an IPv4 or IPv6 address or network (host names are not allowed: PAM_RHOST is matched as a literal address)"
                ));
            };
            let full: u8 = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => full,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= full && p.bytes().all(|b| b.is_ascii_digit()) => n,
                    _ => {
                        return err(format!(
                            "--from: {entry:?} has a bad prefix length: {p:?} is not a number from 0 to {full}"
                        ));
                    }
                },
            };
            let (addr, prefix) = match addr {
                IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
                    (unmapped(IpAddr::V6(v6)), prefix - 96)
                }
                a => (a, prefix),
            };
            let addr = match addr {
                IpAddr::V4(a) => IpAddr::V4(mask4(a, prefix)),
                IpAddr::V6(a) => IpAddr::V6(mask6(a, prefix)),
            };
            let net = Net { addr, prefix };
            if !nets.contains(&net) {
                nets.push(net);
            }
            if nets.len() > MAX_NETWORKS {
                return err(format!(
                    "--from: more than {MAX_NETWORKS} networks: give wider ones"
                ));
            }
        }
        Ok(Networks(nets))
    }

    /// The stored form: canonical text, `""` for anywhere.
    pub fn from_column(text: &str) -> Result<Networks, NetworksError> {
        if text.is_empty() {
            Ok(Networks::default())
        } else {
            Networks::parse(text)
        }
    }

    /// Whether this is "from anywhere".
    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a login from `rhost` (PAM_RHOST, as the service gave it) may use the
    /// password. Only a literal address can match: a host name (sshd with UseDNS) or no
    /// remote host at all never does, unless the list is empty.
    pub fn allows(&self, rhost: Option<&str>) -> bool {
        if self.is_any() {
            return true;
        }
        let Some(addr) = rhost.and_then(|r| r.trim().parse::<IpAddr>().ok()) else {
            return false;
        };
        let addr = unmapped(addr);
        self.0.iter().any(|n| n.contains(addr))
    }
}

impl fmt::Display for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        Networks::parse(text).unwrap().to_string()
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(
            canon("192.0.2.0/24,2001:db8::/48"),
            "192.0.2.0/24,2001:db8::/48"
        );
        // Host bits cleared, spaces and repeats dropped, full prefixes as bare addresses.
        assert_eq!(
            canon(" 192.0.2.77/24 , 192.0.2.0/24,198.51.100.7/32"),
            "192.0.2.0/24,198.51.100.7"
        );
        assert_eq!(canon("2001:DB8:0:0::1/48"), "2001:db8::/48");
        assert_eq!(canon("::ffff:192.0.2.9/120"), "192.0.2.0/24");
        assert_eq!(canon("0.0.0.0/0,::/0"), "0.0.0.0/0,::/0");
        assert_eq!(canon("::1"), "::1");
    }

    #[test]
    fn refuses_what_is_not_a_network() {
        for bad in [
            "",
            "mail.example.org",
            "192.0.2.0/33",
            "2001:db8::/129",
            "192.0.2.0/",
            "192.0.2.0/+8",
            "192.0.2.0/-1",
            "192.0.2.0/24/8",
            "192.0.2.0/24,",
            ",192.0.2.1",
            "192.0.2",
            "fe80::1%eth0",
            "[::1]",
            "192.0.2.1:22",
        ] {
            let e = Networks::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--from: "), "{bad:?}: {e}");
        }
        let many: Vec<String> = (0..=MAX_NETWORKS)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        assert!(Networks::parse(&many.join(",")).is_err());
        assert!(Networks::parse(&many[..MAX_NETWORKS].join(",")).is_ok());
    }

    #[test]
    fn only_literal_addresses_inside_match() {
        let n = Networks::parse("192.0.2.0/24,2001:db8::/48").unwrap();
        assert!(n.allows(Some("192.0.2.1")));
        assert!(n.allows(Some("192.0.2.255")));
        assert!(n.allows(Some("::ffff:192.0.2.3")));
        assert!(n.allows(Some("2001:db8:0:ffff::1")));
        assert!(!n.allows(Some("192.0.3.1")));
        assert!(!n.allows(Some("2001:db9::1")));
        assert!(!n.allows(Some("::ffff:192.0.3.1")));
        assert!(!n.allows(Some("mail.example.org")));
        assert!(!n.allows(Some("")));
        assert!(!n.allows(None));
        let any = Networks::from_column("").unwrap();
        assert!(any.is_any() && any.allows(None) && any.allows(Some("host")));
        let v4 = Networks::parse("10.0.0.0/8").unwrap();
        assert!(
            !v4.allows(Some("::a00:1")),
            "an IPv4-compatible address is not mapped"
        );
    }

    #[test]
    fn canonical_text_reads_back_the_same() {
        for text in ["192.0.2.0/24,2001:db8::/48", "198.51.100.7", "::/0"] {
            let n = Networks::from_column(text).unwrap();
            assert_eq!(n.to_string(), text);
            assert_eq!(Networks::from_column(&n.to_string()).unwrap(), n);
        }
    }
}
