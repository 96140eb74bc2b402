//! An in-memory [`Store`] made for simulations (`nurture simulate`, `nurture check`).
//!
//! Plain Rust collections behind one mutex: every method takes the lock once, so a
//! commit is atomic (all its fences are checked before anything is written) and the
//! store is as consistent as the SQLite one, without SQL, JSON documents or a database
//! thread in between. It keeps what the engine and the simulator use with SQLite's
//! semantics — fenced commits, claims and leases, send limits enforced at claim,
//! suppressions, segment timers, report counts — including SQLite's precision: the times
//! it keeps in their own columns (timers, events, the outbox, the journal) are cut to the
//! millisecond, as SQLite's text columns cut them. Nothing is durable. What a simulation
//! never needs (API keys, the audit log, erasure) answers [`StoreError::Unsupported`].
//!
//! It passes the store contract suite ([`nurture_store::contract`]).
#![warn(missing_docs)]
#![warn(unreachable_pub)]

mod data;
mod outbox;
mod roles;

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use nurture_store::*;

use data::Inner;

/// The name [`StoreError::Unsupported`] gives this store.
const NAME: &str = "in-memory simulation";

/// The store: see the crate documentation. [`MemoryStore::new`] makes an empty one.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// How long claims lease what they take.
    lease: Duration,
    /// What claims of outbox entries enforce ([`Store::set_send_limits`]).
    limits: RwLock<Arc<limits::SendLimits>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store whose claims lease for [`DEFAULT_LEASE`].
    pub fn new() -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            lease: DEFAULT_LEASE,
            limits: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-written that the next caller
        // could not read (every write checks its fences first).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_limits(&self) -> Arc<limits::SendLimits> {
        self.limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// [`Store::pending_outbox`], with the entries the send limits deferred instead of
    /// claiming them (`nurture simulate` reports them), as
    /// `nurture_store_sqlite::SqliteStore::claim_outbox`.
    pub async fn claim_outbox(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<(Vec<OutboxEntry>, Vec<(OutboxEntry, limits::Deferral)>), StoreError> {
        let limits = self.send_limits();
        let mut inner = self.lock();
        Ok(inner.claim_outbox(now, limit, &limits, self.lease))
    }
}

/// `t` cut to the millisecond, as SQLite keeps a time (`ts`: `%.3f`).
pub(crate) fn ms(t: Ts) -> Ts {
    let extra = t.timestamp_subsec_nanos() % 1_000_000;
    t - chrono::Duration::nanoseconds(i64::from(extra))
}

/// What this store does not offer.
pub(crate) fn unsupported(what: &'static str) -> StoreError {
    StoreError::Unsupported { store: NAME, what }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load_units(
        &self,
        contacts: &[String],
        history: Option<&HistoryRead>,
    ) -> Result<Vec<UnitData>, StoreError> {
        let inner = self.lock();
        Ok(contacts.iter().map(|c| inner.unit(c, history)).collect())
    }

    async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        Ok(self.lock().contacts.get(id).cloned())
    }

    async fn contact_by_email(&self, email: &str) -> Result<Option<Contact>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .emails
            .get(email)
            .and_then(|id| inner.contacts.get(id))
            .cloned())
    }

    async fn contact_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().contacts.keys().cloned().collect())
    }

    async fn insert_events(
        &self,
        new_contacts: &[Contact],
        events: &[NewEvent],
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut inner = self.lock();
        let mut seen = std::collections::HashSet::new();
        let fresh: Vec<&Contact> = new_contacts
            .iter()
            .filter(|c| !inner.contacts.contains_key(&c.id) && seen.insert(c.id.as_str()))
            .collect();
        inner.check_inserts(fresh.iter().copied())?;
        for c in fresh {
            inner.put_contact(c, 1);
        }
        Ok(inner.insert_events(events.iter()))
    }

    async fn event_owners(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| inner.event_ids.get(id))
            .filter_map(|seq| inner.events.get(seq))
            .map(|e| (e.id.clone(), e.contact.clone(), e.kind.clone()))
            .collect())
    }

    async fn merge_contact(
        &self,
        from: &str,
        into: &str,
        at: Ts,
        source: &str,
    ) -> Result<Option<Merged>, StoreError> {
        let mut inner = self.lock();
        if !inner.contacts.contains_key(into) {
            return Ok(None);
        }
        if let Some(before) = inner.merges.get(from) {
            return Ok(Some(Merged {
                into: before.clone(),
                moved: 0,
                already: true,
            }));
        }
        let moved = inner.merge(from, into, at, source);
        Ok(Some(Merged {
            into: into.to_string(),
            moved,
            already: false,
        }))
    }

    async fn merged_into(&self, ids: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| inner.merges.get(id).map(|to| (id.clone(), to.clone())))
            .collect())
    }

    async fn pending_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<StoredEvent> = inner
            .inbox
            .iter()
            .take(limit.max(0) as usize)
            .filter_map(|(_, seq)| inner.events.get(seq).cloned())
            .collect();
        out.sort_by_key(|e| (e.at, e.seq));
        Ok(out)
    }

    async fn contact_events(
        &self,
        contact: &str,
        since: Ts,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self.lock().events_since(contact, since))
    }

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        Ok(self.lock().runs.get(id).cloned())
    }

    async fn runs_of_contact(&self, contact: &str) -> Result<Vec<Run>, StoreError> {
        Ok(self.lock().runs_of(contact))
    }

    async fn list_runs(&self, f: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let inner = self.lock();
        let mut runs: Vec<&Run> = inner
            .runs
            .values()
            .filter(|r| f.workflow.as_ref().is_none_or(|w| &r.workflow == w))
            .filter(|r| f.contact.as_ref().is_none_or(|c| &r.contact == c))
            .filter(|r| f.status.is_none_or(|s| r.status == s))
            .collect();
        runs.sort_by(|a, b| {
            ms(b.started_at)
                .cmp(&ms(a.started_at))
                .then_with(|| a.id.cmp(&b.id))
        });
        let limit = if f.limit > 0 {
            f.limit as usize
        } else {
            usize::MAX
        };
        Ok(runs.into_iter().take(limit).cloned().collect())
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .journal_of_run
            .get(run_id)
            .map(|ix| ix.iter().map(|i| inner.journal[*i].clone()).collect())
            .unwrap_or_default())
    }

    async fn contact_lines(
        &self,
        contact: &str,
        limit: i64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let inner = self.lock();
        let Some(ix) = inner.journal_of_contact.get(contact) else {
            return Ok(Vec::new());
        };
        // The newest `limit` rows (a packed row counts once), oldest first.
        let rows: Vec<usize> = {
            let mut rows: Vec<usize> = ix.iter().map(|(row, _)| *row).collect();
            rows.dedup();
            let skip = rows.len().saturating_sub(limit.max(0) as usize);
            rows.split_off(skip)
        };
        let first = rows.first().copied();
        Ok(ix
            .iter()
            .filter(|(row, _)| first.is_some_and(|f| *row >= f))
            .map(|(_, i)| inner.journal[*i].clone())
            .collect())
    }

    async fn due_timers(&self, now: Ts, limit: i64) -> Result<Vec<DueTimer>, StoreError> {
        let mut inner = self.lock();
        Ok(inner.due_timers(now, limit, nurture_store::lease_end(now, self.lease)))
    }

    async fn next_timer(&self) -> Result<Option<Ts>, StoreError> {
        Ok(self.lock().timer_queue.first().map(|(t, _)| *t))
    }

    async fn due_segment_timers(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<Vec<(String, Ts)>, StoreError> {
        let mut inner = self.lock();
        let until = nurture_store::lease_end(now, self.lease);
        Ok(inner.due_segment_timers(now, limit, until))
    }

    async fn next_segment_timer(&self) -> Result<Option<Ts>, StoreError> {
        Ok(self.lock().segment_queue.first().map(|(t, _)| *t))
    }

    async fn segment_timer(&self, contact: &str) -> Result<Option<Ts>, StoreError> {
        Ok(self.lock().segment_timers.get(contact).copied())
    }

    async fn segment_members(
        &self,
        segment: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let from = (segment.to_string(), after.unwrap_or("").to_string());
        Ok(inner
            .segment_members
            .range(from..)
            .take_while(|(s, _)| s == segment)
            .filter(|(_, c)| c.as_str() > after.unwrap_or(""))
            .take(limit.max(0) as usize)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn counter(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.lock().counters.get(name).copied().unwrap_or(0))
    }

    async fn schedule_last(&self, workflow: &str) -> Result<Option<Ts>, StoreError> {
        Ok(self.lock().schedules.get(workflow).copied())
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let v = inner.counters.entry(HEALTH_ROW.to_string()).or_insert(0);
        *v = *v % 1_000_000 + 1;
        Ok(())
    }

    async fn commit(&self, uow: &UnitOfWork) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.commit(uow, None).map(drop)
    }

    async fn commit_claiming(
        &self,
        uow: &UnitOfWork,
        now: Ts,
        until: Ts,
    ) -> Result<Vec<String>, StoreError> {
        let limits = self.send_limits();
        let mut inner = self.lock();
        let mut claimed = inner.commit(uow, Some((now, until)))?;
        inner.claimed_checks(uow, now, &mut claimed, &limits);
        Ok(claimed)
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn set_send_limits(&self, limits: limits::SendLimits) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(limits);
    }

    async fn pending_outbox(&self, now: Ts, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self.claim_outbox(now, limit).await?.0)
    }

    async fn next_outbox(&self) -> Result<Option<Ts>, StoreError> {
        Ok(self.lock().pending.first().map(|(t, _, _)| *t))
    }

    async fn complete_outbox(
        &self,
        key: &str,
        outcome: &OutboxOutcome,
        now: Ts,
    ) -> Result<(), StoreError> {
        self.lock().complete(key, outcome, now)
    }

    async fn complete_outbox_many(
        &self,
        items: &[(String, OutboxOutcome)],
        now: Ts,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.complete_outbox_waking(items, &[], now).await
    }

    async fn complete_outbox_waking(
        &self,
        items: &[(String, OutboxOutcome)],
        wakes: &[(String, NewEvent)],
        now: Ts,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(items.len());
        let mut woken = Vec::new();
        for (key, outcome) in items {
            match inner.complete(key, outcome, now) {
                Ok(()) => {
                    woken.extend(wakes.iter().filter(|(k, _)| k == key).map(|(_, e)| e));
                    out.push(Ok(()));
                }
                Err(e) if e.conflict().is_some() => out.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        inner.insert_events(woken.into_iter());
        Ok(out)
    }

    async fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        let mut out = self.lock().deliveries.clone();
        out.sort_by(|a, b| (a.at, &a.key).cmp(&(b.at, &b.key)));
        Ok(out)
    }

    async fn suppress(&self, address: &str, reason: &str, _now: Ts) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let address = address.trim().to_lowercase();
        if inner.suppressions.contains_key(&address) {
            return Ok(false);
        }
        inner.suppressions.insert(address, reason.to_string());
        Ok(true)
    }

    async fn suppression(&self, address: &str) -> Result<Option<String>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .suppressions
            .get(&address.trim().to_lowercase())
            .cloned())
    }

    async fn emails_since(&self, contact: &str, since: Ts) -> Result<Vec<Ts>, StoreError> {
        let inner = self.lock();
        let since = ms(since);
        let mut out: Vec<Ts> = inner
            .deliveries
            .iter()
            .filter(|d| d.contact == contact && d.kind == OutboxKind::Email && d.at >= since)
            .map(|d| d.at)
            .collect();
        out.sort();
        Ok(out)
    }

    async fn requeue_outbox(&self, key: &str, now: Ts) -> Result<bool, StoreError> {
        Ok(self.lock().requeue(key, now))
    }

    async fn outbox_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .outbox
            .get(key)
            .map(|o| o.state.as_str().to_string()))
    }
}

#[cfg(test)]
mod contract_tests {
    use nurture_store::contract;

    /// One test per check of the store contract, each on a fresh store.
    macro_rules! contract_tests {
        ($($check:ident),* $(,)?) => {
            $(
                #[tokio::test]
                async fn $check() {
                    let s = crate::MemoryStore::new();
                    contract::$check(&s).await;
                }
            )*
            /// Every check of the contract has its test here.
            #[test]
            fn every_contract_check_runs() {
                assert_eq!(contract::CHECKS, [$(stringify!($check)),*]);
            }
        };
    }

    contract_tests!(
        events_are_idempotent_by_id_and_queued_once,
        a_stale_commit_is_rejected_and_changes_nothing,
        outbox_entries_are_delivered_at_most_once_per_key,
        a_commit_claims_the_due_entries_it_adds_for_its_worker_alone,
        timers_fire_in_due_order_and_counters_are_fenced,
        a_wave_of_completions_keeps_the_good_ones_when_one_is_stale,
        a_wave_of_mixed_outcomes_records_each_its_own_way,
        units_load_the_open_or_latest_run_of_each_workflow,
        a_deploy_is_fenced_by_the_expected_latest_versions_and_all_or_nothing,
        a_version_deployed_again_is_kept_unless_its_content_differs,
        versions_list_by_workflow_then_version_and_the_latest_of_each,
        open_runs_count_per_version_and_step_ignoring_ended_runs,
        open_runs_below_a_version_page_by_run_id,
        queues_count_events_due_timers_and_open_sends_by_state,
        compaction_sums_up_runs_ended_before_the_cutoff_and_nothing_else,
        a_merge_into_a_contact_not_stored_moves_nothing,
        a_commit_keeping_a_contact_gone_since_conflicts_and_writes_nothing,
    );
}
