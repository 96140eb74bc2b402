//! The email providers' bounce and complaint webhooks, one route per provider:
//!
//! | route | provider | what it proves besides the API key |
//! | --- | --- | --- |
//! | `POST /v1/bounces/ses` | Amazon SES notifications through an SNS topic ([`sns`]) | the SNS signature (versions 1 and 2) with a certificate from `https://sns.<region>.amazonaws.com/`, and an allowed `TopicArn` |
//! | `POST /v1/bounces/sendgrid` | SendGrid's Event Webhook | |
//! | `POST /v1/bounces/postmark` | Postmark's bounce and spam complaint webhooks | |
//! | `POST /v1/bounces/mailgun` | Mailgun's webhooks | Mailgun's HMAC signature, a timestamp within 5 minutes, a token not seen before |
//!
//! Like every `/v1` route they need the API key: providers put it in the webhook URL
//! as Basic-auth credentials (`https://nurture:KEY@host/v1/bounces/postmark`), never in
//! the query string (URLs are logged).
//!
//! Each notification becomes nurture's bounce ([`crate::Bounce`]) and is stored as
//! `POST /v1/bounces` stores its items ([`crate::store_bounces`]): a hard bounce or a
//! complaint suppresses the address, a soft bounce is only recorded, and an event that
//! is neither (a delivery, an open) is answered `ignored`. The provider's event id makes
//! a resent notification one event. A body that is not the provider's format is a 422
//! problem, never a 200.
//!
//! | provider | hard bounce | soft bounce | complaint | idempotency id |
//! | --- | --- | --- | --- | --- |
//! | SES | `bounceType` `Permanent` | `Transient`, `Undetermined` | `Complaint` | `ses:` `mail.messageId` `:` recipient |
//! | SendGrid | `bounce` (type `bounce`), `dropped` for `Bounced Address` | `bounce` of type `blocked`, `dropped` for other reasons (not `Unsubscribed Address`: ignored) | `spamreport`, `dropped` for `Spam Reporting Address` | `sendgrid:` `sg_event_id` |
//! | Postmark | `Bounce` of `Type` `HardBounce`, `BadEmailAddress` | other bounce types (`SoftBounce`, `Transient`, `DnsError`, `Blocked`...) | `SpamComplaint` (record or bounce type), `SpamNotification` | `postmark:` `ID` |
//! | Mailgun | `failed` with `severity` `permanent` | `failed` with `severity` `temporary` | `complained` | `mailgun:` `event-data.id` |

mod sns;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::Value;

use crate::openapi as doc;
use crate::problem::{ApiError, ProblemKind};
use crate::{AppState, Bounce, BounceItem, MAX_BOUNCE_REASON};

/// How far a Mailgun signature's timestamp may be from now, in seconds.
const MAILGUN_MAX_AGE: i64 = 5 * 60;

/// The most Mailgun tokens remembered at once (each for [`MAILGUN_MAX_AGE`]).
const MAILGUN_MAX_TOKENS: usize = 100_000;

/// What the providers' webhooks must prove, from `[email.webhooks]`, and what they
/// remember: fetched SNS certificates, seen Mailgun tokens.
pub struct Webhooks {
    sns_topics: Vec<String>,
    sns_certs: Option<PathBuf>,
    mailgun_key: Option<Vec<u8>>,
    /// SNS signing keys by certificate URL.
    certs: Mutex<HashMap<String, rsa::RsaPublicKey>>,
    /// Mailgun tokens seen, with their timestamps.
    tokens: Mutex<HashMap<String, i64>>,
    /// Fetches SNS certificates and confirms subscriptions (no redirects, 10 s).
    http: reqwest::Client,
}

impl Webhooks {
    /// The webhooks' settings of `project`; the Mailgun signing key is read from its
    /// environment variable now.
    pub fn new(project: &nurture_core::project::Project) -> Webhooks {
        let w = project
            .settings
            .email
            .as_ref()
            .and_then(|e| e.webhooks.clone())
            .unwrap_or_default();
        let mailgun_key = w.mailgun_signing_key_env.as_deref().and_then(|name| {
            match std::env::var(name) {
                Ok(v) if !v.is_empty() => Some(v.into_bytes()),
                _ => {
                    tracing::warn!(
                        variable = name,
                        "`mailgun_signing_key_env` names an unset variable: Mailgun webhooks are refused"
                    );
                    None
                }
            }
        });
        Webhooks {
            sns_topics: w.sns_topics,
            sns_certs: w.sns_certs.map(|d| project.root.join(d)),
            mailgun_key,
            certs: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(10))
                .https_only(true)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Checks a Mailgun webhook's `signature` object: the HMAC-SHA256 of timestamp and
    /// token under the signing key, a timestamp within [`MAILGUN_MAX_AGE`] of `now`, a
    /// token not seen before (then remembered). Answers the token.
    fn check_mailgun(&self, sig: &Value, now: i64) -> Result<String, ApiError> {
        use hmac::{Hmac, Mac};
        let Some(key) = &self.mailgun_key else {
            return Err(forbidden(
                "Mailgun webhooks are not configured: set `mailgun_signing_key_env` in `[email.webhooks]`",
            ));
        };
        let timestamp = match &sig["timestamp"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(forbidden("the Mailgun signature has no `timestamp`")),
        };
        let token = sig["token"]
            .as_str()
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| forbidden("the Mailgun signature has no valid `token`"))?;
        let tag = sig["signature"]
            .as_str()
            .and_then(hex)
            .ok_or_else(|| forbidden("the Mailgun signature has no hex `signature`"))?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
        mac.update(timestamp.as_bytes());
        mac.update(token.as_bytes());
        if mac.verify_slice(&tag).is_err() {
            return Err(forbidden(
                "the Mailgun signature does not match (HMAC-SHA256 of timestamp and token with the signing key)",
            ));
        }
        let at: i64 = timestamp
            .parse()
            .map_err(|_| forbidden("the Mailgun `timestamp` is not a number of seconds"))?;
        if (now - at).abs() > MAILGUN_MAX_AGE {
            return Err(forbidden(format!(
                "the Mailgun signature's timestamp is more than {MAILGUN_MAX_AGE} s from now: refused as stale"
            )));
        }
        self.remember_token(token, at, now)?;
        Ok(token.to_string())
    }

    /// Remembers a verified token; a token already seen is a replay.
    fn remember_token(&self, token: &str, at: i64, now: i64) -> Result<(), ApiError> {
        let mut seen = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, t| (now - *t).abs() <= MAILGUN_MAX_AGE);
        if seen.contains_key(token) {
            return Err(forbidden(
                "this Mailgun token was already used: refused as a replay",
            ));
        }
        if seen.len() >= MAILGUN_MAX_TOKENS {
            return Err(busy("too many Mailgun webhooks in the last minutes"));
        }
        seen.insert(token.to_string(), at);
        Ok(())
    }

    /// Forgets a token whose notification was not stored, so Mailgun's retry is taken.
    fn forget_token(&self, token: &str) {
        let mut seen = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(token);
    }
}

/// `POST /v1/bounces/{provider}`.
#[utoipa::path(
    post,
    path = "/v1/bounces/{provider}",
    tag = "bounces",
    operation_id = "post_provider_bounces",
    summary = "Email providers' bounce webhooks",
    description = "Amazon SES (through SNS), SendGrid, Postmark and Mailgun, in their own formats; signatures are checked as configured in `[email.webhooks]`.",
    params(("provider" = doc::Provider, Path, description = "The provider")),
    request_body(content = Object, description = "The provider's webhook payload"),
    responses(
        (status = 200, description = "Recorded, at least in part: one result per item", body = doc::BouncesAnswer),
        (status = 400, description = "The body is not the provider's format", body = doc::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The webhook's signature, signing certificate, topic or timestamp is not trusted", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every notification was refused: nothing was stored", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn post(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    match provider.as_str() {
        "ses" => sns::post(&s, &body).await,
        "sendgrid" => crate::store_bounces(&s, sendgrid(&body)?).await,
        "postmark" => crate::store_bounces(&s, postmark(&body)?).await,
        "mailgun" => {
            let (v, token) = mailgun(&s.webhooks, &body, chrono::Utc::now().timestamp())?;
            let stored = crate::store_bounces(&s, vec![mailgun_item(&v["event-data"])]).await;
            if stored.as_ref().is_err_and(|e| {
                matches!(e.kind(), ProblemKind::Unavailable | ProblemKind::Internal)
            }) {
                s.webhooks.forget_token(&token);
            }
            stored
        }
        other => Err(ApiError::new(
            ProblemKind::NotFound,
            format!(
                "no provider `{}`: use ses, sendgrid, postmark or mailgun (or /v1/bounces for nurture's own format)",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// The route of the provider whose webhook payload `item` looks like, for an item
/// sent to `/v1/bounces` by mistake.
pub(crate) fn looks_like(item: &Value) -> Option<&'static str> {
    let has = |k: &str| item.get(k).is_some();
    if has("TopicArn") || has("notificationType") || (has("eventType") && has("mail")) {
        Some("/v1/bounces/ses")
    } else if has("sg_event_id") || has("event") {
        Some("/v1/bounces/sendgrid")
    } else if has("RecordType") {
        Some("/v1/bounces/postmark")
    } else if has("event-data") || has("signature") {
        Some("/v1/bounces/mailgun")
    } else {
        None
    }
}

/// 422: the body is not `provider`'s webhook format.
fn unknown(provider: &str, what: &str) -> ApiError {
    ApiError::new(
        ProblemKind::Unprocessable,
        format!("not {provider}'s webhook format: {what}; nothing was stored"),
    )
}

/// 403: the webhook's signature or origin is not trusted.
fn forbidden(detail: impl Into<String>) -> ApiError {
    ApiError::new(ProblemKind::Forbidden, detail)
}

/// 503 with `Retry-After`: a retry later may be taken.
fn busy(detail: &str) -> ApiError {
    ApiError::new(
        ProblemKind::Unavailable,
        format!("{detail}: nothing was stored, retry later"),
    )
    .header(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(crate::problem::RETRY_AFTER_SECS),
    )
}

/// The body as JSON, else 422.
fn json(body: &[u8], provider: &str) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| unknown(provider, "the body is not JSON"))
}

/// A provider's reason: the non-empty parts joined by `: `, control characters as
/// spaces, cut to [`MAX_BOUNCE_REASON`] bytes.
fn reason(parts: &[&Value]) -> String {
    let texts: Vec<String> = parts
        .iter()
        .filter_map(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect();
    let joined: String = texts
        .join(": ")
        .chars()
        .map(|c| {
            if c.is_control() && !matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let mut end = joined.len().min(MAX_BOUNCE_REASON);
    while !joined.is_char_boundary(end) {
        end -= 1;
    }
    joined[..end].to_string()
}

/// A text or number id as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One notification of `provider` as a bounce item; an id too long for an event id is
/// replaced by its digest.
fn item(
    provider: &'static str,
    email: Option<&str>,
    (kind, permanent): (&'static str, bool),
    reason: String,
    id: Option<String>,
) -> BounceItem {
    let id = id.map(|id| {
        let id = format!("{provider}:{id}");
        if id.len() > nurture_engine::input::MAX_ID_LEN {
            format!("{provider}:{}", nurture_engine::digest(&[&id]))
        } else {
            id
        }
    });
    let reason = if reason.is_empty() {
        kind.to_string()
    } else {
        reason
    };
    match Bounce::new(0, email.unwrap_or_default(), kind, permanent, reason, id) {
        Ok(b) => BounceItem::Bounce(b.with_provider(provider)),
        Err(e) => BounceItem::Refused(e),
    }
}

/// The first 40 characters of `s`, for messages.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

const HARD: (&str, bool) = ("bounce", true);
const SOFT: (&str, bool) = ("bounce", false);
const COMPLAINT: (&str, bool) = ("complaint", true);

/// SendGrid's Event Webhook: a JSON list of events, each with `event` and `email`.
fn sendgrid(body: &[u8]) -> Result<Vec<BounceItem>, ApiError> {
    let Value::Array(events) = json(body, "SendGrid")? else {
        return Err(unknown(
            "SendGrid",
            "the Event Webhook posts a JSON list of events",
        ));
    };
    if events.is_empty() || !events.iter().all(|e| e["event"].is_string()) {
        return Err(unknown(
            "SendGrid",
            "each item of the list is an event with `event`",
        ));
    }
    Ok(events.iter().map(sendgrid_item).collect())
}

/// One SendGrid event.
fn sendgrid_item(e: &Value) -> BounceItem {
    let event = e["event"].as_str().unwrap_or_default();
    let why = e["reason"].as_str().unwrap_or_default();
    let class = match event {
        "bounce" if e["type"] == "blocked" => SOFT,
        "bounce" => HARD,
        "dropped" => match why {
            "Bounced Address" => HARD,
            "Spam Reporting Address" => COMPLAINT,
            "Unsubscribed Address" => {
                return BounceItem::Ignored(
                    "dropped for an unsubscribed address: not a bounce or complaint".into(),
                )
            }
            _ => SOFT,
        },
        "spamreport" => COMPLAINT,
        other => {
            return BounceItem::Ignored(format!(
                "SendGrid `{}` events are not bounces or complaints",
                clip(other)
            ))
        }
    };
    item(
        "sendgrid",
        e["email"].as_str(),
        class,
        reason(&[&e["event"], &e["type"], &e["status"], &e["reason"]]),
        id_text(&e["sg_event_id"]),
    )
}

/// Postmark's bounce and spam complaint webhooks: one record, with `RecordType`.
fn postmark(body: &[u8]) -> Result<Vec<BounceItem>, ApiError> {
    let v = json(body, "Postmark")?;
    let Some(record) = v.get("RecordType").and_then(Value::as_str) else {
        return Err(unknown(
            "Postmark",
            "a webhook's body is an object with `RecordType`",
        ));
    };
    let class = match record {
        "Bounce" => postmark_type(v["Type"].as_str().unwrap_or_default()),
        "SpamComplaint" => Ok(COMPLAINT),
        other => Err(format!(
            "Postmark `{}` records are not bounces or complaints",
            clip(other)
        )),
    };
    let item = match class {
        Ok(class) => item(
            "postmark",
            v["Email"].as_str(),
            class,
            reason(&[&v["Type"], &v["Description"], &v["Details"]]),
            id_text(&v["ID"]),
        ),
        Err(why) => BounceItem::Ignored(why),
    };
    Ok(vec![item])
}

/// The class of a Postmark bounce `Type`; types that are no delivery failure
/// (auto-responders, subscription requests...) are ignored.
fn postmark_type(t: &str) -> Result<(&'static str, bool), String> {
    match t {
        "HardBounce" | "BadEmailAddress" => Ok(HARD),
        "SpamComplaint" | "SpamNotification" => Ok(COMPLAINT),
        "AutoResponder"
        | "Subscribe"
        | "Unsubscribe"
        | "AddressChange"
        | "OpenRelayTest"
        | "ChallengeVerification"
        | "ManuallyDeactivated" => Err(format!("Postmark `{t}` bounces are not delivery failures")),
        _ => Ok(SOFT),
    }
}

/// Mailgun's webhook body, its `signature` checked: `{"signature": {...}, "event-data":
/// {...}}`. Answers it with its token.
fn mailgun(w: &Webhooks, body: &[u8], now: i64) -> Result<(Value, String), ApiError> {
    let v = json(body, "Mailgun")?;
    if !v["signature"].is_object() || !v["event-data"].is_object() {
        return Err(unknown(
            "Mailgun",
            "a webhook's body is an object with `signature` and `event-data`",
        ));
    }
    let token = w.check_mailgun(&v["signature"], now)?;
    Ok((v, token))
}

/// One Mailgun event (`event-data`).
fn mailgun_item(d: &Value) -> BounceItem {
    let class = match (d["event"].as_str(), d["severity"].as_str()) {
        (Some("failed"), Some("permanent")) => HARD,
        (Some("failed"), Some("temporary")) => SOFT,
        (Some("failed"), _) => {
            return BounceItem::Refused(
                "a Mailgun `failed` event has `severity` permanent or temporary".into(),
            )
        }
        (Some("complained"), _) => COMPLAINT,
        (other, _) => {
            return BounceItem::Ignored(format!(
                "Mailgun `{}` events are not bounces or complaints",
                clip(other.unwrap_or("(none)"))
            ))
        }
    };
    let status = &d["delivery-status"];
    item(
        "mailgun",
        d["recipient"].as_str(),
        class,
        reason(&[
            &d["reason"],
            &status["code"],
            &status["description"],
            &status["message"],
        ]),
        id_text(&d["id"]),
    )
}

/// Hex digits as bytes.
fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn webhooks(key: Option<&str>) -> Webhooks {
        Webhooks {
            sns_topics: Vec::new(),
            sns_certs: None,
            mailgun_key: key.map(|k| k.as_bytes().to_vec()),
            certs: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            http: reqwest::Client::new(),
        }
    }

    fn signed(key: &str, timestamp: i64, token: &str) -> Value {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{timestamp}{token}").as_bytes());
        let tag: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        json!({"timestamp": timestamp.to_string(), "token": token, "signature": tag})
    }

    #[test]
    fn a_mailgun_signature_is_checked_for_key_age_and_replay() {
        let w = webhooks(Some("key-1"));
        let now = 1_700_000_000;
        assert!(w.check_mailgun(&signed("key-1", now, "t1"), now).is_ok());
        let replay = w
            .check_mailgun(&signed("key-1", now, "t1"), now)
            .unwrap_err();
        assert!(replay.detail().contains("replay"), "{}", replay.detail());
        let forged = w
            .check_mailgun(&signed("key-2", now, "t2"), now)
            .unwrap_err();
        assert_eq!(forged.kind(), ProblemKind::Forbidden);
        let stale = w
            .check_mailgun(&signed("key-1", now - 301, "t3"), now)
            .unwrap_err();
        assert!(stale.detail().contains("stale"), "{}", stale.detail());
        let unset = webhooks(None)
            .check_mailgun(&signed("key-1", now, "t4"), now)
            .unwrap_err();
        assert_eq!(unset.kind(), ProblemKind::Forbidden);
        w.forget_token("t1");
        assert!(w.check_mailgun(&signed("key-1", now, "t1"), now).is_ok());
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary_and_made_printable() {
        let long = Value::from("é".repeat(MAX_BOUNCE_REASON));
        let r = reason(&[&long]);
        assert!(r.len() <= MAX_BOUNCE_REASON && r.len() > MAX_BOUNCE_REASON - 2);
        assert_eq!(reason(&[&json!("a\u{0}b"), &json!(550)]), "a b: 550");
    }

    #[test]
    fn hex_takes_pairs_of_hex_digits_only() {
        assert_eq!(hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
        assert_eq!(hex("é1"), None);
    }
}
