//! The engine pool's per-app queues: round robin between apps (a quiet app's job runs after at
//! most one job of a busy app, not after its backlog), the per-app engine cap, the app's share
//! of the queue, and refusals that say why. Jobs here belong to apps with attached state, as
//! the live catalog's apps have.
//!
//! Does not own: the HTTP view of the same (control/tests/tenancy.rs).

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use picloud_core::{CatalogApp, CatalogScript, Limits, ScriptKind};
use picloud_worker::engine::{Job, Origin, Pool, Refusal, ReplyChannel, ScriptRequest};
use picloud_worker::metrics::AppState;

/// An app as the live catalog has it: with its state attached.
fn app(name: &str, limits: Limits) -> Arc<CatalogApp> {
    let app = Arc::new(CatalogApp::new(name, false, limits));
    assert!(app.attached.set(Arc::new(AppState::default())));
    app
}

fn job(app: &Arc<CatalogApp>, source: &str, id: &str, replies: &ReplyChannel) -> Job {
    Job {
        app: app.clone(),
        script: Arc::new(CatalogScript::new("main", ScriptKind::Endpoint, source)),
        request: ScriptRequest {
            id: id.into(),
            method: "GET".into(),
            path: "/".into(),
            ..ScriptRequest::default()
        },
        reply: Some(replies.sender()),
        origin: Origin::Http,
    }
}

/// One engine; app A queues a backlog behind a running job, then app B queues one job. B's job
/// runs right after A's next one (A's lane goes back to the ring's tail after each job), not
/// after A's whole backlog as with one FIFO.
#[test]
fn a_quiet_app_is_served_round_robin_not_after_a_busy_apps_backlog() {
    let limits = Limits {
        concurrency_max: 1,
        ..Limits::default()
    };
    let pool = Pool::start(1, &limits);
    let a = app("a", limits.clone());
    let b = app("b", limits.clone());
    let slow = "sleep(0.1); request.id";
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    let mut submit = |app: &Arc<CatalogApp>, source: &str, id: &str| {
        let replies = ReplyChannel::new();
        assert!(pool.try_submit(job(app, source, id, &replies)).is_ok());
        let order = order.clone();
        waiters.push(thread::spawn(move || {
            let resp = replies.recv();
            assert_eq!(resp.status, 200);
            order
                .lock()
                .expect("order")
                .push(String::from_utf8_lossy(&resp.body).into_owned());
        }));
    };
    submit(&a, slow, "a1");
    // a1 is running (or about to); the rest queue behind it.
    thread::sleep(Duration::from_millis(30));
    for id in ["a2", "a3", "a4"] {
        submit(&a, slow, id);
    }
    submit(&b, "request.id", "b1");
    for w in waiters {
        w.join().expect("waiter");
    }
    let order = order.lock().expect("order").clone();
    let pos = |id: &str| order.iter().position(|x| x == id).expect(id);
    println!("completion order: {order:?}");
    assert!(
        pos("b1") < pos("a3"),
        "b1 waited for A's backlog: {order:?}"
    );
    assert!(
        pos("a2") < pos("a3") && pos("a3") < pos("a4"),
        "A in order: {order:?}"
    );
}

/// Two engines, cap 1: app A never runs two jobs at once, so B gets the other engine at once;
/// A's in-flight jobs are bounded by cap + share, past which its jobs are refused `AppFull`
/// while B's still go in; a job of an app without state uses every engine as before.
#[test]
fn the_cap_and_the_share_refuse_only_the_busy_app() {
    let limits = Limits {
        concurrency_max: 1,
        queue_len_max: 4,
        ..Limits::default()
    };
    let pool = Pool::start(2, &limits);
    let submitter = pool.submitter();
    let a = app("a", limits.clone());
    let b = app("b", limits.clone());
    let slow = "sleep(0.3); 1";
    // Share of A: 4 × 1 / 2 = 2, so 1 + 2 = 3 in flight.
    let channels: Vec<ReplyChannel> = (0..4).map(|_| ReplyChannel::new()).collect();
    let mut accepted = Vec::new();
    for (i, ch) in channels.iter().enumerate() {
        match submitter.submit(job(&a, slow, "a", ch)) {
            Ok(()) => accepted.push(i),
            Err(r) => {
                assert_eq!(r.why, Refusal::AppFull, "job {i}");
                if let Some(tx) = r.job.reply {
                    tx.cancel();
                }
            }
        }
    }
    assert_eq!(accepted, vec![0, 1, 2]);
    let state = AppState::of(&a).expect("state");
    // B runs on the other engine while A's backlog waits.
    let quick = ReplyChannel::new();
    let started = std::time::Instant::now();
    assert!(submitter.submit(job(&b, "\"b\"", "b", &quick)).is_ok());
    assert_eq!(quick.recv().body, b"b");
    let (running, queued) = state.lane.load();
    assert_eq!((running, queued), (1, 2), "cap 1 held");
    println!(
        "b answered in {:?} while A had {running} running, {queued} queued",
        started.elapsed()
    );
    for i in accepted {
        assert_eq!(channels[i].recv().status, 200);
    }
}
