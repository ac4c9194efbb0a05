//! Tests of the PostgreSQL test support itself (`support::pg`): URL rewriting, per-test
//! databases on the shared server, and the private server's stop/start cycle. It does not test
//! product code. The server-backed tests skip when `PICLOUD_TEST_DATABASE_URL` is unset.

mod support;

use postgres::{Client, NoTls};
use support::pg::{self, PrivatePg, TestDb};

#[test]
fn with_database_replaces_only_the_database() {
    let cases = [
        (
            "postgres://postgres@127.0.0.1:5432/test",
            "postgres://postgres@127.0.0.1:5432/x",
        ),
        (
            "postgres://u:p@h:1/test?sslmode=disable&application_name=a",
            "postgres://u:p@h:1/x?sslmode=disable&application_name=a",
        ),
        ("postgresql://h", "postgresql://h/x"),
        ("postgres://h/", "postgres://h/x"),
        (
            "postgres://h?connect_timeout=5",
            "postgres://h/x?connect_timeout=5",
        ),
        (
            "host=h user=u dbname=test",
            "host=h user=u dbname=test dbname=x",
        ),
    ];
    for (url, want) in cases {
        assert_eq!(pg::with_database(url, "x"), want, "for {url}");
    }
}

fn database_exists(base_url: &str, name: &str) -> bool {
    let mut admin = Client::connect(base_url, NoTls).expect("connect to the test server");
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .expect("look up database");
    row.get::<_, i64>(0) == 1
}

#[test]
fn test_db_is_created_connected_to_and_dropped() {
    let Some(base) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&base, "support_roundtrip");
    assert!(database_exists(&base, &db.name));
    let current: String = db
        .client()
        .query_one("SELECT current_database()", &[])
        .expect("current_database")
        .get(0);
    assert_eq!(current, db.name);

    // A session left open must not stop the drop (WITH (FORCE)).
    let mut open = db.client();
    open.batch_execute("CREATE TABLE t (x int)")
        .expect("create table");
    let name = db.name.clone();
    drop(db);
    assert!(!database_exists(&base, &name));
}

#[test]
fn test_dbs_get_distinct_valid_names() {
    let Some(base) = pg::test_database_url() else {
        return;
    };
    let tag = "A Very-Long tag, with punctuation, that would overflow NAMEDATALEN easily";
    let a = TestDb::create(&base, tag);
    let b = TestDb::create(&base, tag);
    assert_ne!(a.name, b.name);
    for db in [&a, &b] {
        assert!(db.name.len() <= 63, "{} too long", db.name);
        assert!(
            db.name.starts_with("picloud_t_a_very_long_tag"),
            "{}",
            db.name
        );
        assert!(
            db.name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
            "{} is not a plain identifier",
            db.name
        );
        assert!(database_exists(&base, &db.name));
    }
}

#[test]
fn terminate_backends_ends_only_sessions_of_that_application() {
    let Some(base) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&base, "support_terminate");
    let mut sync = Client::connect(&format!("{}?application_name=picloud-sync", db.url), NoTls)
        .expect("connect as picloud-sync");
    let mut store = Client::connect(&format!("{}?application_name=picloud-store", db.url), NoTls)
        .expect("connect as picloud-store");

    assert_eq!(db.terminate_backends("picloud-sync"), 1);
    assert!(sync.batch_execute("SELECT 1").is_err());
    store
        .batch_execute("SELECT 1")
        .expect("the other application's session survives");
    assert_eq!(db.terminate_backends("picloud-sync"), 0);
}

#[test]
fn private_pg_stops_and_starts_again_on_the_same_port() {
    // Skipped with the shared-server tests, so a machine without PostgreSQL sees one kind of
    // skip; in CI the variable is set and this runs.
    if pg::test_database_url().is_none() {
        return;
    }
    let Some(server) = PrivatePg::start() else {
        return;
    };
    let url = server.url();
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/postgres", server.port())
    );

    let mut client = Client::connect(&url, NoTls).expect("connect to the private server");
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .expect("query the private server")
        .get(0);
    assert_eq!(one, 1);

    server.stop();
    assert!(client.batch_execute("SELECT 1").is_err());
    assert!(Client::connect(&url, NoTls).is_err());

    server.start_again();
    assert_eq!(server.url(), url);
    let mut client = Client::connect(&url, NoTls).expect("connect after start_again");
    client
        .batch_execute("SELECT 1")
        .expect("query after start_again");
}
