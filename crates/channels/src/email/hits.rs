//! Limits on tracking hits (opens and clicks), which anyone can send.
//!
//! - **Per client**: a token bucket per client address (an IPv6 client by its /64), of
//!   `hits_per_minute` hits refilled evenly over the minute. A hit beyond it is still
//!   answered (the pixel, the redirect) but not recorded.
//! - **Per token**: a hit already recorded in the last hour is not recorded again (the
//!   store also keeps one event per token, see `server`; this spares it the replays).
//!
//! Both maps are bounded: when the client map is full of active clients, new clients'
//! hits are not recorded until entries age out (fail closed); when the token map is full
//! it is cleared (the store still de-duplicates).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nurture_core::model::TrackingSettings;

/// Hits recorded per client per minute, unless `[tracking] hits_per_minute`.
pub const DEFAULT_HITS_PER_MINUTE: u32 = 120;
/// A token's hit is recorded at most once per this window (in memory).
pub const TOKEN_WINDOW: Duration = Duration::from_secs(3600);
/// Clients tracked at once, at most.
const MAX_CLIENTS: usize = 65_536;
/// Tokens remembered at once, at most.
const MAX_TOKENS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limits of one API process; shared by its handlers.
pub struct HitGate {
    per_minute: f64,
    forwarded_for: bool,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
    tokens: Mutex<HashMap<String, Instant>>,
}

impl HitGate {
    /// Limits from `[tracking]` (defaults when absent).
    pub fn new(settings: Option<&TrackingSettings>) -> HitGate {
        HitGate {
            per_minute: settings
                .and_then(|t| t.hits_per_minute)
                .unwrap_or(DEFAULT_HITS_PER_MINUTE)
                .into(),
            forwarded_for: settings.and_then(|t| t.forwarded_for).unwrap_or(false),
            clients: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The client's address: the peer, or the last `X-Forwarded-For` entry when the
    /// settings say a proxy sets it.
    pub fn client(&self, peer: Option<IpAddr>, headers: &http::HeaderMap) -> Option<IpAddr> {
        if !self.forwarded_for {
            return peer;
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .next_back()
            .or(peer)
    }

    /// Whether a hit from `client` may be recorded now (takes one from its bucket).
    /// Hits of unknown clients share one bucket.
    pub fn admit(&self, client: Option<IpAddr>, now: Instant) -> bool {
        let key = client.map_or(IpAddr::from([0u8; 4]), client_key);
        let refill = Duration::from_secs(60);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if !clients.contains_key(&key) && clients.len() >= MAX_CLIENTS {
            // Full buckets carry no state: drop them.
            clients.retain(|_, b| now.duration_since(b.at) < refill);
            if clients.len() >= MAX_CLIENTS {
                return false;
            }
        }
        let per_minute = self.per_minute;
        let b = clients.entry(key).or_insert(Bucket {
            tokens: per_minute,
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_minute / 60.0).min(per_minute);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `id` (a hit's event id) was not recorded within [`TOKEN_WINDOW`]; if so it
    /// is now marked as recorded.
    pub fn first_in_window(&self, id: &str, now: Instant) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = tokens.get(id) {
            if now.duration_since(*at) < TOKEN_WINDOW {
                return false;
            }
        }
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, at| now.duration_since(*at) < TOKEN_WINDOW);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(id.to_string(), now);
        true
    }

    /// Unmarks `id` (its event could not be stored; a later hit may try again).
    pub fn forget(&self, id: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The bucket of an address: IPv4 as is, IPv6 by its /64 (one host holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(per_minute: u32) -> HitGate {
        HitGate::new(Some(&TrackingSettings {
            hits_per_minute: Some(per_minute),
            ..Default::default()
        }))
    }

    #[test]
    fn a_client_beyond_its_rate_is_not_recorded_and_refills() {
        let g = gate(60);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let admitted = (0..100).filter(|_| g.admit(Some(a), t0)).count();
        assert_eq!(admitted, 60);
        assert!(g.admit(Some(b), t0), "another client has its own bucket");
        assert!(
            g.admit(Some(a), t0 + Duration::from_secs(2)),
            "one a second"
        );
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let g = gate(1);
        let t0 = Instant::now();
        assert!(g.admit(Some("2001:db8::1".parse().unwrap()), t0));
        assert!(!g.admit(Some("2001:db8::ffff:2".parse().unwrap()), t0));
        assert!(g.admit(Some("2001:db8:0:1::1".parse().unwrap()), t0));
    }

    #[test]
    fn a_token_is_recorded_once_per_window() {
        let g = gate(60);
        let t0 = Instant::now();
        assert!(g.first_in_window("o:1", t0));
        assert!(!g.first_in_window("o:1", t0 + Duration::from_secs(60)));
        assert!(g.first_in_window("o:2", t0));
        assert!(g.first_in_window("o:1", t0 + TOKEN_WINDOW));
        g.forget("o:2");
        assert!(g.first_in_window("o:2", t0));
    }

    #[test]
    fn forwarded_for_is_read_only_when_configured() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.9".parse().unwrap(),
        );
        let peer = Some("127.0.0.1".parse().unwrap());
        assert_eq!(gate(1).client(peer, &h), peer);
        let proxied = HitGate::new(Some(&TrackingSettings {
            forwarded_for: Some(true),
            ..Default::default()
        }));
        assert_eq!(
            proxied.client(peer, &h),
            Some("203.0.113.9".parse().unwrap())
        );
    }
}
