//! The store's collections and the writes of a commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use nurture_store::*;

use crate::ms;

/// An outbox entry's state as stored (`pending`, `delivered`, `failed`, `ambiguous`,
/// `skipped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Pending,
    Delivered,
    Failed,
    Ambiguous,
    Skipped,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Failed => "failed",
            State::Ambiguous => "ambiguous",
            State::Skipped => "skipped",
        }
    }
}

/// An outbox row: the entry (its `due_at` cut to the millisecond), its state and last
/// error.
#[derive(Debug, Clone)]
pub(crate) struct Outboxed {
    pub(crate) entry: OutboxEntry,
    pub(crate) state: State,
    pub(crate) last_error: Option<String>,
}

/// Everything stored.
#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) contacts: BTreeMap<String, Contact>,
    /// Address -> contact id.
    pub(crate) emails: HashMap<String, String>,
    /// Events by seq.
    pub(crate) events: BTreeMap<i64, StoredEvent>,
    pub(crate) event_ids: HashMap<String, i64>,
    /// A contact's events by (at, seq).
    pub(crate) events_of: HashMap<String, BTreeSet<(Ts, i64)>>,
    pub(crate) next_seq: i64,
    /// Queued events by (at, seq).
    pub(crate) inbox: BTreeSet<(Ts, i64)>,
    pub(crate) queued: HashMap<i64, Ts>,
    /// Merged contact -> the contact it went into.
    pub(crate) merges: HashMap<String, String>,
    pub(crate) runs: HashMap<String, Run>,
    /// A contact's run ids.
    pub(crate) runs_of: HashMap<String, Vec<String>>,
    pub(crate) timers: HashMap<String, Ts>,
    pub(crate) timer_queue: BTreeSet<(Ts, String)>,
    pub(crate) outbox: HashMap<String, Outboxed>,
    /// Pending entries by (due_at, created_at, key).
    pub(crate) pending: BTreeSet<(Ts, Ts, String)>,
    /// A contact's outbox keys, in the order stored.
    pub(crate) outbox_of: HashMap<String, Vec<String>>,
    pub(crate) journal: Vec<JournalEntry>,
    pub(crate) journal_rows: usize,
    pub(crate) journal_of_run: HashMap<String, Vec<usize>>,
    /// A contact's lines without a run: (row, index in `journal`).
    pub(crate) journal_of_contact: HashMap<String, Vec<(usize, usize)>>,
    pub(crate) counters: HashMap<String, i64>,
    pub(crate) schedules: HashMap<String, Ts>,
    pub(crate) segment_timers: HashMap<String, Ts>,
    pub(crate) segment_queue: BTreeSet<(Ts, String)>,
    /// (segment, contact).
    pub(crate) segment_members: BTreeSet<(String, String)>,
    /// (workflow, version, metric, hour) -> n.
    pub(crate) report_counts: BTreeMap<(String, u32, String, Ts), i64>,
    /// (message key, metric) counted once.
    pub(crate) report_once: HashSet<(String, String)>,
    /// Address -> reason.
    pub(crate) suppressions: HashMap<String, String>,
    pub(crate) deliveries: Vec<Delivery>,
    /// Sends counted by the frequency caps: key -> (contact, channel, at).
    pub(crate) sends: HashMap<String, (String, String, Ts)>,
    /// A contact's counted send keys.
    pub(crate) sends_of: HashMap<String, BTreeSet<String>>,
    /// Rate windows: (channel, window start in ms) -> sends.
    pub(crate) rate_buckets: BTreeMap<(String, i64), i64>,
    /// (workflow, version) -> the version.
    pub(crate) versions: BTreeMap<(String, u32), WorkflowVersion>,
    pub(crate) controls: BTreeMap<String, WorkflowControl>,
}

impl Inner {
    /// What a unit of work of `contact` reads (see [`UnitData`]).
    pub(crate) fn unit(&self, contact: &str, history: Option<&HistoryRead>) -> UnitData {
        let mut best: HashMap<&str, &Run> = HashMap::new();
        for id in self.runs_of.get(contact).into_iter().flatten() {
            let Some(r) = self.runs.get(id) else { continue };
            let rank = |r: &Run| (r.status.is_open(), ms(r.started_at), r.id.clone());
            match best.get(r.workflow.as_str()) {
                Some(b) if rank(b) >= rank(r) => {}
                _ => {
                    best.insert(r.workflow.as_str(), r);
                }
            }
        }
        let mut runs: Vec<Run> = best.into_values().cloned().collect();
        runs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        let events = match history {
            Some(h) => {
                // Only the events kept are copied: of the types asked, the most recent.
                let kept: Vec<&StoredEvent> = self
                    .events_from(contact, h.since)
                    .filter(|e| h.types.as_ref().is_none_or(|t| t.contains(&e.kind)))
                    .collect();
                let extra = kept.len().saturating_sub(h.limit.max(0) as usize);
                kept[extra..].iter().map(|e| (*e).clone()).collect()
            }
            None => Vec::new(),
        };
        UnitData {
            contact: self.contacts.get(contact).cloned(),
            runs,
            events,
        }
    }

    /// A contact's events at or after `since`, by (at, seq).
    pub(crate) fn events_since(&self, contact: &str, since: Ts) -> Vec<StoredEvent> {
        self.events_from(contact, since).cloned().collect()
    }

    /// [`Inner::events_since`], borrowed.
    fn events_from<'a>(
        &'a self,
        contact: &str,
        since: Ts,
    ) -> impl Iterator<Item = &'a StoredEvent> + 'a {
        self.events_of
            .get(contact)
            .into_iter()
            .flat_map(move |set| set.range((ms(since), i64::MIN)..))
            .filter_map(|(_, seq)| self.events.get(seq))
    }

    /// A contact's runs by (started_at, id).
    pub(crate) fn runs_of(&self, contact: &str) -> Vec<Run> {
        let mut runs: Vec<Run> = self
            .runs_of
            .get(contact)
            .into_iter()
            .flatten()
            .filter_map(|id| self.runs.get(id).cloned())
            .collect();
        runs.sort_by(|a, b| (ms(a.started_at), &a.id).cmp(&(ms(b.started_at), &b.id)));
        runs
    }

    /// The conflict inserting `contacts` (none stored yet) would meet: an id or an
    /// address taken.
    pub(crate) fn check_inserts<'c>(
        &self,
        contacts: impl Iterator<Item = &'c Contact>,
    ) -> Result<(), StoreError> {
        let mut ids = HashSet::new();
        let mut emails = HashSet::new();
        for c in contacts {
            if self.contacts.contains_key(&c.id) || !ids.insert(c.id.as_str()) {
                return Err(StoreError::conflict_on(ConflictKind::Contact, &c.id));
            }
            if let Some(e) = &c.email {
                if self.emails.contains_key(e) || !emails.insert(e.as_str()) {
                    return Err(StoreError::conflict_on(ConflictKind::ContactEmail, &c.id));
                }
            }
        }
        Ok(())
    }

    /// Stores `c` at `version` (its address indexed).
    pub(crate) fn put_contact(&mut self, c: &Contact, version: i64) {
        let mut stored = c.clone();
        stored.version = version;
        if let Some(old) = self.contacts.get(&c.id) {
            if let Some(e) = &old.email {
                if old.email != c.email {
                    self.emails.remove(e);
                }
            }
        }
        if let Some(e) = &c.email {
            self.emails.insert(e.clone(), c.id.clone());
        }
        self.contacts.insert(c.id.clone(), stored);
    }

    /// Stores events (idempotent by id) and queues the new ones.
    pub(crate) fn insert_events<'e>(
        &mut self,
        events: impl Iterator<Item = &'e NewEvent>,
    ) -> Vec<Inserted> {
        let mut out = Vec::new();
        for e in events {
            if self.event_ids.contains_key(&e.id) {
                out.push(Inserted::Duplicate);
                continue;
            }
            self.next_seq += 1;
            let seq = self.next_seq;
            let at = ms(e.at);
            self.event_ids.insert(e.id.clone(), seq);
            self.events_of
                .entry(e.contact.clone())
                .or_default()
                .insert((at, seq));
            self.events.insert(
                seq,
                StoredEvent {
                    seq,
                    id: e.id.clone(),
                    contact: e.contact.clone(),
                    kind: e.kind.clone(),
                    at,
                    data: e.data.clone(),
                },
            );
            self.queue(seq, at);
            out.push(Inserted::New);
        }
        out
    }

    fn queue(&mut self, seq: i64, at: Ts) {
        if self.queued.insert(seq, at).is_none() {
            self.inbox.insert((at, seq));
        }
    }

    /// The writes of a merge not done before; how many events moved.
    pub(crate) fn merge(&mut self, from: &str, into: &str, at: Ts, source: &str) -> u64 {
        let mine = self.events_of.remove(from).unwrap_or_default();
        let mut kept = BTreeSet::new();
        let mut moved = 0;
        for (t, seq) in mine {
            let Some(e) = self.events.get_mut(&seq) else {
                continue;
            };
            if e.kind == "contact.created" {
                // Kept, and no longer queued: the visitor is gone, nothing applies it.
                if let Some(at) = self.queued.remove(&seq) {
                    self.inbox.remove(&(at, seq));
                }
                kept.insert((t, seq));
                continue;
            }
            e.contact = into.to_string();
            self.events_of
                .entry(into.to_string())
                .or_default()
                .insert((t, seq));
            self.queue(seq, t);
            moved += 1;
        }
        if !kept.is_empty() {
            self.events_of.insert(from.to_string(), kept);
        }
        self.segment_members.retain(|(_, c)| c != from);
        self.set_segment_timer(from, None);
        if let Some(c) = self.contacts.remove(from) {
            if let Some(e) = &c.email {
                self.emails.remove(e);
            }
        }
        self.merges.insert(from.to_string(), into.to_string());
        let data = serde_json::json!({"from": from, "moved": moved, "source": source});
        self.append_journal(&[JournalEntry {
            run_id: None,
            contact: into.to_string(),
            at: ms(at),
            kind: "merged".to_string().into(),
            data,
        }]);
        moved
    }

    /// Appends journal lines, packed into rows as SQLite packs them
    /// ([`nurture_store::pack_journal`]): consecutive lines of one run, contact and time.
    pub(crate) fn append_journal(&mut self, entries: &[JournalEntry]) {
        let mut prev: Option<&JournalEntry> = None;
        for e in entries {
            let same = prev
                .is_some_and(|p| p.run_id == e.run_id && p.contact == e.contact && p.at == e.at);
            if !same {
                self.journal_rows += 1;
            }
            prev = Some(e);
            let i = self.journal.len();
            let mut stored = e.clone();
            stored.at = ms(e.at);
            self.journal.push(stored);
            match &e.run_id {
                Some(r) => self.journal_of_run.entry(r.clone()).or_default().push(i),
                None => self
                    .journal_of_contact
                    .entry(e.contact.clone())
                    .or_default()
                    .push((self.journal_rows, i)),
            }
        }
    }

    /// Claims the timers due at `now` until `until`.
    pub(crate) fn due_timers(&mut self, now: Ts, limit: i64, until: Ts) -> Vec<DueTimer> {
        let due: Vec<(Ts, String)> = self
            .timer_queue
            .range(..=(ms(now), String::from("\u{10ffff}")))
            .filter(|(t, _)| *t <= ms(now))
            .take(limit.max(0) as usize)
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for (t, run_id) in due {
            self.set_timer(&run_id, Some(until));
            out.push(DueTimer {
                contact: self.runs.get(&run_id).map(|r| r.contact.clone()),
                run_id,
                due_at: t,
            });
        }
        out
    }

    pub(crate) fn set_timer(&mut self, run_id: &str, due: Option<Ts>) {
        if let Some(old) = self.timers.remove(run_id) {
            self.timer_queue.remove(&(old, run_id.to_string()));
        }
        if let Some(t) = due {
            let t = ms(t);
            self.timers.insert(run_id.to_string(), t);
            self.timer_queue.insert((t, run_id.to_string()));
        }
    }

    /// Claims the segment timers due at `now` until `until`.
    pub(crate) fn due_segment_timers(
        &mut self,
        now: Ts,
        limit: i64,
        until: Ts,
    ) -> Vec<(String, Ts)> {
        let due: Vec<(Ts, String)> = self
            .segment_queue
            .iter()
            .take_while(|(t, _)| *t <= ms(now))
            .take(limit.max(0) as usize)
            .cloned()
            .collect();
        due.into_iter()
            .map(|(t, contact)| {
                self.set_segment_timer(&contact, Some(until));
                (contact, t)
            })
            .collect()
    }

    pub(crate) fn set_segment_timer(&mut self, contact: &str, due: Option<Ts>) {
        if let Some(old) = self.segment_timers.remove(contact) {
            self.segment_queue.remove(&(old, contact.to_string()));
        }
        if let Some(t) = due {
            let t = ms(t);
            self.segment_timers.insert(contact.to_string(), t);
            self.segment_queue.insert((t, contact.to_string()));
        }
    }

    /// Checks every fence of `uow` before anything is written: a stale contact or run, an
    /// id or address taken, an event no longer queued, a counter moved.
    fn check(&self, uow: &UnitOfWork) -> Result<(), StoreError> {
        if let Some(gone) = uow
            .contacts_kept
            .iter()
            .find(|id| !self.contacts.contains_key(*id))
        {
            return Err(StoreError::conflict_on(ConflictKind::Contact, gone));
        }
        let mut inserted = HashSet::new();
        let mut emails: HashMap<&str, &str> = HashMap::new();
        for c in &uow.contacts {
            if c.version == 0 {
                if self.contacts.contains_key(&c.id) || !inserted.insert(c.id.as_str()) {
                    return Err(StoreError::conflict_on(ConflictKind::Contact, &c.id));
                }
            } else if self.contacts.get(&c.id).map(|s| s.version) != Some(c.version) {
                return Err(StoreError::conflict_on(ConflictKind::Contact, &c.id));
            }
            if let Some(e) = &c.email {
                let owner = emails
                    .get(e.as_str())
                    .copied()
                    .or_else(|| self.emails.get(e).map(String::as_str));
                if owner.is_some_and(|o| o != c.id) {
                    return Err(StoreError::conflict_on(ConflictKind::ContactEmail, &c.id));
                }
                emails.insert(e.as_str(), c.id.as_str());
            }
        }
        let mut runs = HashSet::new();
        for r in &uow.runs {
            let stored = self.runs.get(&r.id).map(|s| s.rev);
            let fresh = if r.rev == 0 {
                stored.is_none()
            } else {
                stored == Some(r.rev)
            };
            if !fresh || !runs.insert(r.id.as_str()) {
                return Err(StoreError::conflict_on(ConflictKind::Run, &r.id));
            }
        }
        let mut done = HashSet::new();
        for seq in &uow.events_done {
            if !self.queued.contains_key(seq) || !done.insert(*seq) {
                return Err(StoreError::conflict_on(
                    ConflictKind::QueuedEvent,
                    format!("#{seq}"),
                ));
            }
        }
        let mut counters: HashMap<&str, i64> = HashMap::new();
        for (name, expected, new) in &uow.counters {
            let now = counters
                .get(name.as_str())
                .copied()
                .or_else(|| self.counters.get(name).copied());
            let ok = match now {
                None => *expected == 0,
                Some(v) => v == *expected || (*expected == 0 && v == 0),
            };
            if !ok {
                return Err(StoreError::conflict_on(ConflictKind::Counter, name));
            }
            counters.insert(name.as_str(), *new);
        }
        Ok(())
    }

    /// Applies `uow` (all or nothing); with `claim` (now, until), leases the entries it
    /// adds that are due at `now` and returns their keys.
    pub(crate) fn commit(
        &mut self,
        uow: &UnitOfWork,
        claim: Option<(Ts, Ts)>,
    ) -> Result<Vec<String>, StoreError> {
        self.check(uow)?;
        for c in &uow.contacts {
            self.put_contact(c, c.version + 1);
        }
        for r in &uow.runs {
            let mut stored = r.clone();
            stored.rev = r.rev + 1;
            if r.rev == 0 {
                self.runs_of
                    .entry(r.contact.clone())
                    .or_default()
                    .push(r.id.clone());
            }
            self.runs.insert(r.id.clone(), stored);
        }
        for id in &uow.timers_clear {
            self.set_timer(id, None);
        }
        for t in &uow.timers_set {
            self.set_timer(&t.run_id, Some(t.due_at));
        }
        let claimed = self.add_outbox(&uow.outbox, claim);
        self.append_journal(&uow.journal);
        for seq in &uow.events_done {
            if let Some(at) = self.queued.remove(seq) {
                self.inbox.remove(&(at, *seq));
            }
        }
        for (name, _, new) in &uow.counters {
            self.counters.insert(name.clone(), *new);
        }
        for (wf, at) in &uow.schedules {
            self.schedules.insert(wf.clone(), ms(*at));
        }
        for (contact, due) in &uow.segment_timers {
            self.set_segment_timer(contact, *due);
        }
        for (segment, contact, member) in &uow.segment_members {
            let row = (segment.clone(), contact.clone());
            if *member {
                self.segment_members.insert(row);
            } else {
                self.segment_members.remove(&row);
            }
        }
        self.tallies(&uow.tallies);
        Ok(claimed)
    }

    /// Stores new outbox entries (a key stored before is left as it is).
    fn add_outbox(&mut self, outbox: &[OutboxEntry], claim: Option<(Ts, Ts)>) -> Vec<String> {
        let mut claimed = Vec::new();
        for o in outbox {
            if self.outbox.contains_key(&o.key) {
                continue;
            }
            let leased = claim.filter(|(now, _)| o.due_at <= *now).map(|c| c.1);
            let mut entry = o.clone();
            entry.created_at = ms(o.created_at);
            entry.due_at = ms(leased.unwrap_or(o.due_at));
            entry.attempts = 0;
            self.pending
                .insert((entry.due_at, entry.created_at, o.key.clone()));
            self.outbox_of
                .entry(o.contact.clone())
                .or_default()
                .push(o.key.clone());
            self.outbox.insert(
                o.key.clone(),
                crate::data::Outboxed {
                    entry,
                    state: State::Pending,
                    last_error: None,
                },
            );
            if leased.is_some() {
                claimed.push(o.key.clone());
            }
        }
        claimed
    }
}
