//! PostgreSQL schema migrations: the numbered SQL files of `migrations/`, embedded in the binary
//! and applied forward-only.
//!
//! Owns: the list of migrations ([`MIGRATIONS`]), the `picloud_migrations` table that records
//! which ones ran (with a checksum of each file), and [`apply`], which runs the pending ones,
//! each in its own transaction, under a PostgreSQL advisory lock so that nodes starting together
//! do not race (the second waits, then finds nothing to do).
//! Does not own: the schema's meaning (the SQL files and `postgres.rs`), connecting, or when
//! to migrate (`picloud migrate` and `picloud serve` both call [`apply`]).
//!
//! Rules: a released file is never edited (a checksum mismatch stops the node rather than
//! leaving databases that ran different SQL under one number), and a database that has run a
//! migration this binary does not know is refused (an older binary must not serve a newer
//! schema it does not understand).

use picloud_core::{StoreError, StoreResult};
use postgres::Client;

use super::postgres::pg_err;

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number, from the file name's prefix; applied in increasing order.
    pub version: i32,
    /// The file name under `migrations/`.
    pub name: &'static str,
    /// The SQL, run as one transaction.
    pub sql: &'static str,
}

/// Every migration, in order. A test checks this matches the files in `migrations/`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_initial.sql",
        sql: include_str!("../../../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "0002_script_imports.sql",
        sql: include_str!("../../../migrations/0002_script_imports.sql"),
    },
    Migration {
        version: 3,
        name: "0003_kv.sql",
        sql: include_str!("../../../migrations/0003_kv.sql"),
    },
    Migration {
        version: 4,
        name: "0004_invocations.sql",
        sql: include_str!("../../../migrations/0004_invocations.sql"),
    },
    Migration {
        version: 5,
        name: "0005_env_schedules_triggers.sql",
        sql: include_str!("../../../migrations/0005_env_schedules_triggers.sql"),
    },
    Migration {
        version: 6,
        name: "0006_tokens_audit.sql",
        sql: include_str!("../../../migrations/0006_tokens_audit.sql"),
    },
];

/// Key of the session-level advisory lock held while migrating: "picloud" in ASCII. Any other
/// user of advisory locks in the same database should pick a different key.
pub const ADVISORY_LOCK_KEY: i64 = 0x0070_6963_6c6f_7564;

/// Applies every pending migration and returns the versions applied now (empty when the
/// database was up to date). Safe to call from several nodes at once.
pub fn apply(client: &mut Client) -> StoreResult<Vec<i32>> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&ADVISORY_LOCK_KEY])
        .map_err(pg_err)?;
    let result = apply_locked(client);
    // A dead connection releases the lock by itself; otherwise release it now, even after a
    // failed migration, so the next node gets a clear error rather than a hang.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&ADVISORY_LOCK_KEY]);
    let applied = result?;
    unlocked.map_err(pg_err)?;
    Ok(applied)
}

fn apply_locked(client: &mut Client) -> StoreResult<Vec<i32>> {
    // Under the lock, so two first starts cannot both try to create it. Checked first rather
    // than `IF NOT EXISTS`, which makes the server send a notice on every start.
    let exists: bool = client
        .query_one("SELECT to_regclass('picloud_migrations') IS NOT NULL", &[])
        .and_then(|r| r.try_get(0))
        .map_err(pg_err)?;
    if !exists {
        client
            .batch_execute(
                "CREATE TABLE picloud_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 checksum   text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
            )
            .map_err(pg_err)?;
    }
    let rows = client
        .query(
            "SELECT version, name, checksum FROM picloud_migrations ORDER BY version",
            &[],
        )
        .map_err(pg_err)?;
    let mut done = Vec::new();
    for row in &rows {
        let version: i32 = row.try_get(0).map_err(pg_err)?;
        let name: String = row.try_get(1).map_err(pg_err)?;
        let checksum: String = row.try_get(2).map_err(pg_err)?;
        let Some(known) = MIGRATIONS.iter().find(|m| m.version == version) else {
            return Err(StoreError::Internal(format!(
                "the database has migration {version} ({name}), which this picloud does not \
                 know (it knows up to {}): run a newer picloud",
                MIGRATIONS.last().map_or(0, |m| m.version)
            )));
        };
        if checksum != picloud_core::content_hash(known.sql) {
            return Err(StoreError::Internal(format!(
                "migration {version} ({name}) differs from the one applied to this database; \
                 released migrations must never be edited"
            )));
        }
        done.push(version);
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        let mut tx = client.transaction().map_err(pg_err)?;
        tx.batch_execute(m.sql).map_err(|e| {
            let e = pg_err(e);
            StoreError::Internal(format!("migration {} failed: {e}", m.name))
        })?;
        tx.execute(
            "INSERT INTO picloud_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &picloud_core::content_hash(m.sql)],
        )
        .map_err(pg_err)?;
        tx.commit().map_err(pg_err)?;
        log::info!("applied migration {}", m.name);
        applied.push(m.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `migrations/NNNN_*.sql` file is embedded, in order, with its number, and nothing
    /// else is: a file added to the folder but not to [`MIGRATIONS`] would silently never run.
    #[test]
    fn the_list_matches_the_folder() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("migrations dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version as usize,
                i + 1,
                "{} is numbered in sequence",
                m.name
            );
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
            let on_disk = std::fs::read_to_string(dir.join(m.name)).expect("read");
            assert_eq!(on_disk, m.sql);
        }
    }
}
