//! Modules: what `import "NAME" as x;` loads, how scripts are checked for imports at save
//! time, and the shared cache of evaluated modules.
//!
//! Owns:
//! - [`analyze`]: the save-time reading of a compiled script: the modules it imports (every
//!   `import` anywhere in it, which must name a module by a string literal) and, for a module,
//!   its shape (only functions, `const` declarations and imports at top level).
//! - [`ModuleCache`]: evaluated modules (`Shared<rhai::Module>`), LRU-bounded by
//!   `module_cache_size`, keyed by app, module name and the module's fingerprint (its content
//!   and the versions of everything it imports; see `CatalogScript::fingerprint`). A module
//!   change gives the module and each of its importers a new key, so the next request loads
//!   the new code, while nothing unrelated is evaluated again.
//! - [`AppModules`], the one module resolver of every engine. It resolves names only within the
//!   app of the running invocation, from the catalog that invocation started on ([`enter`]), so
//!   a request can never load another app's module, nor mix module versions of two catalogs.
//!   Cycles and chains deeper than [`IMPORT_DEPTH_MAX`] are stopped at run time too.
//!
//! Does not own: storing or validating the import graph (picloud-core's `rules`, the stores),
//! compiling (the AST cache), or limits (a module's top level runs under the importing
//! invocation's budget, like any other code it runs).

use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;
use picloud_core::model::validate_module_name;
use picloud_core::rules::IMPORT_DEPTH_MAX;
use picloud_core::{CatalogApp, Limits, ScriptKind};
use rhai::{
    AST, ASTFlags, ASTNode, Engine, EvalAltResult, Expr, Module, ModuleResolver, Position, Scope,
    Shared, Stmt,
};

use super::ast_cache::{AstCache, CompileError};

/// What [`analyze`] found in a script.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// The modules imported, sorted, without duplicates.
    pub imports: Vec<String>,
    /// Where each import is (1-based line and column), in source order, for error messages.
    pub import_positions: Vec<(String, usize, usize)>,
}

fn at(pos: Position, message: String) -> CompileError {
    CompileError {
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
        message,
    }
}

/// Reads a compiled script's imports and, for a module, checks its shape. Errors carry the
/// line and column of the offending statement.
pub fn analyze(ast: &AST, kind: ScriptKind) -> Result<Analysis, CompileError> {
    if kind == ScriptKind::Module {
        for stmt in ast.statements() {
            match stmt {
                Stmt::Noop(..) | Stmt::Import(..) => {}
                Stmt::Var(_, flags, _) if flags.contains(ASTFlags::CONSTANT) => {}
                other => {
                    return Err(at(
                        other.position(),
                        "a module holds only functions, `const` declarations and imports; \
                         move this statement into a function"
                            .to_string(),
                    ));
                }
            }
        }
    }
    let mut found: Vec<(String, Position)> = Vec::new();
    let mut bad: Option<CompileError> = None;
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Import(x, pos))) = path.last() {
            match &x.0 {
                Expr::StringConstant(name, _) => {
                    if let Err(why) = validate_module_name(name) {
                        bad = Some(at(*pos, format!("cannot import {name:?}: {why}")));
                        return false;
                    }
                    found.push((name.to_string(), *pos));
                }
                _ => {
                    bad = Some(at(
                        *pos,
                        "an import names its module with a string literal: import \"NAME\" as x;"
                            .to_string(),
                    ));
                    return false;
                }
            }
        }
        true
    });
    if let Some(e) = bad {
        return Err(e);
    }
    let import_positions = found
        .iter()
        .map(|(n, p)| (n.clone(), p.line().unwrap_or(0), p.position().unwrap_or(0)))
        .collect();
    let mut imports: Vec<String> = found.into_iter().map(|(n, _)| n).collect();
    imports.sort();
    imports.dedup();
    Ok(Analysis {
        imports,
        import_positions,
    })
}

/// The shared cache of evaluated modules, keyed by `CatalogScript::module_key` (app, module
/// name, fingerprint). See the module docs.
pub struct ModuleCache {
    entries: Mutex<LruCache<Arc<str>, Shared<Module>>>,
    /// Modules evaluated so far (misses): lets tests see that a change re-evaluated only what
    /// depends on it.
    evaluations: AtomicU64,
}

impl ModuleCache {
    /// A cache holding at most `limits.module_cache_size` modules (at least one).
    pub fn new(limits: &Limits) -> ModuleCache {
        let cap = NonZeroUsize::new(limits.module_cache_size).unwrap_or(NonZeroUsize::MIN);
        ModuleCache {
            entries: Mutex::new(LruCache::new(cap)),
            evaluations: AtomicU64::new(0),
        }
    }

    /// Modules evaluated since the cache was created.
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
    }

    /// Number of cached modules.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The running invocation's view of modules: its app (from the catalog it started on) and the
/// modules being evaluated right now, outermost first.
struct Context {
    app: Arc<CatalogApp>,
    loading: Vec<String>,
}

thread_local! {
    /// Set by [`enter`] for the length of one invocation on an engine thread.
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Makes `app` the app whose modules `import` loads on this thread, until the guard drops.
pub fn enter(app: Arc<CatalogApp>) -> Entered {
    CONTEXT.with(|c| {
        *c.borrow_mut() = Some(Context {
            app,
            loading: Vec::new(),
        })
    });
    Entered(())
}

/// Ends the invocation's module context when dropped (also on unwinding).
pub struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        CONTEXT.with(|c| *c.borrow_mut() = None);
    }
}

/// The module resolver of every engine (see the module docs).
#[derive(Clone)]
pub struct AppModules {
    modules: Arc<ModuleCache>,
    asts: Arc<AstCache>,
}

impl AppModules {
    /// A resolver evaluating modules compiled by `asts` into `modules`.
    pub fn new(modules: Arc<ModuleCache>, asts: Arc<AstCache>) -> AppModules {
        AppModules { modules, asts }
    }
}

fn not_found(path: &str, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorModuleNotFound(path.to_string(), pos))
}

fn refused(message: String, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into(), pos))
}

impl ModuleResolver for AppModules {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        // The app is copied out of the context (an `Arc`): evaluating a module below calls
        // back into this resolver for its own imports, which borrows the context again.
        let app = CONTEXT
            .with(|c| c.borrow().as_ref().map(|ctx| ctx.app.clone()))
            .ok_or_else(|| not_found(path, pos))?;
        // Only this app's modules resolve, by exact name: module names were checked when the
        // scripts were saved, so no path, other app's name or odd string can match one.
        let script = match app.scripts.get(path) {
            Some(s) if s.kind == ScriptKind::Module => s.clone(),
            _ => return Err(not_found(path, pos)),
        };
        if let Some(m) = self.modules.entries.lock().get(script.module_key.as_ref()) {
            return Ok(m.clone());
        }
        // A miss: check the chain being loaded for cycles and depth before evaluating.
        let chain = CONTEXT
            .with(|c| c.borrow().as_ref().map(|ctx| ctx.loading.clone()))
            .unwrap_or_default();
        if chain.iter().any(|n| n == path) {
            let mut cycle = chain.clone();
            cycle.push(path.to_string());
            return Err(refused(format!("import cycle: {}", cycle.join(" → ")), pos));
        }
        if chain.len() >= IMPORT_DEPTH_MAX {
            let mut deep = chain.clone();
            deep.push(path.to_string());
            return Err(refused(
                format!(
                    "import chain deeper than {IMPORT_DEPTH_MAX}: {}",
                    deep.join(" → ")
                ),
                pos,
            ));
        }
        let ast = self
            .asts
            .get_or_compile(&script.hash, &script.source)
            .map_err(|e| refused(format!("module {path:?} does not compile: {e}"), pos))?;
        CONTEXT.with(|c| {
            if let Some(ctx) = c.borrow_mut().as_mut() {
                ctx.loading.push(path.to_string());
            }
        });
        let evaluated = Module::eval_ast_as_new(Scope::new(), &ast, engine);
        CONTEXT.with(|c| {
            if let Some(ctx) = c.borrow_mut().as_mut() {
                ctx.loading.pop();
            }
        });
        let module: Shared<Module> = evaluated?.into();
        self.modules.evaluations.fetch_add(1, Ordering::Relaxed);
        // Two threads missing the same key both evaluate it; the modules are equivalent and
        // the second insert wins (as in the AST cache: no thread waits on another's work).
        self.modules
            .entries
            .lock()
            .put(script.module_key.clone(), module.clone());
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sandbox::{EngineOptions, EngineProfile, build_engine};

    fn analyze_src(src: &str, kind: ScriptKind) -> Result<Analysis, CompileError> {
        let engine = build_engine(
            &EngineProfile::of(&Limits::default()),
            EngineOptions::default(),
        );
        let ast = engine.compile(src).map_err(CompileError::from)?;
        analyze(&ast, kind)
    }

    #[test]
    fn imports_are_found_everywhere_and_must_be_literal_names() {
        let a = analyze_src(
            "import \"b\" as b;\nfn f() { import \"a\" as a; a::x() }\nif true { import \"b\" as c; }\n1",
            ScriptKind::Endpoint,
        )
        .expect("analyzes");
        assert_eq!(a.imports, ["a", "b"]);
        // (The optimizer may fold the `if true` block; each name is found either way.)
        assert!(a.import_positions.len() >= 2, "{a:?}");
        let e = analyze_src("let p = \"a\";\nimport p as a;", ScriptKind::Endpoint)
            .expect_err("dynamic path");
        assert_eq!(e.line, 2);
        for bad in ["../a", "other/a", "kv", "A", "a.b", ""] {
            let e =
                analyze_src(&format!("import {bad:?} as m;"), ScriptKind::Endpoint).expect_err(bad);
            assert_eq!(e.line, 1, "{bad}");
        }
    }

    #[test]
    fn modules_hold_only_functions_consts_and_imports() {
        let ok = "import \"u\" as u;\nconst A = 1;\nexport const B = 2;\nfn f(x) { x + A }\nprivate fn g() { 1 }";
        assert_eq!(
            analyze_src(ok, ScriptKind::Module).expect("module").imports,
            ["u"]
        );
        for (src, line) in [
            ("fn f() { 1 }\nlet x = 1;", 2),
            ("const A = 1;\nprint(A);", 2),
            ("fn f() { 1 }\n\n40 + 2", 3),
            ("let n = 2;\nfor i in 0..n { }", 1),
            ("fn f() { 1 }\nf();", 2),
            ("let x = 1; export x as y;", 1),
        ] {
            let e = analyze_src(src, ScriptKind::Module).expect_err(src);
            assert_eq!(e.line, line, "{src}: {e}");
        }
        // The same statements are fine in an endpoint.
        assert!(analyze_src("let x = 1;\nprint(x);\nx", ScriptKind::Endpoint).is_ok());
    }
}
