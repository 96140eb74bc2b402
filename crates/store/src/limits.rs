//! Per-channel send limits, enforced by the store in the transaction that claims outbox
//! entries, so that they hold across any number of workers.
//!
//! - **Frequency cap** (per contact and channel): at most `max` sends in any `per`. A
//!   claim counts the contact's sends in the window (the `contact_sends` table: one row per
//!   send, written by the claim itself and removed again when the attempt does not deliver)
//!   plus the ones it takes, and defers an entry beyond the cap to the instant the oldest
//!   counted send leaves the window. On Postgres the claim first takes a transaction-scoped
//!   advisory lock per contact (in sorted order), so two claims of one contact's entries
//!   never count at the same time; SQLite has one writer anyway.
//! - **Rate limit** (per channel): at most `rate_per_sec` sends per second across all
//!   workers, counted in `rate_buckets` rows of one window each (1 s, or `1 / rate` when the
//!   rate is below one per second) with a conditional increment. An entry whose window is
//!   full is deferred to the start of the next window.
//!
//! A channel is `email` for marketing email, or the `channel` a plugin declares in its
//! manifest (`channel = "sms"`), carried in the outbox payload of its steps.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{OutboxEntry, Ts};

/// Frequency cap of one channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cap {
    /// At most this many sends to one contact...
    pub max: u32,
    /// ...in any window this long.
    pub per: chrono::Duration,
}

/// The limits of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChannelLimits {
    /// Sends per contact in a window, if capped.
    pub cap: Option<Cap>,
    /// Sends per second across all workers.
    pub rate_per_sec: Option<f64>,
}

/// The limits of every limited channel, by channel name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendLimits {
    /// The limits by channel name (`email`, or a plugin's channel such as `sms`); a
    /// channel not here is not limited.
    pub channels: BTreeMap<String, ChannelLimits>,
}

/// How long a rate bucket row is kept after its window (older ones are pruned by claims).
const BUCKET_KEEP_MS: i64 = 3_600_000;

impl SendLimits {
    /// The limits a project sets: `[email]` `cap` and `rate_per_sec` for email, and
    /// `[channels.NAME]` for the channel a plugin declares. A plugin channel without its own
    /// `cap` has the email cap's numbers (counted apart: 3 emails and 3 texts a week).
    pub fn for_project(project: &nurture_core::project::Project) -> SendLimits {
        let settings = &project.settings;
        let cap_of = |c: &nurture_core::model::FrequencyCap| Cap {
            max: c.max,
            per: chrono::Duration::seconds(c.per.seconds() as i64),
        };
        let email = settings.email.clone().unwrap_or_default();
        let email_cap = email.cap.as_ref().map(cap_of);
        let mut channels = BTreeMap::new();
        channels.insert(
            "email".to_string(),
            ChannelLimits {
                cap: email_cap,
                rate_per_sec: email.rate_per_sec,
            },
        );
        for m in project.plugins.values() {
            if let Some(ch) = &m.channel {
                let own = settings.channels.get(ch);
                channels.insert(
                    ch.clone(),
                    ChannelLimits {
                        cap: own.and_then(|c| c.cap.as_ref()).map(cap_of).or(email_cap),
                        rate_per_sec: own.and_then(|c| c.rate_per_sec),
                    },
                );
            }
        }
        let mut limits = SendLimits { channels };
        limits.normalize();
        limits
    }

    /// These limits without rate limits (`nurture simulate` models campaigns, not
    /// throughput).
    pub fn caps_only(mut self) -> SendLimits {
        for l in self.channels.values_mut() {
            l.rate_per_sec = None;
        }
        self.normalize();
        self
    }

    /// Drops channels without any limit, and meaningless values (a zero or negative rate,
    /// a cap of zero sends or over no time).
    fn normalize(&mut self) {
        for l in self.channels.values_mut() {
            l.rate_per_sec = l.rate_per_sec.filter(|r| r.is_finite() && *r > 0.0);
            l.cap = l
                .cap
                .filter(|c| c.max > 0 && c.per > chrono::Duration::zero());
        }
        self.channels
            .retain(|_, l| l.cap.is_some() || l.rate_per_sec.is_some());
    }

    /// Whether no channel is limited (a claim then enforces nothing).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The limits of the channel of `entry`, if it is limited.
    pub fn of(&self, entry: &OutboxEntry) -> Option<(&str, &ChannelLimits)> {
        let ch = channel_of(&entry.kind, &entry.payload)?;
        self.channels
            .get_key_value(ch)
            .map(|(k, l)| (k.as_str(), l))
    }

    /// The longest cap window of any channel (how far back a claim reads sends).
    pub fn longest_cap(&self) -> Option<chrono::Duration> {
        self.channels
            .values()
            .filter_map(|l| l.cap.map(|c| c.per))
            .max()
    }
}

/// The channel of an outbox entry: `email` for marketing email, the declared channel of a
/// plugin step that contacts the person (`payload.channel`), none for anything else.
pub fn channel_of<'a>(kind: &super::OutboxKind, payload: &'a Value) -> Option<&'a str> {
    match kind {
        super::OutboxKind::Email => Some("email"),
        super::OutboxKind::Plugin => payload.get("channel").and_then(Value::as_str),
        _ => None,
    }
}

pub use nurture_core::model::valid_channel;

/// Why and until when a claim left an entry for later.
#[derive(Debug, Clone, PartialEq)]
pub struct Deferral {
    /// The outbox entry's key.
    pub key: String,
    /// When it is due again.
    pub until: Ts,
    /// Why, for the entry's `last_error` (the cap or rate and the new due time).
    pub reason: String,
    /// `frequency_cap` or `rate_limit`.
    pub cause: &'static str,
    /// The rule's parameters, for the journal line of the deferral
    /// ([`crate::held::deferral_lines`]): `channel`, and `max` and `per` of a cap, or
    /// `per_second` of a rate.
    pub params: Value,
}

/// One entry a claim is about to take, of a limited channel.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The outbox entry's key.
    pub key: &'a str,
    /// Its contact (whose sends the cap counts).
    pub contact: &'a str,
    /// Its channel.
    pub channel: &'a str,
    /// That channel's limits.
    pub limits: ChannelLimits,
}

/// The candidates among `entries` (in order): those of a limited channel.
pub fn candidates<'a>(limits: &'a SendLimits, entries: &[&'a OutboxEntry]) -> Vec<Candidate<'a>> {
    entries
        .iter()
        .filter_map(|e| {
            let (channel, l) = limits.of(e)?;
            Some(Candidate {
                key: &e.key,
                contact: &e.contact,
                channel,
                limits: *l,
            })
        })
        .collect()
}

/// The cap decisions for `cands`, in order: `None` to send, or the deferral. `sent` holds
/// the recorded sends per (contact, channel) (any order; the candidates' own keys already
/// left out); the sends this claim allows are counted for the candidates after them.
pub fn cap_decisions(
    now: Ts,
    cands: &[Candidate<'_>],
    mut sent: HashMap<(String, String), Vec<Ts>>,
) -> Vec<Option<Deferral>> {
    for times in sent.values_mut() {
        times.sort();
    }
    cands
        .iter()
        .map(|c| {
            let cap = c.limits.cap?;
            let times = sent
                .entry((c.contact.to_string(), c.channel.to_string()))
                .or_default();
            // Sends strictly inside the window: the oldest leaves it at `at + per`, after now.
            times.retain(|t| *t > now - cap.per);
            if times.len() as u64 >= u64::from(cap.max) {
                let until = times[times.len() - cap.max as usize] + cap.per;
                Some(Deferral {
                    key: c.key.to_string(),
                    until,
                    reason: format!(
                        "frequency cap: {} {} per {}; deferred to {}",
                        cap.max,
                        if c.channel == "email" {
                            "emails".to_string()
                        } else {
                            format!("{} messages", c.channel)
                        },
                        nurture_core::model::Duration(cap.per.num_seconds().max(0) as u64),
                        super::ts_out(until)
                    ),
                    cause: "frequency_cap",
                    params: serde_json::json!({
                        "channel": c.channel,
                        "max": cap.max,
                        "per": nurture_core::model::Duration(cap.per.num_seconds().max(0) as u64).to_string(),
                    }),
                })
            } else {
                times.push(now);
                None
            }
        })
        .collect()
}

/// The rate window of `rate` sends per second: its length in milliseconds and how many
/// sends it takes (1 s and the rate rounded down; below 1/s, one send per `1 / rate`).
pub fn rate_window(rate: f64) -> (i64, i64) {
    if rate >= 1.0 {
        (1000, rate.floor().min(1e9) as i64)
    } else {
        ((1000.0 / rate).ceil().min(1e12) as i64, 1)
    }
}

/// The start (milliseconds since the epoch) of the rate window of `now`.
pub fn window_start(now: Ts, window_ms: i64) -> i64 {
    now.timestamp_millis().div_euclid(window_ms) * window_ms
}

/// Rows of `rate_buckets` before this are no longer needed at `now`.
pub fn bucket_horizon(now: Ts) -> i64 {
    now.timestamp_millis() - BUCKET_KEEP_MS
}

/// The deferral of an entry whose channel's rate window is full.
pub fn rate_deferral(key: &str, channel: &str, rate: f64, start: i64, window_ms: i64) -> Deferral {
    let until = chrono::DateTime::from_timestamp_millis(start + window_ms).unwrap_or_default();
    Deferral {
        key: key.to_string(),
        until,
        reason: format!("rate limit: {channel} at {rate} per second; deferred to the next window"),
        cause: "rate_limit",
        params: serde_json::json!({"channel": channel, "per_second": rate}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_cap_counts_recorded_sends_and_the_ones_a_claim_takes() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap();
        let l = ChannelLimits {
            cap: Some(Cap {
                max: 2,
                per: chrono::Duration::hours(2),
            }),
            rate_per_sec: None,
        };
        let c = |key| Candidate {
            key,
            contact: "c1",
            channel: "email",
            limits: l,
        };
        let mut sent = HashMap::new();
        sent.insert(
            ("c1".to_string(), "email".to_string()),
            vec![now - chrono::Duration::minutes(30)],
        );
        let d = cap_decisions(now, &[c("a"), c("b")], sent);
        assert_eq!(d[0], None);
        let b = d[1].clone().expect("deferred");
        assert_eq!(b.until, now + chrono::Duration::minutes(90));
    }

    #[test]
    fn rate_windows() {
        assert_eq!(rate_window(5.0), (1000, 5));
        assert_eq!(rate_window(2.5), (1000, 2));
        assert_eq!(rate_window(0.5), (2000, 1));
        assert!(valid_channel("sms") && valid_channel("whatsapp_2"));
        assert!(!valid_channel("SMS") && !valid_channel("") && !valid_channel("email"));
        assert!(!valid_channel("2sms") && !valid_channel("s-m-s"));
    }
}

/// A rate window slot a claim asks its store for.
struct Ask<'a> {
    channel: &'a str,
    start: i64,
    capacity: i64,
}

/// The rate limits' part of a claim: which slot to ask for per candidate, and what the
/// answer means. A channel whose window is full defers its later candidates unasked.
#[derive(Default)]
struct Rates<'a> {
    full: HashMap<&'a str, Deferral>,
}

impl<'a> Rates<'a> {
    /// The slot candidate `c` (not deferred by its cap: `d`) needs, if it must ask; a
    /// candidate of a full channel is deferred here.
    fn ask(&self, c: &Candidate<'a>, d: &mut Option<Deferral>, now: Ts) -> Option<Ask<'a>> {
        let rate = c.limits.rate_per_sec.filter(|_| d.is_none())?;
        if let Some(f) = self.full.get(c.channel) {
            *d = Some(Deferral {
                key: c.key.to_string(),
                ..f.clone()
            });
            return None;
        }
        let (window, capacity) = rate_window(rate);
        Some(Ask {
            channel: c.channel,
            start: window_start(now, window),
            capacity,
        })
    }

    /// The store's answer (the window's count after taking a slot, none if it was
    /// full): whether the windows long gone should be pruned (this was a window's first).
    fn answer(
        &mut self,
        c: &Candidate<'a>,
        ask: &Ask<'a>,
        taken: Option<i64>,
        d: &mut Option<Deferral>,
    ) -> bool {
        match taken {
            Some(n) => n == 1,
            None => {
                let rate = c.limits.rate_per_sec.unwrap_or(1.0);
                let (window, _) = rate_window(rate);
                let full = rate_deferral(c.key, ask.channel, rate, ask.start, window);
                *d = Some(full.clone());
                self.full.insert(ask.channel, full);
                false
            }
        }
    }
}

/// The sends recorded for the capped candidates' contacts, per (contact, channel), from
/// rows `(contact, channel, at)`.
fn sends_by_contact(rows: Vec<(String, String, Ts)>) -> HashMap<(String, String), Vec<Ts>> {
    let mut sent: HashMap<(String, String), Vec<Ts>> = HashMap::new();
    for (contact, channel, at) in rows {
        sent.entry((contact, channel)).or_default().push(at);
    }
    sent
}

/// The contacts of the capped candidates, sorted and distinct (the order Postgres locks
/// them in).
fn capped_contacts<'a>(cands: &[Candidate<'a>]) -> Vec<&'a str> {
    let mut contacts: Vec<&str> = cands
        .iter()
        .filter(|c| c.limits.cap.is_some())
        .map(|c| c.contact)
        .collect();
    contacts.sort_unstable();
    contacts.dedup();
    contacts
}

/// The sends to record (key, contact, channel): the capped candidates allowed through.
fn to_record<'a>(
    cands: &[Candidate<'a>],
    decisions: &[Option<Deferral>],
) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    let mut out: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
    for (c, d) in cands.iter().zip(decisions) {
        if d.is_none() && c.limits.cap.is_some() {
            out.0.push(c.key);
            out.1.push(c.contact);
            out.2.push(c.channel);
        }
    }
    out
}

/// Applies `limits` to entries a SQLite claim is taking at `now`, in its (only writing)
/// transaction: records the sends it allows, moves the deferred entries' due time, and
/// returns the deferrals (the caller drops them from its claim).
pub async fn enforce_sqlite(
    tx: &mut sqlx::SqliteConnection,
    limits: &SendLimits,
    now: Ts,
    entries: &[&OutboxEntry],
) -> Result<Vec<Deferral>, super::StoreError> {
    use super::{parse_ts, to_json, ts};
    use sqlx::Row;
    let cands = candidates(limits, entries);
    if cands.is_empty() {
        return Ok(Vec::new());
    }
    let mut sent = HashMap::new();
    if let Some(longest) = limits.longest_cap() {
        let contacts = capped_contacts(&cands);
        let keys: Vec<&str> = cands.iter().map(|c| c.key).collect();
        let rows = sqlx::query(
            "SELECT contact, channel, at FROM contact_sends \
             WHERE contact IN (SELECT value FROM json_each(?)) AND at > ? \
             AND key NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(to_json(&contacts))
        .bind(ts(now - longest))
        .bind(to_json(&keys))
        .fetch_all(&mut *tx)
        .await?;
        let rows = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("contact")?,
                    r.try_get("channel")?,
                    parse_ts(r.try_get::<&str, _>("at")?)?,
                ))
            })
            .collect::<Result<Vec<_>, super::StoreError>>()?;
        sent = sends_by_contact(rows);
    }
    let mut decisions = cap_decisions(now, &cands, sent);
    let mut rates = Rates::default();
    for (c, d) in cands.iter().zip(decisions.iter_mut()) {
        let Some(ask) = rates.ask(c, d, now) else {
            continue;
        };
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO rate_buckets (channel, window_start, count) VALUES (?, ?, 1) \
             ON CONFLICT (channel, window_start) DO UPDATE SET count = count + 1 \
             WHERE rate_buckets.count < ? RETURNING count",
        )
        .bind(ask.channel)
        .bind(ask.start)
        .bind(ask.capacity)
        .fetch_optional(&mut *tx)
        .await?;
        if rates.answer(c, &ask, taken, d) {
            sqlx::query("DELETE FROM rate_buckets WHERE channel = ? AND window_start < ?")
                .bind(ask.channel)
                .bind(bucket_horizon(now))
                .execute(&mut *tx)
                .await?;
        }
    }
    let (keys, contacts, channels) = to_record(&cands, &decisions);
    if !keys.is_empty() {
        let rows: Vec<[&str; 3]> = keys
            .iter()
            .zip(&contacts)
            .zip(&channels)
            .map(|((k, c), ch)| [*k, *c, *ch])
            .collect();
        sqlx::query(
            "INSERT INTO contact_sends (key, contact, channel, at) \
             SELECT value->>0, value->>1, value->>2, ? FROM json_each(?) WHERE true \
             ON CONFLICT (key) DO UPDATE SET at = excluded.at",
        )
        .bind(ts(now))
        .bind(to_json(&rows))
        .execute(&mut *tx)
        .await?;
    }
    let deferred: Vec<Deferral> = decisions.into_iter().flatten().collect();
    for d in &deferred {
        sqlx::query("UPDATE outbox SET due_at = ?, last_error = ? WHERE key = ?")
            .bind(ts(d.until))
            .bind(&d.reason)
            .bind(&d.key)
            .execute(&mut *tx)
            .await?;
    }
    Ok(deferred)
}

/// [`enforce_sqlite`] on Postgres: the capped contacts are locked first (advisory locks
/// held to the end of the transaction, taken in sorted order), so concurrent claims of one
/// contact's entries count one after the other; the rate buckets are incremented
/// conditionally, each increment holding its row until the commit.
pub async fn enforce_postgres(
    tx: &mut sqlx::PgConnection,
    limits: &SendLimits,
    now: Ts,
    entries: &[&OutboxEntry],
) -> Result<Vec<Deferral>, super::StoreError> {
    let cands = candidates(limits, entries);
    if cands.is_empty() {
        return Ok(Vec::new());
    }
    let mut sent = HashMap::new();
    if let Some(longest) = limits.longest_cap() {
        let contacts = capped_contacts(&cands);
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('nurture.sends:' || c, 0)) \
             FROM unnest($1::text[]) AS c",
        )
        .bind(&contacts)
        .execute(&mut *tx)
        .await?;
        let keys: Vec<&str> = cands.iter().map(|c| c.key).collect();
        let rows: Vec<(String, String, Ts)> = sqlx::query_as(
            "SELECT contact, channel, at FROM contact_sends \
             WHERE contact = ANY($1) AND at > $2 AND key <> ALL($3)",
        )
        .bind(&contacts)
        .bind(now - longest)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        sent = sends_by_contact(rows);
    }
    let mut decisions = cap_decisions(now, &cands, sent);
    let mut rates = Rates::default();
    for (c, d) in cands.iter().zip(decisions.iter_mut()) {
        let Some(ask) = rates.ask(c, d, now) else {
            continue;
        };
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO rate_buckets (channel, window_start, count) VALUES ($1, $2, 1) \
             ON CONFLICT (channel, window_start) DO UPDATE SET count = rate_buckets.count + 1 \
             WHERE rate_buckets.count < $3 RETURNING count",
        )
        .bind(ask.channel)
        .bind(ask.start)
        .bind(ask.capacity)
        .fetch_optional(&mut *tx)
        .await?;
        if rates.answer(c, &ask, taken, d) {
            sqlx::query("DELETE FROM rate_buckets WHERE channel = $1 AND window_start < $2")
                .bind(ask.channel)
                .bind(bucket_horizon(now))
                .execute(&mut *tx)
                .await?;
        }
    }
    let (keys, contacts, channels) = to_record(&cands, &decisions);
    if !keys.is_empty() {
        sqlx::query(
            "INSERT INTO contact_sends (key, contact, channel, at) \
             SELECT k, c, ch, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(k, c, ch) \
             ON CONFLICT (key) DO UPDATE SET at = excluded.at",
        )
        .bind(&keys)
        .bind(&contacts)
        .bind(&channels)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    let deferred: Vec<Deferral> = decisions.into_iter().flatten().collect();
    if !deferred.is_empty() {
        let keys: Vec<&str> = deferred.iter().map(|d| d.key.as_str()).collect();
        let until: Vec<Ts> = deferred.iter().map(|d| d.until).collect();
        let reasons: Vec<&str> = deferred.iter().map(|d| d.reason.as_str()).collect();
        sqlx::query(
            "UPDATE outbox_pending p SET due_at = u.due \
             FROM UNNEST($1::text[], $2::timestamptz[]) AS u(key, due) WHERE p.key = u.key",
        )
        .bind(&keys)
        .bind(&until)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE outbox o SET last_error = u.reason, due_at = u.due \
             FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS u(key, reason, due) \
             WHERE o.key = u.key",
        )
        .bind(&keys)
        .bind(&reasons)
        .bind(&until)
        .execute(&mut *tx)
        .await?;
    }
    Ok(deferred)
}
