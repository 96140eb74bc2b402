//! Signed tokens for tracking and unsubscribe links, and bot detection.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256(key, claims))[..16 bytes]`.
//! The claims name the outbox key, contact, workflow and step, so an open or a click
//! becomes an event for exactly that email; without the key nobody can forge one or
//! guess another contact's link.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: &[u8]) -> Signer {
        Signer { key: key.to_vec() }
    }

    /// The key from `NURTURE_TRACKING_KEY`, else `DIR/.nurture/tracking-key` (created with
    /// 32 random bytes on first use). API nodes and workers must share it.
    pub fn for_project(dir: &Path) -> std::io::Result<Signer> {
        let (key, _) = crate::project::local_secret(dir, "tracking-key", "NURTURE_TRACKING_KEY")?;
        Ok(Signer::new(key.as_bytes()))
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes()[..16].to_vec()
    }

    pub fn sign(&self, claims: &Value) -> String {
        let body = claims.to_string();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(body.as_bytes()),
            URL_SAFE_NO_PAD.encode(self.mac(body.as_bytes()))
        )
    }

    /// The claims of a genuine token; `None` for anything forged or damaged.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let token = token.trim_end_matches(".gif");
        let (body, sig) = token.split_once('.')?;
        let body = URL_SAFE_NO_PAD.decode(body).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        mac.update(&body);
        mac.verify_truncated_left(&sig).ok()?;
        serde_json::from_slice(&body).ok()
    }
}

/// User agents of mail security scanners, link checkers and prefetchers: their opens and
/// clicks are flagged, not counted as a person's.
const BOT_AGENTS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "barracuda",
    "mimecast",
    "proofpoint",
    "safelinks",
    "safe links",
    "symantec",
    "trendmicro",
    "forcepoint",
    "sophos",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "linkpreview",
    "slackbot",
];

/// Why a tracking hit looks automated, if it does: a scanner's user agent, no user agent,
/// or a click faster than a person (under 2 s after the send).
pub fn bot_reason(
    user_agent: Option<&str>,
    seconds_since_send: Option<i64>,
    click: bool,
) -> Option<String> {
    let Some(ua) = user_agent.filter(|u| !u.trim().is_empty()) else {
        return Some("no user agent".into());
    };
    let lower = ua.to_ascii_lowercase();
    if let Some(hit) = BOT_AGENTS.iter().find(|b| lower.contains(*b)) {
        return Some(format!("user agent looks automated (`{hit}`)"));
    }
    if click {
        if let Some(s) = seconds_since_send.filter(|s| *s < 2) {
            return Some(format!("clicked {s} s after the send"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let s = Signer::new(b"k1");
        let t = s.sign(&serde_json::json!({"k": "abc", "c": "ana"}));
        assert_eq!(s.verify(&t).unwrap()["c"], "ana");
        assert!(Signer::new(b"k2").verify(&t).is_none(), "another key");
        let (body, sig) = t.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(br#"{"k":"abc","c":"lee"}"#);
        assert!(
            s.verify(&format!("{other}.{sig}")).is_none(),
            "swapped claims"
        );
        assert!(s.verify(body).is_none());
    }

    #[test]
    fn scanners_and_instant_clicks_are_flagged() {
        assert!(bot_reason(Some("Mozilla/5.0 (compatible; Barracuda)"), Some(60), true).is_some());
        assert!(bot_reason(None, Some(60), false).is_some());
        assert!(bot_reason(Some("Mozilla/5.0 (Macintosh)"), Some(1), true).is_some());
        assert_eq!(
            bot_reason(Some("Mozilla/5.0 (Macintosh)"), Some(1), false),
            None
        );
        assert_eq!(
            bot_reason(Some("Mozilla/5.0 (Windows NT 10.0)"), Some(300), true),
            None
        );
    }
}
