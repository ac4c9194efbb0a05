//! [`AstCache`]: compiled scripts shared by every engine thread, keyed by content hash; and
//! [`compile_check`], the one way to validate a script outside the pool.
//!
//! Owns: compilation with the production engine settings, the bounded LRU of `Arc<AST>`, and
//! [`CompileError`] (line, column, message) for `picloud check` and the admin API's 422.
//! Does not own: deciding when to warm or invalidate (a catalog swap simply asks for new hashes;
//! an old hash ages out of the LRU), module caches (later).
//!
//! Concurrency: the mutex guards only the LRU lookup/insert, never a compilation. Two threads
//! missing the same hash at once both compile it and the second insert wins; the ASTs are
//! identical, so this wastes at most one compilation and never blocks a thread behind another's
//! compile.
//!
//! Stack: Rhai's parser recurses once per expression level (bounded by `expr_depth_max`). Call
//! [`compile_check`] and [`AstCache::compile`] from an OS thread (the CLI's main thread, the
//! control plane's threads, an engine thread), never from a may coroutine's small stack.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;
use picloud_core::Limits;
use rhai::{AST, Engine, ParseError};

use super::sandbox::{EngineOptions, EngineProfile, build_engine};

/// A script that does not compile, where and why. `line` and `column` are 1-based; 0 when the
/// error has no position (for example a source over `source_bytes_max`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// 1-based line, 0 if unknown.
    pub line: usize,
    /// 1-based column, 0 if unknown.
    pub column: usize,
    /// What is wrong, without the position.
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for CompileError {}

impl From<ParseError> for CompileError {
    fn from(e: ParseError) -> CompileError {
        CompileError {
            line: e.1.line().unwrap_or(0),
            column: e.1.position().unwrap_or(0),
            message: e.0.to_string(),
        }
    }
}

/// Compiles with `compiler`, refusing sources over `source_bytes_max` before parsing them.
fn compile_with(
    compiler: &Engine,
    source: &str,
    source_bytes_max: usize,
) -> Result<AST, CompileError> {
    if source.len() > source_bytes_max {
        return Err(CompileError {
            line: 0,
            column: 0,
            message: format!(
                "script source is {} bytes, more than the limit of {source_bytes_max}",
                source.len()
            ),
        });
    }
    Ok(compiler.compile(source)?)
}

/// Checks that `source` compiles under the production engine settings for `limits` (disabled
/// symbols such as `eval`, expression depth, source size). Builds a throw-away engine (a few
/// microseconds: the standard package is shared). See the module comment about stacks.
pub fn compile_check(source: &str, limits: &Limits) -> Result<(), CompileError> {
    let engine = build_engine(&EngineProfile::of(limits), EngineOptions::default());
    compile_with(&engine, source, limits.source_bytes_max).map(drop)
}

/// The shared, bounded cache of compiled scripts: content hash → `Arc<AST>` (Rhai's `sync`
/// feature makes `AST` `Send + Sync`, so one compiled script serves every engine thread).
pub struct AstCache {
    /// Compiles with the node's profile. Compile-time limits (expression depth, source size)
    /// are node-wide, so one compiler serves every app. `Engine` is `Sync`: compiles from
    /// several threads run in parallel.
    compiler: Engine,
    source_bytes_max: usize,
    entries: Mutex<LruCache<String, Arc<AST>>>,
    /// Compilations done so far (cache misses and save-time checks): lets tests and metrics
    /// see that a catalog swap recompiled nothing that did not change.
    compiles: AtomicU64,
}

impl AstCache {
    /// A cache holding at most `limits.ast_cache_entries_max` ASTs (at least one).
    pub fn new(limits: &Limits) -> AstCache {
        AstCache::with_options(limits, EngineOptions::default())
    }

    pub(crate) fn with_options(limits: &Limits, options: EngineOptions) -> AstCache {
        let cap = NonZeroUsize::new(limits.ast_cache_entries_max).unwrap_or(NonZeroUsize::MIN);
        AstCache {
            compiler: build_engine(&EngineProfile::of(limits), options),
            source_bytes_max: limits.source_bytes_max,
            entries: Mutex::new(LruCache::new(cap)),
            compiles: AtomicU64::new(0),
        }
    }

    /// Compiles `source` without touching the cache (save-time checks, warming).
    pub fn compile(&self, source: &str) -> Result<Arc<AST>, CompileError> {
        self.compiles.fetch_add(1, Ordering::Relaxed);
        compile_with(&self.compiler, source, self.source_bytes_max).map(Arc::new)
    }

    /// The cached AST for `hash`, marking it recently used.
    pub fn get(&self, hash: &str) -> Option<Arc<AST>> {
        self.entries.lock().get(hash).cloned()
    }

    /// Caches an AST under `hash` (evicting the least recently used entry when full).
    pub fn insert(&self, hash: &str, ast: Arc<AST>) {
        self.entries.lock().put(hash.to_string(), ast);
    }

    /// The AST for `hash`, compiling `source` on a miss (outside the lock) and caching it.
    /// Compile errors are not cached: a catalog only holds scripts that compiled when saved.
    pub fn get_or_compile(&self, hash: &str, source: &str) -> Result<Arc<AST>, CompileError> {
        if let Some(ast) = self.get(hash) {
            return Ok(ast);
        }
        let ast = self.compile(source)?;
        self.insert(hash, ast.clone());
        Ok(ast)
    }

    /// Compiles and caches a script ahead of its first request (for example after a catalog
    /// swap, for new hashes only).
    pub fn warm(&self, hash: &str, source: &str) -> Result<(), CompileError> {
        self.get_or_compile(hash, source).map(drop)
    }

    /// Compilations done by this cache since it was created.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// Number of cached ASTs.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_errors_have_positions() {
        let limits = Limits::default();
        assert_eq!(compile_check("let x = 1; x + 1", &limits), Ok(()));
        let err = compile_check("let x = 1;\nlet y = ;", &limits).expect_err("must fail");
        assert_eq!((err.line, err.column), (2, 9));
        let err = compile_check("eval(\"1\")", &limits).expect_err("eval is disabled");
        assert_eq!(err.line, 1);
        let big = Limits {
            source_bytes_max: 4,
            ..Limits::default()
        };
        assert_eq!(compile_check("1 + 1", &big).map_err(|e| e.line), Err(0));
    }

    #[test]
    fn lru_is_bounded() {
        let limits = Limits {
            ast_cache_entries_max: 2,
            ..Limits::default()
        };
        let cache = AstCache::new(&limits);
        for (h, s) in [("a", "1"), ("b", "2"), ("c", "3")] {
            cache.warm(h, s).expect("compiles");
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a").is_none());
        assert!(cache.get("c").is_some());
    }
}
