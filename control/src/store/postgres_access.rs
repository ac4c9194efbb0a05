//! Tokens and the audit log on PostgreSQL: [`AccessStore`] for [`PgStore`], in the
//! `admin_tokens` and `audit_log` tables (migration 0006), shared by every node of a cluster.
//!
//! Owns: the SQL for token records and audit entries, and trimming the audit log to its bound.
//! Does not own: the rules of who may do what (`picloud_core::access`), hashing tokens, or the
//! revision protocol: token writes go through [`PgStore::write`] (revision row lock, bump,
//! NOTIFY), so every node's sync thread publishes the new revision and its admin API reloads
//! its token cache before the next call; audit appends and last-used times are plain writes
//! that change no revision.

use picloud_core::access::{AccessStore, AppScope, AuditEntry, Role, TokenRecord};
use picloud_core::store::{StoreError, StoreResult};
use postgres::Row;

use super::PgStore;
use super::kv_common::corrupt;
use super::postgres::{Db, Outcome, col, pg_err, to_i64, to_u64};

fn token_from_row(r: &Row) -> StoreResult<TokenRecord> {
    let role: String = col(r, 1)?;
    let apps: String = col(r, 2)?;
    Ok(TokenRecord {
        name: col(r, 0)?,
        role: Role::parse(&role).ok_or_else(|| corrupt("token role", &role))?,
        apps: serde_json::from_str::<AppScope>(&apps).map_err(|e| corrupt("token apps", e))?,
        hash: col(r, 3)?,
        created_at_ms: to_u64(col(r, 4)?),
        last_used_at_ms: col::<Option<i64>>(r, 5)?.map(to_u64),
    })
}

const INSERT_TOKEN_SQL: &str = "INSERT INTO admin_tokens (name, role, apps, hash, created_at_ms)
     VALUES ($1, $2, $3::text::jsonb, $4, $5)";

/// Unchanged tokens are left alone, so a restart with the same configured token bumps no
/// revision.
const REPLACE_TOKEN_SQL: &str = "INSERT INTO admin_tokens (name, role, apps, hash, created_at_ms)
     VALUES ($1, $2, $3::text::jsonb, $4, $5)
     ON CONFLICT (name) DO UPDATE
        SET role = EXCLUDED.role, apps = EXCLUDED.apps, hash = EXCLUDED.hash
        WHERE (admin_tokens.role, admin_tokens.apps, admin_tokens.hash)
              IS DISTINCT FROM (EXCLUDED.role, EXCLUDED.apps, EXCLUDED.hash)";

/// Runs `sql` ([`INSERT_TOKEN_SQL`] or [`REPLACE_TOKEN_SQL`]) for `token`: the one place the
/// column list meets its parameters. Answers the rows written.
fn insert_token(db: &mut Db<'_>, token: &TokenRecord, sql: &'static str) -> StoreResult<u64> {
    let apps = serde_json::to_string(&token.apps).map_err(|e| corrupt("token apps", e))?;
    db.execute(
        sql,
        &[
            &token.name,
            &token.role.as_str(),
            &apps,
            &token.hash,
            &to_i64(token.created_at_ms)?,
        ],
    )
    .map_err(|e| match pg_err(e) {
        StoreError::Conflict(_) => {
            StoreError::Conflict(format!("a token named {:?} exists", token.name))
        }
        other => other,
    })
}

fn audit_from_row(r: &Row) -> StoreResult<AuditEntry> {
    let details: String = col(r, 7)?;
    Ok(AuditEntry {
        id: to_u64(col(r, 0)?),
        ts_ms: to_u64(col(r, 1)?),
        token: col(r, 2)?,
        node: col(r, 3)?,
        method: col(r, 4)?,
        path: col(r, 5)?,
        app: col(r, 6)?,
        details: serde_json::from_str(&details).map_err(|e| corrupt("audit details", e))?,
        revision: col::<Option<i64>>(r, 8)?.map(to_u64),
        status: u16::try_from(col::<i32>(r, 9)?).unwrap_or(0),
        code: col(r, 10)?,
    })
}

impl AccessStore for PgStore {
    fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.with_db(|db| {
            db.query(
                "SELECT name, role, apps::text, hash, created_at_ms, last_used_at_ms
                   FROM admin_tokens ORDER BY name",
                &[],
            )
            .map_err(pg_err)?
            .iter()
            .map(token_from_row)
            .collect()
        })
    }

    fn create_token(&self, token: &TokenRecord) -> StoreResult<u64> {
        let ((), revision) = self.write(|db, _| {
            insert_token(db, token, INSERT_TOKEN_SQL)?;
            Ok(Outcome::Changed {
                value: (),
                app: None,
            })
        })?;
        Ok(revision)
    }

    fn replace_token(&self, token: &TokenRecord) -> StoreResult<bool> {
        let (changed, _) = self.write(|db, _| {
            let n = insert_token(db, token, REPLACE_TOKEN_SQL)?;
            Ok(if n == 0 {
                Outcome::Unchanged(false)
            } else {
                Outcome::Changed {
                    value: true,
                    app: None,
                }
            })
        })?;
        Ok(changed)
    }

    fn delete_token(&self, name: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|db, _| {
            let n = db
                .execute("DELETE FROM admin_tokens WHERE name = $1", &[&name])
                .map_err(pg_err)?;
            Ok(if n == 0 {
                Outcome::Unchanged(false)
            } else {
                Outcome::Changed {
                    value: true,
                    app: None,
                }
            })
        })?;
        Ok(deleted)
    }

    fn token_used(&self, name: &str, at_ms: u64) -> StoreResult<()> {
        let at = to_i64(at_ms)?;
        self.with_db(|db| {
            db.execute(
                "UPDATE admin_tokens SET last_used_at_ms = $2 WHERE name = $1",
                &[&name, &at],
            )
            .map_err(pg_err)?;
            Ok(())
        })
    }

    fn append_audit(&self, entry: &AuditEntry, entries_max: usize) -> StoreResult<u64> {
        let details = entry.details.to_string();
        let keep = i64::try_from(entries_max.max(1)).unwrap_or(i64::MAX);
        let revision = entry.revision.map(to_i64).transpose()?;
        // One statement: the insert, and the trim of everything older than the newest
        // `keep`. Ids come from a sequence, so every entry with an id at or below `id - keep`
        // is older than the newest `keep` (gaps from rolled-back inserts only keep fewer); the
        // delete sees the table as it was before the insert, which it would keep anyway.
        self.with_db(|db| {
            let id: i64 = db
                .query_one(
                    "WITH entry AS (
                         INSERT INTO audit_log
                           (ts_ms, token, node, method, path, app, details, revision, status, code)
                         VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10)
                         RETURNING id
                     ), trimmed AS (
                         DELETE FROM audit_log WHERE id <= (SELECT id FROM entry) - $11::bigint
                     )
                     SELECT id FROM entry",
                    &[
                        &to_i64(entry.ts_ms)?,
                        &entry.token,
                        &entry.node,
                        &entry.method,
                        &entry.path,
                        &entry.app,
                        &details,
                        &revision,
                        &i32::from(entry.status),
                        &entry.code,
                        &keep,
                    ],
                )
                .and_then(|r| r.try_get(0))
                .map_err(pg_err)?;
            Ok(to_u64(id))
        })
    }

    fn audit(&self, after: Option<u64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_db(|db| {
            let rows = match after {
                Some(after) => db.query(
                    "SELECT id, ts_ms, token, node, method, path, app, details::text, revision,
                            status, code
                       FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&to_i64(after)?, &limit],
                ),
                None => db.query(
                    "SELECT * FROM (
                         SELECT id, ts_ms, token, node, method, path, app, details::text,
                                revision, status, code
                           FROM audit_log ORDER BY id DESC LIMIT $1
                     ) AS newest ORDER BY id",
                    &[&limit],
                ),
            }
            .map_err(pg_err)?;
            rows.iter().map(audit_from_row).collect()
        })
    }
}
