//! The per-app key-value store ([`KvStore`]) of the embedded store: two redb tables of its own
//! in the same database file as the catalog ([`EmbeddedStore::database`]).
//!
//! Owns: the tables, and keeping the trait's rules (`picloud_core::services`) with redb
//! transactions:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `kv` | (app, key) | (value as compact JSON text, expires_at_ms or none) |
//! | `kv_keys` | app | rows the app holds in `kv`, live or expired (absent = 0) |
//!
//! Both are created by the first write transaction that opens them (a KV write, or deleting an
//! app); a read before that finds no table and answers as for an empty one. Tuple keys keep
//! apps apart exactly as the catalog tables do (no name can leak into another app's range).
//!
//! - Durability and group commit: every KV write (`kv_set`, `kv_delete`, `kv_incr`) goes through
//!   the store's group committer (`super::group_commit`): writes that arrive while a commit runs
//!   wait and then share the next write transaction, committed with `Durability::Immediate`
//!   (redb's default, set explicitly), like the catalog. A write returns only after its batch's
//!   commit returned, so an acknowledged `kv::set` survives `kill -9` and power loss. One
//!   commit costs one fsync and ~95 µs of engine CPU here (bench/NOTES.md, issue 5), so sharing
//!   it is what lets several engines write faster than one. A batch holds at most
//!   `kv_batch_writes_max` writes (`Limits`), applied in arrival order, each seeing the ones
//!   before it. A batch whose writes change nothing (deleting absent keys) aborts instead and
//!   costs no fsync.
//! - One write fails alone: a key's and a value's size and content (`super::kv_common`) are
//!   checked by the writer before it joins a batch; inside the batch each write runs its other
//!   checks (app exists, `keys_max`, `incr`'s integer and range) before its first change, so a refused write changes nothing and its
//!   batch mates commit as if it had not been there. Only a database failure (beginning,
//!   writing or committing the transaction) fails the whole batch, every write with the error.
//! - Counting keys: `kv_keys` holds the exact number of rows of the app in `kv` (updated in the
//!   same transaction as the rows), so the check costs one lookup. A write of a new key that
//!   finds the app at `keys_max` rows first purges the app's expired rows (one range scan,
//!   bounded by `keys_max` rows) and checks again. Expired rows are otherwise only removed
//!   when their key is written or deleted: no background thread, no timer. Since rows never
//!   exceed `keys_max` when a row is added, and overwriting an expired row adds none, the live
//!   keys never exceed it either (a lowered `keys_max` applies to new rows). The purge happens
//!   only when it makes room (the expired rows are counted first), so a refused write purges
//!   nothing.
//! - Atomicity: redb runs one write transaction at a time and a batch applies its writes one
//!   after the other, so `kv_incr` (read, add, write) loses no update.
//! - Writes to an app that does not exist are `NotFound`, checked in the same transaction as
//!   the write, so an app deleted while a script runs leaves no orphan data behind; deleting an
//!   app deletes its KV data in the app's own delete transaction ([`purge_app`]).
//!
//! Does not own: bounds and messages shared with the PostgreSQL store (`super::kv_common`),
//! the catalog tables (`super::embedded`), or the SDK functions (the worker).

use picloud_core::services::{KvLimits, KvStore};
use picloud_core::store::{StoreError, StoreResult};
use redb::{
    Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};
use serde_json::Value;

use super::embedded::{APPS, EmbeddedStore, db_err, successor};
use super::kv_common::{
    app_full, app_not_found, check_key, encode_value, expiry, incr_overflow, is_live,
    not_an_integer, prefix_upper,
};

/// (app, key).
pub(crate) type KvKey = (&'static str, &'static str);
/// (value as JSON text, expires_at_ms).
pub(crate) type KvRow = (&'static str, Option<u64>);
pub(crate) const KV: TableDefinition<KvKey, KvRow> = TableDefinition::new("kv");
pub(crate) const KV_KEYS: TableDefinition<&str, u64> = TableDefinition::new("kv_keys");

/// Deletes every KV row of `app` and its key count, inside `txn` (the app's delete
/// transaction, so both go or neither does).
pub(crate) fn purge_app(txn: &WriteTransaction, app: &str) -> StoreResult<()> {
    let mut kv = txn.open_table(KV).map_err(db_err)?;
    let next = successor(app);
    kv.retain_in((app, "")..(next.as_str(), ""), |_, _| false)
        .map_err(db_err)?;
    let mut keys = txn.open_table(KV_KEYS).map_err(db_err)?;
    keys.remove(app).map_err(db_err)?;
    Ok(())
}

/// The KV tables of one write transaction.
struct Tables<'t> {
    apps: redb::Table<'t, &'static str, &'static str>,
    kv: redb::Table<'t, KvKey, KvRow>,
    keys: redb::Table<'t, &'static str, u64>,
}

/// What an operation did: a change to commit, or none (deleting an absent key).
enum Outcome<T> {
    Changed(T),
    Unchanged(T),
}

/// One KV write waiting for its batch's commit (owned: it crosses to the leader's thread).
pub(crate) enum KvOp {
    Set {
        app: String,
        key: String,
        /// The value's stored form, already checked against the bounds.
        text: String,
        expires: Option<u64>,
        now_ms: u64,
        keys_max: usize,
    },
    Delete {
        app: String,
        key: String,
        now_ms: u64,
    },
    Incr {
        app: String,
        key: String,
        by: i64,
        now_ms: u64,
        keys_max: usize,
    },
}

/// What a [`KvOp`] answers.
#[derive(Debug)]
pub(crate) enum KvReply {
    Set,
    Deleted(bool),
    Incremented(i64),
}

/// The result of one operation inside a batch: the outer error fails the whole batch (the
/// database failed; the transaction is dropped, so aborted), the inner one refuses only this
/// operation, which has then changed nothing (every check runs before the first change).
type Applied = StoreResult<StoreResult<Outcome<KvReply>>>;

impl Tables<'_> {
    fn app_exists(&self, app: &str) -> StoreResult<bool> {
        Ok(self.apps.get(app).map_err(db_err)?.is_some())
    }

    /// The stored row of `key` (live or expired).
    fn row(&self, app: &str, key: &str) -> StoreResult<Option<(String, Option<u64>)>> {
        Ok(self.kv.get((app, key)).map_err(db_err)?.map(|g| {
            let (value, expires) = g.value();
            (value.to_string(), expires)
        }))
    }

    fn count(&self, app: &str) -> StoreResult<u64> {
        Ok(self.keys.get(app).map_err(db_err)?.map_or(0, |g| g.value()))
    }

    fn set_count(&mut self, app: &str, n: u64) -> StoreResult<()> {
        if n == 0 {
            self.keys.remove(app).map_err(db_err)?;
        } else {
            self.keys.insert(app, n).map_err(db_err)?;
        }
        Ok(())
    }

    /// Adds one row to `app`'s count, after making room: if it holds `keys_max` rows, purges
    /// its expired ones first. `false` if it would still be full, and then nothing was
    /// changed (not even a purge): a refused write in a batch leaves no trace for its mates.
    fn add_row(&mut self, app: &str, now_ms: u64, keys_max: usize) -> StoreResult<bool> {
        let max = u64::try_from(keys_max).unwrap_or(u64::MAX);
        let mut rows = self.count(app)?;
        if rows >= max {
            let next = successor(app);
            let range = (app, "")..(next.as_str(), "");
            // Count first (a read), purge only if that makes room: both scans are bounded by
            // the app's rows, at most `keys_max`, and happen only for a full app.
            let mut expired = 0u64;
            for entry in self.kv.range(range.clone()).map_err(db_err)? {
                let (_, v) = entry.map_err(db_err)?;
                if !is_live(v.value().1, now_ms) {
                    expired += 1;
                }
            }
            if rows.saturating_sub(expired) >= max {
                return Ok(false);
            }
            let mut purged = 0u64;
            self.kv
                .retain_in(range, |_, (_, expires)| {
                    let keep = is_live(expires, now_ms);
                    if !keep {
                        purged += 1;
                    }
                    keep
                })
                .map_err(db_err)?;
            rows = rows.saturating_sub(purged);
        }
        self.set_count(app, rows + 1)?;
        Ok(true)
    }

    fn put(&mut self, app: &str, key: &str, value: &str, expires: Option<u64>) -> StoreResult<()> {
        self.kv
            .insert((app, key), (value, expires))
            .map_err(db_err)?;
        Ok(())
    }

    /// Applies one operation, after the ones before it in its batch (so key counts and values
    /// see them).
    fn apply(&mut self, op: &KvOp) -> Applied {
        match op {
            KvOp::Set {
                app,
                key,
                text,
                expires,
                now_ms,
                keys_max,
            } => {
                if !self.app_exists(app)? {
                    return Ok(Err(app_not_found(app)));
                }
                if self.row(app, key)?.is_none() && !self.add_row(app, *now_ms, *keys_max)? {
                    return Ok(Err(app_full(app, *keys_max)));
                }
                self.put(app, key, text, *expires)?;
                Ok(Ok(Outcome::Changed(KvReply::Set)))
            }
            KvOp::Delete { app, key, now_ms } => {
                let Some((_, expires)) = self.row(app, key)? else {
                    return Ok(Ok(Outcome::Unchanged(KvReply::Deleted(false))));
                };
                // An expired row is removed too (its key was written), but was not there to
                // delete.
                self.kv
                    .remove((app.as_str(), key.as_str()))
                    .map_err(db_err)?;
                let rows = self.count(app)?.saturating_sub(1);
                self.set_count(app, rows)?;
                Ok(Ok(Outcome::Changed(KvReply::Deleted(is_live(
                    expires, *now_ms,
                )))))
            }
            KvOp::Incr {
                app,
                key,
                by,
                now_ms,
                keys_max,
            } => {
                if !self.app_exists(app)? {
                    return Ok(Err(app_not_found(app)));
                }
                let old = self.row(app, key)?;
                let (sum, expires) = match &old {
                    Some((text, expires)) if is_live(*expires, *now_ms) => {
                        let current: Value = match serde_json::from_str(text) {
                            Ok(v) => v,
                            Err(e) => {
                                return Ok(Err(StoreError::Internal(format!(
                                    "stored kv value of {key:?}: {e}"
                                ))));
                            }
                        };
                        let current = match current.as_i64() {
                            Some(n) => n,
                            // An integer beyond i64: PostgreSQL's bigint cannot hold it either.
                            None if current.is_u64() => return Ok(Err(incr_overflow(key))),
                            None => return Ok(Err(not_an_integer(key))),
                        };
                        let Some(sum) = current.checked_add(*by) else {
                            return Ok(Err(incr_overflow(key)));
                        };
                        (sum, *expires)
                    }
                    // Absent, or expired (which counts as absent: no value, no TTL).
                    _ => (*by, None),
                };
                if old.is_none() && !self.add_row(app, *now_ms, *keys_max)? {
                    return Ok(Err(app_full(app, *keys_max)));
                }
                self.put(app, key, &sum.to_string(), expires)?;
                Ok(Ok(Outcome::Changed(KvReply::Incremented(sum))))
            }
        }
    }
}

/// Begins the write transaction of a batch, durable on commit.
fn begin_batch(db: &redb::Database) -> StoreResult<WriteTransaction> {
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Internal(format!("setting durability: {e}")))?;
    Ok(txn)
}

/// Runs a batch in `txn`: every operation in order, then one durable commit if any changed
/// something (an abort, and no fsync, otherwise). Returns one result per operation. A refused
/// operation fails alone; a database failure (beginning, applying, committing) fails every
/// operation that was not already refused.
fn run_batch(txn: StoreResult<WriteTransaction>, ops: Vec<KvOp>) -> Vec<StoreResult<KvReply>> {
    let fail_all = |e: StoreError| ops.iter().map(|_| Err(e.clone())).collect();
    let txn = match txn {
        Ok(txn) => txn,
        Err(e) => return fail_all(e),
    };
    let applied = (|| -> StoreResult<(Vec<StoreResult<KvReply>>, bool)> {
        let mut t = Tables {
            apps: txn.open_table(APPS).map_err(db_err)?,
            kv: txn.open_table(KV).map_err(db_err)?,
            keys: txn.open_table(KV_KEYS).map_err(db_err)?,
        };
        let mut results = Vec::with_capacity(ops.len());
        let mut changed = false;
        for op in &ops {
            results.push(match t.apply(op)? {
                Ok(Outcome::Changed(r)) => {
                    changed = true;
                    Ok(r)
                }
                Ok(Outcome::Unchanged(r)) => Ok(r),
                Err(e) => Err(e),
            });
        }
        Ok((results, changed))
    })();
    // On `Err` the tables are dropped and then `txn`: redb aborts an uncommitted transaction.
    let (results, changed) = match applied {
        Ok(r) => r,
        Err(e) => return fail_all(e),
    };
    let finished = if changed {
        txn.commit().map_err(db_err)
    } else {
        txn.abort().map_err(db_err)
    };
    match finished {
        // Acknowledged only now: the commit (and its fsync) has returned.
        Ok(()) => results,
        Err(e) => results
            .into_iter()
            .map(|r| r.and_then(|_| Err(e.clone())))
            .collect(),
    }
}

impl EmbeddedStore {
    /// Runs `op` in the next batch of the KV group committer and returns its own result.
    fn kv_write(&self, op: KvOp) -> StoreResult<KvReply> {
        self.kv_commit()
            .submit(op, || begin_batch(self.database()), run_batch)
    }

    /// The `kv` table for reading, or `None` if no write has created it yet (an empty store).
    fn kv_read(&self) -> StoreResult<Option<ReadOnlyTable<KvKey, KvRow>>> {
        let txn = self.database().begin_read().map_err(db_err)?;
        match txn.open_table(KV) {
            Ok(t) => Ok(Some(t)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(db_err(e)),
        }
    }
}

/// A reply of the wrong kind: a bug of this module, never the caller's fault.
fn wrong_reply(op: &str, reply: &KvReply) -> StoreError {
    StoreError::Internal(format!("kv {op} got the reply {reply:?}"))
}

impl KvStore for EmbeddedStore {
    fn kv_get(&self, app: &str, key: &str, now_ms: u64) -> StoreResult<Option<Value>> {
        let Some(kv) = self.kv_read()? else {
            return Ok(None);
        };
        let Some(guard) = kv.get((app, key)).map_err(db_err)? else {
            return Ok(None);
        };
        let (text, expires) = guard.value();
        if !is_live(expires, now_ms) {
            return Ok(None);
        }
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| StoreError::Internal(format!("stored kv value of {key:?}: {e}")))
    }

    fn kv_set(
        &self,
        app: &str,
        key: &str,
        value: &Value,
        ttl_ms: Option<u64>,
        now_ms: u64,
        limits: &KvLimits,
    ) -> StoreResult<()> {
        check_key(key, limits)?;
        let text = encode_value(value, limits)?;
        let op = KvOp::Set {
            app: app.to_string(),
            key: key.to_string(),
            text,
            expires: expiry(now_ms, ttl_ms),
            now_ms,
            keys_max: limits.keys_max,
        };
        match self.kv_write(op)? {
            KvReply::Set => Ok(()),
            other => Err(wrong_reply("set", &other)),
        }
    }

    fn kv_delete(&self, app: &str, key: &str, now_ms: u64) -> StoreResult<bool> {
        let op = KvOp::Delete {
            app: app.to_string(),
            key: key.to_string(),
            now_ms,
        };
        match self.kv_write(op)? {
            KvReply::Deleted(live) => Ok(live),
            other => Err(wrong_reply("delete", &other)),
        }
    }

    fn kv_list(
        &self,
        app: &str,
        prefix: &str,
        limit: usize,
        now_ms: u64,
    ) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let Some(kv) = self.kv_read()? else {
            return Ok(out);
        };
        // The app's keys starting with `prefix` are exactly [(app, prefix), (app, upper)), or
        // up to the end of the app's range when the prefix has no upper bound.
        let next_app = successor(app);
        let upper = prefix_upper(prefix);
        let range = match &upper {
            Some(u) => kv.range((app, prefix)..(app, u.as_str())),
            None => kv.range((app, prefix)..(next_app.as_str(), "")),
        }
        .map_err(db_err)?;
        for entry in range {
            let (k, v) = entry.map_err(db_err)?;
            let (_, expires) = v.value();
            if is_live(expires, now_ms) {
                out.push(k.value().1.to_string());
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn kv_incr(
        &self,
        app: &str,
        key: &str,
        by: i64,
        now_ms: u64,
        limits: &KvLimits,
    ) -> StoreResult<i64> {
        check_key(key, limits)?;
        let op = KvOp::Incr {
            app: app.to_string(),
            key: key.to_string(),
            by,
            now_ms,
            keys_max: limits.keys_max,
        };
        match self.kv_write(op)? {
            KvReply::Incremented(sum) => Ok(sum),
            other => Err(wrong_reply("incr", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picloud_core::model::AppConfig;
    use picloud_core::store::Store;
    use serde_json::json;
    use std::sync::Arc;

    const NOW: u64 = 1_700_000_000_000;

    /// A writer thread's work: one store call.
    type Writer<T> = Box<dyn FnOnce(&EmbeddedStore) -> T + Send>;

    /// Holds redb's write lock (as a catalog write would) while `writers` queue up behind the
    /// leader, then lets them go: the queued writes are grouped exactly as the bound says.
    fn queued_behind_a_writer<T: Send + 'static>(
        store: &Arc<EmbeddedStore>,
        writers: Vec<Writer<T>>,
    ) -> Vec<T> {
        let n = writers.len();
        let held = store.database().begin_write().expect("write lock");
        // One at a time, so that the queue (and so the batch) holds them in this order.
        let handles: Vec<_> = writers
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let s = store.clone();
                let h = std::thread::spawn(move || w(&s));
                while store.kv_commit().queued() <= i {
                    std::thread::yield_now();
                }
                h
            })
            .collect();
        assert_eq!(store.kv_commit().queued(), n);
        held.abort().expect("abort");
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    }

    fn store_with_app(batch_max: usize) -> (tempfile::TempDir, Arc<EmbeddedStore>) {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store = EmbeddedStore::open(dir.path())
            .expect("open")
            .with_kv_batch_writes_max(batch_max);
        store.put_app("a", &AppConfig::default()).expect("app");
        (dir, Arc::new(store))
    }

    #[test]
    fn queued_writes_share_commits_up_to_the_bound() {
        let (_dir, store) = store_with_app(4);
        let limits = KvLimits::of(&picloud_core::Limits::default());
        let writers = (0..10)
            .map(|i| {
                Box::new(move |s: &EmbeddedStore| {
                    s.kv_set("a", &format!("k{i}"), &json!(i), None, NOW, &limits)
                }) as Writer<StoreResult<()>>
            })
            .collect();
        for r in queued_behind_a_writer(&store, writers) {
            r.expect("set");
        }
        let stats = store.kv_commit_stats();
        assert_eq!(stats.ops, 10);
        assert_eq!(
            stats.batch_ops_largest, 4,
            "the bound is reached, never passed"
        );
        assert_eq!(stats.batches, 3, "10 queued writes in commits of at most 4");
        for i in 0..10 {
            assert_eq!(
                store.kv_get("a", &format!("k{i}"), NOW).expect("get"),
                Some(json!(i))
            );
        }
    }

    /// In one batch, in this order: a delete makes room for two new keys of the four new-key
    /// writes that follow (the app holds 3 of its 4 keys), so the last two of them are refused,
    /// and so are an `incr` of a non-integer and a write to a missing app, each alone: the
    /// other writes of the batch succeed, and the refused ones leave nothing behind.
    #[test]
    fn a_refused_write_fails_alone_in_its_batch() {
        let (_dir, store) = store_with_app(64);
        let limits = KvLimits {
            keys_max: 4,
            ..KvLimits::of(&picloud_core::Limits::default())
        };
        for (k, v) in [("old", json!(1)), ("text", json!("x")), ("gone", json!(1))] {
            store.kv_set("a", k, &v, None, NOW, &limits).expect("set");
        }
        let mut writers: Vec<Writer<StoreResult<KvReply>>> = vec![Box::new(move |s| {
            s.kv_delete("a", "gone", NOW).map(KvReply::Deleted)
        })];
        for i in 0..4 {
            writers.push(Box::new(move |s| {
                s.kv_set("a", &format!("new{i}"), &json!(i), None, NOW, &limits)
                    .map(|()| KvReply::Set)
            }));
        }
        writers.push(Box::new(move |s| {
            s.kv_incr("a", "text", 1, NOW, &limits)
                .map(KvReply::Incremented)
        }));
        writers.push(Box::new(move |s| {
            s.kv_set("nope", "k", &json!(1), None, NOW, &limits)
                .map(|()| KvReply::Set)
        }));
        writers.push(Box::new(move |s| {
            s.kv_set("a", "old", &json!(2), None, NOW, &limits)
                .map(|()| KvReply::Set)
        }));
        let before = store.kv_commit_stats();
        let results = queued_behind_a_writer(&store, writers);
        let after = store.kv_commit_stats();
        assert_eq!(
            after.batches - before.batches,
            1,
            "one commit for all eight"
        );
        assert!(
            matches!(results[0], Ok(KvReply::Deleted(true))),
            "{results:?}"
        );
        assert!(matches!(results[1], Ok(KvReply::Set)), "{results:?}");
        assert!(matches!(results[2], Ok(KvReply::Set)), "{results:?}");
        for r in &results[3..5] {
            assert!(
                matches!(r, Err(StoreError::Invalid(m)) if m.contains("kv keys")),
                "{r:?}"
            );
        }
        assert!(matches!(&results[5], Err(StoreError::Invalid(m)) if m.contains("not an integer")));
        assert!(matches!(&results[6], Err(StoreError::NotFound(_))));
        assert!(matches!(results[7], Ok(KvReply::Set)));
        assert_eq!(store.kv_get("a", "old", NOW).expect("get"), Some(json!(2)));
        assert_eq!(
            store.kv_get("a", "text", NOW).expect("get"),
            Some(json!("x"))
        );
        assert_eq!(store.kv_get("a", "gone", NOW).expect("get"), None);
        assert_eq!(
            store.kv_list("a", "", 100, NOW).expect("list"),
            ["new0", "new1", "old", "text"]
        );
        assert_eq!(store.kv_get("nope", "k", NOW).expect("get"), None);
    }
}
