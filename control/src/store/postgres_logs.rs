//! Invocation records in PostgreSQL: [`LogStore`] for [`PgStore`], on the tables of
//! `migrations/0004_invocations.sql` (`invocations`, keyed by (app, seq), and the per-app
//! counter `invocation_seqs`).
//!
//! Owns: the SQL of appending, trimming and reading records. Does not own: the schema (the
//! migration), the connection (the store's own, through `PgStore::session`: one append per
//! batch of the writer thread is light next to admin traffic, and a node keeps one connection
//! for its control plane), or deleting an app's records (`ON DELETE CASCADE` does that in the
//! app's delete transaction).
//!
//! Appends are not catalog changes: they never take the revision lock, bump the revision or
//! NOTIFY. An append locks the rows of the apps it writes to against deletion (`FOR KEY SHARE`,
//! which does not block app updates), so the check "does the app exist" cannot race a delete:
//! records of missing apps are dropped without failing the rest of the batch. Then each app's
//! counter is advanced by an upsert, whose row lock serialises appends to one app across nodes
//! until commit, so sequence numbers become visible in increasing order (a `--follow` reader
//! asking for `after = N` never misses a record committed later with a smaller number).

use std::collections::{BTreeMap, HashSet};

use super::PgStore;
use super::postgres::{BEGIN, pg_err};
use picloud_core::services::{InvocationRecord, LogStore};
use picloud_core::store::{StoreError, StoreResult};

impl LogStore for PgStore {
    fn append_invocations(
        &self,
        records: &[InvocationRecord],
        per_app_max: usize,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        // Grouped by app in name order, so concurrent appends lock counters in one order.
        let mut by_app: BTreeMap<&str, Vec<&InvocationRecord>> = BTreeMap::new();
        for r in records {
            by_app.entry(r.app.as_str()).or_default().push(r);
        }
        let keep = i64::try_from(per_app_max).unwrap_or(i64::MAX);
        self.session(Some(BEGIN), |tx, _| {
            let names: Vec<&str> = by_app.keys().copied().collect();
            let existing: HashSet<String> = tx
                .query(
                    "SELECT name FROM apps WHERE name = ANY($1) FOR KEY SHARE",
                    &[&names],
                )
                .map_err(pg_err)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(pg_err)?;
            for (app, list) in &by_app {
                if !existing.contains(*app) {
                    continue;
                }
                let n = i64::try_from(list.len()).unwrap_or(i64::MAX);
                let last: i64 = tx
                    .query_one(
                        "INSERT INTO invocation_seqs AS s (app, last) VALUES ($1, $2)
                         ON CONFLICT (app) DO UPDATE SET last = s.last + EXCLUDED.last
                         RETURNING last",
                        &[app, &n],
                    )
                    .and_then(|row| row.try_get(0))
                    .map_err(pg_err)?;
                let seqs: Vec<i64> = (last - n + 1..=last).collect();
                let ts: Vec<i64> = list
                    .iter()
                    .map(|r| i64::try_from(r.ts_ms).unwrap_or(i64::MAX))
                    .collect();
                let json = list
                    .iter()
                    .map(|r| {
                        serde_json::to_string(r).map_err(|e| {
                            StoreError::Internal(format!("encoding an invocation record: {e}"))
                        })
                    })
                    .collect::<StoreResult<Vec<String>>>()?;
                tx.execute(
                    "INSERT INTO invocations (app, seq, ts_ms, record)
                     SELECT $1, s, t, r::json
                     FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS u (s, t, r)",
                    &[app, &seqs, &ts, &json],
                )
                .map_err(pg_err)?;
                if last > keep {
                    tx.execute(
                        "DELETE FROM invocations WHERE app = $1 AND seq <= $2",
                        &[app, &(last - keep)],
                    )
                    .map_err(pg_err)?;
                }
            }
            tx.commit().map_err(pg_err)
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
