//! Target `routes`: building an app's route table and looking requests up in it
//! (`core/src/catalog.rs`, `RouteTable::compile` and `lookup`).
//!
//! An input is text, one entry a line: `R METHOD PATH` adds a route (its script is `sN`, N
//! its index), `L METHOD PATH` is a lookup. Checks: no panic; `compile` refuses a table iff
//! a pattern is malformed by an independent reading of the pattern rules, or two routes of the
//! same shape overlap in method (a table that compiles has no ambiguous pair); every lookup
//! that finds a route is sound (a naive segment matcher agrees the pattern matches the path,
//! the percent-decoded parameters are the right ones, the method fits); every route is
//! reachable: its pattern instantiated (parameters `v`) and looked up with its own method
//! finds a route (maybe a more specific one) or at worst 405, never 404.

use picloud_core::catalog::{RouteMatch, percent_decode};
use picloud_core::model::Method;
use picloud_core::{Route, RouteTable};

use super::{Check, Target};
use crate::rng::Rng;

pub struct Routes;

const TOKENS: &[&[u8]] = &[
    b"\nR GET /",
    b"\nL GET /",
    b"\nR * /",
    b":id",
    b"*rest",
    b"/",
    b"//",
    b"%2F",
    b"%41",
    b"%",
    b"{",
    b"}",
    b"?",
    b"#",
    b" ",
    b"\xc3\xa9",
    b":",
    b"*",
    b"\nR HEAD /a",
    b"\nL HEAD /a",
];

impl Target for Routes {
    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let mut out = String::new();
        let mut patterns = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let p = pattern(rng);
            out.push_str(&format!("R {} {p}\n", method(rng)));
            patterns.push(p);
        }
        for _ in 0..rng.below(6) {
            let path = if rng.one_in(2) && !patterns.is_empty() {
                instantiate(&patterns[rng.below(patterns.len())], "x%2Fy")
            } else {
                pattern(rng).replace([':', '*'], "")
            };
            out.push_str(&format!("L {} {path}\n", method(rng)));
        }
        out.into_bytes()
    }

    fn run(&mut self, input: &[u8]) -> Check {
        let text = String::from_utf8_lossy(input);
        let mut routes = Vec::new();
        let mut lookups = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(kind), Some(m), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            match kind {
                "R" => {
                    let Some(method) = Method::parse(m) else {
                        continue;
                    };
                    routes.push(Route {
                        method,
                        path: path.to_string(),
                        script: format!("s{}", routes.len()),
                    });
                }
                "L" => lookups.push((m.to_string(), path.to_string())),
                _ => {}
            }
        }
        let naive_invalid = routes.iter().any(|r| !naive_valid(&r.path));
        let table = match RouteTable::compile(&routes) {
            // A table with a bad pattern may be refused for a conflict found first.
            Err(picloud_core::catalog::RouteError::Invalid(_)) if naive_invalid => {
                return Check::Ok("invalid".into());
            }
            Err(picloud_core::catalog::RouteError::Conflict(_)) => {
                return Check::Ok(format!("conflict {naive_invalid}"));
            }
            Err(e) => {
                return Check::Finding(format!(
                    "compile verdict: {e:?} while the naive check says invalid={naive_invalid} for {routes:?}"
                ));
            }
            Ok(t) if naive_invalid => {
                return Check::Finding(format!(
                    "compile accepted an invalid pattern: {:?}",
                    t.routes()
                ));
            }
            Ok(t) => t,
        };
        // No ambiguous pair in a table that compiled.
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                let overlap =
                    a.method == b.method || a.method == Method::Any || b.method == Method::Any;
                if overlap && shape(&a.path) == shape(&b.path) {
                    return Check::Finding(format!("ambiguous: {a:?} and {b:?} both compiled"));
                }
            }
        }
        let mut found = 0;
        for (m, path) in &lookups {
            if let Err(f) = check_lookup(&table, &routes, m, path) {
                return f;
            }
            found += 1;
        }
        for r in &routes {
            let path = instantiate(&r.path, "v");
            let m = if r.method == Method::Any {
                "PATCH"
            } else {
                r.method.as_str()
            };
            if let Err(f) = check_lookup(&table, &routes, m, &path) {
                return f;
            }
            if matches!(table.lookup(m, &path), RouteMatch::NotFound) {
                return Check::Finding(format!("unreachable: {r:?} as {m} {path:?} in {routes:?}"));
            }
        }
        Check::Ok(format!("compiled {} {}", routes.len().min(4), found.min(3)))
    }

    fn tokens(&self) -> &'static [&'static [u8]] {
        TOKENS
    }

    fn len_max(&self) -> usize {
        2048
    }
}

fn check_lookup(table: &RouteTable, routes: &[Route], m: &str, path: &str) -> Result<(), Check> {
    match table.lookup(m, path) {
        RouteMatch::Found { script, params } => {
            let Some(r) = script
                .strip_prefix('s')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|i| routes.get(i))
            else {
                return Err(Check::Finding(format!(
                    "lookup named an unknown script {script}"
                )));
            };
            let wanted = Method::parse(m);
            let method_ok = r.method == Method::Any
                || Some(r.method) == wanted
                || (wanted == Some(Method::Head) && r.method == Method::Get);
            let expected = naive_match(&r.path, path);
            match expected {
                Some(p) if method_ok && p == params => Ok(()),
                _ => Err(Check::Finding(format!(
                    "unsound lookup: {m} {path:?} found {r:?} with {params:?}, naive {expected:?}"
                ))),
            }
        }
        RouteMatch::NotFound | RouteMatch::MethodNotAllowed(_) => Ok(()),
    }
}

/// The pattern rules as the docs state them: starts with `/`, at most 1024 bytes, segments
/// are static (no `{ } : * ? #`, whitespace or control characters), `:name` or a last
/// `*name`, names of ASCII letters, digits and `_`.
fn naive_valid(path: &str) -> bool {
    if !path.starts_with('/') || path.len() > 1024 {
        return false;
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    let name_ok =
        |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    segs.iter().enumerate().all(|(i, s)| {
        if let Some(n) = s.strip_prefix(':') {
            name_ok(n)
        } else if let Some(n) = s.strip_prefix('*') {
            i + 1 == segs.len() && name_ok(n)
        } else {
            !s.chars()
                .any(|c| "{}:*?#".contains(c) || c.is_whitespace() || c.is_control())
        }
    })
}

/// The pattern with parameter names erased: two patterns of one shape match the same paths.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with(':') {
                ":"
            } else if s.starts_with('*') {
                "*"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `pattern` matches `path` segment by segment; the decoded parameters if so.
fn naive_match(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
    let pat: Vec<&str> = pattern.split('/').collect();
    let got: Vec<&str> = path.split('/').collect();
    let mut params = Vec::new();
    for (i, p) in pat.iter().enumerate() {
        if let Some(name) = p.strip_prefix('*') {
            let rest = got.get(i..)?.join("/");
            if rest.is_empty() {
                return None;
            }
            params.push((name.to_string(), percent_decode(&rest)));
            return Some(params);
        }
        let g = got.get(i)?;
        if let Some(name) = p.strip_prefix(':') {
            if g.is_empty() {
                return None;
            }
            params.push((name.to_string(), percent_decode(g)));
        } else if p != g {
            return None;
        }
    }
    (pat.len() == got.len()).then_some(params)
}

fn instantiate(pattern: &str, value: &str) -> String {
    pattern
        .split('/')
        .map(|s| {
            if s.starts_with(':') || s.starts_with('*') {
                value
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn method(rng: &mut Rng) -> &'static str {
    rng.pick_s(&[
        "GET", "POST", "HEAD", "PUT", "DELETE", "*", "OPTIONS", "PATCH",
    ])
}

fn pattern(rng: &mut Rng) -> String {
    let mut p = String::new();
    let n = rng.below(4);
    for i in 0..n.max(1) {
        p.push('/');
        if n == 0 {
            break;
        }
        let seg = match rng.below(10) {
            0 | 1 => format!(":{}", rng.pick_s(&["id", "a", "b", "x_1", "", "é"])),
            2 if i + 1 == n => format!("*{}", rng.pick_s(&["rest", "r", ""])),
            3 => rng
                .pick_s(&["", "a b", "{x}", "a:b", "%41", "é", "a*"])
                .to_string(),
            _ => rng.pick_s(&["a", "b", "users", "v1", "x"]).to_string(),
        };
        p.push_str(&seg);
    }
    p
}
