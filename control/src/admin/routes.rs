//! The admin API's route table: every route's method, path pattern, the call it makes and the
//! access it needs, in one list ([`ROUTES`]) that the router, the 401/403 tests and the OpenAPI
//! parity test all read.
//!
//! Owns: [`Call`], [`Access`], [`RouteSpec`], [`ROUTES`] and the lookup ([`Router`], on
//! `matchit`). Does not own: what a call does (`mod.rs` dispatches to the handlers) or the rule
//! deciding whether a token holds a right (`picloud_core::access`).

use picloud_core::access::Right;

/// What a route does; `mod.rs` maps each to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Call {
    Health,
    OpenApi,
    Metrics,
    Stats,
    ListApps,
    GetApp,
    PutApp,
    DeleteApp,
    Unquarantine,
    ListScripts,
    GetScript,
    PutScript,
    DeleteScript,
    CheckScript,
    ScriptVersions,
    ScriptVersion,
    Rollback,
    GetRoutes,
    PutRoutes,
    Deploy,
    ListEnv,
    PutEnv,
    DeleteEnv,
    GetSchedules,
    PutSchedules,
    GetTriggers,
    PutTriggers,
    Logs,
    KvList,
    KvGet,
    KvPut,
    KvDelete,
    ListTokens,
    CreateToken,
    DeleteToken,
    Audit,
    Backup,
}

/// Who may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health, the OpenAPI document).
    Public,
    /// Any valid token; the answer is limited to the token's apps (`GET /v1/apps`,
    /// `GET /v1/stats`).
    AnyToken,
    /// A token holding this right on the app named by the path's `{app}`.
    App(Right),
    /// A token holding this right with apps `"*"` (tokens, audit, metrics).
    Node(Right),
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// `matchit` pattern; also the OpenAPI path (same `{param}` syntax).
    pub path: &'static str,
    /// What it does.
    pub call: Call,
    /// Who may do it.
    pub access: Access,
}

impl RouteSpec {
    /// Whether the call may change something (and is therefore audited). The check route is
    /// a POST that stores nothing: not a write.
    pub fn writes(&self) -> bool {
        self.method != "GET" && self.call != Call::CheckScript
    }
}

const fn r(method: &'static str, path: &'static str, call: Call, access: Access) -> RouteSpec {
    RouteSpec {
        method,
        path,
        call,
        access,
    }
}

use Access::{AnyToken, App, Node, Public};
use Right::{Admin, Deploy, Read};

/// Every admin route.
pub const ROUTES: &[RouteSpec] = &[
    r("GET", "/v1/health", Call::Health, Public),
    r("GET", "/v1/openapi.json", Call::OpenApi, Public),
    r("GET", "/metrics", Call::Metrics, Node(Read)),
    r("GET", "/v1/stats", Call::Stats, AnyToken),
    r("GET", "/v1/apps", Call::ListApps, AnyToken),
    r("GET", "/v1/apps/{app}", Call::GetApp, App(Read)),
    r("PUT", "/v1/apps/{app}", Call::PutApp, App(Admin)),
    r("DELETE", "/v1/apps/{app}", Call::DeleteApp, App(Admin)),
    // Lifting a quarantine changes no code or setting: whoever may deploy the fix may lift it.
    r(
        "POST",
        "/v1/apps/{app}/unquarantine",
        Call::Unquarantine,
        App(Deploy),
    ),
    r(
        "GET",
        "/v1/apps/{app}/scripts",
        Call::ListScripts,
        App(Read),
    ),
    r(
        "GET",
        "/v1/apps/{app}/scripts/{name}",
        Call::GetScript,
        App(Read),
    ),
    r(
        "PUT",
        "/v1/apps/{app}/scripts/{name}",
        Call::PutScript,
        App(Deploy),
    ),
    r(
        "DELETE",
        "/v1/apps/{app}/scripts/{name}",
        Call::DeleteScript,
        App(Deploy),
    ),
    r(
        "GET",
        "/v1/apps/{app}/scripts/{name}/versions",
        Call::ScriptVersions,
        App(Read),
    ),
    r(
        "GET",
        "/v1/apps/{app}/scripts/{name}/versions/{version}",
        Call::ScriptVersion,
        App(Read),
    ),
    r(
        "POST",
        "/v1/apps/{app}/scripts/{name}/rollback",
        Call::Rollback,
        App(Deploy),
    ),
    r("POST", "/v1/apps/{app}/check", Call::CheckScript, App(Read)),
    r("GET", "/v1/apps/{app}/routes", Call::GetRoutes, App(Read)),
    r("PUT", "/v1/apps/{app}/routes", Call::PutRoutes, App(Deploy)),
    r("POST", "/v1/apps/{app}/deploy", Call::Deploy, App(Deploy)),
    r("GET", "/v1/apps/{app}/env", Call::ListEnv, App(Read)),
    r(
        "PUT",
        "/v1/apps/{app}/env/{name}",
        Call::PutEnv,
        App(Deploy),
    ),
    r(
        "DELETE",
        "/v1/apps/{app}/env/{name}",
        Call::DeleteEnv,
        App(Deploy),
    ),
    r(
        "GET",
        "/v1/apps/{app}/schedules",
        Call::GetSchedules,
        App(Read),
    ),
    r(
        "PUT",
        "/v1/apps/{app}/schedules",
        Call::PutSchedules,
        App(Deploy),
    ),
    r(
        "GET",
        "/v1/apps/{app}/triggers",
        Call::GetTriggers,
        App(Read),
    ),
    r(
        "PUT",
        "/v1/apps/{app}/triggers",
        Call::PutTriggers,
        App(Deploy),
    ),
    r("GET", "/v1/apps/{app}/logs", Call::Logs, App(Read)),
    r("GET", "/v1/apps/{app}/kv", Call::KvList, App(Read)),
    r("GET", "/v1/apps/{app}/kv/{key}", Call::KvGet, App(Read)),
    r("PUT", "/v1/apps/{app}/kv/{key}", Call::KvPut, App(Deploy)),
    r(
        "DELETE",
        "/v1/apps/{app}/kv/{key}",
        Call::KvDelete,
        App(Deploy),
    ),
    r("GET", "/v1/tokens", Call::ListTokens, Node(Admin)),
    r("POST", "/v1/tokens", Call::CreateToken, Node(Admin)),
    r(
        "DELETE",
        "/v1/tokens/{name}",
        Call::DeleteToken,
        Node(Admin),
    ),
    r("GET", "/v1/audit", Call::Audit, Node(Admin)),
    r("POST", "/v1/backup", Call::Backup, Node(Admin)),
];

/// A matched route and its path parameters (raw, still percent-encoded).
pub struct Matched<'p> {
    /// The route.
    pub spec: &'static RouteSpec,
    /// `(name, value)` of each `{param}`.
    pub params: Vec<(&'static str, &'p str)>,
}

impl Matched<'_> {
    /// A path parameter's raw value (`""` if the route has none of that name).
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v)
    }
}

/// Why a lookup found no route.
pub enum Miss {
    /// No route has this path.
    NoPath,
    /// Routes have this path, with these methods.
    Method(Vec<&'static str>),
}

/// Path lookup over [`ROUTES`], built once per admin API.
pub struct Router {
    /// Each distinct path → the indexes of its routes in [`ROUTES`].
    paths: matchit::Router<Vec<usize>>,
    /// Parameter names of each route, in pattern order.
    names: Vec<Vec<&'static str>>,
}

fn param_names(pattern: &'static str) -> Vec<&'static str> {
    pattern
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

impl Router {
    /// Builds the lookup. The table is a constant: a pattern matchit refuses is a bug caught
    /// by every test that starts a node.
    pub fn new() -> Router {
        let mut by_path: Vec<(&'static str, Vec<usize>)> = Vec::new();
        for (i, spec) in ROUTES.iter().enumerate() {
            match by_path.iter_mut().find(|(p, _)| *p == spec.path) {
                Some((_, v)) => v.push(i),
                None => by_path.push((spec.path, vec![i])),
            }
        }
        let mut paths = matchit::Router::new();
        for (path, indexes) in by_path {
            if let Err(e) = paths.insert(path, indexes) {
                panic!("admin route table: {path}: {e}");
            }
        }
        Router {
            paths,
            names: ROUTES.iter().map(|s| param_names(s.path)).collect(),
        }
    }

    /// The route for `method` and `path` (a trailing `/` is ignored).
    pub fn lookup<'p>(&self, method: &str, path: &'p str) -> Result<Matched<'p>, Miss> {
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        let Ok(found) = self.paths.at(path) else {
            return Err(Miss::NoPath);
        };
        // HEAD is answered like GET (the front end drops the body).
        let wanted = if method == "HEAD" { "GET" } else { method };
        let Some(&i) = found.value.iter().find(|&&i| ROUTES[i].method == wanted) else {
            return Err(Miss::Method(
                found.value.iter().map(|&i| ROUTES[i].method).collect(),
            ));
        };
        let params = self.names[i]
            .iter()
            .filter_map(|name| found.params.get(*name).map(|v| (*name, v)))
            .collect();
        Ok(Matched {
            spec: &ROUTES[i],
            params,
        })
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}
