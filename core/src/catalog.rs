//! The [`Catalog`]: an immutable, versioned snapshot of everything the data plane serves, and
//! the compiled [`RouteTable`] of each app.
//!
//! Owns: turning a store [`Snapshot`] into lookup structures, route pattern rules (static beats
//! `:param` beats final `*rest`; ambiguous tables rejected), and resolving a request's host,
//! path and method to an app and a script.
//!
//! Does not own: compiled scripts (the worker caches ASTs by [`CatalogScript::hash`]) or the
//! atomic swap of catalogs (the worker holds the live one). A catalog is never mutated: a
//! change builds a new one, and a request finishes on the catalog it started with.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::limits::Limits;
use crate::model::{Method, Route, ScriptKind, normalize_host};
use crate::store::Snapshot;

/// One script version as served.
#[derive(Debug)]
pub struct CatalogScript {
    /// Script name.
    pub name: String,
    /// Endpoint or module.
    pub kind: ScriptKind,
    /// Version number.
    pub version: u64,
    /// Content hash: the key of the compiled-AST cache.
    pub hash: String,
    /// The source, shared (compiled on first use if the AST cache does not hold it).
    pub source: Arc<str>,
    /// The modules it imports, sorted.
    pub imports: Vec<String>,
    /// A hash of this script's content and, recursively, of every module it imports: two
    /// catalogs give a module the same fingerprint exactly when it and everything below it are
    /// the same versions. The key of the evaluated-module cache (with app and name), so a
    /// module change reaches every importer at once and nothing else is re-evaluated.
    pub fingerprint: String,
    /// `app NUL name NUL fingerprint`: the evaluated-module cache key, built once here so a
    /// lookup per `import` allocates nothing.
    pub module_key: Arc<str>,
}

impl CatalogScript {
    /// Version 1 of a script that imports nothing (tests, benches, tools).
    pub fn new(name: &str, kind: ScriptKind, source: &str) -> CatalogScript {
        let hash = crate::content_hash(source);
        CatalogScript {
            name: name.to_string(),
            kind,
            version: 1,
            module_key: Arc::from(format!("\0{name}\0{hash}")),
            fingerprint: hash.clone(),
            hash,
            source: Arc::from(source),
            imports: Vec::new(),
        }
    }
}

/// One app as served.
#[derive(Debug)]
pub struct CatalogApp {
    /// App name.
    pub name: String,
    /// Show script error details to clients.
    pub debug: bool,
    /// The app's effective limits (node limits with the app's overrides).
    pub limits: Limits,
    /// Scripts by name.
    pub scripts: HashMap<String, Arc<CatalogScript>>,
    /// The compiled route table.
    pub routes: RouteTable,
    /// Variables and secrets for `env::get`.
    pub env: Env,
    /// Event name → the scripts it triggers, in stored order.
    pub triggers: HashMap<String, Vec<Arc<CatalogScript>>>,
    /// Cron schedules.
    pub schedules: Vec<crate::services::Schedule>,
    /// Per-app state the data plane attaches when the catalog goes live (its metrics).
    pub attached: AppSlot,
}

/// A slot for per-app state the data plane attaches when a catalog goes live: the worker's
/// per-app metrics, reached from the resolved app without a lock or a lookup. Core only
/// carries it (it has no idea what the worker counts); it is empty after [`Catalog::build`]
/// and set at most once.
#[derive(Default)]
pub struct AppSlot(OnceLock<Arc<dyn Any + Send + Sync>>);

impl AppSlot {
    /// The attached value, if one of type `T` was set.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.get().and_then(|v| v.as_ref().downcast_ref::<T>())
    }

    /// Attaches `value`; false (and nothing changes) if the slot was already set.
    pub fn set(&self, value: Arc<dyn Any + Send + Sync>) -> bool {
        self.0.set(value).is_ok()
    }
}

impl std::fmt::Debug for AppSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "AppSlot(set)"
        } else {
            "AppSlot(empty)"
        })
    }
}

impl CatalogApp {
    /// An app with no scripts, routes, variables, triggers or schedules (tests, benches).
    pub fn new(name: &str, debug: bool, limits: Limits) -> CatalogApp {
        CatalogApp {
            name: name.to_string(),
            debug,
            limits,
            scripts: HashMap::new(),
            routes: RouteTable::default(),
            env: Env::default(),
            triggers: HashMap::new(),
            schedules: Vec::new(),
            attached: AppSlot::default(),
        }
    }
}

/// An app's variables and secrets. Its `Debug` shows names only, so a logged catalog never
/// shows a value.
#[derive(Default, Clone)]
pub struct Env(HashMap<String, String>);

impl Env {
    /// The variables of `pairs`.
    pub fn new(pairs: &[(String, String)]) -> Env {
        Env(pairs.iter().cloned().collect())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

/// Why a route table cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// A pattern is malformed (bad segment, `*` not last, ...).
    Invalid(String),
    /// Two routes match the same requests.
    Conflict(String),
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::Invalid(m) | RouteError::Conflict(m) => f.write_str(m),
        }
    }
}

/// An app's routes compiled for lookup. Routes with the same pattern share one router entry
/// holding a method → script list.
#[derive(Debug, Default)]
pub struct RouteTable {
    router: matchit::Router<usize>,
    /// Per router entry: (method, script name), at most one per method.
    entries: Vec<Vec<(Method, String)>>,
    /// The table as written, for the admin API.
    routes: Vec<Route>,
}

/// Where a route lookup landed.
#[derive(Debug)]
pub enum RouteMatch<'t> {
    /// A route answers: the script name and the decoded route parameters.
    Found {
        /// Script name.
        script: &'t str,
        /// Route parameters, percent-decoded.
        params: Vec<(String, String)>,
    },
    /// Nothing matches the path.
    NotFound,
    /// The path matches, for other methods: the `Allow` header value.
    MethodNotAllowed(String),
}

impl RouteTable {
    /// Compiles a route table, rejecting malformed patterns and ambiguous overlaps. Script
    /// references are not checked here (the store checks them).
    pub fn compile(routes: &[Route]) -> Result<RouteTable, RouteError> {
        let mut by_pattern: Vec<(String, Vec<(Method, String)>)> = Vec::new();
        for r in routes {
            let pattern = to_matchit_pattern(&r.path)?;
            match by_pattern.iter_mut().find(|(p, _)| *p == pattern) {
                Some((_, methods)) => {
                    if let Some((m, _)) = methods.iter().find(|(m, _)| {
                        *m == r.method || *m == Method::Any || r.method == Method::Any
                    }) {
                        return Err(RouteError::Conflict(format!(
                            "routes {} {} and {} {} match the same requests",
                            m.as_str(),
                            r.path,
                            r.method.as_str(),
                            r.path
                        )));
                    }
                    methods.push((r.method, r.script.clone()));
                }
                None => by_pattern.push((pattern, vec![(r.method, r.script.clone())])),
            }
        }
        let mut table = RouteTable {
            routes: routes.to_vec(),
            ..RouteTable::default()
        };
        for (i, (pattern, methods)) in by_pattern.into_iter().enumerate() {
            table.router.insert(pattern.clone(), i).map_err(|e| {
                RouteError::Conflict(format!("route {pattern} overlaps another route: {e}"))
            })?;
            table.entries.push(methods);
        }
        Ok(table)
    }

    /// The table as written.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for `method` (upper case) and `path`. HEAD falls back to GET.
    pub fn lookup(&self, method: &str, path: &str) -> RouteMatch<'_> {
        let Ok(m) = self.router.at(path) else {
            return RouteMatch::NotFound;
        };
        let methods = &self.entries[*m.value];
        let wanted = Method::parse(method);
        let pick = |want: Method| methods.iter().find(|(m, _)| *m == want);
        let found = wanted
            .and_then(pick)
            .or_else(|| {
                (wanted == Some(Method::Head))
                    .then(|| pick(Method::Get))
                    .flatten()
            })
            .or_else(|| pick(Method::Any));
        match found {
            Some((_, script)) => RouteMatch::Found {
                script,
                params: m
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_string(), percent_decode(v)))
                    .collect(),
            },
            None => {
                let mut allow: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
                if allow.contains(&"GET") && !allow.contains(&"HEAD") {
                    allow.push("HEAD");
                }
                RouteMatch::MethodNotAllowed(allow.join(", "))
            }
        }
    }
}

/// Translates our pattern syntax (`/users/:id/*rest`) into matchit's (`/users/{id}/{*rest}`).
fn to_matchit_pattern(path: &str) -> Result<String, RouteError> {
    let invalid = |why: &str| Err(RouteError::Invalid(format!("route path {path:?}: {why}")));
    if !path.starts_with('/') {
        return invalid("must start with /");
    }
    if path.len() > 1024 {
        return invalid("longer than 1024 bytes");
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut out = String::with_capacity(path.len() + 8);
    for (i, seg) in segments.iter().enumerate() {
        out.push('/');
        if let Some(name) = seg.strip_prefix(':') {
            if !is_param_name(name) {
                return invalid("parameter names are letters, digits and _");
            }
            out.push('{');
            out.push_str(name);
            out.push('}');
        } else if let Some(name) = seg.strip_prefix('*') {
            if i + 1 != segments.len() {
                return invalid("*catch-all must be the last segment");
            }
            if !is_param_name(name) {
                return invalid("catch-all names are letters, digits and _");
            }
            out.push_str("{*");
            out.push_str(name);
            out.push('}');
        } else {
            if seg.chars().any(|c| {
                matches!(c, '{' | '}' | ':' | '*' | '?' | '#')
                    || c.is_whitespace()
                    || c.is_control()
            }) {
                return invalid("static segments may not contain { } : * ? # or spaces");
            }
            out.push_str(seg);
        }
    }
    Ok(out)
}

fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decodes `%XX` escapes; invalid escapes and non-UTF-8 results are kept as written.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// Everything the data plane serves at one revision. Immutable; shared as `Arc<Catalog>`.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The store revision this catalog was built from.
    pub revision: u64,
    apps: HashMap<String, Arc<CatalogApp>>,
    hosts: HashMap<String, Arc<CatalogApp>>,
}

/// What a request resolves to. `'c` borrows the catalog, `'p` the request path (kept apart
/// so the resolved app can be held while the request's fields move into a job).
#[derive(Debug)]
pub enum Resolution<'c, 'p> {
    /// An endpoint script answers.
    Found {
        /// The app.
        app: &'c Arc<CatalogApp>,
        /// The script to run.
        script: &'c Arc<CatalogScript>,
        /// Route parameters.
        params: Vec<(String, String)>,
        /// The path within the app (after the app prefix, if any), without the query.
        path: &'p str,
    },
    /// No app or no route (404).
    NotFound,
    /// The route exists for other methods (405 with this `Allow` value).
    MethodNotAllowed(String),
}

/// Every script's [`CatalogScript::fingerprint`]: its hash and, in import order, each imported
/// module's name and fingerprint, hashed. Memoised over the import graph (acyclic and at most
/// [`crate::rules::IMPORT_DEPTH_MAX`] deep, by the store's rules; a cycle or a missing module
/// that slipped in anyway just ends the recursion, and the run-time resolver reports it).
fn fingerprints(scripts: &[crate::store::Script]) -> HashMap<String, String> {
    fn visit<'s>(
        name: &'s str,
        by_name: &HashMap<&'s str, &'s crate::store::Script>,
        memo: &mut HashMap<String, String>,
        depth: usize,
    ) -> String {
        if let Some(fp) = memo.get(name) {
            return fp.clone();
        }
        let Some(script) = by_name.get(name) else {
            return String::new();
        };
        let mut material = script.info.hash.clone();
        for module in &script.info.imports {
            let below = if depth > 2 * crate::rules::IMPORT_DEPTH_MAX {
                String::new()
            } else {
                visit(module, by_name, memo, depth + 1)
            };
            material.push_str(&format!(";{module}={below}"));
        }
        let fp = if script.info.imports.is_empty() {
            script.info.hash.clone()
        } else {
            crate::content_hash(&material)
        };
        memo.insert(name.to_string(), fp.clone());
        fp
    }
    let by_name: HashMap<&str, &crate::store::Script> =
        scripts.iter().map(|s| (s.info.name.as_str(), s)).collect();
    let mut memo = HashMap::new();
    for s in scripts {
        visit(&s.info.name, &by_name, &mut memo, 0);
    }
    memo
}

impl Catalog {
    /// Builds a catalog from a store snapshot. A route table that no longer compiles, or a
    /// route naming a missing script, cannot be served: it is left out and described in the
    /// returned warnings (the store's write checks make this a can't-happen).
    pub fn build(snapshot: &Snapshot, node_limits: &Limits) -> (Catalog, Vec<String>) {
        let mut warnings = Vec::new();
        let mut catalog = Catalog {
            revision: snapshot.revision,
            ..Catalog::default()
        };
        for sa in &snapshot.apps {
            let fingerprints = fingerprints(&sa.scripts);
            let scripts: HashMap<String, Arc<CatalogScript>> = sa
                .scripts
                .iter()
                .map(|s| {
                    let fingerprint = fingerprints
                        .get(&s.info.name)
                        .cloned()
                        .unwrap_or_else(|| s.info.hash.clone());
                    let cs = CatalogScript {
                        module_key: Arc::from(format!(
                            "{}\0{}\0{fingerprint}",
                            sa.app.name, s.info.name
                        )),
                        name: s.info.name.clone(),
                        kind: s.info.kind,
                        version: s.info.version,
                        hash: s.info.hash.clone(),
                        source: Arc::from(s.source.as_str()),
                        imports: s.info.imports.clone(),
                        fingerprint,
                    };
                    (cs.name.clone(), Arc::new(cs))
                })
                .collect();
            let routable: Vec<Route> = sa
                .routes
                .iter()
                .filter(|r| {
                    let ok = scripts
                        .get(&r.script)
                        .is_some_and(|s| s.kind == ScriptKind::Endpoint);
                    if !ok {
                        warnings.push(format!(
                            "app {}: route {} {} names no endpoint script {:?}",
                            sa.app.name,
                            r.method.as_str(),
                            r.path,
                            r.script
                        ));
                    }
                    ok
                })
                .cloned()
                .collect();
            let routes = RouteTable::compile(&routable).unwrap_or_else(|e| {
                warnings.push(format!("app {}: route table not served: {e}", sa.app.name));
                RouteTable::default()
            });
            let mut triggers: HashMap<String, Vec<Arc<CatalogScript>>> = HashMap::new();
            for t in &sa.triggers {
                match scripts.get(&t.script) {
                    Some(script) if script.kind == ScriptKind::Endpoint => triggers
                        .entry(t.event.clone())
                        .or_default()
                        .push(script.clone()),
                    _ => warnings.push(format!(
                        "app {}: trigger {:?} names no endpoint script {:?}",
                        sa.app.name, t.event, t.script
                    )),
                }
            }
            let app = Arc::new(CatalogApp {
                name: sa.app.name.clone(),
                debug: sa.app.config.debug,
                limits: node_limits.with_overrides(&sa.app.config.limits),
                scripts,
                routes,
                env: Env::new(&sa.env),
                triggers,
                schedules: sa.schedules.clone(),
                attached: AppSlot::default(),
            });
            for h in &sa.app.config.hosts {
                catalog.hosts.insert(h.clone(), app.clone());
            }
            catalog.apps.insert(app.name.clone(), app);
        }
        (catalog, warnings)
    }

    /// Every app, in no particular order.
    pub fn apps(&self) -> impl Iterator<Item = &Arc<CatalogApp>> {
        self.apps.values()
    }

    /// An app by name.
    pub fn app(&self, name: &str) -> Option<&Arc<CatalogApp>> {
        self.apps.get(name)
    }

    /// Number of apps.
    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// Resolves a request. `host` is the raw `Host` header; `path` the request path without
    /// the query string. An app listing the host gets the full path; otherwise the first path
    /// segment names the app.
    pub fn resolve<'c, 'p>(
        &'c self,
        host: Option<&str>,
        method: &str,
        path: &'p str,
    ) -> Resolution<'c, 'p> {
        let by_host = host
            .filter(|_| !self.hosts.is_empty())
            .and_then(|h| self.hosts.get(&normalize_host(h)));
        let (app, app_path) = match by_host {
            Some(app) => (app, path),
            None => {
                let rest = path.strip_prefix('/').unwrap_or(path);
                let (name, tail) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, "/"),
                };
                match self.apps.get(name) {
                    Some(app) => (app, tail),
                    None => return Resolution::NotFound,
                }
            }
        };
        match app.routes.lookup(method, app_path) {
            RouteMatch::Found { script, params } => match app.scripts.get(script) {
                Some(script) => Resolution::Found {
                    app,
                    script,
                    params,
                    path: app_path,
                },
                None => Resolution::NotFound,
            },
            RouteMatch::NotFound => Resolution::NotFound,
            RouteMatch::MethodNotAllowed(allow) => Resolution::MethodNotAllowed(allow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str, script: &str) -> Route {
        Route {
            method: Method::parse(method).expect("method"),
            path: path.into(),
            script: script.into(),
        }
    }

    fn found(t: &RouteTable, m: &str, p: &str) -> Option<(String, Vec<(String, String)>)> {
        match t.lookup(m, p) {
            RouteMatch::Found { script, params } => Some((script.to_string(), params)),
            _ => None,
        }
    }

    #[test]
    fn static_beats_param_beats_catch_all() {
        let t = RouteTable::compile(&[
            route("GET", "/users/me", "me"),
            route("GET", "/users/:id", "user"),
            route("GET", "/*rest", "fallback"),
        ])
        .expect("compiles");
        assert_eq!(
            found(&t, "GET", "/users/me").map(|f| f.0),
            Some("me".into())
        );
        assert_eq!(
            found(&t, "GET", "/users/42"),
            Some(("user".into(), vec![("id".into(), "42".into())]))
        );
        assert_eq!(
            found(&t, "GET", "/a/b/c"),
            Some(("fallback".into(), vec![("rest".into(), "a/b/c".into())]))
        );
    }

    #[test]
    fn methods_head_and_405() {
        let t = RouteTable::compile(&[route("GET", "/x", "g"), route("POST", "/x", "p")])
            .expect("compiles");
        assert_eq!(found(&t, "HEAD", "/x").map(|f| f.0), Some("g".into()));
        match t.lookup("DELETE", "/x") {
            RouteMatch::MethodNotAllowed(allow) => assert_eq!(allow, "GET, POST, HEAD"),
            other => panic!("{other:?}"),
        }
        let any = RouteTable::compile(&[route("*", "/y", "any")]).expect("compiles");
        assert_eq!(found(&any, "PATCH", "/y").map(|f| f.0), Some("any".into()));
    }

    #[test]
    fn ambiguous_tables_are_rejected() {
        let conflict =
            |routes: &[Route]| matches!(RouteTable::compile(routes), Err(RouteError::Conflict(_)));
        assert!(conflict(&[
            route("GET", "/a", "x"),
            route("GET", "/a", "y")
        ]));
        assert!(conflict(&[route("GET", "/a", "x"), route("*", "/a", "y")]));
        assert!(conflict(&[
            route("GET", "/u/:id", "x"),
            route("POST", "/u/:name", "y")
        ]));
        assert!(!conflict(&[
            route("GET", "/u/:id", "x"),
            route("POST", "/u/:id", "y")
        ]));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for p in ["x", "/*a/b", "/:", "/a b", "/{x}"] {
            assert!(
                matches!(
                    RouteTable::compile(&[route("GET", p, "s")]),
                    Err(RouteError::Invalid(_))
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
