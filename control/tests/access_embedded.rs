//! The access conformance suite (tokens, audit log) on the embedded (redb) store, one test per
//! check, plus what only this store has: a schema-3 file's bare token hashes become named admin
//! tokens when it is opened.
//!
//! Does not own: the rules themselves (`picloud_control::store::access_conformance`).

use picloud_control::store::EmbeddedStore;
use picloud_core::access::AccessStore;
use picloud_core::store::Store;

/// Conformance fixture: a fresh store in a temp dir that is removed after the check.
fn with_store(check: fn(&dyn Store, &dyn AccessStore)) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    check(&store, &store);
}

picloud_control::access_conformance_tests!(with_store);

#[test]
fn schema_3_token_hashes_become_named_admin_tokens() {
    use picloud_core::access::{AppScope, Role};
    use redb::{Database, TableDefinition};
    let dir = tempfile::TempDir::new().expect("temp dir");
    let path = dir
        .path()
        .join(picloud_control::store::embedded::DB_FILE_NAME);
    {
        // A file as schema 3 left it: the version in `meta` and bare hashes.
        let db = Database::create(&path).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let meta: TableDefinition<&str, u64> = TableDefinition::new("meta");
            let legacy: TableDefinition<&str, ()> = TableDefinition::new("admin_tokens");
            txn.open_table(meta)
                .expect("meta")
                .insert("schema_version", 3)
                .expect("version");
            let mut t = txn.open_table(legacy).expect("legacy");
            t.insert(picloud_core::content_hash("one").as_str(), ())
                .expect("hash");
            t.insert(picloud_core::content_hash("two").as_str(), ())
                .expect("hash");
        }
        txn.commit().expect("commit");
    }
    let store = EmbeddedStore::open(dir.path()).expect("open upgrades");
    let tokens = store.tokens().expect("tokens");
    let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["bootstrap", "token-2"]);
    assert!(
        tokens
            .iter()
            .all(|t| t.role == Role::Admin && t.apps == AppScope::All)
    );
    drop(store);
    // Opening again changes nothing.
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(store.tokens().expect("tokens").len(), 2);
}
