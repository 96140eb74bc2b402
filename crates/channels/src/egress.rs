//! Outgoing HTTP of webhooks and plugins: where it may go, and how long it may take.
//!
//! - **Addresses.** Loopback, private, link-local (the cloud metadata address
//!   169.254.169.254 included), CGNAT, multicast, unspecified, broadcast, documentation and
//!   reserved ranges, and their IPv6 equivalents (an IPv4-mapped or embedded address is
//!   judged as IPv4) are refused, unless the operator allows the host or range
//!   (`[egress] allow` in `nurture.toml`). A literal IP is checked before sending; a name
//!   is checked *after* resolution by the client's own resolver ([`Resolver`]), which
//!   hands the connection only the addresses it allowed: the connection is pinned to
//!   checked addresses, so a name that changes its answer between check and use gains
//!   nothing.
//! - **Redirects** are not followed, unless a webhook step opts in; then at most
//!   [`MAX_HOPS`], each hop checked the same way (its literal address by the redirect
//!   policy, its name by the resolver).
//! - **Time and share.** A webhook attempt has a total timeout (connect, headers, body);
//!   each host has a limit of requests in flight and a circuit breaker ([`Gates`]), so
//!   one host that never answers cannot hold up deliveries to others.
//! - **Logs.** URLs are shown through [`redact_url`]: no credentials, no query.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use nurture_core::model::net::canonical;
pub use nurture_core::model::net::{encode_component, redact_url, Allow, AllowError, Net};

/// Redirect hops a webhook that opts in may follow.
pub const MAX_HOPS: usize = 5;
/// Default total time of one webhook attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest total time an operator may set (delivery leases assume it).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(15);
/// Default webhook requests in flight at once per host.
pub const DEFAULT_PER_HOST: usize = 4;
/// Default consecutive failures that open a host's circuit.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default time an open circuit fails fast.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);
/// How long an attempt waits for its host's turn before it is deferred.
pub const PERMIT_WAIT: Duration = Duration::from_secs(1);
/// Hosts whose state is kept; beyond it, idle hosts with a closed circuit are forgotten.
const MAX_TRACKED_HOSTS: usize = 4096;

/// Why a request was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The URL's scheme is not `http` or `https`.
    #[error("not an http(s) URL")]
    NotHttp,
    /// The URL names no host.
    #[error("the URL has no host")]
    NoHost,
    /// Every address of the host is in a refused range (loopback, private...) that
    /// `[egress] allow` does not open.
    #[error("address {addr} of `{host}` is refused ({why}); an operator can allow it in nurture.toml: [egress] allow = [\"{addr}\"]")]
    Refused {
        /// The host of the URL.
        host: String,
        /// The refused address it resolved to.
        addr: IpAddr,
        /// The range's name, e.g. `loopback` or `private`.
        why: &'static str,
    },
    /// The host resolved to no address at all.
    #[error("`{host}` resolves to no address")]
    NoAddress {
        /// The URL's host.
        host: String,
    },
    /// Resolving the host failed.
    #[error("looking up `{host}` failed: {error}")]
    Lookup {
        /// The URL's host.
        host: String,
        /// The resolver's error.
        error: String,
    },
    /// A followed redirect chain went on past its limit.
    #[error("more than {MAX_HOPS} redirects")]
    TooManyRedirects,
}

impl EgressError {
    /// Whether trying again can help: a failed or empty name lookup may succeed later; a
    /// refusal needs the operator (`[egress] allow`) or a fixed URL.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EgressError::Lookup { .. } | EgressError::NoAddress { .. }
        )
    }
}

/// Ranges refused unless allowed, with the reason shown.
const REFUSED: &[(Net, &str)] = &[
    (Net::v4(0, 0, 0, 0, 8), "unspecified / this network"),
    (Net::v4(10, 0, 0, 0, 8), "private"),
    (Net::v4(100, 64, 0, 0, 10), "carrier-grade NAT"),
    (Net::v4(127, 0, 0, 0, 8), "loopback"),
    (Net::v4(169, 254, 0, 0, 16), "link-local, cloud metadata"),
    (Net::v4(172, 16, 0, 0, 12), "private"),
    (Net::v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (Net::v4(192, 0, 2, 0, 24), "documentation"),
    (Net::v4(192, 88, 99, 0, 24), "6to4 relay"),
    (Net::v4(192, 168, 0, 0, 16), "private"),
    (Net::v4(198, 18, 0, 0, 15), "benchmarking"),
    (Net::v4(198, 51, 100, 0, 24), "documentation"),
    (Net::v4(203, 0, 113, 0, 24), "documentation"),
    (Net::v4(224, 0, 0, 0, 4), "multicast"),
    (Net::v4(240, 0, 0, 0, 4), "reserved, broadcast"),
    (Net::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (Net::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        Net::v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "IPv4-compatible (deprecated)",
    ),
    (Net::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "local NAT64"),
    (Net::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (
        Net::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments",
    ),
    (
        Net::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation",
    ),
    (Net::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (
        Net::v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        "segment routing",
    ),
    (
        Net::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local (private)",
    ),
    (Net::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        Net::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    (Net::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// The IPv4 address inside a NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::from_bits(bits as u32));
    }
    (s[0] == 0x2002).then(|| Ipv4Addr::from_bits((bits >> 80) as u32))
}

/// Why `ip` is refused by default, if it is.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    let ip = canonical(ip);
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = embedded_v4(v6) {
            return refusal(IpAddr::V4(v4));
        }
    }
    REFUSED
        .iter()
        .find(|(net, _)| net.contains(ip))
        .map(|(_, why)| *why)
}

/// The address rules: refused ranges, minus what the operator allows.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    hosts: Vec<String>,
    nets: Vec<Net>,
}

impl Policy {
    /// The default rules plus the operator's allows.
    pub fn new(allow: &[Allow]) -> Policy {
        let mut p = Policy::default();
        for a in allow {
            match a {
                Allow::Host(h) => p.hosts.push(h.clone()),
                Allow::Net(n) => p.nets.push(*n),
            }
        }
        p
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether `host` may be reached at `ip`.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), EgressError> {
        if self.host_allowed(host) || self.nets.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match refusal(ip) {
            None => Ok(()),
            Some(why) => Err(EgressError::Refused {
                host: host.to_string(),
                addr: canonical(ip),
                why,
            }),
        }
    }

    /// Checks a URL before sending: an http(s) scheme, a host, and a literal IP host's
    /// address (a name is checked by [`Resolver`] once resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressError::NotHttp);
        }
        let ip = match url.host() {
            None => return Err(EgressError::NoHost),
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(d)) => match d.trim_matches(['[', ']']).parse() {
                Ok(ip) => ip,
                Err(_) => return Ok(()),
            },
        };
        self.check(url.host_str().unwrap_or_default(), ip)
    }

    /// The allowed addresses among `addrs`, or why there are none.
    fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, EgressError> {
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check(host, a.ip()) {
                Ok(()) => true,
                Err(e) => {
                    first_refusal.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(e)) => Err(e),
            (true, None) => Err(EgressError::NoAddress {
                host: host.to_string(),
            }),
        }
    }
}

/// The DNS resolver of the checked clients: resolves with the system, then keeps only
/// the addresses the [`Policy`] allows, so the connection goes to a checked address.
pub struct Resolver {
    policy: Arc<Policy>,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| EgressError::Lookup {
                    host: host.clone(),
                    error: e.to_string(),
                })?;
            let allowed = policy.filter(&host, found.collect())?;
            Ok::<Addrs, Box<dyn std::error::Error + Send + Sync>>(Box::new(allowed.into_iter()))
        })
    }
}

/// Operator settings of outgoing HTTP (`[egress]` in nurture.toml, with defaults).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Hosts and networks let through although their addresses are refused by default.
    pub allow: Vec<Allow>,
    /// Total time of one webhook attempt.
    pub timeout: Duration,
    /// Webhook requests in flight at once per host.
    pub per_host: usize,
    /// Consecutive failures that open a host's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit fails fast.
    pub breaker_cooldown: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            per_host: DEFAULT_PER_HOST,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
        }
    }
}

impl Settings {
    /// The settings of `nurture.toml`'s `[egress]`, defaults for what it leaves out.
    pub fn from_model(m: Option<&nurture_core::model::EgressSettings>) -> Settings {
        let d = Settings::default();
        let Some(m) = m else { return d };
        let secs = |x: nurture_core::model::Duration| Duration::from_secs(x.seconds());
        Settings {
            allow: m.allow.clone(),
            timeout: m.timeout.map_or(d.timeout, secs).min(MAX_TIMEOUT),
            per_host: m.per_host.map_or(d.per_host, |n| n.max(1) as usize),
            breaker_failures: m.breaker_failures.map_or(d.breaker_failures, |n| n.max(1)),
            breaker_cooldown: m.breaker_cooldown.map_or(d.breaker_cooldown, secs),
        }
    }
}

/// The outgoing HTTP of one process: checked clients and per-host gates.
pub struct Egress {
    policy: Arc<Policy>,
    /// Checked, no redirects.
    direct: reqwest::Client,
    /// Checked, up to [`MAX_HOPS`] redirects, each hop checked.
    redirecting: reqwest::Client,
    /// Unchecked, no redirects: for destinations the operator configured (plugin routes).
    trusted: reqwest::Client,
    /// Webhook limits per host.
    pub gates: Gates,
    /// Total time of one webhook attempt.
    pub timeout: Duration,
}

impl Egress {
    /// Clients and gates for these settings.
    pub fn new(settings: &Settings, user_agent: &str) -> Result<Egress, reqwest::Error> {
        let policy = Arc::new(Policy::new(&settings.allow));
        let base = || {
            reqwest::Client::builder()
                .user_agent(user_agent)
                .connect_timeout(Duration::from_secs(5))
                .no_proxy()
        };
        let checked = || {
            base().dns_resolver(Arc::new(Resolver {
                policy: policy.clone(),
            }))
        };
        let hops = policy.clone();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_HOPS {
                return attempt.error(EgressError::TooManyRedirects);
            }
            match hops.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        Ok(Egress {
            direct: checked()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            redirecting: checked().redirect(redirect).build()?,
            trusted: base().redirect(reqwest::redirect::Policy::none()).build()?,
            policy,
            gates: Gates::new(settings),
            timeout: settings.timeout,
        })
    }

    /// The default rules (nothing private allowed), default limits.
    pub fn strict(user_agent: &str) -> Egress {
        Egress::new(&Settings::default(), user_agent).expect("HTTP client")
    }

    /// Parses `raw` (the one parse: what is checked is what is sent) and checks it.
    pub fn parse(&self, raw: &str) -> Result<Url, EgressError> {
        let url = Url::parse(raw).map_err(|_| EgressError::NotHttp)?;
        self.policy.check_url(&url)?;
        Ok(url)
    }

    /// The checked client: following redirects (each hop checked) or not.
    pub fn client(&self, follow_redirects: bool) -> &reqwest::Client {
        if follow_redirects {
            &self.redirecting
        } else {
            &self.direct
        }
    }

    /// The unchecked client, for destinations the operator configured.
    pub fn trusted(&self) -> &reqwest::Client {
        &self.trusted
    }
}

/// Why a host's gate did not let an attempt through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    /// The host already has its limit of requests in flight (the attempt is deferred).
    #[error("{limit} requests to `{host}` already in flight")]
    Busy {
        /// The URL's host.
        host: String,
        /// Requests allowed in flight per host.
        limit: usize,
    },
    /// The host failed too often in a row; its circuit fails fast until it cools down.
    #[error("`{host}` failed {failures} times in a row: circuit open for {}s more", .remaining.as_secs().max(1))]
    Open {
        /// The URL's host.
        host: String,
        /// Its consecutive failures.
        failures: u32,
        /// How long the circuit stays open.
        remaining: Duration,
    },
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// Half-open: one probe is under way.
    probing: bool,
}

struct HostState {
    permits: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
}

/// Per-host limits of webhook attempts: requests in flight, and a circuit breaker.
pub struct Gates {
    per_host: usize,
    failures_to_open: u32,
    cooldown: Duration,
    hosts: Mutex<HashMap<String, Arc<HostState>>>,
}

/// An attempt let through by [`Gates::enter`]: holds the host's permit until
/// [`Pass::done`].
pub struct Pass {
    state: Arc<HostState>,
    _permit: OwnedSemaphorePermit,
    failures_to_open: u32,
    cooldown: Duration,
}

impl Gates {
    fn new(s: &Settings) -> Gates {
        Gates {
            per_host: s.per_host.max(1),
            failures_to_open: s.breaker_failures.max(1),
            cooldown: s.breaker_cooldown,
            hosts: Mutex::default(),
        }
    }

    fn state(&self, host: &str) -> Arc<HostState> {
        let mut hosts = self.hosts.lock().expect("gates lock");
        if hosts.len() >= MAX_TRACKED_HOSTS && !hosts.contains_key(host) {
            hosts.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.breaker.lock().expect("breaker lock").open_until.is_some()
            });
        }
        hosts
            .entry(host.to_ascii_lowercase())
            .or_insert_with(|| {
                Arc::new(HostState {
                    permits: Arc::new(Semaphore::new(self.per_host)),
                    breaker: Mutex::default(),
                })
            })
            .clone()
    }

    /// Lets an attempt to `host` through, or says why not: its circuit is open, or its
    /// in-flight limit stayed full for [`PERMIT_WAIT`].
    pub async fn enter(&self, host: &str) -> Result<Pass, Closed> {
        let state = self.state(host);
        self.admit(host, &state, false)?;
        let permit = tokio::time::timeout(PERMIT_WAIT, state.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| Closed::Busy {
                host: host.to_string(),
                limit: self.per_host,
            })?;
        self.admit(host, &state, true)?;
        Ok(Pass {
            state,
            _permit: permit,
            failures_to_open: self.failures_to_open,
            cooldown: self.cooldown,
        })
    }

    /// The breaker's answer; with `claim`, a half-open circuit's probe is taken.
    fn admit(&self, host: &str, state: &HostState, claim: bool) -> Result<(), Closed> {
        let mut b = state.breaker.lock().expect("breaker lock");
        let Some(until) = b.open_until else {
            return Ok(());
        };
        let now = Instant::now();
        if now < until || b.probing {
            return Err(Closed::Open {
                host: host.to_string(),
                failures: b.failures,
                remaining: until
                    .saturating_duration_since(now)
                    .max(Duration::from_secs(1)),
            });
        }
        if claim {
            b.probing = true;
        }
        Ok(())
    }
}

impl Pass {
    /// Records the attempt's result: a success closes the circuit; a failure counts, and
    /// opens it after the configured number in a row (a failed probe reopens it at once).
    pub fn done(self, ok: bool) {
        let mut b = self.state.breaker.lock().expect("breaker lock");
        if ok {
            *b = Breaker::default();
            return;
        }
        b.failures = b.failures.saturating_add(1);
        if b.probing || b.failures >= self.failures_to_open {
            b.open_until = Some(Instant::now() + self.cooldown);
        }
        b.probing = false;
    }
}

/// A request error as text: a refusal's own reason if it was one, else the error and its
/// causes; never the URL (the caller shows it redacted).
pub fn describe(e: reqwest::Error) -> String {
    explain(&e.without_url())
}

/// [`describe`] of an error already stripped of its URL (`reqwest::Error::without_url`),
/// for a caller that keeps the error itself as a source.
pub fn explain(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut parts: Vec<String> = Vec::new();
    while let Some(s) = source {
        if let Some(ours) = s.downcast_ref::<EgressError>() {
            return ours.to_string();
        }
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The refusal inside a request error, if the error is one (a permanent one: a failed
/// name lookup is not a refusal).
pub fn refusal_of(e: &reqwest::Error) -> Option<EgressError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(ours) = s.downcast_ref::<EgressError>() {
            return (!ours.is_retryable()).then(|| ours.clone());
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refusal(s.parse().unwrap()).is_some()
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.10",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2001:db8::1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!refused(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn operator_allows_hosts_and_ranges() {
        let allow: Vec<Allow> = ["127.0.0.1", "10.0.0.0/8", "Hooks.Internal.Test."]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let p = Policy::new(&allow);
        assert!(p.check("x", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("x", "::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("x", "127.0.0.2".parse().unwrap()).is_err());
        assert!(p.check("x", "10.9.9.9".parse().unwrap()).is_ok());
        assert!(p
            .check("hooks.internal.test", "192.168.0.1".parse().unwrap())
            .is_ok());
        assert!("10.0.0.0/33".parse::<Allow>().is_err());
        assert!("a b".parse::<Allow>().is_err());
    }

    #[test]
    fn literal_hosts_are_checked_as_parsed() {
        let p = Policy::default();
        for raw in [
            "http://127.0.0.1/x",
            "http://0x7f.1/x",
            "http://2130706433/x",
            "http://[::ffff:7f00:1]/x",
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:18901\\@allowed.provider.test/x",
        ] {
            let url = Url::parse(raw).unwrap();
            assert!(p.check_url(&url).is_err(), "{raw} -> {url}");
        }
        assert_eq!(
            p.check_url(&Url::parse("file:///etc/passwd").unwrap()),
            Err(EgressError::NotHttp)
        );
        assert!(p
            .check_url(&Url::parse("https://example.com/").unwrap())
            .is_ok());
    }

    #[test]
    fn redacted_urls_keep_no_secret() {
        assert_eq!(
            redact_url("https://user:s3cret@crm.test/hook?token=abc#x"),
            "https://crm.test/hook?…"
        );
        assert_eq!(redact_url("https://crm.test/hook"), "https://crm.test/hook");
        let odd = redact_url("ht!tp://u:p@h/x?token=1");
        assert!(!odd.contains("token") && !odd.contains(":p@"), "{odd}");
    }

    #[test]
    fn components_are_encoded() {
        assert_eq!(encode_component("a/b@c#d?e f"), "a%2Fb%40c%23d%3Fe%20f");
        assert_eq!(encode_component("crm.acme-1_x~"), "crm.acme-1_x~");
    }

    #[tokio::test]
    async fn the_breaker_opens_after_failures_and_probes_after_its_cooldown() {
        let s = Settings {
            breaker_failures: 2,
            breaker_cooldown: Duration::from_millis(50),
            ..Settings::default()
        };
        let g = Gates::new(&s);
        g.enter("h").await.unwrap().done(false);
        g.enter("h").await.unwrap().done(false);
        assert!(matches!(g.enter("h").await, Err(Closed::Open { .. })));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let probe = g.enter("h").await.unwrap();
        assert!(
            matches!(g.enter("h").await, Err(Closed::Open { .. })),
            "one probe at a time"
        );
        probe.done(true);
        g.enter("h").await.unwrap().done(true);
    }
}
