//! Invocation records in PostgreSQL: [`LogStore`] for [`PgStore`], on the tables of
//! `migrations/0004_invocations.sql` (`invocations`, keyed by (app, seq), and the per-app
//! counter `invocation_seqs`).
//!
//! Owns: the SQL of appending, trimming and reading records. Does not own: the schema (the
//! migration), the connection (the store's own, through `PgStore::with_db`: one statement per
//! app per batch of the writer thread, usually one round trip, is light next to admin traffic,
//! and a node keeps one connection for its control plane), or deleting an app's records (`ON DELETE CASCADE` does that in the
//! app's delete transaction).
//!
//! Appends are not catalog changes: they never take the revision lock, bump the revision or
//! NOTIFY. Each app's records are one statement (its own transaction: a failure can lose a later
//! app's records of the batch, never number them twice). It locks the app's row against
//! deletion (`FOR KEY SHARE`, which does not block app updates), so the check "does the app
//! exist" cannot race a delete: records of missing apps are dropped without failing the rest of
//! the batch. Then the app's counter is advanced by an upsert, whose row lock serialises appends to one app across nodes
//! until commit, so sequence numbers become visible in increasing order (a `--follow` reader
//! asking for `after = N` never misses a record committed later with a smaller number).

use std::collections::BTreeMap;

use super::PgStore;
use super::postgres::pg_err;
use picloud_core::services::{InvocationRecord, LogStore};
use picloud_core::store::{StoreError, StoreResult};

/// Appends `$2` records to app `$1` in one statement (autocommit): locks the app's row against
/// deletion (`FOR KEY SHARE`; no row, no app: nothing is written), advances its counter by `$2`
/// (the upsert's row lock serialises appends to the app until commit), inserts the newest of
/// them (`$3` times, `$4` JSON; `$5` older ones skipped) numbered up to the new last, and
/// deletes what falls out of the newest `$6`. The delete sees the table as it was before the
/// statement; the rows inserted are all within the newest `$6`.
const APPEND_SQL: &str = "
WITH live AS (
    SELECT name FROM apps WHERE name = $1 FOR KEY SHARE
), counter AS (
    INSERT INTO invocation_seqs AS s (app, last) SELECT name, $2::bigint FROM live
    ON CONFLICT (app) DO UPDATE SET last = s.last + EXCLUDED.last
    RETURNING last
), added AS (
    INSERT INTO invocations (app, seq, ts_ms, record)
    SELECT $1::text, counter.last - $2::bigint + $5::bigint + u.n, u.t, u.r::json
      FROM counter, unnest($3::bigint[], $4::text[]) WITH ORDINALITY AS u (t, r, n)
), trimmed AS (
    DELETE FROM invocations
     WHERE app = $1::text AND seq <= (SELECT last FROM counter) - $6::bigint
)
SELECT last FROM counter";

impl LogStore for PgStore {
    fn append_invocations(
        &self,
        records: &[InvocationRecord],
        per_app_max: usize,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut by_app: BTreeMap<&str, Vec<&InvocationRecord>> = BTreeMap::new();
        for r in records {
            by_app.entry(r.app.as_str()).or_default().push(r);
        }
        let keep = per_app_max;
        // One statement per app (usually one app per batch): one round trip, and one app's
        // locks at a time, so concurrent appends cannot deadlock.
        self.with_db(|db| {
            for (app, list) in &by_app {
                let n = i64::try_from(list.len()).unwrap_or(i64::MAX);
                // Records the trim would delete at once are numbered but never written.
                let newest = &list[list.len().saturating_sub(keep)..];
                let skipped = i64::try_from(list.len() - newest.len()).unwrap_or(i64::MAX);
                let ts: Vec<i64> = newest
                    .iter()
                    .map(|r| i64::try_from(r.ts_ms).unwrap_or(i64::MAX))
                    .collect();
                let json = newest
                    .iter()
                    .map(|r| {
                        serde_json::to_string(r).map_err(|e| {
                            StoreError::Internal(format!("encoding an invocation record: {e}"))
                        })
                    })
                    .collect::<StoreResult<Vec<String>>>()?;
                let keep = i64::try_from(keep).unwrap_or(i64::MAX);
                db.query_opt(APPEND_SQL, &[app, &n, &ts, &json, &skipped, &keep])
                    .map_err(pg_err)?;
            }
            Ok(())
        })
    }

    fn invocations(
        &self,
        app: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<(u64, InvocationRecord)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_db(|tx| {
            // One statement for the rows; only when there are none, another tells an app
            // without records from no app.
            let rows = match after {
                // Past the largest number a bigint holds there is nothing.
                Some(after) => match i64::try_from(after) {
                    Ok(after) => tx.query(
                        "SELECT seq, record::text FROM invocations
                         WHERE app = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                        &[&app, &after, &limit],
                    ),
                    Err(_) => Ok(Vec::new()),
                },
                None => tx.query(
                    "SELECT seq, record FROM (
                         SELECT seq, record::text FROM invocations
                         WHERE app = $1 ORDER BY seq DESC LIMIT $2
                     ) AS newest ORDER BY seq",
                    &[&app, &limit],
                ),
            }
            .map_err(pg_err)?;
            if rows.is_empty()
                && tx
                    .query_opt("SELECT 1 FROM apps WHERE name = $1", &[&app])
                    .map_err(pg_err)?
                    .is_none()
            {
                return Err(StoreError::NotFound(format!("app {app:?} does not exist")));
            }
            rows.iter()
                .map(|row| {
                    let seq: i64 = row.try_get(0).map_err(pg_err)?;
                    let text: &str = row.try_get(1).map_err(pg_err)?;
                    let record = serde_json::from_str(text).map_err(|e| {
                        StoreError::Internal(format!(
                            "stored invocation {seq} of {app:?} is unreadable: {e}"
                        ))
                    })?;
                    Ok((u64::try_from(seq).unwrap_or(0), record))
                })
                .collect()
        })
    }
}
