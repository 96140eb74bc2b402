//! The outbox: claims (suppressions and send limits first), completions and the report
//! counts they add, as the SQLite store does them.

use std::collections::HashMap;

use nurture_store::counts::{merged, message, message_row, outcome_metric, summed, Scope, Tally};
use nurture_store::limits::{self, Deferral, SendLimits};
use nurture_store::*;

use crate::data::{Inner, State};
use crate::ms;

impl Inner {
    /// Moves a pending entry's due time (its place in the claim order).
    pub(crate) fn set_due(&mut self, key: &str, due: Ts) {
        let Some(o) = self.outbox.get_mut(key) else {
            return;
        };
        let due = ms(due);
        if o.state == State::Pending {
            self.pending
                .remove(&(o.entry.due_at, o.entry.created_at, key.to_string()));
            self.pending
                .insert((due, o.entry.created_at, key.to_string()));
        }
        o.entry.due_at = due;
    }

    /// Sets an entry's state (off the claim order unless pending).
    fn set_state(&mut self, key: &str, state: State) {
        let Some(o) = self.outbox.get_mut(key) else {
            return;
        };
        let row = (o.entry.due_at, o.entry.created_at, key.to_string());
        if state == State::Pending {
            self.pending.insert(row);
        } else {
            self.pending.remove(&row);
        }
        o.state = state;
    }

    /// [`crate::MemoryStore::claim_outbox`].
    pub(crate) fn claim_outbox(
        &mut self,
        now: Ts,
        limit: i64,
        send_limits: &SendLimits,
        lease: std::time::Duration,
    ) -> (Vec<OutboxEntry>, Vec<(OutboxEntry, Deferral)>) {
        let due: Vec<String> = self
            .pending
            .iter()
            .take_while(|(t, _, _)| *t <= ms(now))
            .map(|(_, _, k)| k.clone())
            .collect();
        self.skip_suppressed(now, &due);
        let mut entries: Vec<OutboxEntry> = self
            .pending
            .iter()
            .take_while(|(t, _, _)| *t <= ms(now))
            .take(limit.max(0) as usize)
            .filter_map(|(_, _, k)| self.outbox.get(k).map(|o| o.entry.clone()))
            .collect();
        let deferred = if send_limits.is_empty() {
            Vec::new()
        } else {
            let all: Vec<&OutboxEntry> = entries.iter().collect();
            self.enforce(send_limits, now, &all)
        };
        self.deferred(entries.iter(), &deferred, now);
        let mut later = Vec::with_capacity(deferred.len());
        for d in deferred {
            if let Some(i) = entries.iter().position(|e| e.key == d.key) {
                later.push((entries.remove(i), d));
            }
        }
        let until = lease_end(now, lease);
        for e in &entries {
            self.set_due(&e.key, until);
        }
        (entries, later)
    }

    /// A claiming commit's checks of what it claimed: emails to suppressed addresses are
    /// skipped, and the send limits apply.
    pub(crate) fn claimed_checks(
        &mut self,
        uow: &UnitOfWork,
        now: Ts,
        claimed: &mut Vec<String>,
        send_limits: &SendLimits,
    ) {
        let emails: Vec<String> = claimed_emails(uow, claimed)
            .into_iter()
            .map(String::from)
            .collect();
        if !emails.is_empty() {
            let skipped = self.skip_suppressed(now, &emails);
            claimed.retain(|k| !skipped.contains(k));
        }
        if !send_limits.is_empty() && !claimed.is_empty() {
            let entries: Vec<&OutboxEntry> = uow
                .outbox
                .iter()
                .filter(|e| claimed.contains(&e.key))
                .collect();
            let deferred = self.enforce(send_limits, now, &entries);
            self.deferred(entries.iter().copied(), &deferred, now);
            claimed.retain(|k| !deferred.iter().any(|d| &d.key == k));
        }
    }

    /// What a claim's send limits held back (`deferred` of `entries`): their report counts
    /// and a journal line each naming the rule ([`nurture_store::held::deferral_lines`]).
    fn deferred<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a OutboxEntry> + Clone,
        deferred: &[Deferral],
        now: Ts,
    ) {
        if deferred.is_empty() {
            return;
        }
        self.tallies(&counts::deferrals(entries.clone(), deferred, now));
        let mut lines = nurture_store::held::deferral_lines(entries, deferred, now);
        for l in &mut lines {
            l.at = ms(l.at);
        }
        self.append_journal(&lines);
    }

    /// Of the pending `keys`, the `email` entries whose address is suppressed become
    /// `skipped`, with an `email_skipped` effect in the journal; returns their keys.
    fn skip_suppressed(&mut self, now: Ts, keys: &[String]) -> Vec<String> {
        if self.suppressions.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for key in keys {
            let Some(o) = self.outbox.get(key) else {
                continue;
            };
            if o.state != State::Pending || o.entry.kind != OutboxKind::Email {
                continue;
            }
            let Some(to) = o.entry.payload.get("to").and_then(|v| v.as_str()) else {
                continue;
            };
            let Some(reason) = self.suppressions.get(&to.to_lowercase()) else {
                continue;
            };
            let e = &o.entry;
            let send = nurture_store::held::SuppressedSend {
                key: key.clone(),
                run_id: e.run_id.clone(),
                contact: e.contact.clone(),
                step: e.step.clone(),
                template: match e.payload.get("template") {
                    Some(serde_json::Value::String(t)) => Some(t.clone()),
                    Some(serde_json::Value::Null) | None => None,
                    Some(v) => Some(v.to_string()),
                },
                reason: reason.clone(),
            };
            self.set_state(key, State::Skipped);
            if let Some(o) = self.outbox.get_mut(key) {
                o.last_error = Some(send.last_error());
            }
            self.append_journal(&[send.line(ms(now))]);
            self.tallies(&[message(key, "email.skipped.suppressed", now)]);
            out.push(key.clone());
        }
        out
    }

    /// Applies the send limits to entries a claim takes at `now`: records the sends it
    /// allows, moves the deferred entries' due time, returns the deferrals.
    fn enforce(
        &mut self,
        send_limits: &SendLimits,
        now: Ts,
        entries: &[&OutboxEntry],
    ) -> Vec<Deferral> {
        let cands = limits::candidates(send_limits, entries);
        if cands.is_empty() {
            return Vec::new();
        }
        let mut sent: HashMap<(String, String), Vec<Ts>> = HashMap::new();
        if let Some(longest) = send_limits.longest_cap() {
            let after = ms(now - longest);
            let keys: Vec<&str> = cands.iter().map(|c| c.key).collect();
            let mut contacts: Vec<&str> = cands
                .iter()
                .filter(|c| c.limits.cap.is_some())
                .map(|c| c.contact)
                .collect();
            contacts.sort_unstable();
            contacts.dedup();
            for c in contacts {
                for key in self.sends_of.get(c).into_iter().flatten() {
                    let Some((contact, channel, at)) = self.sends.get(key) else {
                        continue;
                    };
                    if *at > after && !keys.contains(&key.as_str()) {
                        sent.entry((contact.clone(), channel.clone()))
                            .or_default()
                            .push(*at);
                    }
                }
            }
        }
        let mut decisions = limits::cap_decisions(now, &cands, sent);
        let mut full: HashMap<&str, Deferral> = HashMap::new();
        for (c, d) in cands.iter().zip(decisions.iter_mut()) {
            let Some(rate) = c.limits.rate_per_sec.filter(|_| d.is_none()) else {
                continue;
            };
            if let Some(f) = full.get(c.channel) {
                *d = Some(Deferral {
                    key: c.key.to_string(),
                    ..f.clone()
                });
                continue;
            }
            let (window, capacity) = limits::rate_window(rate);
            let start = limits::window_start(now, window);
            let n = self
                .rate_buckets
                .entry((c.channel.to_string(), start))
                .or_insert(0);
            if *n < capacity {
                *n += 1;
                if *n == 1 {
                    let horizon = limits::bucket_horizon(now);
                    self.rate_buckets
                        .retain(|(ch, s), _| ch != c.channel || *s >= horizon);
                }
            } else {
                let f = limits::rate_deferral(c.key, c.channel, rate, start, window);
                *d = Some(f.clone());
                full.insert(c.channel, f);
            }
        }
        for (c, d) in cands.iter().zip(&decisions) {
            if d.is_none() && c.limits.cap.is_some() {
                self.count_send(c.key, c.contact, c.channel, ms(now));
            }
        }
        let deferred: Vec<Deferral> = decisions.into_iter().flatten().collect();
        for d in &deferred {
            self.set_due(&d.key, d.until);
            if let Some(o) = self.outbox.get_mut(&d.key) {
                o.last_error = Some(d.reason.clone());
            }
        }
        deferred
    }

    fn count_send(&mut self, key: &str, contact: &str, channel: &str, at: Ts) {
        self.uncount_send(key);
        self.sends.insert(
            key.to_string(),
            (contact.to_string(), channel.to_string(), at),
        );
        self.sends_of
            .entry(contact.to_string())
            .or_default()
            .insert(key.to_string());
    }

    fn uncount_send(&mut self, key: &str) {
        if let Some((contact, _, _)) = self.sends.remove(key) {
            if let Some(s) = self.sends_of.get_mut(&contact) {
                s.remove(key);
            }
        }
    }

    /// Records the outcome of a delivery attempt; a `Conflict`, before any write, for an
    /// entry completed elsewhere.
    pub(crate) fn complete(
        &mut self,
        key: &str,
        outcome: &OutboxOutcome,
        now: Ts,
    ) -> Result<(), StoreError> {
        let o = self
            .outbox
            .get(key)
            .ok_or_else(|| StoreError::Corrupt(format!("no outbox entry {key}")))?;
        if o.state != State::Pending {
            return Err(StoreError::conflict_on(
                ConflictKind::OutboxEntry,
                format!("{key} is {}", o.state.as_str()),
            ));
        }
        let (kind, contact) = (o.entry.kind.clone(), o.entry.contact.clone());
        match outcome {
            OutboxOutcome::Delivered { record } => {
                self.deliveries.push(Delivery {
                    key: key.to_string(),
                    kind: kind.clone(),
                    contact,
                    at: ms(now),
                    record: record.clone(),
                });
                self.set_state(key, State::Delivered);
                self.attempted(key, None);
            }
            OutboxOutcome::Retry { reason, retry_at } => {
                self.attempted(key, Some(reason));
                self.set_due(key, *retry_at);
            }
            OutboxOutcome::Failed { reason } => {
                self.set_state(key, State::Failed);
                self.attempted(key, Some(reason));
            }
            OutboxOutcome::Ambiguous { reason } => {
                self.set_state(key, State::Ambiguous);
                self.attempted(key, Some(reason));
            }
            OutboxOutcome::Defer { reason, until } => {
                if let Some(o) = self.outbox.get_mut(key) {
                    o.last_error = Some(reason.clone());
                }
                self.set_due(key, *until);
            }
        }
        if !matches!(
            outcome,
            OutboxOutcome::Delivered { .. } | OutboxOutcome::Ambiguous { .. }
        ) {
            self.uncount_send(key);
        }
        if let Some(metric) = outcome_metric(outcome).filter(|_| kind == OutboxKind::Email) {
            self.tallies(&[message(key, metric, now)]);
        }
        Ok(())
    }

    /// One more attempt, with its error if it failed.
    fn attempted(&mut self, key: &str, error: Option<&String>) {
        if let Some(o) = self.outbox.get_mut(key) {
            o.entry.attempts += 1;
            if let Some(e) = error {
                o.last_error = Some(e.clone());
            }
        }
    }

    /// [`Store::requeue_outbox`].
    pub(crate) fn requeue(&mut self, key: &str, now: Ts) -> bool {
        let Some(o) = self.outbox.get_mut(key) else {
            return false;
        };
        if !matches!(o.state, State::Ambiguous | State::Failed) {
            return false;
        }
        o.entry.attempts = 0;
        o.last_error = None;
        o.entry.due_at = ms(now);
        self.set_state(key, State::Pending);
        true
    }

    /// Adds report counts: workflow and contact counts summed; per-message ones once per
    /// message and metric, for the workflow, version and step of the message's run.
    pub(crate) fn tallies(&mut self, tallies: &[Tally]) {
        if tallies.is_empty() {
            return;
        }
        let (mut rows, messages) = summed(tallies);
        for t in messages {
            let key = match &t.scope {
                Scope::Message(key) => Some(key.clone()),
                Scope::LastEmail(contact) => self.last_email(contact),
                _ => None,
            };
            if let Some(key) = key {
                rows.extend(self.once(&key, t));
            }
        }
        for r in merged(rows) {
            *self
                .report_counts
                .entry((r.workflow, r.version, r.metric, ms(r.hour)))
                .or_insert(0) += r.n;
        }
    }

    /// The key of the email most recently delivered to `contact`.
    fn last_email(&self, contact: &str) -> Option<String> {
        self.outbox_of
            .get(contact)?
            .iter()
            .filter_map(|k| self.outbox.get(k))
            .filter(|o| o.entry.kind == OutboxKind::Email && o.state == State::Delivered)
            .max_by(|a, b| (a.entry.due_at, &a.entry.key).cmp(&(b.entry.due_at, &b.entry.key)))
            .map(|o| o.entry.key.clone())
    }

    /// The row `t` adds for message `key`, unless that message's metric was counted
    /// before (or the message is not a workflow's).
    fn once(&mut self, key: &str, t: &Tally) -> Option<counts::CountRow> {
        if !self.report_once.insert((key.to_string(), t.metric.clone())) {
            return None;
        }
        let o = self.outbox.get(key)?;
        let workflow = o.entry.workflow.clone()?;
        let version = o
            .entry
            .run_id
            .as_ref()
            .and_then(|r| self.runs.get(r))
            .map(|r| i64::from(r.workflow_version));
        Some(message_row(t, workflow, version, o.entry.step.clone()))
    }
}
