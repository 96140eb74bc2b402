//! The journal's monthly partitions (migration 0022): a partition per month of `at`
//! (UTC), created ahead of time; a `journal_default` partition for rows of a month
//! without one; and the rewrite that gives back the space of the rows retention deleted.
//!
//! Retention ([`nurture_store::RetentionStore`]) deletes the lines of ended runs and
//! inserts their summaries, noting in `journal_reclaim`, in the same transaction, the
//! partitions it deleted from. The deleted rows' space would stay in the files, reused
//! only by later rows of the same month, which never come once the month has ended. So
//! [`reclaim_space`](nurture_store::RetentionStore::reclaim_space) copies what each noted
//! partition of an ended month keeps into a fresh table, drops the old partition and
//! attaches the copy in its place: the old files are removed whole. The current month is
//! left noted until it has ended (its space is reused by its own rows meanwhile).
//!
//! Locks: a rewrite holds a SHARE lock on its partition while it copies (a write into
//! that month, rare once it has ended, waits), then takes the journal's ACCESS EXCLUSIVE
//! lock for the swap (detach, drop, rename, attach: catalog changes, no scan, thanks to
//! a CHECK constraint proving the bound). It waits for a lock at most [`LOCK_WAIT`], so
//! workers queue behind it no longer than that; a rewrite that cannot get its locks
//! (or is chosen as a deadlock's victim) is left noted for the next compaction. One
//! advisory lock per schema orders partition changes between processes; creating months
//! at start or from the heartbeat only tries it and never waits behind a rewrite.

use chrono::{Datelike, TimeZone, Utc};
use nurture_store::{StoreError, Ts};
use sqlx::{PgPool, Postgres, Transaction};

/// Months created ahead of the current one.
const AHEAD: u32 = 2;

/// The longest a rewrite or a move waits for a lock (workers wait behind it meanwhile).
const LOCK_WAIT: &str = "1s";

/// The partition holding rows of months without their own.
pub(crate) const DEFAULT: &str = "journal_default";

/// The first instant (UTC) of `at`'s month and of the month after.
pub(crate) fn month_of(at: Ts) -> (Ts, Ts) {
    let lo = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month at midnight UTC exists");
    let hi = lo
        .checked_add_months(chrono::Months::new(1))
        .expect("a month later");
    (lo, hi)
}

/// The name of the partition of the month starting at `lo`.
fn name_of(lo: Ts) -> String {
    format!("journal_{}", lo.format("%Y_%m"))
}

/// The month a partition's name is of (`journal_2026_03`), `None` for another name.
fn month_named(name: &str) -> Option<Ts> {
    let (y, m) = name.strip_prefix("journal_")?.split_once('_')?;
    Utc.with_ymd_and_hms(y.parse().ok()?, m.parse().ok()?, 1, 0, 0, 0)
        .single()
}

/// Whether the noted partition `name` may be rewritten at `now`: the default partition,
/// or a month that ended a day ago or more (a unit begun just before midnight may still
/// commit lines of the month that just ended; its write would wait for the copy).
fn ended(name: &str, now: Ts) -> bool {
    name == DEFAULT
        || month_named(name).is_some_and(|lo| month_of(lo).1 + chrono::Duration::days(1) <= now)
}

/// `at` as an SQL literal (DDL takes no parameters).
fn literal(at: Ts) -> String {
    format!("'{}'", at.format("%Y-%m-%d %H:%M:%S+00"))
}

/// The schema's lock on partition changes, held until `tx` ends: waited for, or only
/// tried (`false` when another process holds it).
async fn lock(tx: &mut Transaction<'_, Postgres>, wait: bool) -> Result<bool, StoreError> {
    let key = "hashtext(current_schema() || '.journal_months')";
    if wait {
        sqlx::query(&format!("SELECT pg_advisory_xact_lock({key})"))
            .execute(&mut **tx)
            .await?;
        return Ok(true);
    }
    Ok(
        sqlx::query_scalar(&format!("SELECT pg_try_advisory_xact_lock({key})"))
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// Runs each statement in `tx`.
async fn run_all(tx: &mut Transaction<'_, Postgres>, sql: &[String]) -> Result<(), StoreError> {
    for s in sql {
        sqlx::query(s).execute(&mut **tx).await?;
    }
    Ok(())
}

/// The journal's indexes on table `t` (attached to the journal's own when `t` is).
fn indexes(t: &str) -> [String; 2] {
    [
        format!("CREATE INDEX ON \"{t}\" (run_id) WITH (fillfactor = 100)"),
        format!(
            "CREATE INDEX ON \"{t}\" (contact, id) WITH (fillfactor = 100) WHERE run_id IS NULL"
        ),
    ]
}

/// The statements that copy the rows of `source` matching `rows` into a new table
/// `table` shaped as the journal, with its indexes, and with `check` (the bound it will
/// be attached with) as constraint `{table}_bound`, proved now so that attaching scans
/// nothing. `source` is locked against writes until the transaction ends.
fn copy_into(table: &str, source: &str, rows: &str, check: Option<&str>) -> Vec<String> {
    let mut sql = copy_settings().to_vec();
    sql.extend([
        format!("LOCK TABLE \"{source}\" IN SHARE MODE"),
        format!("CREATE TABLE \"{table}\" (LIKE journal INCLUDING DEFAULTS)"),
        format!("INSERT INTO \"{table}\" SELECT * FROM \"{source}\" WHERE {rows}"),
    ]);
    sql.extend(indexes(table));
    if let Some(check) = check {
        sql.push(format!(
            "ALTER TABLE \"{table}\" ADD CONSTRAINT \"{table}_bound\" CHECK ({check})"
        ));
    }
    sql
}

/// Lock waits bounded, and whole tables read as such (the store's sessions turn
/// sequential scans off).
fn copy_settings() -> [String; 2] {
    [
        format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"),
        "SET LOCAL enable_seqscan = on".to_string(),
    ]
}

/// Whether table `name` exists in the schema.
async fn exists<'e>(db: impl sqlx::PgExecutor<'e>, name: &str) -> Result<bool, StoreError> {
    let there: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(name)
        .fetch_one(db)
        .await?;
    Ok(there.is_some())
}

/// Creates the partitions of `now`'s month and the next [`AHEAD`] where missing, without
/// waiting for another process's partition change or a busy lock; whether they all
/// exist now (`false`: tried again later, rows meanwhile in the default partition).
pub(crate) async fn ensure_months(pool: &PgPool, now: Ts) -> Result<bool, StoreError> {
    let mut lo = month_of(now).0;
    for _ in 0..=AHEAD {
        match create_month(pool, lo, false).await {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) if lost_a_lock(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        lo = month_of(lo).1;
    }
    Ok(true)
}

/// The months of the rows in the default partition.
pub(crate) async fn months_in_default(pool: &PgPool) -> Result<Vec<Ts>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT date_trunc('month', at, 'UTC') FROM journal_default ORDER BY 1",
    )
    .fetch_all(pool)
    .await?)
}

/// Creates the partition of the month starting at `lo` if missing, moving that month's
/// rows out of the default partition (which is then noted for a rewrite); whether it
/// exists now (`false`: `wait` was not asked and another process was changing
/// partitions).
pub(crate) async fn create_month(pool: &PgPool, lo: Ts, wait: bool) -> Result<bool, StoreError> {
    let (lo, hi) = month_of(lo);
    let name = name_of(lo);
    if exists(pool, &name).await? {
        return Ok(true);
    }
    let mut tx = pool.begin().await?;
    if !lock(&mut tx, wait).await? {
        return Ok(false);
    }
    // In the transaction: a pool of one connection has none to spare.
    if exists(&mut *tx, &name).await? {
        return Ok(true);
    }
    let range = format!("at >= {} AND at < {}", literal(lo), literal(hi));
    // No row of this month can land in the default partition meanwhile (its lock).
    run_all(&mut tx, &copy_into(&name, DEFAULT, &range, Some(&range))).await?;
    let moved = sqlx::query(&format!("DELETE FROM {DEFAULT} WHERE {range}"))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if moved > 0 {
        note(&mut tx, &[DEFAULT.to_string()]).await?;
    }
    run_all(
        &mut tx,
        &[
            format!(
                "ALTER TABLE journal ATTACH PARTITION \"{name}\" FOR VALUES FROM ({}) TO ({})",
                literal(lo),
                literal(hi)
            ),
            format!("ALTER TABLE \"{name}\" DROP CONSTRAINT \"{name}_bound\""),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Notes `partitions` for a rewrite (in the transaction that deleted rows from them).
pub(crate) async fn note(
    tx: &mut Transaction<'_, Postgres>,
    partitions: &[String],
) -> Result<(), StoreError> {
    if !partitions.is_empty() {
        sqlx::query(
            "INSERT INTO journal_reclaim (partition) SELECT unnest($1::text[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(partitions)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The noted partitions that may be rewritten at `now` (the default one first: a month
/// attached while it exists has it scanned).
pub(crate) async fn reclaimable(pool: &PgPool, now: Ts) -> Result<Vec<String>, StoreError> {
    let mut noted: Vec<String> =
        sqlx::query_scalar("SELECT partition FROM journal_reclaim ORDER BY partition")
            .fetch_all(pool)
            .await?;
    noted.retain(|n| ended(n, now));
    noted.sort_by_key(|n| n != DEFAULT);
    Ok(noted)
}

/// Replaces partition `name` by a copy of its rows: the space of the rows deleted from it
/// goes back to the file system with the old table's files; the note goes. A name that
/// is no longer a partition of the journal just loses its note.
pub(crate) async fn rewrite(pool: &PgPool, name: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    lock(&mut tx, true).await?;
    let bound: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT pg_get_expr(c.relpartbound, c.oid), pg_get_partition_constraintdef(c.oid) \
         FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid \
         WHERE c.oid = to_regclass($1) AND i.inhparent = to_regclass('journal')",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((bound, check)) = bound {
        run_all(&mut tx, &swap(name, &bound, check.as_deref())).await?;
    }
    sqlx::query("DELETE FROM journal_reclaim WHERE partition = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The statements that copy partition `name` (bound `bound`, partition constraint
/// `check`) into a fresh table and swap it in.
fn swap(name: &str, bound: &str, check: Option<&str>) -> Vec<String> {
    let new = format!("{name}_new");
    let mut sql = copy_into(&new, name, "true", check);
    sql.extend([
        format!("ALTER TABLE journal DETACH PARTITION \"{name}\""),
        format!("DROP TABLE \"{name}\""),
        format!("ALTER TABLE \"{new}\" RENAME TO \"{name}\""),
        format!("ALTER TABLE journal ATTACH PARTITION \"{name}\" {bound}"),
        format!("ALTER TABLE \"{name}\" DROP CONSTRAINT IF EXISTS \"{new}_bound\""),
    ]);
    sql
}

/// Whether `e` is a lock wait that ran out (55P03) or a deadlock this side lost
/// (40P01): the change can be tried again later. (A statement cancelled by a server's
/// `statement_timeout` is not: it would fail the same way every time.)
pub(crate) fn lost_a_lock(e: &StoreError) -> bool {
    let StoreError::Unavailable { source, .. } = e else {
        return false;
    };
    let code = source.as_database_error().and_then(|d| d.code());
    matches!(code.as_deref(), Some("55P03" | "40P01"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months_and_december_rolls_over() {
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let (lo, hi) = month_of(at);
        assert_eq!(lo, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(hi, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(name_of(lo), "journal_2026_12");
        assert_eq!(literal(hi), "'2027-01-01 00:00:00+00'");
        assert_eq!(month_named("journal_2026_12"), Some(lo));
        assert_eq!(month_named("journal_default"), None);
    }

    #[test]
    fn only_ended_months_and_the_default_partition_are_rewritten() {
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 1, 0, 0).unwrap();
        assert!(ended("journal_2026_11", now));
        let first = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        assert!(
            !ended("journal_2026_11", first),
            "not before a day has passed"
        );
        assert!(!ended("journal_2026_12", now));
        assert!(!ended("journal_2027_01", now));
        assert!(ended(DEFAULT, now));
        assert!(!ended("journal_unknown", now));
    }
}
