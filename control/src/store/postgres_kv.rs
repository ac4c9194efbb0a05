//! The per-app key-value store ([`KvStore`]) on PostgreSQL: [`PgKv`], the table `kv`
//! (`migrations/0003_kv.sql`) and a small connection pool of its own.
//!
//! Owns: the pool and the SQL of every KV operation, keeping the trait's rules
//! (`picloud_core::services`) across every node of a cluster:
//! - Connections: engine threads call concurrently, so `PgKv` keeps up to `connections_max`
//!   connections (application_name `picloud-kv`), opened lazily, reused from an idle list, and
//!   never shared between calls. A call that finds them all busy waits for one, at most the
//!   connect timeout (then `Unavailable`); sized to the engine threads, it never waits. A
//!   connection that failed is dropped (the next call opens a new one); one idle for longer
//!   than [`IDLE_CHECK_AFTER`] is checked with an empty round trip first, so a server restart
//!   does not fail the first call on each kept connection. Connection errors are `Unavailable`.
//!   It never uses [`super::PgStore`]'s admin connection (one, serialised, for catalog writes).
//!   Each connection keeps the statements it has prepared ([`super::postgres::Conn`]), dropped
//!   with it: `kv_get` is then one round trip (bind and execute, no planning of new text),
//!   `kv_set` of an existing key three (begin, upsert, commit).
//! - `kv_incr` is one `INSERT … ON CONFLICT … DO UPDATE … RETURNING`: PostgreSQL locks the
//!   row for the update, so concurrent increments from any connection or node serialise on it
//!   and none is lost; an expired value counts as 0 (and loses its TTL) inside the same
//!   statement. A live value that is not an integer fails the update's `WHERE`, so the
//!   statement returns no row and the call is `Invalid`; an overflow is PostgreSQL's own range
//!   error (SQLSTATE 22003), also `Invalid`.
//! - `keys_max`, race-free without a counter row: a write that adds a row (the upsert reports
//!   `xmax = 0`, i.e. it inserted) then, in the same transaction, takes the app's transaction
//!   advisory lock, purges the app's expired rows and counts the rest (at most `keys_max + 1`
//!   of them, so the cost is bounded); over the limit, it rolls back and is `Invalid`. Every
//!   transaction that adds a row checks under the lock before it commits, and a transaction
//!   releases the lock only after its rows are visible, so each check sees every row added
//!   before it: two nodes cannot both take the last slot. Overwrites (also of an expired row,
//!   which adds no row) take no lock. Rows therefore never exceed `keys_max` when one is
//!   added, so neither do live keys (a lowered `keys_max` applies to new rows).
//! - Expiry: rows with `expires_at_ms <= now` are never returned; they are removed when their
//!   key is written or deleted, or by the purge when the app adds a key. No timer.
//! - Writes to an app that does not exist are `NotFound` (the foreign key); deleting the app
//!   deletes its rows by cascade in the app's own delete transaction.
//! - No KV write touches `picloud_revision` or sends a notification: KV is data, not catalog.
//!
//! Does not own: the schema (`migrations/`, applied when [`super::PgStore`] connects), bounds
//! and messages shared with the embedded store (`super::kv_common`), or the SDK functions.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use picloud_core::Limits;
use picloud_core::services::{KvLimits, KvStore};
use picloud_core::store::{StoreError, StoreResult};
use std::sync::atomic::AtomicU64;

use postgres::Config;
use postgres::error::SqlState;
use serde_json::Value;

use super::PgStore;
use super::kv_common::{
    app_full, app_not_found, check_key, encode_value, expiry, incr_overflow, not_an_integer,
    prefix_upper,
};
use super::postgres::{BEGIN, Conn, Db, connect, pg_err};

/// `application_name` of the KV connections (visible in `pg_stat_activity`).
pub const KV_APPLICATION_NAME: &str = "picloud-kv";

/// A kept connection idle for longer than this is checked with an empty round trip before use.
pub const IDLE_CHECK_AFTER: Duration = Duration::from_secs(10);

/// First key of the two-key advisory locks that guard an app's new keys ("kv" in ASCII); the
/// second is `hashtext(app)`. Two-key locks never collide with the single 64-bit key the
/// migrations use. Two apps whose names hash alike merely share a lock.
pub const KV_LOCK_CLASS: i32 = 0x6b76;

/// The KV store on PostgreSQL, with its own bounded pool of connections.
pub struct PgKv {
    config: Config,
    connections_max: usize,
    /// How long a call waits for a free connection, and the bound of a liveness check.
    wait: Duration,
    pool: Mutex<Pool>,
    /// Signalled when a connection goes back to the idle list or is forgotten.
    freed: Condvar,
    /// Round trips made on the pool's connections, for tests and bench/.
    round_trips: AtomicU64,
}

struct Pool {
    /// Connections not in use (each with its prepared statements), with the time each was
    /// returned.
    idle: Vec<(Conn, Instant)>,
    /// Connections open: idle plus in use plus being opened.
    open: usize,
}

impl std::fmt::Debug for PgKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("connections_max", &self.connections_max)
            .finish()
    }
}

/// A connection lent to one call. Dropped without [`Lease::give_back`] (the call failed with
/// `Unavailable`, or panicked), the connection is closed and its slot freed.
struct Lease<'p> {
    kv: &'p PgKv,
    client: Option<Conn>,
}

impl Lease<'_> {
    fn give_back(mut self) {
        if let Some(mut client) = self.client.take() {
            if client.client().is_closed() {
                self.kv.forget();
                return;
            }
            self.kv.pool.lock().idle.push((client, Instant::now()));
            self.kv.freed.notify_one();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.client.take().is_some() {
            self.kv.forget();
        }
    }
}

impl PgKv {
    /// A KV store on `store`'s database (whose migrations `store` has applied), keeping at most
    /// `connections_max` connections (at least 1; the node passes its engine thread count).
    /// Connects lazily: nothing is opened until the first call.
    pub fn new(store: &PgStore, connections_max: usize, limits: &Limits) -> PgKv {
        let mut config = store.config().clone();
        config.application_name(KV_APPLICATION_NAME);
        PgKv {
            config,
            connections_max: connections_max.max(1),
            wait: Duration::from_millis(limits.db_connect_timeout_ms),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            round_trips: AtomicU64::new(0),
        }
    }

    /// Round trips made on the pool's connections (not counting connection set-up), for tests
    /// and bench/.
    #[doc(hidden)]
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections open now (idle or in use), for tests and metrics.
    pub fn connections_open(&self) -> usize {
        self.pool.lock().open
    }

    /// Frees the slot of a connection that is gone.
    fn forget(&self) {
        let mut pool = self.pool.lock();
        pool.open = pool.open.saturating_sub(1);
        drop(pool);
        self.freed.notify_one();
    }

    /// A connection for one call: an idle one, a new one if below the bound, or the next one
    /// freed, waiting at most `wait`. Connecting happens outside the pool's lock.
    fn lease(&self) -> StoreResult<Lease<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut pool = self.pool.lock();
        loop {
            if let Some((mut client, since)) = pool.idle.pop() {
                drop(pool);
                let alive = !client.client().is_closed()
                    && (since.elapsed() < IDLE_CHECK_AFTER || {
                        self.round_trips
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        client.client().is_valid(self.wait).is_ok()
                    });
                if alive {
                    return Ok(Lease {
                        kv: self,
                        client: Some(client),
                    });
                }
                drop(client);
                self.forget();
                pool = self.pool.lock();
                continue;
            }
            if pool.open < self.connections_max {
                pool.open += 1;
                drop(pool);
                return match connect(&self.config) {
                    Ok(client) => Ok(Lease {
                        kv: self,
                        client: Some(Conn::new(client)),
                    }),
                    Err(e) => {
                        self.forget();
                        Err(e)
                    }
                };
            }
            if self.freed.wait_until(&mut pool, deadline).timed_out() {
                return Err(StoreError::Unavailable(format!(
                    "all {} kv connections stayed busy for {} ms",
                    self.connections_max,
                    self.wait.as_millis()
                )));
            }
        }
    }

    /// Runs `f` on a leased connection (its statements prepared once per connection, see
    /// [`Db`]), giving it back unless the call found it broken.
    fn with_client<T>(&self, f: impl FnOnce(&mut Db<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut lease = self.lease()?;
        let Some(conn) = lease.client.as_mut() else {
            return Err(StoreError::Internal("leased no connection".into()));
        };
        let mut db = conn.db(&self.round_trips);
        let result = f(&mut db);
        drop(db);
        if !matches!(result, Err(StoreError::Unavailable(_))) {
            lease.give_back();
        }
        result
    }
}

/// A PostgreSQL error of a KV call on `app`: a foreign-key violation means the app is gone.
fn kv_err(app: &str) -> impl Fn(postgres::Error) -> StoreError + '_ {
    move |e| {
        if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
            app_not_found(app)
        } else {
            pg_err(e)
        }
    }
}

/// `u64` milliseconds as `bigint`, clamped (no clock reaches `i64::MAX` ms).
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `usize` as `bigint`, clamped.
fn big(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// After a write in `tx` added a row to `app`: under the app's advisory lock, purges the app's
/// expired rows and refuses (`Invalid`) if more than `keys_max` remain (see module docs).
fn check_room(tx: &mut Db<'_>, app: &str, now_ms: u64, keys_max: usize) -> StoreResult<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))",
        &[&KV_LOCK_CLASS, &app],
    )
    .map_err(pg_err)?;
    // A new statement, so a new snapshot: it sees every row committed by earlier lock holders.
    // The DELETE runs although nothing reads it; the count, from the statement's snapshot,
    // counts exactly the rows it leaves (the live ones, ours included).
    let live: i64 = tx
        .query_one(
            "WITH purged AS (DELETE FROM kv WHERE app = $1 AND expires_at_ms <= $2)
             SELECT count(*) FROM (
                 SELECT 1 FROM kv
                 WHERE app = $1 AND (expires_at_ms IS NULL OR expires_at_ms > $2)
                 LIMIT $3
             ) AS live",
            &[&app, &ms(now_ms), &big(keys_max).saturating_add(1)],
        )
        .and_then(|r| r.try_get(0))
        .map_err(pg_err)?;
    if live > big(keys_max) {
        return Err(app_full(app, keys_max));
    }
    Ok(())
}

const SET_SQL: &str = "INSERT INTO kv AS k (app, key, value, expires_at_ms)
     VALUES ($1, $2, ($3::text)::jsonb, $4)
     ON CONFLICT (app, key) DO UPDATE
         SET value = EXCLUDED.value, expires_at_ms = EXCLUDED.expires_at_ms
     RETURNING (xmax = 0)";

/// An expired value counts as absent: the sum starts from 0 and the TTL goes. A live value must
/// be an integer (jsonb prints one as digits only); otherwise the WHERE fails and no row is
/// returned.
const INCR_SQL: &str = "INSERT INTO kv AS k (app, key, value, expires_at_ms)
     VALUES ($1, $2, to_jsonb($3::bigint), NULL)
     ON CONFLICT (app, key) DO UPDATE
         SET value = CASE WHEN k.expires_at_ms <= $4 THEN to_jsonb($3::bigint)
                          ELSE to_jsonb((k.value::text)::bigint + $3::bigint) END,
             expires_at_ms = CASE WHEN k.expires_at_ms <= $4 THEN NULL
                                  ELSE k.expires_at_ms END
         WHERE k.expires_at_ms <= $4
            OR (jsonb_typeof(k.value) = 'number' AND k.value::text ~ '^-?[0-9]+$')
     RETURNING (k.value::text)::bigint, (xmax = 0)";

impl KvStore for PgKv {
    fn kv_get(&self, app: &str, key: &str, now_ms: u64) -> StoreResult<Option<Value>> {
        // One statement, no transaction: one round trip once the connection has it prepared.
        let text: Option<String> = self.with_client(|c| {
            c.query_opt(
                "SELECT value::text FROM kv WHERE app = $1 AND key = $2
                   AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
                &[&app, &key, &ms(now_ms)],
            )
            .map_err(pg_err)?
            .map(|r| r.try_get(0).map_err(pg_err))
            .transpose()
        })?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Internal(format!("stored kv value of {key:?}: {e}")))
        })
        .transpose()
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
        let expires = expiry(now_ms, ttl_ms).map(ms);
        self.with_client(|tx| {
            tx.begin(BEGIN).map_err(pg_err)?;
            let inserted: bool = tx
                .query_one(SET_SQL, &[&app, &key, &text, &expires])
                .and_then(|r| r.try_get(0))
                .map_err(kv_err(app))?;
            if inserted {
                check_room(tx, app, now_ms, limits.keys_max)?;
            }
            tx.commit().map_err(pg_err)
        })
    }

    fn kv_delete(&self, app: &str, key: &str, now_ms: u64) -> StoreResult<bool> {
        self.with_client(|c| {
            // An expired row is removed too (its key was written), but was not there to delete.
            let row = c
                .query_opt(
                    "DELETE FROM kv WHERE app = $1 AND key = $2
                     RETURNING (expires_at_ms IS NULL OR expires_at_ms > $3)",
                    &[&app, &key, &ms(now_ms)],
                )
                .map_err(pg_err)?;
            match row {
                None => Ok(false),
                Some(r) => r.try_get(0).map_err(pg_err),
            }
        })
    }

    fn kv_list(
        &self,
        app: &str,
        prefix: &str,
        limit: usize,
        now_ms: u64,
    ) -> StoreResult<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A range on the primary key rather than LIKE: no escaping, so `%`, `_` and `\` in a
        // prefix are literal, and the index is used whatever the plan.
        let upper = prefix_upper(prefix);
        self.with_client(|c| {
            let rows = match &upper {
                Some(upper) => c.query(
                    "SELECT key FROM kv
                     WHERE app = $1 AND key >= $2 AND key < $5
                       AND (expires_at_ms IS NULL OR expires_at_ms > $3)
                     ORDER BY key LIMIT $4",
                    &[&app, &prefix, &ms(now_ms), &big(limit), upper],
                ),
                None => c.query(
                    "SELECT key FROM kv
                     WHERE app = $1 AND key >= $2
                       AND (expires_at_ms IS NULL OR expires_at_ms > $3)
                     ORDER BY key LIMIT $4",
                    &[&app, &prefix, &ms(now_ms), &big(limit)],
                ),
            }
            .map_err(pg_err)?;
            rows.iter().map(|r| r.try_get(0).map_err(pg_err)).collect()
        })
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
        self.with_client(|tx| {
            tx.begin(BEGIN).map_err(pg_err)?;
            let row = tx
                .query_opt(INCR_SQL, &[&app, &key, &by, &ms(now_ms)])
                .map_err(|e| {
                    if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) {
                        incr_overflow(key)
                    } else {
                        kv_err(app)(e)
                    }
                })?;
            let Some(row) = row else {
                return Err(not_an_integer(key));
            };
            let sum: i64 = row.try_get(0).map_err(pg_err)?;
            let inserted: bool = row.try_get(1).map_err(pg_err)?;
            if inserted {
                check_room(tx, app, now_ms, limits.keys_max)?;
            }
            tx.commit().map_err(pg_err)?;
            Ok(sum)
        })
    }
}
