//! The integrity rules of one app's scripts, imports and routes, as a pure check over the state
//! an app would have after a change.
//!
//! Owns: what makes an app's state valid, in one place for every store and the admin API:
//! - every route, cron schedule and event trigger names an existing endpoint script;
//! - every import names an existing module of the same app;
//! - the import graph has no cycle (self-imports included) and no chain deeper than
//!   [`IMPORT_DEPTH_MAX`] imports.
//!
//! Stores run [`check`] inside their write transactions on the state after the change, so the
//! rules hold whatever order concurrent writers (on any node) commit in; each store operation
//! maps a [`Violation`] to its own error (a route to a missing script is `Invalid` for a route
//! table, but `Conflict` for deleting the script it names).
//!
//! Does not own: finding a script's imports in its source (the worker parses Rhai), name
//! shapes (`model`), or route pattern conflicts (`catalog::RouteTable`).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Route, ScriptKind};

/// Most imports in one chain: `endpoint → m1 → … → m8` is allowed, a ninth level is not.
pub const IMPORT_DEPTH_MAX: usize = 8;

/// What one app holds, as far as the rules care: each script's kind and imports, and routes.
#[derive(Debug, Clone, Default)]
pub struct AppState {
    /// Script name → (kind, imported module names).
    pub scripts: BTreeMap<String, (ScriptKind, Vec<String>)>,
    /// The route table.
    pub routes: Vec<Route>,
    /// Other things that run an endpoint script, as (label, script): cron schedules
    /// (`schedule NAME`) and event triggers (`trigger EVENT`). Same rule as routes.
    pub runners: Vec<(String, String)>,
}

/// A broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A route names a script the app does not have.
    RouteToMissing {
        /// `METHOD path` of the route.
        route: String,
        /// The script it names.
        script: String,
    },
    /// A route names a module.
    RouteToModule {
        /// `METHOD path` of the route.
        route: String,
        /// The module it names.
        script: String,
    },
    /// A script imports a module the app does not have.
    ImportOfMissing {
        /// The importing script.
        script: String,
        /// The missing module.
        module: String,
    },
    /// A script imports an endpoint.
    ImportOfEndpoint {
        /// The importing script.
        script: String,
        /// The endpoint it names.
        module: String,
    },
    /// Imports form a cycle; the chain starts and ends with the same name.
    Cycle(Vec<String>),
    /// A chain of imports is deeper than [`IMPORT_DEPTH_MAX`]; the chain, from its root.
    TooDeep(Vec<String>),
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::RouteToMissing { route, script } => {
                write!(
                    f,
                    "route {route} names script {script:?}, which does not exist"
                )
            }
            Violation::RouteToModule { route, script } => write!(
                f,
                "route {route} names script {script:?}, which is a module, not an endpoint"
            ),
            Violation::ImportOfMissing { script, module } => write!(
                f,
                "{script:?} imports {module:?}, which is not a module of this app"
            ),
            Violation::ImportOfEndpoint { script, module } => write!(
                f,
                "{script:?} imports {module:?}, which is an endpoint, not a module"
            ),
            Violation::Cycle(chain) => write!(f, "import cycle: {}", chain.join(" → ")),
            Violation::TooDeep(chain) => write!(
                f,
                "import chain deeper than {IMPORT_DEPTH_MAX}: {}",
                chain.join(" → ")
            ),
        }
    }
}

/// Checks every rule; returns the first violation found (routes first, then imports, then
/// the graph, each in name order, so the answer is deterministic).
pub fn check(state: &AppState) -> Result<(), Violation> {
    let runs = state
        .routes
        .iter()
        .map(|r| (format!("{} {}", r.method.as_str(), r.path), &r.script))
        .chain(state.runners.iter().map(|(label, s)| (label.clone(), s)));
    for (route, script) in runs {
        match state.scripts.get(script) {
            None => {
                return Err(Violation::RouteToMissing {
                    route,
                    script: script.clone(),
                });
            }
            Some((ScriptKind::Module, _)) => {
                return Err(Violation::RouteToModule {
                    route,
                    script: script.clone(),
                });
            }
            Some((ScriptKind::Endpoint, _)) => {}
        }
    }
    for (name, (_, imports)) in &state.scripts {
        for module in imports {
            match state.scripts.get(module) {
                None => {
                    return Err(Violation::ImportOfMissing {
                        script: name.clone(),
                        module: module.clone(),
                    });
                }
                Some((ScriptKind::Endpoint, _)) => {
                    return Err(Violation::ImportOfEndpoint {
                        script: name.clone(),
                        module: module.clone(),
                    });
                }
                Some((ScriptKind::Module, _)) => {}
            }
        }
    }
    // Depth-first from every script: `height` memoises the longest chain below a script, so
    // the walk is linear in the graph's size.
    let mut height: BTreeMap<&str, usize> = BTreeMap::new();
    for name in state.scripts.keys() {
        let mut path = Vec::new();
        let mut on_path = BTreeSet::new();
        longest_below(state, name, &mut path, &mut on_path, &mut height)?;
    }
    Ok(())
}

/// The number of imports in the longest chain starting at `name`. `path` is the chain walked
/// to get here (for error messages and cycle detection).
fn longest_below<'s>(
    state: &'s AppState,
    name: &'s str,
    path: &mut Vec<&'s str>,
    on_path: &mut BTreeSet<&'s str>,
    height: &mut BTreeMap<&'s str, usize>,
) -> Result<usize, Violation> {
    if on_path.contains(name) {
        let start = path.iter().position(|n| *n == name).unwrap_or(0);
        let mut chain: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
        chain.push(name.to_string());
        return Err(Violation::Cycle(chain));
    }
    if let Some(&h) = height.get(name) {
        if path.len() + h > IMPORT_DEPTH_MAX {
            return Err(too_deep(state, path, name));
        }
        return Ok(h);
    }
    if path.len() > IMPORT_DEPTH_MAX {
        return Err(too_deep(state, path, name));
    }
    path.push(name);
    on_path.insert(name);
    let mut h = 0;
    if let Some((_, imports)) = state.scripts.get(name) {
        for module in imports {
            let Some((key, _)) = state.scripts.get_key_value(module.as_str()) else {
                continue;
            };
            h = h.max(1 + longest_below(state, key, path, on_path, height)?);
        }
    }
    path.pop();
    on_path.remove(name);
    height.insert(name, h);
    Ok(h)
}

/// The too-deep chain through `path` then `name`, extended along the longest imports below.
fn too_deep(state: &AppState, path: &[&str], name: &str) -> Violation {
    let mut chain: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    let mut at = name.to_string();
    // Follow first imports down to show the whole chain (bounded: the graph below `name` has
    // no cycle, or the cycle check would have fired first; cap anyway).
    for _ in 0..=IMPORT_DEPTH_MAX * 2 {
        chain.push(at.clone());
        match state.scripts.get(&at).and_then(|(_, i)| i.first()) {
            Some(next) => at = next.clone(),
            None => break,
        }
    }
    chain.truncate(IMPORT_DEPTH_MAX + 2);
    Violation::TooDeep(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Method;

    fn state(scripts: &[(&str, ScriptKind, &[&str])], routes: &[(&str, &str)]) -> AppState {
        AppState {
            scripts: scripts
                .iter()
                .map(|(n, k, i)| {
                    (
                        n.to_string(),
                        (*k, i.iter().map(|s| s.to_string()).collect()),
                    )
                })
                .collect(),
            routes: routes
                .iter()
                .map(|(p, s)| Route {
                    method: Method::Get,
                    path: p.to_string(),
                    script: s.to_string(),
                })
                .collect(),
            runners: Vec::new(),
        }
    }

    use ScriptKind::{Endpoint as E, Module as M};

    #[test]
    fn routes_and_imports_must_resolve() {
        assert_eq!(
            check(&state(&[("e", E, &["m"]), ("m", M, &[])], &[("/", "e")])),
            Ok(())
        );
        assert!(matches!(
            check(&state(&[("e", E, &[])], &[("/", "x")])),
            Err(Violation::RouteToMissing { .. })
        ));
        assert!(matches!(
            check(&state(&[("m", M, &[])], &[("/", "m")])),
            Err(Violation::RouteToModule { .. })
        ));
        assert!(matches!(
            check(&state(&[("e", E, &["x"])], &[])),
            Err(Violation::ImportOfMissing { .. })
        ));
        assert!(matches!(
            check(&state(&[("e", E, &["f"]), ("f", E, &[])], &[])),
            Err(Violation::ImportOfEndpoint { .. })
        ));
    }

    #[test]
    fn cycles_are_named() {
        assert_eq!(
            check(&state(&[("a", M, &["a"])], &[])),
            Err(Violation::Cycle(vec!["a".into(), "a".into()]))
        );
        assert_eq!(
            check(&state(
                &[("e", E, &["a"]), ("a", M, &["b"]), ("b", M, &["a"])],
                &[]
            )),
            Err(Violation::Cycle(vec!["a".into(), "b".into(), "a".into()]))
        );
    }

    /// `e → m1 → … → m8` is 8 imports deep: allowed. One more module is not.
    #[test]
    fn depth_is_bounded_at_eight() {
        let chain = |modules: usize| {
            let names: Vec<String> = (1..=modules).map(|i| format!("m{i}")).collect();
            let mut scripts = vec![("e".to_string(), (E, vec!["m1".to_string()]))];
            for (i, n) in names.iter().enumerate() {
                let next: Vec<String> = names.get(i + 1).into_iter().cloned().collect();
                scripts.push((n.clone(), (M, next)));
            }
            AppState {
                scripts: scripts.into_iter().collect(),
                routes: Vec::new(),
                runners: Vec::new(),
            }
        };
        assert_eq!(check(&chain(8)), Ok(()));
        match check(&chain(9)) {
            Err(Violation::TooDeep(c)) => {
                assert_eq!(c.first().map(String::as_str), Some("e"));
                assert_eq!(c.len(), 10, "{c:?}");
            }
            other => panic!("{other:?}"),
        }
        // Diamonds are fine and checked once per node.
        let diamond = state(
            &[
                ("e", E, &["a", "b"]),
                ("a", M, &["c"]),
                ("b", M, &["c"]),
                ("c", M, &[]),
            ],
            &[],
        );
        assert_eq!(check(&diamond), Ok(()));
    }
}
