//! Addresses and ranges of `[egress] allow` in nurture.toml: what webhooks and plugins
//! may reach although it is private (see `nurture_channels::egress`, which enforces it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use url::Url;

/// An IP range: an address and a prefix length (`10.0.0.0/8`, `fc00::/7`, `127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// An IPv4 range.
    pub const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Net {
        Net {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    /// An IPv6 range.
    pub const fn v6(segments: [u16; 8], prefix: u8) -> Net {
        let [a, b, c, d, e, f, g, h] = segments;
        Net {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// Whether `ip` is in this range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let (net, ip, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(n.to_bits()), u128::from(i.to_bits()), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (n.to_bits(), i.to_bits(), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (net >> shift) == (ip >> shift)
    }
}

/// An `[egress] allow` entry that is not a host name, an address or a range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    /// Not an IP address (with or without a prefix).
    #[error("`{0}` is not an IP address or CIDR range")]
    Address(String),
    /// A prefix length beyond the address's bits.
    #[error("`{text}`: the prefix length must be 0 to {max}")]
    Prefix {
        /// The entry as written.
        text: String,
        /// The longest prefix for its family: 32 or 128.
        max: u8,
    },
    /// Not a valid host name either.
    #[error("`{0}` is not a host name, IP address or CIDR range")]
    Host(String),
}

impl FromStr for Net {
    type Err = AllowError;
    fn from_str(s: &str) -> Result<Net, AllowError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| AllowError::Address(s.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix =
            match prefix {
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    AllowError::Prefix {
                        text: s.to_string(),
                        max,
                    }
                })?,
                None => max,
            };
        Ok(Net { addr, prefix })
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One `[egress] allow` entry: a host name, an address or a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// A host name (lower case, no trailing dot): whatever it resolves to is allowed.
    Host(String),
    /// An address or range.
    Net(Net),
}

impl FromStr for Allow {
    type Err = AllowError;
    fn from_str(s: &str) -> Result<Allow, AllowError> {
        let s = s.trim();
        let looks_ip = s.contains('/') || s.contains(':') || s.parse::<IpAddr>().is_ok();
        if looks_ip {
            return s.trim_matches(['[', ']']).parse().map(Allow::Net);
        }
        let host = s.trim_end_matches('.').to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if valid {
            Ok(Allow::Host(host))
        } else {
            Err(AllowError::Host(s.to_string()))
        }
    }
}

impl<'de> serde::Deserialize<'de> for Allow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Allow, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Allow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Allow::Host(h) => s.serialize_str(h),
            Allow::Net(n) => s.collect_str(n),
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4; others unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
/// A URL fit for logs and errors: without user name, password, query and fragment
/// (`?…` marks a removed query). Unchanged when it has none of them; an unparseable URL
/// shows its scheme and host only, at most.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = Url::parse(raw) else {
        let cut = raw.split(['?', '#']).next().unwrap_or("");
        let (scheme, rest) = cut.split_once("://").unwrap_or(("", cut));
        let host = rest.split(['/', '\\']).next().unwrap_or("");
        let host = host.rsplit('@').next().unwrap_or("");
        return format!("{scheme}://{host}/… (unparseable URL)");
    };
    let had_query = url.query().is_some();
    if url.username().is_empty()
        && url.password().is_none()
        && !had_query
        && url.fragment().is_none()
    {
        return raw.to_string();
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    let mut s = url.to_string();
    if had_query {
        s.push_str("?…");
    }
    s
}

/// Percent-encodes everything but RFC 3986's unreserved characters: an interpolated
/// value cannot change a URL's host, path, query or fragment.
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
