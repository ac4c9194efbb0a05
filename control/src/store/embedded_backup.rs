//! Backing up and restoring the embedded store: a consistent copy of the whole redb file taken
//! by the node that owns it ([`EmbeddedStore::backup_to`]), checking such a copy
//! ([`inspect_backup`]) and putting one into place in a data directory while no node runs
//! ([`restore`]).
//!
//! Owns: the list of tables a backup copies (every table of every service in the file:
//! catalog, tokens, audit, KV, invocation records), the rule that a table it does not know
//! fails the backup instead of being left out, and the file steps of a restore (stage, check,
//! fsync, rename).
//! Does not own: the tables' layouts (`embedded.rs`, `embedded_kv.rs`, `embedded_logs.rs`),
//! sending the copy (the admin route, `crate::admin`), or saving it on the client
//! (`crate::cli::backup`). PostgreSQL is backed up with `pg_dump`, not here.
//!
//! Why a table-by-table copy and not a byte copy of `picloud.redb`: redb lets one process open
//! the file, and while the node runs, writers keep updating the file's header and pages; a byte
//! copy could pair a header with pages of another commit. One read transaction sees one commit
//! of every table (redb keeps the pages it reads alive until it ends), so copying every table
//! inside it gives a file at exactly one revision, while writers carry on. The price: pages
//! the snapshot still reads cannot be reused until the copy ends, so `picloud.redb` may grow by
//! what is written meanwhile (space redb reuses afterwards).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use picloud_core::Store;
use picloud_core::store::{StoreError, StoreResult};
use redb::{
    Durability, Key, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};

use super::embedded::{
    APPS, AUDIT, DB_FILE_NAME, ENV, EmbeddedStore, HOSTS, IMPORTS, LEGACY_ADMIN_TOKENS, META,
    META_REVISION, META_SCHEMA_VERSION, ROUTES, SCHEDULE_RUNS, SCHEDULES, SCHEMA_VERSION, SCRIPTS,
    TOKENS, TRIGGERS, VERSIONS, db_err,
};
use super::embedded_kv::{KV, KV_KEYS};
use super::embedded_logs::{INVOCATION_META, INVOCATION_SEQS, INVOCATIONS};

/// redb page cache of the copy being written: it is written once, front to back, so a small
/// cache does; the node's own cache stays the one that matters for memory.
const COPY_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Name of the staging folder a restore copies into, inside the target data directory (same
/// file system, so the final rename is atomic).
const RESTORE_STAGING: &str = ".picloud-restore";

/// What a backup file holds, as far as a restore needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The catalog revision of the snapshot.
    pub revision: u64,
    /// The table layout version it was written with.
    pub schema_version: u64,
    /// The file's size.
    pub bytes: u64,
    /// Tables copied (tables a service had not created yet are absent, not empty).
    pub tables: usize,
}

/// Copies `def` from `src` into `dst`; `false` if `src` has no such table (KV and invocation
/// tables appear with their first write).
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> StoreResult<bool> {
    let from = match src.open_table(def) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(false),
        Err(e) => return Err(db_err(e)),
    };
    let mut to = dst.open_table(def).map_err(db_err)?;
    for entry in from.iter().map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        to.insert(k.value(), v.value()).map_err(db_err)?;
    }
    Ok(true)
}

/// Copies every known table; returns the names of the known tables (copied or absent).
fn copy_all(src: &ReadTransaction, dst: &WriteTransaction) -> StoreResult<(Vec<String>, usize)> {
    let mut known = Vec::new();
    let mut copied = 0;
    macro_rules! copy {
        ($($def:expr),* $(,)?) => {$(
            known.push($def.name().to_string());
            if copy_table(src, dst, $def)? {
                copied += 1;
            }
        )*};
    }
    copy!(
        META,
        APPS,
        SCRIPTS,
        VERSIONS,
        ROUTES,
        HOSTS,
        LEGACY_ADMIN_TOKENS,
        TOKENS,
        AUDIT,
        IMPORTS,
        ENV,
        SCHEDULES,
        TRIGGERS,
        SCHEDULE_RUNS,
        KV,
        KV_KEYS,
        INVOCATIONS,
        INVOCATION_SEQS,
        INVOCATION_META,
    );
    Ok((known, copied))
}

fn meta_value(txn: &ReadTransaction, key: &str) -> StoreResult<Option<u64>> {
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_err(e)),
    };
    Ok(meta.get(key).map_err(db_err)?.map(|g| g.value()))
}

impl EmbeddedStore {
    /// Writes a consistent copy of the whole database (every table, one read transaction, so
    /// one revision) to a new redb file at `dest`, which must not exist. Writers are not held
    /// up: redb runs them beside a read transaction. Fails with `Internal` if the file holds a
    /// table this code does not know (a table added without adding it to the backup must not
    /// be silently left out).
    pub fn backup_to(&self, dest: &Path) -> StoreResult<BackupInfo> {
        let src = self.database().begin_read().map_err(db_err)?;
        let known_names = {
            let mut names = Vec::new();
            for t in src.list_tables().map_err(db_err)? {
                names.push(t.name().to_string());
            }
            names
        };
        if src.list_multimap_tables().map_err(db_err)?.next().is_some() {
            return Err(StoreError::Internal(
                "the database has a multimap table the backup does not know".into(),
            ));
        }
        if dest.exists() {
            return Err(StoreError::Internal(format!(
                "backup target {} already exists",
                dest.display()
            )));
        }
        let db = redb::Builder::new()
            .set_cache_size(COPY_CACHE_BYTES)
            .create(dest)
            .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dest.display())))?;
        let mut dst = db.begin_write().map_err(db_err)?;
        dst.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Internal(format!("setting durability: {e}")))?;
        let (known, tables) = copy_all(&src, &dst)?;
        if let Some(unknown) = known_names.iter().find(|n| !known.contains(n)) {
            return Err(StoreError::Internal(format!(
                "the database has a table {unknown:?} the backup does not know"
            )));
        }
        let revision = meta_value(&src, META_REVISION)?.unwrap_or(0);
        let schema_version = meta_value(&src, META_SCHEMA_VERSION)?.unwrap_or(SCHEMA_VERSION);
        dst.commit().map_err(db_err)?;
        drop(src);
        drop(db);
        let bytes = fs::metadata(dest)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dest.display())))?
            .len();
        Ok(BackupInfo {
            revision,
            schema_version,
            bytes,
            tables,
        })
    }
}

/// Opens `file` read-only (it is never changed) and checks it is a PiCloud store this version
/// can open: a redb file with a `meta` table and a known schema version (1 to
/// [`SCHEMA_VERSION`]; older ones are upgraded when a node opens them).
pub fn inspect_backup(file: &Path) -> StoreResult<BackupInfo> {
    let bytes = fs::metadata(file)
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", file.display())))?
        .len();
    let not_ours = |why: String| {
        StoreError::Internal(format!("{} is not a PiCloud backup: {why}", file.display()))
    };
    // An empty file would be taken for a new database by a writable open: refuse it first.
    if bytes == 0 {
        return Err(not_ours("the file is empty".into()));
    }
    let db = ReadOnlyDatabase::open(file).map_err(|e| not_ours(e.to_string()))?;
    let txn = db.begin_read().map_err(|e| not_ours(e.to_string()))?;
    let schema_version = meta_value(&txn, META_SCHEMA_VERSION)?
        .ok_or_else(|| not_ours("no schema version".into()))?;
    if !(1..=SCHEMA_VERSION).contains(&schema_version) {
        return Err(not_ours(format!(
            "schema version {schema_version}; this picloud understands 1 to {SCHEMA_VERSION}"
        )));
    }
    let revision = meta_value(&txn, META_REVISION)?.unwrap_or(0);
    let mut tables = 0;
    for _ in txn.list_tables().map_err(db_err)? {
        tables += 1;
    }
    Ok(BackupInfo {
        revision,
        schema_version,
        bytes,
        tables,
    })
}

fn io_err(what: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", what.display()))
}

/// Whether `dir` holds anything besides a leftover restore staging folder.
fn has_entries(dir: &Path) -> StoreResult<bool> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| io_err(dir, e))?;
                if entry.file_name() != RESTORE_STAGING {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(dir, e)),
    }
}

/// Puts the backup `file` into place as `dir`'s store, for a node that is stopped. Refuses a
/// `dir` with anything in it unless `force` (which replaces `picloud.redb` and leaves other
/// files), and refuses a `dir` whose store a running node holds even then. The file is
/// checked ([`inspect_backup`]), copied into a staging folder inside `dir`, opened there as a
/// store (schema upgrade included) and read in full once, fsynced, and only then renamed over
/// `dir/picloud.redb`: a failure at any step leaves `dir`'s store as it was.
pub fn restore(file: &Path, dir: &Path, force: bool) -> StoreResult<BackupInfo> {
    let info = inspect_backup(file)?;
    if has_entries(dir)? && !force {
        return Err(StoreError::Conflict(format!(
            "{} is not empty; restore into an empty directory, or pass --force to replace its \
             {DB_FILE_NAME}",
            dir.display()
        )));
    }
    let target = dir.join(DB_FILE_NAME);
    if target.exists() {
        // A running node holds redb's lock on its file: opening it here fails, and replacing
        // a file a node is using would lose that node's later writes.
        // Any other failure (a damaged file) is what a restore is for.
        if let Err(redb::DatabaseError::DatabaseAlreadyOpen) = ReadOnlyDatabase::open(&target) {
            return Err(StoreError::Conflict(format!(
                "{} is in use by a running node; stop it first",
                target.display()
            )));
        }
    }
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let staging: PathBuf = dir.join(RESTORE_STAGING);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| io_err(&staging, e))?;
    }
    fs::create_dir(&staging).map_err(|e| io_err(&staging, e))?;
    let staged = staging.join(DB_FILE_NAME);
    fs::copy(file, &staged).map_err(|e| io_err(&staged, e))?;
    {
        // Opening checks the schema and upgrades an older one; the snapshot decodes every app,
        // script version and route, so a copy that opens but does not read is refused here.
        let store = EmbeddedStore::open(&staging)?;
        store.snapshot()?;
    }
    let f = fs::File::open(&staged).map_err(|e| io_err(&staged, e))?;
    f.sync_all().map_err(|e| io_err(&staged, e))?;
    drop(f);
    fs::rename(&staged, &target).map_err(|e| io_err(&target, e))?;
    // The rename is durable once the directory is.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    fs::remove_dir_all(&staging).map_err(|e| io_err(&staging, e))?;
    Ok(info)
}

/// Reads `path` whole into one buffer sized from its length (no growth copies), refusing a
/// file above `max` bytes: the answer of `POST /v1/backup` is one buffer, held once.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, (u64, std::io::Error)> {
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(|e| (0, e))?;
    let len = f.metadata().map_err(|e| (0, e))?.len();
    if len > max {
        return Err((
            len,
            std::io::Error::other(format!("{len} bytes, more than {max}")),
        ));
    }
    let cap = usize::try_from(len).map_err(|e| (len, std::io::Error::other(e)))?;
    let mut buf = Vec::with_capacity(cap);
    f.read_to_end(&mut buf).map_err(|e| (len, e))?;
    Ok(buf)
}

/// Writes what `fill` puts into `file.tmp` (created mode 0600) to `file` atomically: fsync,
/// rename, fsync of the directory. On failure `file.tmp` is removed and `file` untouched.
pub fn write_atomically(
    file: &Path,
    mut fill: impl FnMut(&mut fs::File) -> std::io::Result<u64>,
) -> std::io::Result<u64> {
    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        // 0600: a backup holds env values (secrets) and token hashes.
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        let n = fill(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, file)?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = fs::File::open(parent) {
        let _ = d.sync_all();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_restores_to_the_same_revision_and_refuses_foreign_files() {
        let src_dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(src_dir.path()).expect("opens");
        store
            .put_app("a", &picloud_core::model::AppConfig::default())
            .expect("app");
        let out = tempfile::tempdir().expect("temp dir");
        let file = out.path().join("b.redb");
        let info = store.backup_to(&file).expect("backup");
        assert_eq!(info.revision, 1);
        assert_eq!(info.schema_version, SCHEMA_VERSION);
        assert_eq!(inspect_backup(&file).expect("inspect").revision, 1);

        let new = tempfile::tempdir().expect("temp dir");
        restore(&file, new.path(), false).expect("restore");
        let restored = EmbeddedStore::open(new.path()).expect("opens");
        assert!(restored.get_app("a").expect("reads").is_some());
        drop(restored);
        // Not empty now: refused without --force, and the store is untouched.
        assert!(matches!(
            restore(&file, new.path(), false),
            Err(StoreError::Conflict(_))
        ));
        // A node holding the directory is refused even with --force.
        let held = EmbeddedStore::open(new.path()).expect("opens");
        assert!(matches!(
            restore(&file, new.path(), true),
            Err(StoreError::Conflict(_))
        ));
        drop(held);
        restore(&file, new.path(), true).expect("forced restore");

        let junk = out.path().join("junk");
        fs::write(&junk, b"not a database").expect("write");
        assert!(inspect_backup(&junk).is_err());
        fs::write(&junk, b"").expect("write");
        assert!(inspect_backup(&junk).is_err());
    }
}
