//! The email channel: templates rendered with minijinja, messages built and DKIM-signed
//! with lettre, delivered over SMTP or, by default, written as `.eml` files into the
//! project's outbox folder.
//!
//! Per message:
//! - `Message-ID: <KEY@DOMAIN>`, from the outbox idempotency key, so a message is the
//!   same message on every attempt and receivers can de-duplicate;
//! - RFC 8058 one-click unsubscribe: `List-Unsubscribe: <BASE/u/TOKEN>` and
//!   `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, both in the DKIM-signed set;
//! - `List-Id: <WORKFLOW.DOMAIN>` (RFC 2919), so receivers and filters can tell one
//!   campaign's stream from another;
//! - tracking: links rewritten to `BASE/t/c/TOKEN` (with `lol_html`, see [`html`]) and
//!   an open pixel `BASE/t/o/TOKEN` as a background image (not an `<img>`: SpamAssassin's
//!   `HTML_IMAGE_ONLY_*` rules score any image in a short email); tokens
//!   are HMAC-signed, bound to their purpose (open, click, unsubscribe) and carry the
//!   outbox key, contact, workflow and step (no guessable ids); see [`track`];
//! - a text part (the template's `.txt`, or derived from the HTML) and the HTML part.
//!
//! Before sending: the per-sender pacing of the rate limit (the frequency cap and the
//! channel's rate limit are enforced by the store at the claim: `store::limits`). After: SMTP 5xx suppresses the address and fails the entry; 4xx retries with
//! backoff; a connection lost mid-session is *ambiguous* (the server may have accepted
//! the message) and is not resent until an operator requeues it.

pub mod hits;
pub mod html;
pub mod track;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::channel::{Attempt, Channel};
use nurture_core::project::Project;
pub use nurture_core::template::{Rendered, Renderer};
use nurture_store::{OutboxEntry, OutboxKind, Store, StoreError, Ts};
pub use track::{Purpose, Signer};

/// Why the email channel could not be set up from the settings.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// The SMTP or sender settings are incomplete or wrong; says which.
    #[error("email settings: {0}")]
    Config(String),
    /// The DKIM key could not be read or used.
    #[error("DKIM key {path}: {reason}")]
    Dkim {
        /// Where the key was read from.
        path: String,
        /// What went wrong with it.
        reason: String,
    },
}

impl EmailError {
    /// Settings errors need a fix, not a retry.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Why a message could not be built (the same every time: a fix is needed).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The contact (its id) has no email address.
    #[error("contact {0} has no email address")]
    NoAddress(String),
    /// The template did not render for this contact.
    #[error(transparent)]
    Render(#[from] nurture_core::template::RenderError),
    /// Neither the entry, its template nor `[sender]` gives a from address.
    #[error("no sender: set [sender] from in nurture.toml")]
    NoSender,
    /// The from address is not an address.
    #[error("sender `{from}`: {source}")]
    Sender {
        /// The address as configured.
        from: String,
        /// Why it is not one.
        source: lettre::address::AddressError,
    },
    /// The recipient's address is not one lettre accepts.
    #[error("recipient `{to}`: {source}")]
    Recipient {
        /// The recipient's address as given.
        to: String,
        /// Why it is not one.
        source: lettre::address::AddressError,
    },
    /// The HTML part could not be rewritten for tracking.
    #[error(transparent)]
    Html(#[from] html::HtmlError),
    /// lettre could not assemble the message.
    #[error("building the message: {0}")]
    Message(#[source] lettre::error::Error),
}

/// Why an `email` or `notify` entry was not sent. [`SendError::is_retryable`] decides
/// whether it is tried again.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The entry names no address to send to.
    #[error("no recipient address")]
    NoRecipient,
    /// The address was suppressed after the entry was claimed.
    #[error("email_skipped: suppressed: {0}")]
    Suppressed(String),
    /// Looking up the suppression list failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The message could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Writing the `.eml` file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The `.eml` file it was writing.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SMTP server refused the message for good (5xx): the address is suppressed.
    #[error("permanent bounce, address suppressed: SMTP {0}")]
    Bounce(#[source] lettre::transport::smtp::Error),
    /// A temporary refusal (4xx), or nothing was handed over (connection refused, TLS).
    #[error("SMTP {0}")]
    Smtp(#[source] lettre::transport::smtp::Error),
}

impl SendError {
    /// Whether another attempt can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::NoRecipient
            | SendError::Suppressed(_)
            | SendError::Build(_)
            | SendError::Bounce(_) => false,
            SendError::Store(e) => e.is_retryable(),
            SendError::Write { .. } | SendError::Smtp(_) => true,
        }
    }
}

/// The folder of the `.eml` files of a project without SMTP (`[email] outbox_dir`, by
/// default `outbox/` in the project).
pub fn eml_dir(project: &Project) -> PathBuf {
    let email = project.settings.email.clone().unwrap_or_default();
    project
        .root
        .join(email.outbox_dir.as_deref().unwrap_or("outbox"))
}

/// Writes `bytes` to `path` in `dir` whole or not at all: into a hidden `.part` file
/// first, renamed over `path` once written, so whoever reads the outbox folder (a script,
/// a test) never sees an empty or half-written `.eml`.
fn write_whole(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let part = dir.join(format!(".{name}.part"));
    std::fs::write(&part, bytes)?;
    std::fs::rename(&part, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })
}

/// Removes the `.eml` files of the outbox entries `keys` from `dir` (a person's erasure),
/// and any `.part` file a process that died mid-write left; how many `.eml` there were.
/// Keys that would leave the folder are skipped.
pub fn remove_eml(dir: &Path, keys: &[String]) -> std::io::Result<usize> {
    let mut n = 0;
    for key in keys {
        if key.contains(['/', '\\']) || key.starts_with('.') {
            continue;
        }
        remove_if_there(&dir.join(format!(".{key}.eml.part")))?;
        n += usize::from(remove_if_there(&dir.join(format!("{key}.eml")))?);
    }
    Ok(n)
}

/// Removes `path`; whether it was there.
fn remove_if_there(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Where messages go.
pub enum Transport {
    /// `.eml` files in a folder, one per outbox key (the default for `nurture run`).
    Files(PathBuf),
    /// An SMTP server (`[email] smtp`).
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// The email channel of one process.
pub struct EmailChannel {
    renderer: Renderer,
    transport: Transport,
    signer: Signer,
    base_url: String,
    tracking: bool,
    default_from: Option<String>,
    reply_to: Option<String>,
    rate_per_sec: Option<f64>,
    dkim: Option<DkimConfig>,
    /// Next free send slot per sender address (rate limit).
    slots: Mutex<HashMap<String, Instant>>,
    store: Arc<dyn Store>,
}

impl EmailChannel {
    /// The channel for a project, from `nurture.toml` (`[sender]`, `[smtp]`, `[email]`).
    /// `api_base` is used for links when `email.base_url` is not set.
    pub fn for_project(
        project: &Project,
        store: Arc<dyn Store>,
        signer: Signer,
        api_base: &str,
    ) -> Result<EmailChannel, EmailError> {
        let settings = &project.settings;
        let email = settings.email.clone().unwrap_or_default();
        let (renderer, problems) = Renderer::new(&project.templates);
        if let Some(p) = problems.first() {
            return Err(EmailError::Config(format!(
                "template {}: {}",
                p.source, p.message
            )));
        }
        let transport = match &settings.smtp {
            Some(smtp) => {
                let port = smtp.port;
                let tls = smtp.tls.as_deref().unwrap_or("starttls");
                let mut b = match tls {
                    "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
                    "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                        .map_err(|e| EmailError::Config(format!("smtp: {e}")))?,
                    "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                        .map_err(|e| EmailError::Config(format!("smtp: {e}")))?,
                    other => {
                        return Err(EmailError::Config(format!(
                            "smtp.tls = `{other}`: use starttls, tls or none"
                        )))
                    }
                };
                if let Some(port) = port {
                    b = b.port(port);
                }
                if let Some(user) = &smtp.username {
                    let var = smtp
                        .password_env
                        .clone()
                        .unwrap_or_else(|| "NURTURE_SMTP_PASSWORD".into());
                    let password = std::env::var(&var)
                        .map_err(|_| EmailError::Config(format!("smtp password: set ${var}")))?;
                    b = b.credentials(Credentials::new(user.clone(), password));
                }
                Transport::Smtp(
                    b.timeout(Some(Duration::from_secs(30)))
                        .pool_config(PoolConfig::new().max_size(8))
                        .build(),
                )
            }
            None => Transport::Files(eml_dir(project)),
        };
        let dkim = match &email.dkim {
            Some(d) => {
                let path = project.root.join(&d.key_file);
                let key_text = std::fs::read_to_string(&path).map_err(|e| EmailError::Dkim {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let algorithm = match d.algorithm.as_deref().unwrap_or("rsa") {
                    "rsa" => DkimSigningAlgorithm::Rsa,
                    "ed25519" => DkimSigningAlgorithm::Ed25519,
                    other => {
                        return Err(EmailError::Config(format!(
                            "dkim.algorithm = `{other}`: use rsa or ed25519"
                        )))
                    }
                };
                let key = DkimSigningKey::new(key_text.trim(), algorithm).map_err(|e| {
                    EmailError::Dkim {
                        path: path.display().to_string(),
                        reason: format!("{e:?}"),
                    }
                })?;
                Some(DkimConfig::new(
                    d.selector.clone(),
                    d.domain.clone(),
                    key,
                    signed_headers(),
                    DkimCanonicalization {
                        header: DkimCanonicalizationType::Relaxed,
                        body: DkimCanonicalizationType::Relaxed,
                    },
                ))
            }
            None => None,
        };
        // The project's frequency caps and rate limits hold at every claim of this store.
        store.set_send_limits(nurture_store::limits::SendLimits::for_project(project));
        let base_url = email
            .base_url
            .clone()
            .unwrap_or_else(|| api_base.to_string())
            .trim_end_matches('/')
            .to_string();
        if let Some(warning) = insecure_links_warning(settings.smtp.is_some(), &base_url) {
            tracing::warn!("{warning}");
        }
        Ok(EmailChannel {
            renderer,
            transport,
            signer,
            base_url,
            tracking: email.tracking.unwrap_or(true),
            default_from: settings.sender.as_ref().map(|s| s.from.clone()),
            reply_to: settings.sender.as_ref().and_then(|s| s.reply_to.clone()),
            rate_per_sec: email.rate_per_sec.filter(|r| *r > 0.0),
            dkim,
            slots: Mutex::new(HashMap::new()),
            store,
        })
    }

    /// The renderer of the project's templates the channel builds its messages with.
    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// The message a contact would get from a template (as `nurture email preview`
    /// shows it), and its rendered parts. Links and headers are the real ones, keyed
    /// `preview`.
    pub fn preview(
        &self,
        template: &str,
        contact_id: &str,
        contact: &Value,
    ) -> Result<(Message, Rendered), BuildError> {
        let to = contact["email"]
            .as_str()
            .ok_or_else(|| BuildError::NoAddress(contact_id.to_string()))?;
        let entry = OutboxEntry {
            key: "preview".into(),
            run_id: None,
            contact: contact_id.to_string(),
            workflow: Some("preview".into()),
            step: Some("preview".into()),
            kind: OutboxKind::Email,
            payload: json!({"to": to, "template": template, "contact": contact}),
            created_at: Utc::now(),
            due_at: Utc::now(),
            attempts: 0,
        };
        self.build(&entry, to, true, Utc::now())
    }

    /// Delivers one `email` or `notify` outbox entry.
    async fn send(&self, entry: &OutboxEntry) -> Result<Attempt, SendError> {
        let marketing = entry.kind == OutboxKind::Email;
        let p = &entry.payload;
        let Some(to) = p["to"].as_str().filter(|t| t.contains('@')) else {
            return Err(SendError::NoRecipient);
        };
        let now = Utc::now();
        if marketing {
            // Suppressed after the claim (e.g. a bounce seen by another worker).
            if let Some(reason) = self.store.suppression(to).await? {
                return Err(SendError::Suppressed(reason));
            }
            // The frequency cap and the rate limit were enforced by the store when the
            // entry was claimed (`store::limits`), across all workers.
        }
        let (message, _) = self.build(entry, to, marketing, now)?;
        let from = message
            .headers()
            .get_raw("From")
            .unwrap_or_default()
            .to_string();
        self.wait_for_slot(&from).await;
        let message_id = message_id(&entry.key, &from);
        match &self.transport {
            Transport::Files(dir) => {
                let path = dir.join(format!("{}.eml", entry.key));
                match write_whole(dir, &path, &message.formatted()) {
                    Ok(()) => Ok(Attempt::Delivered {
                        record: json!({"channel": "file", "path": path.display().to_string(), "message_id": message_id, "to": to}),
                    }),
                    Err(source) => Err(SendError::Write {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(resp) => Ok(Attempt::Delivered {
                    record: json!({
                        "channel": "smtp",
                        "message_id": message_id,
                        "to": to,
                        "response": format!("{} {}", resp.code(), resp.message().collect::<Vec<_>>().join(" ")),
                    }),
                }),
                Err(e) if e.is_permanent() => {
                    let _ = self
                        .store
                        .suppress(to, &format!("bounce: SMTP {e}"), Utc::now())
                        .await;
                    Err(SendError::Bounce(e))
                }
                Err(e) if e.is_transient() => Err(SendError::Smtp(e)),
                // The session broke while waiting for or reading a reply: possibly after
                // the server took the message.
                Err(e)
                    if e.is_timeout()
                        || e.is_response()
                        || e.to_string().contains("network error") =>
                {
                    Ok(Attempt::Ambiguous {
                        reason: format!(
                            "the SMTP session broke ({e}); the server may have accepted the message. \
                             Look for Message-ID {message_id} in the mail server's log; if it is not there, \
                             requeue it with `nurture outbox retry {}`",
                            entry.key
                        ),
                    })
                }
                // Connection refused, TLS, client errors: nothing was handed over.
                Err(e) => Err(SendError::Smtp(e)),
            },
        }
    }

    /// Waits until the sender may send again (`rate_per_sec`).
    async fn wait_for_slot(&self, from: &str) {
        let Some(rate) = self.rate_per_sec else {
            return;
        };
        let gap = Duration::from_secs_f64(1.0 / rate);
        let wait = {
            let mut slots = self.slots.lock().await;
            let now = Instant::now();
            let slot = slots.get(from).copied().unwrap_or(now).max(now);
            slots.insert(from.to_string(), slot + gap);
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The full message for an outbox entry.
    fn build(
        &self,
        entry: &OutboxEntry,
        to: &str,
        marketing: bool,
        now: Ts,
    ) -> Result<(Message, Rendered), BuildError> {
        let p = &entry.payload;
        let template = p["template"].as_str().unwrap_or_default();
        let contact = p.get("contact").cloned().unwrap_or(Value::Null);
        let unsubscribe = if marketing {
            Some(format!(
                "{}/u/{}",
                self.base_url,
                self.signer.sign_for(
                    Purpose::Unsubscribe,
                    &json!({"k": entry.key, "c": entry.contact, "a": to.to_lowercase(), "w": entry.workflow})
                )
            ))
        } else {
            None
        };
        let owner = if entry.kind == OutboxKind::Notify {
            json!({"email": to, "name": contact.get("owner_name").cloned().unwrap_or(Value::Null)})
        } else {
            json!({"email": contact.get("owner").cloned().unwrap_or(Value::Null)})
        };
        let ctx = json!({
            "contact": contact,
            "owner": owner,
            "event": p.get("event").cloned().unwrap_or(Value::Null),
            "unsubscribe_url": unsubscribe.clone().unwrap_or_default(),
            // A hosted form's double opt-in link (`server::forms`), for its template.
            "confirm_url": p.get("confirm_url").cloned().unwrap_or(Value::Null),
        });
        let rendered = self
            .renderer
            .render(template, &ctx, p["subject"].as_str())?;
        let from = p["from"]
            .as_str()
            .map(str::to_string)
            .or(rendered.from.clone())
            .or(self.default_from.clone())
            .ok_or(BuildError::NoSender)?;
        let from: Mailbox = from
            .parse()
            .map_err(|source| BuildError::Sender { from, source })?;
        let to_box: Mailbox = to.parse().map_err(|source| BuildError::Recipient {
            to: to.to_string(),
            source,
        })?;
        let mut html = rendered.html.clone();
        if marketing && self.tracking {
            if let Some(h) = &html {
                html = Some(self.track_html(h, entry, unsubscribe.as_deref(), now)?);
            }
        }
        let mut builder = Message::builder()
            .from(from.clone())
            .to(to_box)
            .subject(rendered.subject.clone())
            .message_id(Some(message_id(&entry.key, from.email.as_ref())))
            .date(now.into());
        if let Some(r) = &self.reply_to {
            if let Ok(r) = r.parse::<Mailbox>() {
                builder = builder.reply_to(r);
            }
        }
        let text = SinglePart::plain(rendered.text.clone());
        let body = match html {
            Some(h) => MultiPart::alternative()
                .singlepart(text)
                .singlepart(SinglePart::html(h)),
            None => MultiPart::mixed().singlepart(text),
        };
        let mut message = builder.multipart(body).map_err(BuildError::Message)?;
        let headers = message.headers_mut();
        headers.insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Nurture-Key"),
            entry.key.clone(),
        ));
        if let Some(u) = &unsubscribe {
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Id"),
                list_id(entry.workflow.as_deref(), from.email.as_ref()),
            ));
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{u}>"),
            ));
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
        }
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        Ok((message, rendered))
    }

    /// Rewrites links to the click redirect and appends the open pixel.
    fn track_html(
        &self,
        html: &str,
        entry: &OutboxEntry,
        unsubscribe: Option<&str>,
        now: Ts,
    ) -> Result<String, BuildError> {
        let base = json!({"k": entry.key, "c": entry.contact, "w": entry.workflow, "s": entry.step, "t": now.timestamp()});
        let click = |url: &str| {
            if Some(url) == unsubscribe {
                return None;
            }
            let mut claims = base.clone();
            claims["u"] = Value::from(url);
            Some(format!(
                "{}/t/c/{}",
                self.base_url,
                self.signer.sign_for(Purpose::Click, &claims)
            ))
        };
        let pixel = open_pixel(&format!(
            "{}/t/o/{}",
            self.base_url,
            self.signer.sign_for(Purpose::Open, &base)
        ));
        html::rewrite(html, click, &pixel).map_err(BuildError::Html)
    }
}

/// The open-tracking pixel: a one-pixel-high row whose background is the tracking
/// image, given both as the `background` attribute and as CSS (clients support one or
/// the other). Not an `<img>`: SpamAssassin scores any `<img>` in an email with little
/// text (`HTML_IMAGE_ONLY_*`, 1.4 points and more for the example templates).
fn open_pixel(url: &str) -> String {
    // Characters that would end the CSS string are percent-encoded first (the HTML
    // parser decodes entities before CSS sees the value), then all is attribute-escaped.
    let css: String = url
        .chars()
        .map(|c| match c {
            '\'' | '"' | '(' | ')' | '\\' | ' ' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect();
    let css = nurture_core::template::escape_html(&css);
    let url = nurture_core::template::escape_html(url);
    format!(
        "<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\
<tr><td background=\"{url}\" style=\"background-image:url('{css}');font-size:1px;line-height:1px;height:1px\">&nbsp;</td></tr></table>"
    )
}

/// `List-Id` (RFC 2919) of a workflow's messages: `<WORKFLOW.DOMAIN>`, the workflow's
/// name reduced to letters, digits and dashes, under the sender's domain.
pub fn list_id(workflow: Option<&str>, from: &str) -> String {
    let label: String = workflow
        .unwrap_or("nurture")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    let domain = message_id("x", from);
    let domain = domain.trim_start_matches("<x@").trim_end_matches('>');
    format!("<{}.{domain}>", label.trim_matches('-'))
}

/// The warning for links that are not `https://` when mail goes out over SMTP: the
/// unsubscribe and tracking links carry signed tokens, readers' mail clients mark
/// plain-http links, and RFC 8058 one-click unsubscribe requires HTTPS.
pub fn insecure_links_warning(smtp: bool, base_url: &str) -> Option<String> {
    let https = url::Url::parse(base_url).is_ok_and(|u| u.scheme() == "https");
    (smtp && !https).then(|| {
        format!(
            "email links use {base_url}, not https: set [email] base_url to the public https:// \
             address of the API (unsubscribe and tracking links; RFC 8058 one-click unsubscribe \
             requires https)"
        )
    })
}

/// The email channel delivers `email` and `notify` entries.
#[async_trait::async_trait]
impl Channel for EmailChannel {
    async fn deliver(&self, entry: &OutboxEntry) -> Attempt {
        self.send(entry).await.unwrap_or_else(Attempt::from)
    }
}

/// `<KEY@DOMAIN>` with the sender's domain.
pub fn message_id(key: &str, from: &str) -> String {
    let domain = from
        .rsplit('@')
        .next()
        .unwrap_or("nurture.invalid")
        .trim_end_matches('>')
        .trim();
    format!("<{key}@{domain}>")
}

/// Headers covered by the DKIM signature: the usual set plus the unsubscribe headers, so
/// a relay cannot strip or change them without breaking the signature. (Not
/// Content-Type: lettre signs it before folding the boundary parameter, and verifiers
/// then disagree; the body hash covers the content anyway.)
fn signed_headers() -> Vec<HeaderName> {
    [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Reply-To",
        "MIME-Version",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ]
    .into_iter()
    .map(HeaderName::new_from_ascii_str)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_links_are_warned_about_only_when_mail_goes_out_over_smtp() {
        let w = insecure_links_warning(true, "http://mail.acme.test").unwrap();
        assert!(
            w.contains("http://mail.acme.test") && w.contains("base_url"),
            "{w}"
        );
        assert!(insecure_links_warning(true, "http://127.0.0.1:8025").is_some());
        assert!(insecure_links_warning(true, "not a url").is_some());
        assert!(insecure_links_warning(true, "HTTPS://mail.acme.test").is_none());
        assert!(insecure_links_warning(true, "https://mail.acme.test/api").is_none());
        // The file transport (the default: nothing leaves the machine) is not warned about.
        assert!(insecure_links_warning(false, "http://127.0.0.1:8025").is_none());
    }

    #[test]
    fn list_id_is_the_workflow_under_the_sender_domain() {
        assert_eq!(
            list_id(Some("Ebook nurture/2"), "Acme <hello@acme.test>"),
            "<ebook-nurture-2.acme.test>"
        );
        assert_eq!(list_id(None, "hello@acme.test"), "<nurture.acme.test>");
    }

    #[test]
    fn the_open_pixel_is_no_img_and_its_url_is_escaped() {
        let p = open_pixel("https://t.test/t/o/a\"b'c&d");
        assert!(!p.contains("<img"), "{p}");
        assert!(
            p.contains("background=\"https://t.test/t/o/a&quot;b&#39;c&amp;d\""),
            "{p}"
        );
        assert!(
            p.contains("background-image:url('https://t.test/t/o/a%22b%27c&amp;d')"),
            "{p}"
        );
    }
}
