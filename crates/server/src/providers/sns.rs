//! Amazon SES bounce and complaint notifications delivered by an SNS topic to
//! `POST /v1/bounces/ses`.
//!
//! Every SNS message is checked before anything else is read from it:
//! - its `TopicArn` is one of `sns_topics` in `[email.webhooks]`;
//! - its `SigningCertURL` is `https://sns.<region>.amazonaws.com/....pem` (no other
//!   host, port or scheme: the server fetches nothing else);
//! - its `Signature` verifies with that certificate's RSA key: `SignatureVersion` 1 is
//!   SHA1withRSA, 2 SHA256withRSA, over the canonical string of the message's fields
//!   (name and value on lines of their own, in the order SNS documents).
//!
//! The certificate is read from the `sns_certs` folder when it holds a file of the URL's
//! name, else fetched once (then kept in memory). A `SubscriptionConfirmation` is
//! confirmed by fetching its `SubscribeURL` only when that too is an SNS host and an
//! `Action=ConfirmSubscription`; a `Notification` carries the SES notification in
//! `Message`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{busy, clip, forbidden, item, reason, unknown, Webhooks, COMPLAINT, HARD, SOFT};
use crate::problem::ApiError;
use crate::{AppState, BounceItem};

/// The largest signing certificate read or fetched, in bytes.
const MAX_CERT: usize = 64 * 1024;

/// The most certificates kept in memory.
const MAX_CACHED_CERTS: usize = 32;

/// The fields signed in a `Notification`, in the canonical order.
const NOTIFICATION_FIELDS: &[&str] = &[
    "Message",
    "MessageId",
    "Subject",
    "Timestamp",
    "TopicArn",
    "Type",
];

/// The fields signed in a subscription or unsubscription confirmation.
const CONFIRMATION_FIELDS: &[&str] = &[
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
];

/// `POST /v1/bounces/ses`.
pub(super) async fn post(s: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let msg = Envelope::parse(body)?;
    let w = &s.webhooks;
    if !w.sns_topics.iter().any(|t| t == msg.field("TopicArn")) {
        return Err(forbidden(format!(
            "the SNS topic `{}` is not in `sns_topics` of `[email.webhooks]`",
            clip(msg.field("TopicArn"))
        )));
    }
    let key = w.signing_key(msg.field("SigningCertURL")).await?;
    msg.verify(&key)?;
    match msg.field("Type") {
        "Notification" => crate::store_bounces(s, ses_items(msg.field("Message"))?).await,
        "SubscriptionConfirmation" => confirm(w, &msg).await,
        _ => {
            tracing::info!(
                topic = msg.field("TopicArn"),
                "SNS: unsubscribed from the topic"
            );
            Ok(Json(json!({"unsubscribed": true})).into_response())
        }
    }
}

/// An SNS message: its string fields.
struct Envelope(Map<String, Value>);

impl Envelope {
    /// The message of `body`, with the fields its type signs; else 422.
    fn parse(body: &[u8]) -> Result<Envelope, ApiError> {
        let not_sns = |what: &str| unknown("Amazon SNS", what);
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
            return Err(not_sns("the body is not an SNS message (a JSON object)"));
        };
        let env = Envelope(m);
        let required: &[&str] = match env.field("Type") {
            "Notification" => &["Message", "MessageId", "Timestamp", "TopicArn"],
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => CONFIRMATION_FIELDS,
            _ => return Err(not_sns(
                "`Type` is not Notification, SubscriptionConfirmation or UnsubscribeConfirmation",
            )),
        };
        let signing = ["Signature", "SignatureVersion", "SigningCertURL"];
        if let Some(missing) = required
            .iter()
            .chain(&signing)
            .find(|k| !env.0.get(**k).is_some_and(Value::is_string))
        {
            return Err(not_sns(&format!("`{missing}` is missing or not a string")));
        }
        Ok(env)
    }

    /// A string field ("" when absent).
    fn field(&self, name: &str) -> &str {
        self.0.get(name).and_then(Value::as_str).unwrap_or_default()
    }

    /// The string SNS signs: each present field's name and value, each on its line.
    fn canonical(&self) -> String {
        let fields = if self.field("Type") == "Notification" {
            NOTIFICATION_FIELDS
        } else {
            CONFIRMATION_FIELDS
        };
        let mut s = String::new();
        for name in fields {
            if let Some(Value::String(v)) = self.0.get(*name) {
                s.push_str(name);
                s.push('\n');
                s.push_str(v);
                s.push('\n');
            }
        }
        s
    }

    /// Checks the signature with `key`; 403 when it does not verify.
    fn verify(&self, key: &rsa::RsaPublicKey) -> Result<(), ApiError> {
        use base64::Engine as _;
        use rsa::Pkcs1v15Sign;
        use sha2::Digest as _;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(self.field("Signature"))
            .map_err(|_| forbidden("the SNS `Signature` is not base64"))?;
        let text = self.canonical();
        let checked = match self.field("SignatureVersion") {
            "1" => key.verify(
                Pkcs1v15Sign::new::<sha1::Sha1>(),
                &sha1::Sha1::digest(text.as_bytes()),
                &sig,
            ),
            "2" => key.verify(
                Pkcs1v15Sign::new::<sha2::Sha256>(),
                &sha2::Sha256::digest(text.as_bytes()),
                &sig,
            ),
            _ => return Err(forbidden("the SNS `SignatureVersion` is not 1 or 2")),
        };
        checked.map_err(|_| {
            forbidden("the SNS signature does not verify with the topic's signing certificate")
        })
    }
}

/// `raw` when it is an https URL on an SNS host, `sns.<region>.amazonaws.com`, with no
/// credentials and the default port.
pub(crate) fn sns_url(raw: &str) -> Option<url::Url> {
    let u = url::Url::parse(raw).ok()?;
    let Some(url::Host::Domain(host)) = u.host() else {
        return None;
    };
    let region = host.strip_prefix("sns.")?.strip_suffix(".amazonaws.com")?;
    let region_ok = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let plain = u.scheme() == "https"
        && u.username().is_empty()
        && u.password().is_none()
        && u.port().is_none();
    (region_ok && plain).then_some(u)
}

impl Webhooks {
    /// The RSA key of the certificate at `cert_url`: from memory, the `sns_certs` folder,
    /// or fetched. 403 for a URL that is not an SNS host's certificate or a certificate
    /// that is not valid; 503 when it could not be fetched.
    async fn signing_key(&self, cert_url: &str) -> Result<rsa::RsaPublicKey, ApiError> {
        let refused = || {
            forbidden(
                "the SNS `SigningCertURL` is not a certificate on an SNS host (https://sns.<region>.amazonaws.com/....pem)",
            )
        };
        let url = sns_url(cert_url).ok_or_else(refused)?;
        let name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|n| valid_file_name(n))
            .ok_or_else(refused)?
            .to_string();
        if let Some(key) = self.cached(url.as_str()) {
            return Ok(key);
        }
        let pem = match self.local_cert(&name) {
            Some(pem) => pem,
            None => self.fetch_cert(&url).await?,
        };
        let key = public_key(&pem).map_err(|why| {
            tracing::warn!(url = %url, why, "SNS signing certificate refused");
            forbidden(format!("the SNS signing certificate is not usable: {why}"))
        })?;
        let mut certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
        if certs.len() >= MAX_CACHED_CERTS {
            certs.clear();
        }
        certs.insert(url.to_string(), key.clone());
        Ok(key)
    }

    fn cached(&self, url: &str) -> Option<rsa::RsaPublicKey> {
        let certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
        certs.get(url).cloned()
    }

    /// The certificate file `name` of the `sns_certs` folder, if there is one.
    fn local_cert(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.sns_certs.as_ref()?.join(name);
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > MAX_CERT as u64 {
            return None;
        }
        std::fs::read(path).ok()
    }

    /// Fetches a certificate (at most [`MAX_CERT`] bytes, no redirects, 10 s).
    async fn fetch_cert(&self, url: &url::Url) -> Result<Vec<u8>, ApiError> {
        let failed = |why: &str| {
            tracing::warn!(url = %url, why, "SNS signing certificate not fetched");
            busy("the SNS signing certificate could not be fetched")
        };
        let r = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|_| failed("no answer"))?;
        if !r.status().is_success() {
            return Err(failed("not 200"));
        }
        if r.content_length().is_some_and(|n| n > MAX_CERT as u64) {
            return Err(failed("too large"));
        }
        let bytes = r.bytes().await.map_err(|_| failed("body not read"))?;
        if bytes.len() > MAX_CERT {
            return Err(failed("too large"));
        }
        Ok(bytes.to_vec())
    }
}

/// A certificate file name: letters, digits, `-`, `_`, `.`, ending in `.pem`, not
/// starting with a dot.
fn valid_file_name(name: &str) -> bool {
    name.len() <= 200
        && name.ends_with(".pem")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The RSA key of a PEM certificate valid now.
fn public_key(pem: &[u8]) -> Result<rsa::RsaPublicKey, String> {
    use rsa::pkcs8::DecodePublicKey as _;
    use x509_cert::der::{DecodePem as _, Encode as _};
    let cert = x509_cert::Certificate::from_pem(pem).map_err(|_| "not a PEM certificate")?;
    let validity = &cert.tbs_certificate.validity;
    let now = std::time::SystemTime::now();
    if validity.not_before.to_system_time() > now || validity.not_after.to_system_time() < now {
        return Err("outside its validity period".into());
    }
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| "no public key")?;
    rsa::RsaPublicKey::from_public_key_der(&spki).map_err(|_| "not an RSA key".into())
}

/// Confirms a subscription by fetching its `SubscribeURL`, only on an SNS host.
async fn confirm(w: &Webhooks, msg: &Envelope) -> Result<Response, ApiError> {
    let topic = msg.field("TopicArn");
    let url = sns_url(msg.field("SubscribeURL"))
        .filter(|u| u.query_pairs().any(|(k, v)| k == "Action" && v == "ConfirmSubscription"))
        .ok_or_else(|| {
            tracing::warn!(topic, "SNS subscription not confirmed: its SubscribeURL is not an SNS confirmation");
            forbidden("the `SubscribeURL` is not an SNS subscription confirmation (https://sns.<region>.amazonaws.com/?Action=ConfirmSubscription...): not confirmed")
        })?;
    match w.http.get(url).send().await {
        Ok(r) if r.status().is_success() => {
            tracing::info!(topic, "SNS: subscription confirmed");
            Ok(Json(json!({"confirmed": true})).into_response())
        }
        _ => {
            tracing::warn!(topic, "SNS subscription confirmation failed");
            Err(busy("the SNS subscription could not be confirmed"))
        }
    }
}

/// The bounces of an SES notification (`notificationType`, or `eventType` for event
/// publishing): one per recipient.
fn ses_items(message: &str) -> Result<Vec<BounceItem>, ApiError> {
    let not_ses = |what: &str| unknown("Amazon SES", what);
    let n: Value = serde_json::from_str(message)
        .map_err(|_| not_ses("the SNS message is not an SES notification (JSON)"))?;
    let Some(kind) = n["notificationType"]
        .as_str()
        .or_else(|| n["eventType"].as_str())
    else {
        return Err(not_ses(
            "the SES notification has no `notificationType` or `eventType`",
        ));
    };
    let message_id = n["mail"]["messageId"].as_str().unwrap_or_default();
    let (detail, list, class) = match kind {
        "Bounce" => {
            let b = &n["bounce"];
            let class = match b["bounceType"].as_str() {
                Some("Permanent") => HARD,
                _ => SOFT,
            };
            (b, "bouncedRecipients", class)
        }
        "Complaint" => (&n["complaint"], "complainedRecipients", COMPLAINT),
        other => {
            return Ok(vec![BounceItem::Ignored(format!(
                "SES `{}` notifications are not bounces or complaints",
                clip(other)
            ))])
        }
    };
    let recipients = detail[list]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| not_ses(&format!("the SES {kind} has no `{list}`")))?;
    Ok(recipients
        .iter()
        .map(|r| {
            let email = r["emailAddress"].as_str();
            let why = reason(&[
                &detail["bounceType"],
                &detail["bounceSubType"],
                &detail["complaintFeedbackType"],
                &r["status"],
                &r["diagnosticCode"],
            ]);
            let id = (!message_id.is_empty())
                .then(|| format!("{message_id}:{}", email.unwrap_or_default()));
            item("ses", email, class, why, id)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_sns_hosts_are_sns_urls() {
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription&Token=x",
        ] {
            assert!(sns_url(ok).is_some(), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.test/x.pem",
            "https://evil.test/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://sns.a.b.amazonaws.com/x.pem",
            "https://127.0.0.1/x.pem",
            "https://s3.amazonaws.com/x.pem",
        ] {
            assert!(sns_url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn certificate_file_names_cannot_leave_the_folder() {
        assert!(valid_file_name("SimpleNotificationService-0123.pem"));
        for bad in [
            "..pem",
            "../x.pem",
            "x.pem/..",
            "x.crt",
            "%2e%2e.pem",
            ".hidden.pem",
        ] {
            assert!(!valid_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_canonical_string_skips_absent_fields_in_sns_order() {
        let env = Envelope(
            serde_json::from_str::<Value>(
                r#"{"Type":"Notification","TopicArn":"t","Timestamp":"ts","MessageId":"m","Message":"hi","Signature":"x"}"#,
            )
            .unwrap()
            .as_object()
            .unwrap()
            .clone(),
        );
        assert_eq!(
            env.canonical(),
            "Message\nhi\nMessageId\nm\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
        );
    }
}
