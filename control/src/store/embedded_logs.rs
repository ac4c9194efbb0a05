//! Invocation records in the embedded store: [`LogStore`] for [`EmbeddedStore`], in two tables
//! of their own in the same redb file.
//!
//! Owns: the tables below, numbering each app's records, the per-app bound and the commit
//! durability of appends. Does not own: the catalog tables or the revision (an append is not a
//! catalog change: it never bumps the revision), where records come from (the writer thread,
//! `crate::invocations`), or deleting an app (`EmbeddedStore::delete_app`, which calls
//! [`purge_app`] in its own transaction so records go with the app atomically).
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `invocations` | (app, seq) | JSON [`InvocationRecord`] |
//! | `invocation_seqs` | app | last seq given out (absent = 0) |
//! | `invocation_meta` | `durable_at_ms` | when an append last committed durably (Unix ms) |
//!
//! An app's sequence numbers are contiguous, from 1: every append gives the next ones and
//! trimming removes only the oldest, so the records kept are exactly `last - n + 1 ..= last`
//! and the bound is one range delete. Deleting the app deletes its counter too, so a recreated
//! app counts from 1 again (as script versions do).
//!
//! The tables are created by the first append (or app delete); until then a read finds no
//! table and answers as if empty. No schema version bump: older files simply lack them.
//!
//! Durability: records are diagnostics, so an append commits durably (`Immediate`, an fsync)
//! only if the last durable append is at least [`DURABLE_EVERY_MS`] old, and otherwise with
//! `Durability::None` (in memory, made durable by the next durable commit of any kind, and by
//! redb when the database is closed). Measured on the dev machine's disk: a one-record append
//! takes 2.8 ms durably and 13 µs without; a 256-record batch 1.75 ms against 0.56 ms. Without
//! this, a steady trickle of requests (a few hundred a second, each its own batch) would keep
//! the disk syncing nonstop and every KV or admin write waiting behind those syncs for redb's
//! single writer lock. The price: a crash (not a clean stop) loses the records appended since
//! the last durable commit, at most about a second of them while traffic flows, or the last
//! burst before traffic stopped. A durable append at least once a second also matters to redb
//! itself: it frees pages only in durable commits, so trimming old records under a stream of
//! non-durable ones alone would grow the file.

use std::collections::BTreeMap;

use picloud_core::services::{InvocationRecord, LogStore};
use picloud_core::store::{StoreError, StoreResult};
use redb::{
    Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError, WriteTransaction,
};

use super::EmbeddedStore;
use super::embedded::{APPS, db_err};

/// (app, seq).
pub(crate) type RecordKey = (&'static str, u64);
pub(crate) const INVOCATIONS: TableDefinition<RecordKey, &str> =
    TableDefinition::new("invocations");
pub(crate) const INVOCATION_SEQS: TableDefinition<&str, u64> =
    TableDefinition::new("invocation_seqs");
pub(crate) const INVOCATION_META: TableDefinition<&str, u64> =
    TableDefinition::new("invocation_meta");
const META_DURABLE_AT_MS: &str = "durable_at_ms";

/// An append yields the CPU (`sched_yield`) after this many records: a batch of a thousand
/// records costs a millisecond or two, and the writer shares a core with the front end and the
/// engines, whose requests would otherwise wait for all of it (`crate::invocations`). With
/// nothing else runnable the yield returns at once.
pub const APPEND_YIELD_EVERY: usize = 64;

/// Longest time between two durable appends while appends keep coming (see module docs).
pub const DURABLE_EVERY_MS: u64 = 1_000;

impl LogStore for EmbeddedStore {
    fn append_invocations(
        &self,
        records: &[InvocationRecord],
        per_app_max: usize,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        // Grouped by app, each app's records in the order given.
        let mut by_app: BTreeMap<&str, Vec<&InvocationRecord>> = BTreeMap::new();
        for r in records {
            by_app.entry(r.app.as_str()).or_default().push(r);
        }
        let keep = u64::try_from(per_app_max).unwrap_or(u64::MAX);
        let mut txn = self.database().begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(INVOCATION_META).map_err(db_err)?;
            let last = meta
                .get(META_DURABLE_AT_MS)
                .map_err(db_err)?
                .map(|g| g.value());
            let now = picloud_core::now_ms();
            // A clock that stepped back counts as time passed: better one fsync too many.
            let due = last.is_none_or(|t| now < t || now - t >= DURABLE_EVERY_MS);
            if due {
                meta.insert(META_DURABLE_AT_MS, now).map_err(db_err)?;
            }
            drop(meta);
            txn.set_durability(if due {
                Durability::Immediate
            } else {
                Durability::None
            })
            .map_err(|e| StoreError::Internal(format!("setting durability: {e}")))?;
        }
        {
            let apps = txn.open_table(APPS).map_err(db_err)?;
            let mut rows = txn.open_table(INVOCATIONS).map_err(db_err)?;
            let mut seqs = txn.open_table(INVOCATION_SEQS).map_err(db_err)?;
            // One buffer for every record's JSON: no allocation per record.
            let mut json = Vec::with_capacity(512);
            let mut written = 0usize;
            for (app, list) in by_app {
                // Records of an app deleted since they were made have nowhere to go.
                if apps.get(app).map_err(db_err)?.is_none() {
                    continue;
                }
                let mut last = seqs.get(app).map_err(db_err)?.map_or(0, |g| g.value());
                for r in list {
                    written += 1;
                    if written.is_multiple_of(APPEND_YIELD_EVERY) {
                        std::thread::yield_now();
                    }
                    last = last.checked_add(1).ok_or_else(|| {
                        StoreError::Internal(format!("invocation counter overflow for {app:?}"))
                    })?;
                    json.clear();
                    serde_json::to_writer(&mut json, r).map_err(|e| {
                        StoreError::Internal(format!("encoding an invocation record: {e}"))
                    })?;
                    let text = std::str::from_utf8(&json).map_err(|e| {
                        StoreError::Internal(format!("encoding an invocation record: {e}"))
                    })?;
                    rows.insert((app, last), text).map_err(db_err)?;
                }
                seqs.insert(app, last).map_err(db_err)?;
                if last > keep {
                    rows.retain_in((app, 0)..=(app, last - keep), |_, _| false)
                        .map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)
    }

    fn invocations(
        &self,
        app: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<(u64, InvocationRecord)>> {
        let txn = self.database().begin_read().map_err(db_err)?;
        let apps = txn.open_table(APPS).map_err(db_err)?;
        if apps.get(app).map_err(db_err)?.is_none() {
            return Err(StoreError::NotFound(format!("app {app:?} does not exist")));
        }
        let rows = match txn.open_table(INVOCATIONS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let decode =
            |entry: Result<_, redb::StorageError>| -> StoreResult<(u64, InvocationRecord)> {
                let (k, v): (redb::AccessGuard<RecordKey>, redb::AccessGuard<&str>) =
                    entry.map_err(db_err)?;
                let seq = k.value().1;
                let record = serde_json::from_str(v.value()).map_err(|e| {
                    StoreError::Internal(format!(
                        "stored invocation {seq} of {app:?} is unreadable: {e}"
                    ))
                })?;
                Ok((seq, record))
            };
        match after {
            Some(after) => {
                let Some(first) = after.checked_add(1) else {
                    return Ok(Vec::new());
                };
                rows.range((app, first)..=(app, u64::MAX))
                    .map_err(db_err)?
                    .take(limit)
                    .map(decode)
                    .collect()
            }
            None => {
                let mut newest = rows
                    .range((app, 0)..=(app, u64::MAX))
                    .map_err(db_err)?
                    .rev()
                    .take(limit)
                    .map(decode)
                    .collect::<StoreResult<Vec<_>>>()?;
                newest.reverse();
                Ok(newest)
            }
        }
    }
}

/// Deletes `app`'s records and counter inside `txn` (the app's delete transaction).
pub(crate) fn purge_app(txn: &WriteTransaction, app: &str) -> StoreResult<()> {
    let mut rows = txn.open_table(INVOCATIONS).map_err(db_err)?;
    rows.retain_in((app, 0)..=(app, u64::MAX), |_, _| false)
        .map_err(db_err)?;
    let mut seqs = txn.open_table(INVOCATION_SEQS).map_err(db_err)?;
    seqs.remove(app).map_err(db_err)?;
    Ok(())
}
