//! Assembling and stopping one node: store, token, engine pool, catalog, public front end,
//! admin front end and the control thread.
//!
//! Owns: start order (store — migrating PostgreSQL first —, token, engines, first catalog, sync
//! daemon, listeners), the control thread (the one thread that runs admin requests and thus all
//! store writes and catalog swaps), the admin front end's hand-off to it, the shutdown order
//! and process signals. Every thread started here is joined by [`Node::shutdown`].
//!
//! Does not own: what the admin API does (`admin/`), the dashboard's files (`dashboard/`, which
//! the admin front end asks first), serving scripts (picloud-worker).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use picloud_core::access::AccessStore;
use picloud_core::services::{InvocationRecord, InvocationSink, KvStore, LogStore};
use picloud_core::{ErrorCode, Limits, Store};
use picloud_worker::dispatch::{Dispatcher, Live};
use picloud_worker::engine::sdk::Services;
use picloud_worker::engine::{Pool, PoolConfig, ReplyChannel, ReplyTx};
use picloud_worker::http::{self, Handler, Request, Response, ServerHandle};
use picloud_worker::metrics::NodeProbes;

use crate::admin::{self, Admin};
use crate::config::Settings;
use crate::invocations::LogWriter;
use crate::publish::Publisher;
use crate::scheduler::Scheduler;
use crate::store::postgres_kv::PgKv;
use crate::store::{EmbeddedStore, PgStore};
use crate::sync::SyncDaemon;

/// Admin requests waiting for the control thread. Admin traffic is light; a full queue means
/// something is stuck, and the caller gets 503 rather than a pile-up of parked coroutines.
const ADMIN_QUEUE_LEN_MAX: usize = 64;

enum ControlMsg {
    Admin(Request, ReplyTx),
    Stop,
}

/// The admin API's front-end handler: answers the dashboard's static files itself (on the
/// connection's coroutine: they need no store, so they never wait behind admin writes; all but
/// an uncompressed copy, which needs a thread's stack to inflate), and
/// forwards every other request to the control thread, parking the coroutine until the answer
/// comes back, so blocking store calls never run on a coroutine.
struct AdminFrontend {
    tx: Sender<ControlMsg>,
}

impl Handler for AdminFrontend {
    /// The same one-slot, coroutine-parking reply cell the engine pool answers through.
    type Conn = ReplyChannel;

    fn new_conn(&self) -> ReplyChannel {
        ReplyChannel::new()
    }

    /// Framing errors on the admin port in the admin error shape
    /// (`{"error":{"code","message"}}`), like every other admin answer.
    fn refused(&self, status: u16, code: ErrorCode) -> Response {
        crate::admin::AdminError::refused(status, code).into_response()
    }

    fn handle(&self, conn: &mut Self::Conn, req: Request) -> Response {
        if let Some(resp) = crate::dashboard::serve(&req) {
            return resp;
        }
        let unavailable = |why: &str| {
            Response::new(
                503,
                "application/json",
                serde_json::json!({"error": {"code": ErrorCode::Overloaded.as_str(), "message": why}})
                    .to_string(),
            )
            .with_header("retry-after", "1")
        };
        match self.tx.try_send(ControlMsg::Admin(req, conn.sender())) {
            Ok(()) => conn.recv(),
            Err(e) => {
                let why = match e {
                    TrySendError::Full(_) => "admin queue full",
                    TrySendError::Disconnected(_) => "node is stopping",
                };
                // We answer ourselves: no fallback reply from the dropped sender.
                if let ControlMsg::Admin(_, reply) = e.into_inner() {
                    reply.cancel();
                }
                unavailable(why)
            }
        }
    }
}

/// Hands records to the log writer and to a tap (`Node::start_with_tap`).
struct Tee {
    first: Arc<dyn InvocationSink>,
    tap: Arc<dyn InvocationSink>,
}

impl InvocationSink for Tee {
    fn record(&self, record: InvocationRecord) {
        self.tap.record(record.clone());
        self.first.record(record);
    }

    fn record_batch(&self, records: Vec<InvocationRecord>) {
        // One clone per batch: only `picloud dev` has a tap.
        self.tap.record_batch(records.clone());
        self.first.record_batch(records);
    }
}

/// A started node and, on first start, the admin token generated for it.
pub struct Started {
    /// The running node.
    pub node: Node,
    /// A token generated because none existed; print it once.
    pub generated_token: Option<String>,
}

/// A running node.
pub struct Node {
    public: ServerHandle,
    admin: ServerHandle,
    pool: Pool,
    control_tx: Sender<ControlMsg>,
    control: JoinHandle<()>,
    sync: Option<SyncDaemon>,
    scheduler: Scheduler,
    log_writer: Option<LogWriter>,
    store_kind: &'static str,
    live: Live,
    /// The PostgreSQL store, if the node runs on one (its round-trip counter is read by tests
    /// and bench/).
    pg: Option<Arc<PgStore>>,
}

impl Node {
    /// Starts a node. Binds both addresses before answering, so a returned node is ready.
    pub fn start(settings: &Settings) -> anyhow::Result<Started> {
        Self::start_with_tap(settings, None)
    }

    /// [`Node::start`], with `tap` also handed every invocation record the engines produce
    /// (after the log writer's sink, whether or not invocation logs are kept). `picloud dev`
    /// prints its app's invocations from there, in-process, with no polling of the store. The
    /// tap is called on engine threads and must not block, like any [`InvocationSink`].
    pub fn start_with_tap(
        settings: &Settings,
        tap: Option<Arc<dyn InvocationSink>>,
    ) -> anyhow::Result<Started> {
        // The node's uptime (`/v1/stats`) counts from here.
        let started = std::time::Instant::now();
        http::configure_runtime(settings.io_threads);
        let limits = &settings.limits;
        // The store, and the SDK's services on it: KV (PostgreSQL: its own small pool, at
        // most one connection per engine thread) and the invocation log.
        type Stores = (
            Arc<dyn Store>,
            Option<Arc<PgStore>>,
            Arc<dyn KvStore>,
            Arc<dyn LogStore>,
            Arc<dyn AccessStore>,
            Option<Arc<EmbeddedStore>>,
        );
        let (store, pg, kv, logs, access, embedded): Stores = match &settings.database_url {
            Some(url) => {
                // Connecting applies pending migrations (under an advisory lock).
                let pg =
                    Arc::new(PgStore::connect(url, limits).context("connecting to PostgreSQL")?);
                let kv = Arc::new(PgKv::new(&pg, settings.workers.max(1), limits));
                (pg.clone(), Some(pg.clone()), kv, pg.clone(), pg, None)
            }
            None => {
                let embedded = Arc::new(
                    EmbeddedStore::open(&settings.data_dir)
                        .with_context(|| format!("opening {}", settings.data_dir.display()))?
                        .with_kv_batch_writes_max(limits.kv_batch_writes_max),
                );
                (
                    embedded.clone(),
                    None,
                    embedded.clone(),
                    embedded.clone(),
                    embedded.clone(),
                    // `POST /v1/backup` copies it from inside this process (redb's lock
                    // keeps any other process out of the file).
                    Some(embedded),
                )
            }
        };
        let generated_token =
            admin::ensure_bootstrap_token(access.as_ref(), settings.admin_token.as_deref())?;

        let (log_writer, sink) = if settings.invocation_logs {
            let (w, sink) =
                LogWriter::start(logs.clone(), limits).context("spawning the log writer")?;
            (Some(w), Some(sink))
        } else {
            (None, None)
        };
        let sink = match (sink, tap) {
            (Some(first), Some(tap)) => {
                Some(Arc::new(Tee { first, tap }) as Arc<dyn InvocationSink>)
            }
            (sink, tap) => sink.or(tap),
        };
        let pool = Pool::start_with(
            PoolConfig {
                services: Arc::new(Services {
                    kv: Some(kv.clone()),
                    events: Default::default(),
                }),
                sink,
                ..PoolConfig::new(settings.workers)
            },
            limits,
        )
        .context("starting the engine pool")?;
        let live = Live::default();
        let publisher = Arc::new(Publisher::new(store.clone(), live.clone(), limits.clone()));
        publisher.publish().context("loading the catalog")?;
        // Other nodes' changes arrive through the sync daemon; started after the first
        // catalog, so the node never serves an empty one it does not have to.
        let sync = match pg.clone() {
            Some(pg) => Some(
                SyncDaemon::start(pg, publisher.clone(), limits)
                    .context("spawning the sync thread")?,
            ),
            None => None,
        };
        let (sched_tx, sched_rx) = crossbeam_channel::bounded(1);
        publisher.watch(sched_tx.clone());
        let scheduler = Scheduler::start(
            live.clone(),
            store.clone(),
            pool.submitter(),
            sched_tx,
            sched_rx,
        )
        .context("spawning the scheduler")?;

        let public_listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding public address {}", settings.listen))?;
        let admin_listener = TcpListener::bind(settings.admin_listen)
            .with_context(|| format!("binding admin address {}", settings.admin_listen))?;

        let dispatcher = Dispatcher::new(live.clone(), pool.submitter());
        let public = http::serve(public_listener, Arc::new(dispatcher), limits)
            .context("starting the public front end")?;
        let probes = NodeProbes {
            pool: pool.submitter(),
            public_http: public.stats(),
            apps: live.app_stats(),
        };

        let (control_tx, control_rx) = crossbeam_channel::bounded(ADMIN_QUEUE_LEN_MAX);
        let admin = Admin::new(
            store.clone(),
            access,
            publisher,
            pool.ast_cache(),
            limits.clone(),
        )
        .with_services(kv, logs)
        .with_node_name(settings.node_name.clone())
        .with_start_time(started)
        .with_metrics(probes, sync.as_ref().map(SyncDaemon::stats));
        let admin = match embedded {
            Some(e) => admin.with_backup(e),
            None => admin,
        };
        let control = std::thread::Builder::new()
            .name("picloud-control".into())
            .spawn(move || control_loop(&admin, &control_rx))
            .context("spawning the control thread")?;
        let admin_server = http::serve(
            admin_listener,
            Arc::new(AdminFrontend {
                tx: control_tx.clone(),
            }),
            &admin_limits(limits),
        )
        .context("starting the admin front end")?;

        Ok(Started {
            node: Node {
                public,
                admin: admin_server,
                pool,
                control_tx,
                control,
                sync,
                scheduler,
                log_writer,
                store_kind: store.kind(),
                live,
                pg,
            },
            generated_token,
        })
    }

    /// The public address actually bound.
    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr()
    }

    /// The admin address actually bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// `embedded` or `postgres`.
    pub fn store_kind(&self) -> &'static str {
        self.store_kind
    }

    /// Round trips the PostgreSQL store's connection has made (admin calls, publishes,
    /// invocation records, schedule claims), or `None` on the embedded store. For tests that pin
    /// what an admin call costs.
    #[doc(hidden)]
    pub fn pg_round_trips(&self) -> Option<u64> {
        self.pg.as_ref().map(|pg| pg.round_trips())
    }

    /// The live catalog's revision.
    pub fn revision(&self) -> u64 {
        self.live.current().revision
    }

    /// Script compilations done by the shared AST cache since start.
    pub fn ast_compiles(&self) -> u64 {
        self.pool.ast_cache().compiles()
    }

    /// Modules evaluated by the shared module cache since start (cache misses).
    pub fn module_evaluations(&self) -> u64 {
        self.pool.module_cache().evaluations()
    }

    /// Drains and stops: no new connections, in-flight requests finish (bounded by
    /// `drain_timeout_ms`), then the control thread and the engine threads are joined.
    pub fn shutdown(self) {
        let report = self.public.shutdown();
        log::info!("public front end drained: {report:?}");
        let report = self.admin.shutdown();
        log::info!("admin front end drained: {report:?}");
        // The control thread may be mid-request; Stop queues behind it.
        let _ = self.control_tx.send(ControlMsg::Stop);
        if self.control.join().is_err() {
            log::error!("control thread panicked");
        }
        if let Some(sync) = self.sync {
            sync.stop();
        }
        self.scheduler.stop();
        self.pool.shutdown();
        // After the engines: the records of the last runs are written before exit.
        if let Some(mut log_writer) = self.log_writer
            && !log_writer.stop()
        {
            log::warn!("the invocation log writer did not finish in time");
        }
        log::info!("stopped");
    }
}

/// The admin front end's limits: scripts and deploy bundles arrive as bodies, so its body
/// limit is the larger of the script source and deploy bundle limits (plus slack for JSON),
/// independent of the public body limit.
fn admin_limits(limits: &Limits) -> Limits {
    Limits {
        body_bytes_max: limits.source_bytes_max.max(limits.deploy_bytes_max) + 64 * 1024,
        connections_max: 256,
        ..limits.clone()
    }
}

/// The control thread: runs admin requests one at a time, so store writes and catalog swaps
/// are serialised without further locking. Ends on `Stop`.
fn control_loop(admin: &Admin, rx: &Receiver<ControlMsg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            ControlMsg::Admin(req, reply) => {
                let resp = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    // The dashboard answers the front end left us: those it must inflate.
                    crate::dashboard::serve_inflating(&req).unwrap_or_else(|| admin.handle(&req))
                })) {
                    Ok(resp) => resp,
                    Err(_) => {
                        log::error!("admin request {} {} panicked", req.method, req.path);
                        Response::new(
                            500,
                            "application/json",
                            r#"{"error":{"code":"internal","message":"internal error"}}"#,
                        )
                    }
                };
                // If the client is gone, the reply is simply never read.
                reply.send(resp);
            }
            ControlMsg::Stop => break,
        }
    }
}

/// SIGTERM and SIGINT, blocked in every thread and taken synchronously by the main thread:
/// no signal handler runs, nothing polls.
pub struct ShutdownSignals {
    set: libc::sigset_t,
}

impl ShutdownSignals {
    /// Blocks SIGTERM and SIGINT in the calling thread (and every thread it starts later).
    pub fn block() -> std::io::Result<ShutdownSignals> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset before use; the calls only
        // touch the signal mask of the calling thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(ShutdownSignals { set })
        }
    }

    /// Sleeps in the kernel until SIGTERM or SIGINT arrives; returns its name.
    pub fn wait(&self) -> &'static str {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `self.set` was initialised in `block`; `sig` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
            if rc == 0 {
                return if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            version_minor: 1,
            headers: Vec::new(),
            body: Vec::new(),
            peer: None,
        }
    }

    /// The dashboard's files as a browser fetches them (gzip) never reach the control thread:
    /// with no control thread at all (its channel closed), they are still served, while an
    /// admin call is refused.
    #[test]
    fn dashboard_files_are_answered_without_the_control_thread() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        drop(rx);
        let frontend = AdminFrontend { tx };
        let mut conn = frontend.new_conn();
        for path in ["/", "/assets/main.js", "/assets/app.css"] {
            let mut req = get(path);
            req.headers
                .push(("accept-encoding".into(), "gzip, deflate".into()));
            let resp = frontend.handle(&mut conn, req);
            assert_eq!(resp.status, 200, "{path}");
            assert!(
                resp.headers
                    .iter()
                    .any(|(k, v)| k == "content-encoding" && v == "gzip")
            );
        }
        assert_eq!(frontend.handle(&mut conn, get("/v1/health")).status, 503);
    }
}
