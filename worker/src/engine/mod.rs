//! The engine pool: where Rhai scripts run, sandboxed and bounded, off the request coroutines.
//!
//! Owns: the pinned engine threads and their bounded job queue ([`Pool`], [`Job`]) with its
//! per-app lanes served round robin under each app's engine cap (`fair.rs`), the per-app
//! quarantine ([`Breaker`], `breaker.rs`), the sandbox
//! every `rhai::Engine` is built with and the per-invocation budget (`sandbox.rs`), the
//! process's counting global allocator behind the heap cap ([`CountingAlloc`]), the shared AST
//! cache and save-time compile checks ([`AstCache`], [`compile_check`]), save-time call checks
//! ([`check_calls`]: every statically resolvable call must resolve), the definition file of
//! what scripts can call ([`definitions`]), modules (`import`
//! resolution within the app, save-time [`analyze`], the evaluated-module cache
//! [`ModuleCache`]), the script contract of
//! API.md (`request` in, response out, failures as public JSON: [`ScriptRequest`],
//! [`ScriptFailure`]) and the may-aware reply path ([`ReplyChannel`], [`ReplyTx`]).
//!
//! Does not own: routing and building jobs (the dispatcher), HTTP framing (`crate::http`), the
//! error JSON shape (`crate::errors`), and the SDK services (later).
//!
//! Invariants: Rhai never runs on a coroutine (only engine threads with [`ENGINE_STACK_BYTES`]
//! stacks evaluate); an `Engine` is never changed after it is built; every accepted job gets
//! exactly one reply; a panic in a job answers 500 and the thread lives on.
//!
//! Sizes: Rhai's own string/array/map size checks are off (they are O(size) per mutation, so
//! building a collection was quadratic); `growth.rs` checks lengths in O(1) in the functions
//! that grow values, and the heap cap bounds the rest.
//!
//! Nesting: none of Rhai's limits bounds how deeply values nest, and Rhai's printing and equality
//! recurse with ~1.5 KB of stack per level; `nesting.rs` replaces those functions with versions
//! that refuse values nested over `VALUE_NESTING_MAX` (a `depth` limit). Rhai's other recursions
//! over values (clone, drop) are cheap per level and covered by the stack size.

mod alloc;
mod ast_cache;
mod breaker;
mod calls;
mod contract;
#[cfg(feature = "defs")]
mod defs;
mod fair;
mod growth;
mod modules;
mod nesting;
mod pool;
mod reply;
mod sandbox;
pub mod sdk;

pub use alloc::CountingAlloc;
pub use ast_cache::{AstCache, CompileError, compile_check};
pub use breaker::{Admit, Breaker, Outcome, Quarantine};
pub use calls::{ModuleExports, UnknownCall, check_calls, sdk_namespaces};
pub use contract::{ScriptFailure, ScriptRequest, form_decode};
#[cfg(feature = "fuzzing")]
pub(crate) use contract::{SizeCaps, parse_json_body, to_json_capped};
#[cfg(feature = "defs")]
pub use defs::definitions;
pub use fair::Lane;
pub use modules::{Analysis, ModuleCache, analyze};
pub use pool::{
    ENGINE_PROFILES_MAX, ENGINE_STACK_BYTES, InlineRunner, Job, Origin, Pool, PoolConfig, Refusal,
    Refused, Submitter,
};
pub use reply::{ReplyChannel, ReplyTx};
/// A compiled script, as the AST cache and the save-time checks hand it around (so the control
/// plane needs no direct `rhai` dependency).
pub use rhai::AST;
pub use sandbox::CLOCK_CHECK_EVERY_OPS;

/// The process's allocator: the system allocator with per-thread counting, so the engine can
/// cap each invocation's heap. Declared here, it applies to every binary that links
/// `picloud-worker` (the `picloud` binary, tests, examples).
#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;
