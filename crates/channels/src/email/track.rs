//! Signed tokens for tracking and unsubscribe links, and bot detection.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256(key, claims))`, the full
//! 32-byte tag, compared in constant time. The claims name the outbox key, contact,
//! workflow and step, so an open or a click becomes an event for exactly that email, and
//! the purpose (`"p": "open" | "click" | "unsub"`): each route accepts only its own.
//! Open and click tokens carry their issue time (`t`) and expire after the link TTL
//! (`[tracking] link_ttl_days`, default a year); unsubscribe tokens never expire
//! (RFC 8058). Without the key nobody can forge one or guess another contact's link.
//!
//! Tokens issued before purposes existed (16-byte tag, no `p`) are still accepted when
//! their whole 16-byte tag verifies: their purpose follows from their shape (an address
//! `a` only in unsubscribe tokens, a URL `u` only in click tokens), so links already in
//! inboxes keep working, unsubscribe links above all.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use nurture_core::model::TrackingSettings;

/// Days an open or click link works after the send, unless `[tracking] link_ttl_days`.
pub const DEFAULT_LINK_TTL_DAYS: u32 = 365;

/// Length of the HMAC-SHA256 tag of a token.
const TAG_LEN: usize = 32;
/// The tag length of tokens issued before purposes existed.
const LEGACY_TAG_LEN: usize = 16;
/// Longer tokens are refused unread (a click token holds its URL).
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// What a token is for; each route accepts only tokens of its own purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The open pixel, `/t/o/`.
    Open,
    /// A tracked link, `/t/c/`.
    Click,
    /// The unsubscribe page and one-click POST, `/u/`.
    Unsubscribe,
    /// A hosted form's double opt-in confirmation link, `/f/FORM/confirm/`: carries the
    /// contact `c`, address `a`, form `f` and expiry `e` (Unix seconds).
    Confirm,
}

impl Purpose {
    /// The value of the `p` claim.
    pub fn claim(self) -> &'static str {
        match self {
            Purpose::Open => "open",
            Purpose::Click => "click",
            Purpose::Unsubscribe => "unsub",
            Purpose::Confirm => "confirm",
        }
    }

    fn of_claim(p: &str) -> Option<Purpose> {
        [
            Purpose::Open,
            Purpose::Click,
            Purpose::Unsubscribe,
            Purpose::Confirm,
        ]
        .into_iter()
        .find(|x| x.claim() == p)
    }

    /// A token issued before purposes existed: unsubscribe tokens alone carry the address,
    /// click tokens alone the URL.
    fn of_legacy(claims: &Value) -> Purpose {
        if claims.get("a").is_some() {
            Purpose::Unsubscribe
        } else if claims.get("u").is_some() {
            Purpose::Click
        } else {
            Purpose::Open
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not the shape of a token (two base64url parts, claims in JSON with their fields).
    #[error("the token is malformed")]
    Malformed,
    /// The tag does not match the claims under this key.
    #[error("the token's signature does not verify")]
    Forged,
    /// The token was issued for another route.
    #[error("the token is for another purpose")]
    WrongPurpose,
    /// An open or click token past the link TTL, a confirmation token past its expiry.
    #[error("the link has expired")]
    Expired,
}

/// Signs and checks tracking and unsubscribe tokens with the tracking key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    link_ttl: chrono::Duration,
}

impl Signer {
    /// A signer with `key` and the default link TTL.
    pub fn new(key: &[u8]) -> Signer {
        Signer {
            key: key.to_vec(),
            link_ttl: chrono::Duration::days(DEFAULT_LINK_TTL_DAYS.into()),
        }
    }

    /// The same signer with open and click links expiring `ttl` after their issue time.
    pub fn with_link_ttl(mut self, ttl: chrono::Duration) -> Signer {
        self.link_ttl = ttl;
        self
    }

    /// The key from `NURTURE_TRACKING_KEY`, else `DIR/.nurture/tracking-key` (created with
    /// 32 random bytes on first use), and the link TTL of `[tracking]`. API nodes and
    /// workers must share the key. An empty or short key is an error.
    pub fn for_project(
        dir: &Path,
        tracking: Option<&TrackingSettings>,
    ) -> Result<Signer, nurture_core::project::SecretError> {
        let (key, _) =
            nurture_core::project::local_secret(dir, "tracking-key", "NURTURE_TRACKING_KEY")?;
        let days = tracking
            .and_then(|t| t.link_ttl_days)
            .unwrap_or(DEFAULT_LINK_TTL_DAYS);
        Ok(Signer::new(key.as_bytes()).with_link_ttl(chrono::Duration::days(days.into())))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// Signs `claims` as they are (the caller names the purpose; see [`Signer::sign_for`]).
    pub fn sign(&self, claims: &Value) -> String {
        let body = claims.to_string();
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(body.as_bytes()),
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// Signs `claims` for `purpose` (sets the `p` claim).
    pub fn sign_for(&self, purpose: Purpose, claims: &Value) -> String {
        let mut claims = claims.clone();
        claims["p"] = Value::from(purpose.claim());
        self.sign(&claims)
    }

    /// The claims of a token whose whole tag verifies, and whether it is a legacy token.
    fn open(&self, token: &str) -> Result<(Value, bool), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let token = token.strip_suffix(".gif").unwrap_or(token);
        let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&body);
        let legacy = match sig.len() {
            TAG_LEN => false,
            LEGACY_TAG_LEN => true,
            _ => return Err(TokenError::Forged),
        };
        // Both compare every byte of a fixed-length tag in constant time.
        let verified = if legacy {
            mac.verify_truncated_left(&sig)
        } else {
            mac.verify_slice(&sig)
        };
        verified.map_err(|_| TokenError::Forged)?;
        let claims: Value = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
        if !claims.is_object() || (legacy && claims.get("p").is_some()) {
            return Err(TokenError::Malformed);
        }
        Ok((claims, legacy))
    }

    /// The claims of a genuine token, whatever its purpose; `None` for anything forged or
    /// damaged. Routes use [`Signer::check`].
    pub fn verify(&self, token: &str) -> Option<Value> {
        self.open(token).ok().map(|(claims, _)| claims)
    }

    /// The claims of a genuine token for `purpose` that has not expired at `now`
    /// (Unix seconds). Open and click tokens must carry their issue time; unsubscribe
    /// tokens must carry an address.
    pub fn check(&self, token: &str, purpose: Purpose, now: i64) -> Result<Value, TokenError> {
        let (claims, legacy) = self.open(token)?;
        let actual = if legacy {
            Some(Purpose::of_legacy(&claims))
        } else {
            claims["p"].as_str().and_then(Purpose::of_claim)
        };
        if actual != Some(purpose) {
            return Err(TokenError::WrongPurpose);
        }
        match purpose {
            Purpose::Unsubscribe => {
                if claims["a"].as_str().is_none_or(|a| a.trim().is_empty()) {
                    return Err(TokenError::Malformed);
                }
            }
            Purpose::Confirm => {
                let text = |k: &str| claims[k].as_str().is_some_and(|v| !v.trim().is_empty());
                if !(text("c") && text("a") && text("f")) {
                    return Err(TokenError::Malformed);
                }
                let expires = claims["e"].as_i64().ok_or(TokenError::Malformed)?;
                if now > expires {
                    return Err(TokenError::Expired);
                }
            }
            Purpose::Open | Purpose::Click => {
                let issued = claims["t"].as_i64().ok_or(TokenError::Malformed)?;
                if now.saturating_sub(issued) > self.link_ttl.num_seconds() {
                    return Err(TokenError::Expired);
                }
            }
        }
        if purpose == Purpose::Click && !claims["u"].as_str().is_some_and(is_web_url) {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }
}

/// Whether a click may redirect to `url`: http and https only.
fn is_web_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
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
    use serde_json::json;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let s = Signer::new(b"k1");
        let t = s.sign(&json!({"k": "abc", "c": "ana"}));
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

    fn tag_of(token: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(token.split_once('.').unwrap().1)
            .unwrap()
    }

    fn with_tag(token: &str, tag: &[u8]) -> String {
        let body = token.split_once('.').unwrap().0;
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    #[test]
    fn truncated_tags_are_refused() {
        let s = Signer::new(b"k1");
        let t = s.sign_for(Purpose::Open, &json!({"k": "abc", "c": "ana", "t": 0}));
        let tag = tag_of(&t);
        assert_eq!(tag.len(), 32, "the full HMAC-SHA256 tag");
        for n in [1, 2, 15, 17, 31] {
            assert!(s.verify(&with_tag(&t, &tag[..n])).is_none(), "{n} bytes");
        }
        assert!(s.verify(&with_tag(&t, &[])).is_none());
        let mut flipped = tag.clone();
        flipped[31] ^= 1;
        assert!(s.verify(&with_tag(&t, &flipped)).is_none(), "last byte");
    }

    #[test]
    fn tokens_work_only_for_their_purpose() {
        let s = Signer::new(b"k1");
        let now = 1_700_000_000;
        let open = s.sign_for(Purpose::Open, &json!({"c": "ana", "t": now}));
        let click = s.sign_for(
            Purpose::Click,
            &json!({"c": "ana", "t": now, "u": "https://a.test/"}),
        );
        let unsub = s.sign_for(
            Purpose::Unsubscribe,
            &json!({"c": "ana", "a": "ana@a.test"}),
        );
        let none =
            s.sign(&json!({"c": "ana", "t": now, "a": "ana@a.test", "u": "https://a.test/"}));
        for (token, purpose) in [
            (&open, Purpose::Open),
            (&click, Purpose::Click),
            (&unsub, Purpose::Unsubscribe),
        ] {
            for p in [Purpose::Open, Purpose::Click, Purpose::Unsubscribe] {
                let r = s.check(token, p, now);
                assert_eq!(r.is_ok(), p == purpose, "{purpose:?} token at {p:?}: {r:?}");
            }
            assert_eq!(s.check(&none, purpose, now), Err(TokenError::WrongPurpose));
        }
        // An unsubscribe token must name an address.
        let blank = s.sign_for(Purpose::Unsubscribe, &json!({"c": "ana", "a": ""}));
        assert!(s.check(&blank, Purpose::Unsubscribe, now).is_err());
        // A click goes to a web page only.
        let js = s.sign_for(
            Purpose::Click,
            &json!({"t": now, "u": "javascript:alert(1)"}),
        );
        assert!(s.check(&js, Purpose::Click, now).is_err());
    }

    #[test]
    fn open_and_click_links_expire_unsubscribe_links_do_not() {
        let s = Signer::new(b"k1").with_link_ttl(chrono::Duration::days(30));
        let sent = 1_700_000_000;
        let day = 86_400;
        let click = s.sign_for(Purpose::Click, &json!({"t": sent, "u": "https://a.test/"}));
        let unsub = s.sign_for(Purpose::Unsubscribe, &json!({"a": "ana@a.test"}));
        assert!(s.check(&click, Purpose::Click, sent + 29 * day).is_ok());
        assert_eq!(
            s.check(&click, Purpose::Click, sent + 31 * day),
            Err(TokenError::Expired)
        );
        assert!(s
            .check(&unsub, Purpose::Unsubscribe, sent + 10_000 * day)
            .is_ok());
        let undated = s.sign_for(Purpose::Open, &json!({"c": "ana"}));
        assert!(
            s.check(&undated, Purpose::Open, sent).is_err(),
            "no issue time"
        );
    }

    #[test]
    fn confirm_tokens_need_their_claims_and_expire() {
        let s = Signer::new(b"k1");
        let now = 1_700_000_000;
        let claims = json!({"c": "ana", "a": "ana@a.test", "f": "news", "e": now + 60});
        let t = s.sign_for(Purpose::Confirm, &claims);
        assert!(s.check(&t, Purpose::Confirm, now).is_ok());
        assert_eq!(
            s.check(&t, Purpose::Confirm, now + 61),
            Err(TokenError::Expired)
        );
        assert_eq!(
            s.check(&t, Purpose::Unsubscribe, now),
            Err(TokenError::WrongPurpose)
        );
        let mut no_expiry = claims.clone();
        no_expiry.as_object_mut().unwrap().remove("e");
        let t = s.sign_for(Purpose::Confirm, &no_expiry);
        assert_eq!(
            s.check(&t, Purpose::Confirm, now),
            Err(TokenError::Malformed)
        );
        let other_key = Signer::new(b"k2").sign_for(Purpose::Confirm, &claims);
        assert_eq!(
            s.check(&other_key, Purpose::Confirm, now),
            Err(TokenError::Forged)
        );
    }

    /// A token as issued before purposes existed: a 16-byte tag, no `p`.
    fn legacy(s: &Signer, claims: &Value) -> String {
        let t = s.sign(claims);
        with_tag(&t, &tag_of(&t)[..16])
    }

    #[test]
    fn legacy_tokens_keep_working_for_the_purpose_their_shape_shows() {
        let s = Signer::new(b"k1");
        let now = 1_700_000_000;
        let unsub = legacy(
            &s,
            &json!({"k": "x", "c": "ana", "a": "ana@a.test", "w": "w"}),
        );
        let open = legacy(
            &s,
            &json!({"k": "x", "c": "ana", "w": "w", "s": "s", "t": now}),
        );
        assert!(s.check(&unsub, Purpose::Unsubscribe, now).is_ok());
        assert_eq!(
            s.check(&unsub, Purpose::Open, now),
            Err(TokenError::WrongPurpose)
        );
        assert!(s.check(&open, Purpose::Open, now).is_ok());
        assert_eq!(
            s.check(&open, Purpose::Unsubscribe, now),
            Err(TokenError::WrongPurpose)
        );
        let short = with_tag(&open, &tag_of(&open)[..15]);
        assert_eq!(s.check(&short, Purpose::Open, now), Err(TokenError::Forged));
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
