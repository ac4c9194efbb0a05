//! Dispatch: from a parsed public request to a script's reply.
//!
//! Owns: [`Live`], the slot holding the current [`Catalog`] (swapped whole, atomically, by
//! the control plane), and [`Dispatcher`], the front end's [`Handler`] for public traffic:
//! route lookup on the coroutine, request ids, handing a job to the engine pool without
//! blocking (the node's queue or the app's share full → 503 `overloaded`, the app quarantined →
//! 503 `app_quarantined`, both at once with `Retry-After`), and parking the coroutine until the
//! engine replies.
//!
//! Does not own: HTTP framing (the front end), running scripts (the engine pool), or building
//! catalogs (the control plane). Never blocks the OS thread: the only wait is the reply
//! channel, which parks just the coroutine.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use picloud_core::Catalog;

use crate::metrics::{AppRegistry, AppStats};

/// The live catalog, shared by the dispatcher (readers, lock-free) and the control plane (the
/// one writer). A request takes one `Arc<Catalog>` at its start and finishes on it, whatever
/// swaps happen meanwhile. Also keeps the per-app stats of the live catalog's apps.
#[derive(Clone)]
pub struct Live {
    catalog: Arc<ArcSwap<Catalog>>,
    apps: Arc<AppRegistry>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            catalog: Arc::new(ArcSwap::from_pointee(Catalog::default())),
            apps: Arc::new(AppRegistry::default()),
        }
    }
}

impl Live {
    /// The current catalog.
    pub fn current(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Replaces the catalog. Requests in flight keep the one they started with. Its apps get
    /// their stats first (kept from the previous catalog; a deleted app's are dropped).
    pub fn swap(&self, catalog: Catalog) {
        self.apps.attach(&catalog);
        self.catalog.store(Arc::new(catalog));
    }

    /// Lifts the quarantine of the named apps on this node (the control plane calls it for
    /// every app a new catalog changed). Returns those whose breaker was open.
    pub fn lift_quarantines<'a>(&self, apps: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        self.apps.lift_quarantines(apps)
    }

    /// The per-app stats of the live catalog's apps.
    pub fn app_stats(&self) -> Arc<AppRegistry> {
        self.apps.clone()
    }
}

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use picloud_core::{ErrorCode, Resolution};
use serde_json::Value;

use crate::engine::{Job, Origin, Refusal, Refused, ReplyChannel, ScriptRequest, Submitter};
use crate::errors::error_response;
use crate::http::{Handler, Request, Response};
use crate::metrics;

/// A new request id: a random per-process prefix and a counter, 16 hex digits. Unique across
/// restarts and nodes with overwhelming probability, and costs one atomic add.
pub fn next_request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| getrandom::u32().unwrap_or(std::process::id()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:08x}{:08x}", n as u32)
}

/// The public health check for load balancers, on every host. App names cannot start with `_`,
/// so no path-prefix app can own it; host-routed apps cannot route it either (it is answered
/// before routing). Any method; the body is `{"status":"ok","revision":N}`.
pub const HEALTH_PATH: &str = "/_picloud/health";

/// The public front end's handler.
pub struct Dispatcher {
    live: Live,
    submitter: Submitter,
}

impl Dispatcher {
    /// A dispatcher serving from `live` and running scripts through `submitter`'s pool.
    pub fn new(live: Live, submitter: Submitter) -> Dispatcher {
        Dispatcher { live, submitter }
    }
}

impl Handler for Dispatcher {
    /// One reply channel per connection: requests on a connection run one at a time (pipelined
    /// ones in order), so it is reused for each of them.
    type Conn = ReplyChannel;

    fn new_conn(&self) -> ReplyChannel {
        ReplyChannel::new()
    }

    fn handle(&self, reply: &mut ReplyChannel, req: Request) -> Response {
        let started = Instant::now();
        let id = next_request_id();
        // The request finishes on this catalog even if a new one is swapped in meanwhile.
        let catalog = self.live.current();
        let (resp, stats) = self.dispatch(&catalog, reply, req, &id);
        metrics::count_response(resp.status);
        if let Some(stats) = stats {
            stats.record_request(resp.status, started);
        }
        resp
    }
}

impl Dispatcher {
    /// Answers one request; also returns the stats of the app it was routed to (borrowed from
    /// `catalog`: no reference count is touched for them).
    fn dispatch<'c>(
        &self,
        catalog: &'c Catalog,
        reply: &mut ReplyChannel,
        req: Request,
        id: &str,
    ) -> (Response, Option<&'c AppStats>) {
        if req.path == HEALTH_PATH {
            // Answered here on the coroutine, before any app (host-routed ones included): a
            // load balancer's probe must not queue behind scripts or depend on a route.
            let resp = Response::new(
                200,
                "application/json",
                format!(r#"{{"status":"ok","revision":{}}}"#, catalog.revision),
            )
            .with_header("cache-control", "no-store");
            return (resp, None);
        }
        let (app, script, params, path) =
            match catalog.resolve(req.header("host"), &req.method, &req.path) {
                Resolution::Found {
                    app,
                    script,
                    params,
                    path,
                } => (app, script.clone(), params, path.to_string()),
                Resolution::NotFound => {
                    metrics::count_unrouted(ErrorCode::NotFound);
                    return (error_response(ErrorCode::NotFound, id, vec![]), None);
                }
                Resolution::MethodNotAllowed(allow) => {
                    metrics::count_unrouted(ErrorCode::MethodNotAllowed);
                    let resp = error_response(ErrorCode::MethodNotAllowed, id, vec![])
                        .with_header("allow", allow);
                    return (resp, None);
                }
            };
        let stats = AppStats::of(app);
        let job = Job {
            app: app.clone(),
            script,
            request: ScriptRequest {
                id: id.to_string(),
                method: req.method,
                path,
                params,
                query: req.query,
                headers: req.headers,
                body: req.body,
            },
            reply: Some(reply.sender()),
            origin: Origin::Http,
        };
        if let Err(Refused { job, why }) = self.submitter.submit(job) {
            // We answer this request ourselves; no fallback reply is wanted.
            if let Some(r) = job.reply {
                r.cancel();
            }
            let resp = match why {
                Refusal::Quarantined { retry_after_s } => {
                    if let Some(stats) = stats {
                        stats.count_error(ErrorCode::AppQuarantined);
                    }
                    error_response(
                        ErrorCode::AppQuarantined,
                        id,
                        vec![(
                            "message",
                            Value::from(
                                "the app's recent runs kept failing (timeout, limit_exceeded); \
                                 it is not run until its cool-down ends",
                            ),
                        )],
                    )
                    .with_header("retry-after", retry_after_s.to_string())
                }
                Refusal::Closed | Refusal::NodeFull | Refusal::AppFull => {
                    metrics::count_overloaded();
                    if let Some(stats) = stats {
                        stats.count_error(ErrorCode::Overloaded);
                    }
                    let message = match why {
                        Refusal::AppFull => {
                            "this app's share of the job queue is full, retry later"
                        }
                        _ => "job queue full, retry later",
                    };
                    error_response(
                        ErrorCode::Overloaded,
                        id,
                        vec![("message", Value::from(message))],
                    )
                }
            };
            return (resp, stats);
        }
        metrics::count_script_run();
        // Parks only this coroutine until the engine thread answers; the deadline is enforced
        // over there, so no timer is armed here.
        (reply.recv(), stats)
    }
}
