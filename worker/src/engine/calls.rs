//! Save-time call checking: every function call in a compiled script that can be resolved
//! statically must resolve to something, or the script is refused (a 422 at the call).
//!
//! Owns: [`check_calls`] (the AST walk), [`ModuleExports`] (the public functions of the module
//! scripts a script may import, read from their compiled ASTs) and [`UnknownCall`] (where, which
//! name, how many arguments, and what would have matched). The registry of native functions
//! (standard library, our `growth.rs`/`nesting.rs` overrides, the SDK namespaces, with their
//! arities) is read once per process from an engine built by `sandbox::build_engine`, so it is
//! exactly what a request runs with.
//!
//! Does not own: compiling (the AST cache), import rules (`modules::analyze` and picloud-core's
//! `rules`), or which modules an app has (the callers pass [`ModuleExports`]: the app's module
//! scripts for a save, the bundle's for a deploy, the folder's for `picloud check DIR`).
//!
//! What is checked, and what is left alone on purpose (a refusal must never be wrong: a script
//! that would run must still save):
//! - `ns::f(args)` where `ns` is an SDK namespace (`kv`, `log`, ...) not shadowed by an import
//!   alias: `f` with that many arguments must be in the namespace.
//! - `m::f(args)` where `m` is the alias of an `import "NAME" as m;` anywhere in the script and
//!   NAME is a known module: a public (not `private`) `fn f` with that many parameters must be in
//!   it. An unknown module (a single file checked offline) is not checked; nested paths
//!   (`m::sub::f`) are not checked (a module re-exports what it imports as sub-modules).
//! - `ns::f(args)` where `ns` is neither: refused (no such module at run time).
//! - `f(args)` (no namespace): refused unless a `fn f` with that many parameters is in the
//!   script, a native function `f` takes that many arguments, one of Rhai's syntactic functions
//!   matches (`Fn`, `call`, `curry`, `type_of`, `is_def_fn`, `is_def_var`, `is_shared`), an
//!   imported module has a public `fn f` of that arity (Rhai itself does not look there for
//!   plain calls; accepted so a refusal is never wrong). A variable `f` holding a function
//!   pointer does not make `f(x)` resolve (see [`check_calls`]).
//! - Operators, method calls (`x.f()`: the type of `x` is unknown) and calls through function
//!   pointers (`f.call(x)`, `call(f, x)`) are never refused.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use picloud_core::Limits;
use rhai::{AST, ASTNode, Expr, FnAccess, FnCallExpr, FnNamespace, Position, Stmt};

use super::ast_cache::CompileError;
use super::sandbox::{EngineOptions, EngineProfile, build_engine};

/// Arities, as a set of parameter counts.
type Arities = BTreeSet<usize>;

/// The public functions of module scripts, by module name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleExports {
    modules: BTreeMap<String, BTreeMap<String, Arities>>,
}

impl ModuleExports {
    /// No modules known.
    pub fn new() -> ModuleExports {
        ModuleExports::default()
    }

    /// Records module `name`'s public functions from its compiled AST (replacing any earlier
    /// entry of that name: a bundle's module replaces the stored one).
    pub fn add(&mut self, name: &str, ast: &AST) {
        let mut fns: BTreeMap<String, Arities> = BTreeMap::new();
        for f in ast.iter_functions() {
            if f.access == FnAccess::Private {
                continue;
            }
            fns.entry(f.name.to_string())
                .or_default()
                .insert(f.params.len());
        }
        self.modules.insert(name.to_string(), fns);
    }

    /// Forgets module `name` (a deploy with `prune` removes the modules it does not carry).
    pub fn remove(&mut self, name: &str) {
        self.modules.remove(name);
    }

    /// Whether module `name` is known.
    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(name)
    }

    fn functions(&self, module: &str) -> Option<&BTreeMap<String, Arities>> {
        self.modules.get(module)
    }
}

/// A call that resolves to nothing: where, what, and what exists under that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCall {
    /// 1-based line of the call.
    pub line: usize,
    /// 1-based column of the call.
    pub column: usize,
    /// The function as written, with its namespace (`kv::gett`, `no_such_fn`).
    pub name: String,
    /// How many arguments the call passes.
    pub arity: usize,
    /// The whole explanation (what was looked for, what exists).
    pub message: String,
}

impl fmt::Display for UnknownCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for UnknownCall {}

impl From<UnknownCall> for CompileError {
    fn from(u: UnknownCall) -> CompileError {
        CompileError {
            line: u.line,
            column: u.column,
            message: u.message,
        }
    }
}

/// Native functions known to the engine: plain (global namespace, std lib, our overrides) and
/// per static namespace (the SDK).
struct Registry {
    plain: HashMap<String, Arities>,
    namespaces: BTreeMap<String, BTreeMap<String, Arities>>,
}

/// Rhai's syntactic functions: evaluated by the engine itself, not in any function registry.
/// `None` as the upper bound: any number of arguments from the lower bound.
const SYNTACTIC: [(&str, usize, Option<usize>); 7] = [
    ("Fn", 1, Some(1)),
    ("call", 1, None),
    ("curry", 2, None),
    ("type_of", 1, Some(1)),
    ("is_def_fn", 2, Some(3)),
    ("is_def_var", 1, Some(1)),
    ("is_shared", 1, Some(1)),
];

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // Names and arities do not depend on the limit profile.
        let engine = build_engine(
            &EngineProfile::of(&Limits::default()),
            EngineOptions::default(),
        );
        let infos = engine.collect_fn_metadata(
            None,
            |info| {
                let m = info.metadata;
                (m.access == FnAccess::Public).then(|| {
                    (
                        info.namespace.to_string(),
                        m.name.to_string(),
                        m.num_params,
                        m.namespace == FnNamespace::Global,
                    )
                })
            },
            true,
        );
        let mut plain: HashMap<String, Arities> = HashMap::new();
        let mut namespaces: BTreeMap<String, BTreeMap<String, Arities>> = BTreeMap::new();
        for (namespace, name, arity, global) in infos {
            // A function of a static module marked global is callable without its namespace.
            if namespace.is_empty() || global {
                plain.entry(name.clone()).or_default().insert(arity);
            }
            if !namespace.is_empty() {
                namespaces
                    .entry(namespace)
                    .or_default()
                    .entry(name)
                    .or_default()
                    .insert(arity);
            }
        }
        Registry { plain, namespaces }
    })
}

/// The SDK namespaces (`kv`, `log`, ...), as the engine has them.
pub fn sdk_namespaces() -> Vec<String> {
    registry().namespaces.keys().cloned().collect()
}

/// What the walk needs to know about the whole script before judging a call.
struct ScriptNames<'a> {
    /// Script-defined functions (including closures' anonymous ones): name → arities.
    functions: HashMap<String, Arities>,
    /// Every name bound or read as a variable anywhere (lets, consts, parameters, loop and
    /// catch variables, variable reads): only for the message of a call `f(x)` where `f` is a
    /// variable (see [`check_calls`]).
    variables: HashSet<String>,
    /// Import aliases → the module names imported under them (a name may be reused).
    aliases: HashMap<String, BTreeSet<String>>,
    modules: &'a ModuleExports,
}

impl ScriptNames<'_> {
    fn collect<'m>(ast: &AST, modules: &'m ModuleExports) -> ScriptNames<'m> {
        let mut names = ScriptNames {
            functions: HashMap::new(),
            variables: HashSet::new(),
            aliases: HashMap::new(),
            modules,
        };
        for f in ast.iter_functions() {
            names
                .functions
                .entry(f.name.to_string())
                .or_default()
                .insert(f.params.len());
            names
                .variables
                .extend(f.params.iter().map(|p| (*p).to_string()));
        }
        ast.walk(&mut |path: &[ASTNode]| {
            match path.last() {
                Some(ASTNode::Stmt(Stmt::Var(x, ..))) => {
                    names.variables.insert(x.0.name.to_string());
                }
                Some(ASTNode::Stmt(Stmt::For(x, ..))) => {
                    names.variables.insert(x.0.name.to_string());
                    if let Some(counter) = &x.1 {
                        names.variables.insert(counter.name.to_string());
                    }
                }
                Some(ASTNode::Stmt(Stmt::Import(x, _))) => {
                    if let Expr::StringConstant(module, _) = &x.0 {
                        names
                            .aliases
                            .entry(x.1.name.to_string())
                            .or_default()
                            .insert(module.to_string());
                    }
                }
                Some(ASTNode::Expr(Expr::Variable(x, ..))) => {
                    names.variables.insert(x.1.as_str().to_string());
                }
                _ => {}
            }
            true
        });
        names
    }

    /// Whether a plain call `name/arity` resolves to something (see the module docs).
    fn plain_resolves(&self, name: &str, arity: usize) -> bool {
        if self.functions.get(name).is_some_and(|a| a.contains(&arity)) {
            return true;
        }
        if registry()
            .plain
            .get(name)
            .is_some_and(|a| a.contains(&arity))
        {
            return true;
        }
        if SYNTACTIC
            .iter()
            .any(|(n, min, max)| *n == name && arity >= *min && max.is_none_or(|m| arity <= m))
        {
            return true;
        }
        // The brief's conservative rule: a function of any imported module (Rhai does not
        // look there for plain calls today, but a refusal must never be wrong); an import of a
        // module we do not know could hold anything.
        self.aliases.values().flatten().any(|module| {
            self.modules
                .functions(module)
                .is_none_or(|fns| fns.get(name).is_some_and(|a| a.contains(&arity)))
        })
    }

    /// The arities under `name` that a plain call could have meant, for the message.
    fn plain_arities(&self, name: &str) -> Arities {
        let mut all = Arities::new();
        if let Some(a) = self.functions.get(name) {
            all.extend(a);
        }
        if let Some(a) = registry().plain.get(name) {
            all.extend(a);
        }
        all
    }
}

/// "1 argument", "2 or 3 arguments".
fn arguments(arities: &Arities) -> String {
    let list = arities
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    let one = arities.len() == 1 && arities.contains(&1);
    format!("{list} argument{}", if one { "" } else { "s" })
}

fn list_functions(fns: &BTreeMap<String, Arities>) -> String {
    fns.iter()
        .flat_map(|(n, a)| a.iter().map(move |k| format!("{n}/{k}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Judges one call; `Some(message)` when it resolves to nothing.
fn judge(call: &FnCallExpr, names: &ScriptNames) -> Option<(String, String)> {
    // Operators (`+`, `!`, `in`, ...) resolve by value type at run time.
    if call.op_token.is_some() || !rhai::is_valid_identifier(&call.name) {
        return None;
    }
    let name = call.name.as_str();
    let arity = call.args.len();
    let args = |n: usize| arguments(&Arities::from([n]));
    if call.namespace.is_empty() {
        if names.plain_resolves(name, arity) {
            return None;
        }
        let known = names.plain_arities(name);
        let message = if names.variables.contains(name) && known.is_empty() {
            format!(
                "unknown function {name}/{arity}: {name} is a variable here, and a function \
                 pointer in a variable is called with {name}.call(...) or call({name}, ...), \
                 not {name}(...)"
            )
        } else if known.is_empty() {
            format!(
                "unknown function {name}/{arity}: no fn {name} in this script, no built-in or \
                 SDK function of that name, and none in the modules it imports"
            )
        } else {
            format!("function {name} takes {}, not {arity}", arguments(&known))
        };
        return Some((name.to_string(), message));
    }
    // Nested paths (`m::sub::f`) reach modules a module imported: not checked.
    if call.namespace.path.len() != 1 {
        return None;
    }
    let root = call.namespace.root();
    let qualified = format!("{root}::{name}");
    if root == "global" {
        return None;
    }
    if let Some(modules) = names.aliases.get(root) {
        // Known modules only; any of the modules imported under this alias may match.
        let mut found = Vec::new();
        for module in modules {
            // An unknown module could hold anything: not checked.
            let fns = names.modules.functions(module)?;
            if fns.get(name).is_some_and(|a| a.contains(&arity)) {
                return None;
            }
            found.push((module, fns));
        }
        let (module, fns) = found.first()?;
        let message = match fns.get(name) {
            Some(known) => format!(
                "{qualified}: fn {name} of module {module:?} takes {}, not {}",
                arguments(known),
                args(arity)
            ),
            None if fns.is_empty() => format!(
                "unknown function {qualified}/{arity}: module {module:?} has no public functions"
            ),
            None => format!(
                "unknown function {qualified}/{arity}: module {module:?} has no public fn {name} \
                 (it has {})",
                list_functions(fns)
            ),
        };
        return Some((qualified, message));
    }
    let registry = registry();
    let Some(fns) = registry.namespaces.get(root) else {
        let sdk = registry
            .namespaces
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return Some((
            qualified.clone(),
            format!(
                "unknown function {qualified}/{arity}: {root} is neither an SDK namespace \
                 ({sdk}) nor an imported module (import \"NAME\" as {root};)"
            ),
        ));
    };
    let message = match fns.get(name) {
        Some(a) if a.contains(&arity) => return None,
        Some(known) => format!("{qualified} takes {}, not {arity}", arguments(known)),
        None => format!(
            "unknown function {qualified}/{arity}: {root} has {}",
            list_functions(fns)
        ),
    };
    Some((qualified, message))
}

/// Checks every statically resolvable call of a compiled script (see the module docs) against
/// the script's own functions, the engine's registry and `modules`. Returns the first call in
/// source order that resolves to nothing.
///
/// Calls through a variable: Rhai (1.27) never calls a function pointer held in a variable `f`
/// for `f(x)`; it looks for a function `f` and fails with "function not found" at run time
/// (that needs `f.call(x)` or `call(f, x)`, which are left alone). So `f(x)` with no function
/// `f` is refused even when `f` is a variable, with a message saying how to call it. The test
/// `rhai_does_not_call_fn_ptr_variables` pins this: if a Rhai upgrade starts resolving such
/// calls, it fails and this rule must accept them.
pub fn check_calls(ast: &AST, modules: &ModuleExports) -> Result<(), UnknownCall> {
    let names = ScriptNames::collect(ast, modules);
    let mut first: Option<UnknownCall> = None;
    ast.walk(&mut |path: &[ASTNode]| {
        let (call, pos): (&FnCallExpr, Position) = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos))) => (call, *pos),
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => (call, *pos),
            _ => return true,
        };
        if let Some((name, message)) = judge(call, &names) {
            let pos = if call.namespace.is_empty() {
                pos
            } else {
                call.namespace.position()
            };
            let found = UnknownCall {
                line: pos.line().unwrap_or(0),
                column: pos.position().unwrap_or(0),
                name,
                arity: call.args.len(),
                message,
            };
            // The walk visits the top level, then function bodies: keep the earliest in the
            // source.
            if first
                .as_ref()
                .is_none_or(|f| (found.line, found.column) < (f.line, f.column))
            {
                first = Some(found);
            }
        }
        true
    });
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> rhai::Engine {
        build_engine(
            &EngineProfile::of(&Limits::default()),
            EngineOptions::default(),
        )
    }

    fn check_with(src: &str, modules: &ModuleExports) -> Result<(), UnknownCall> {
        check_calls(&engine().compile(src).expect(src), modules)
    }

    fn module_m() -> ModuleExports {
        let mut modules = ModuleExports::new();
        let m = engine()
            .compile("fn f(x) { x } fn g(a, b) { a + b } fn g(a) { a } private fn hidden() { 1 }")
            .expect("module compiles");
        modules.add("m", &m);
        modules
    }

    /// Refused at (line, column), naming this function.
    type Refused = (usize, usize, &'static str);

    /// (script, refused or accepted)
    const TABLE: &[(&str, Option<Refused>)] = &[
        // SDK namespaces
        ("kv::get(\"x\")", None),
        ("kv::set(\"x\", 1); kv::set(\"x\", 1, 60)", None),
        ("kv::gett(\"x\")", Some((1, 1, "kv::gett"))),
        ("let a = 1;\n  kv::get(\"x\", 2)", Some((2, 3, "kv::get"))),
        ("log::info(1); log::warn(1); log::error(1)", None),
        ("log::infos(1)", Some((1, 1, "log::infos"))),
        (
            "env::get(\"A\"); time::now_ms(); uuid(); sdk_version()",
            None,
        ),
        (
            "crypto::sha256_hex(\"a\"); crypto::hmac_sha256_hex(\"k\", \"a\")",
            None,
        ),
        ("base64::encode(\"a\"); base64::decode(\"YQ==\")", None),
        ("events::emit(\"e\"); events::emit(\"e\", #{})", None),
        ("events::emit()", Some((1, 1, "events::emit"))),
        ("nope::f(1)", Some((1, 1, "nope::f"))),
        // plain calls
        ("no_such_fn(1)", Some((1, 1, "no_such_fn"))),
        ("let x = 1;\nif x > 0 { foo() }", Some((2, 12, "foo"))),
        ("len(\"abc\"); \"abc\".len()", None),
        ("len(\"abc\", 2)", Some((1, 1, "len"))),
        ("print(); print(1); debug(2); type_of(3)", None),
        ("parse_int(\"1\"); parse_int(\"ff\", 16); sleep(0)", None),
        ("range(1, 10); range(1, 10, 2); timestamp()", None),
        (
            "let s = \"abc\"; sub_string(s, 1, 1); s.sub_string(1)",
            None,
        ),
        ("let a = []; push(a, 1); a.push(2); 1 in a", None),
        ("eq(1)", Some((1, 1, "eq"))),
        // script functions: shadowing, recursion, arity
        ("fn len(a, b) { a } len(1, 2)", None),
        (
            "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } } fib(10)",
            None,
        ),
        ("fn f(a) { a } f(1, 2)", Some((1, 15, "f"))),
        ("fn f() { g() }\nf()", Some((1, 10, "g"))),
        // closures and function pointers
        ("let add = |x| x + y(x); 1", Some((1, 19, "y"))),
        (
            "let add = |x| x + 1; add.call(1); call(add, 2); add.curry(1).call()",
            None,
        ),
        (
            "fn foo(x) { x } let f = Fn(\"foo\"); f.call(1); curry(f, 1).call()",
            None,
        ),
        ("let f = |x| x; f(1)", Some((1, 16, "f"))),
        ("let a = [1, 2]; a.map(|x| x * 2).filter(|x| x > 2)", None),
        // method calls stay allowed
        ("let x = #{}; x.anything(1, 2, 3)", None),
        // modules
        ("import \"m\" as m; m::f(1); m::g(1, 2); m::g(1)", None),
        ("import \"m\" as m; m::f(1, 2)", Some((1, 18, "m::f"))),
        ("import \"m\" as m; m::nope()", Some((1, 18, "m::nope"))),
        ("import \"m\" as m; m::hidden()", Some((1, 18, "m::hidden"))),
        ("import \"m\" as m; f(1)", None),
        ("import \"m\" as kv; kv::f(1)", None),
        ("import \"unknown\" as u; u::whatever(1, 2)", None),
        (
            "fn h() { import \"m\" as m; m::zz() }",
            Some((1, 27, "m::zz")),
        ),
    ];

    #[test]
    fn table() {
        let modules = module_m();
        for (src, expected) in TABLE {
            let got = check_with(src, &modules);
            match expected {
                None => assert!(got.is_ok(), "{src}: {got:?}"),
                Some((line, column, name)) => {
                    let e = got.expect_err(src);
                    assert_eq!(
                        (e.line, e.column, e.name.as_str()),
                        (*line, *column, *name),
                        "{src}: {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn messages_say_what_exists() {
        let e = check_with("kv::gett(\"x\")", &ModuleExports::new()).expect_err("refused");
        assert!(e.message.contains("kv has delete/1, get/1"), "{e}");
        let e = check_with("len(1, 2)", &ModuleExports::new()).expect_err("refused");
        assert_eq!(e.message, "function len takes 1 argument, not 2");
        let e = check_with("let f = |x| x; f(1)", &ModuleExports::new()).expect_err("refused");
        assert!(e.message.contains("f.call(...)"), "{e}");
        assert_eq!(e.arity, 1);
        let e = check_with("import \"m\" as m; m::q()", &module_m()).expect_err("refused");
        assert!(e.message.contains("it has f/1, g/1, g/2"), "{e}");
    }

    #[test]
    fn the_first_in_source_order_is_reported() {
        let e = check_with("fn f() { a() }\nb()", &ModuleExports::new()).expect_err("refused");
        assert_eq!((e.line, e.name.as_str()), (1, "a"));
    }

    /// `check_calls` refuses `f(x)` when `f` is only a variable because Rhai does not call a
    /// function pointer that way. If an upgrade changes that, this fails: accept such calls.
    #[test]
    fn rhai_does_not_call_fn_ptr_variables() {
        let engine = engine();
        for src in [
            "fn foo(x) { x + 1 } let f = Fn(\"foo\"); f(1)",
            "let f = |x| x + 1; f(1)",
        ] {
            let err = engine.eval::<rhai::INT>(src).expect_err(src);
            assert!(
                matches!(*err, rhai::EvalAltResult::ErrorFunctionNotFound(..)),
                "{src}: {err}"
            );
        }
    }

    #[test]
    fn the_registry_has_the_sdk() {
        let sdk = sdk_namespaces();
        for ns in ["kv", "log", "env", "time", "crypto", "base64", "events"] {
            assert!(sdk.iter().any(|n| n == ns), "{ns}: {sdk:?}");
        }
    }
}
