//! The journal's monthly partitions (migration 0022): a partition per month of `at`
//! (UTC), created ahead of time; a `journal_default` partition for rows of a month
//! without one; and the rewrite that gives back the space of the rows retention deleted.
//!
//! Retention ([`nurture_store::RetentionStore`]) deletes the lines of ended runs and
//! inserts their summaries; the deleted rows' space would then stay in the files, reused
//! by later rows (which, in a month past retention, never come). So
//! [`PostgresStore::reclaim_space`](nurture_store::RetentionStore::reclaim_space) copies
//! what each partition it deleted from keeps into a fresh table, drops the old partition
//! and attaches the copy in its place: the old month's files are removed whole.
//!
//! Locks: a rewrite holds a SHARE lock on its partition while it copies (a write to that
//! month waits; the other months take writes), then an ACCESS EXCLUSIVE lock on the
//! journal for the swap alone (detach, drop, rename, attach: catalog changes, no scan,
//! thanks to a CHECK constraint proving the bound). One advisory lock per schema orders
//! the store's partition changes between processes.

use chrono::{Datelike, TimeZone, Utc};
use nurture_store::{StoreError, Ts};
use sqlx::{PgPool, Postgres, Transaction};

/// Months created ahead of the current one.
const AHEAD: u32 = 2;

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

/// `at` as an SQL literal (DDL takes no parameters).
fn literal(at: Ts) -> String {
    format!("'{}'", at.format("%Y-%m-%d %H:%M:%S+00"))
}

/// Holds the schema's lock on partition changes until `tx` ends.
async fn lock(tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.journal_months'))")
        .execute(&mut **tx)
        .await?;
    Ok(())
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
        format!("CREATE INDEX ON \"{t}\" (run_id, id)"),
        format!("CREATE INDEX ON \"{t}\" (contact, id) WHERE run_id IS NULL"),
    ]
}

/// Creates the partitions of `now`'s month and the next [`AHEAD`] where missing;
/// whether rows moved out of the default partition.
pub(crate) async fn ensure_months(pool: &PgPool, now: Ts) -> Result<bool, StoreError> {
    let mut moved = false;
    let mut lo = month_of(now).0;
    for _ in 0..=AHEAD {
        moved |= create_month(pool, lo).await?;
        lo = month_of(lo).1;
    }
    Ok(moved)
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
/// rows out of the default partition; whether any moved.
pub(crate) async fn create_month(pool: &PgPool, lo: Ts) -> Result<bool, StoreError> {
    let (lo, hi) = month_of(lo);
    let name = name_of(lo);
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    let there: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
    if there.is_some() {
        return Ok(false);
    }
    let range = format!("at >= {} AND at < {}", literal(lo), literal(hi));
    // No row of this month can land in the default partition meanwhile.
    let mut sql = vec![
        format!("LOCK TABLE {DEFAULT} IN SHARE MODE"),
        format!("CREATE TABLE \"{name}\" (LIKE journal INCLUDING DEFAULTS)"),
        format!("INSERT INTO \"{name}\" SELECT * FROM {DEFAULT} WHERE {range}"),
    ];
    sql.extend(indexes(&name));
    sql.push(format!(
        "ALTER TABLE \"{name}\" ADD CONSTRAINT \"{name}_bound\" CHECK ({range})"
    ));
    run_all(&mut tx, &sql).await?;
    let moved = sqlx::query(&format!("DELETE FROM {DEFAULT} WHERE {range}"))
        .execute(&mut *tx)
        .await?
        .rows_affected();
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
    Ok(moved > 0)
}

/// Replaces partition `name` by a copy of its rows: the space of the rows deleted from it
/// goes back to the file system with the old table's files. A name that is no longer a
/// partition of the journal is skipped.
pub(crate) async fn rewrite(pool: &PgPool, name: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    let bound: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT pg_get_expr(c.relpartbound, c.oid), pg_get_partition_constraintdef(c.oid) \
         FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid \
         WHERE c.oid = to_regclass($1) AND i.inhparent = to_regclass('journal')",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((bound, check)) = bound else {
        return Ok(());
    };
    let new = format!("{name}_new");
    let mut sql = vec![
        format!("LOCK TABLE \"{name}\" IN SHARE MODE"),
        format!("CREATE TABLE \"{new}\" (LIKE journal INCLUDING DEFAULTS)"),
        format!("INSERT INTO \"{new}\" SELECT * FROM \"{name}\" ORDER BY run_id, id"),
    ];
    sql.extend(indexes(&new));
    // The bound, proved before the swap: attaching then scans nothing.
    if let Some(check) = &check {
        sql.push(format!(
            "ALTER TABLE \"{new}\" ADD CONSTRAINT \"{new}_bound\" CHECK ({check})"
        ));
    }
    sql.extend([
        format!("ALTER TABLE journal DETACH PARTITION \"{name}\""),
        format!("DROP TABLE \"{name}\""),
        format!("ALTER TABLE \"{new}\" RENAME TO \"{name}\""),
        format!("ALTER TABLE journal ATTACH PARTITION \"{name}\" {bound}"),
        format!("ALTER TABLE \"{name}\" DROP CONSTRAINT IF EXISTS \"{new}_bound\""),
    ]);
    run_all(&mut tx, &sql).await?;
    tx.commit().await?;
    Ok(())
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
    }
}
