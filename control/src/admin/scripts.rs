//! Scripts: list, read, save (`?kind=endpoint|module`), check without saving (`POST …/check`),
//! delete, history (with each kept version's source) and rollback.
//!
//! Owns: compiling a source under the production engine settings before anything is stored
//! (422 `compile_error` at line and column), save-time module analysis (imports, module shape)
//! and import errors at the import's line, and the call check (every statically resolvable call
//! resolves, against the app's modules: 422 `compile_error` with `reason: "unknown_function"`);
//! the check route runs the same steps and stores nothing. Does not own: storage rules (the store checks the
//! integrity rules again inside its transaction) or who may call (`routes.rs`).

use picloud_core::model::{validate_module_name, validate_script_name};
use picloud_core::rules::{self, Violation};
use picloud_core::store::{StoreError, app_state};
use picloud_core::{ErrorCode, ScriptKind, ScriptWrite};
use std::sync::Arc;

use picloud_worker::engine::{
    AST, Analysis, CompileError, ModuleExports, UnknownCall, analyze, check_calls,
};
use serde_json::{Value, json};

use super::wire::{json_response, no_content, query_param, script_json, version_json};
use super::{Admin, AdminError, AdminResult, bounds};

impl Admin {
    pub(super) fn list_scripts(&self, app: &str) -> AdminResult {
        let scripts: Vec<Value> = self
            .store
            .list_scripts(app)?
            .iter()
            .map(script_json)
            .collect();
        Ok(json_response(200, &Value::Array(scripts)))
    }

    pub(super) fn get_script(&self, app: &str, name: &str) -> AdminResult {
        match self.store.get_script(app, name)? {
            Some(s) => {
                let mut v = script_json(&s.info);
                v["source"] = Value::from(s.source);
                Ok(json_response(200, &v))
            }
            None => Err(AdminError::not_found(format!(
                "no script {name:?} in app {app:?}"
            ))),
        }
    }

    /// Compiles `source` under the production engine settings (warming the shared AST cache,
    /// so the first request does not compile) and reads its imports; a module's name and shape
    /// are checked too. Failures are 422 `compile_error` with line and column (400 for a bad
    /// module name). Calls are checked later ([`Admin::check_script_calls`]), once the modules
    /// they may call are known.
    pub(super) fn prepare(
        &self,
        name: &str,
        kind: ScriptKind,
        source: &str,
    ) -> Result<(ScriptWrite, Analysis, Arc<AST>), AdminError> {
        if kind == ScriptKind::Module {
            validate_module_name(name).map_err(AdminError::invalid)?;
        }
        let ast = self
            .ast_cache
            .get_or_compile(&picloud_core::content_hash(source), source)
            .map_err(|e| compile_error(&e))?;
        let analysis = analyze(&ast, kind).map_err(|e| compile_error(&e))?;
        let write = ScriptWrite {
            kind,
            source: source.to_string(),
            imports: analysis.imports.clone(),
            versions_max: self.limits.script_versions_max,
        };
        Ok((write, analysis, ast))
    }

    /// The public functions of the stored modules of `app` named in `imports` (those that
    /// exist and are modules; a missing one is the import rules' error, not the call check's).
    pub(super) fn stored_exports(
        &self,
        app: &str,
        imports: &[String],
        exports: &mut ModuleExports,
    ) -> Result<(), AdminError> {
        for module in imports {
            if exports.contains(module) {
                continue;
            }
            let Some(script) = self.store.get_script(app, module)? else {
                continue;
            };
            if script.info.kind != ScriptKind::Module {
                continue;
            }
            // Stored scripts compiled when they were saved; the cache is usually warm.
            if let Ok(ast) = self
                .ast_cache
                .get_or_compile(&script.info.hash, &script.source)
            {
                exports.add(module, &ast);
            }
        }
        Ok(())
    }

    pub(super) fn save_script(
        &self,
        app: &str,
        name: &str,
        kind: ScriptKind,
        source: &str,
    ) -> AdminResult {
        let (write, analysis, ast) = self.prepare(name, kind, source)?;
        // The store checks the import graph too (inside its transaction); checking here first
        // turns a bad import of this script into a 422 pointing at the import.
        // A missing app answers `NotFound` here (the save creates nothing and fails below with
        // the same error); asking first would cost a PostgreSQL round trip on every save.
        let scripts = match self.store.list_scripts(app) {
            Ok(scripts) => Some(scripts),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(scripts) = scripts {
            let new = usize::from(!scripts.iter().any(|s| s.name == name));
            bounds::count(
                "scripts",
                scripts.len(),
                new,
                self.limits.app_scripts_max,
                "PICLOUD_APP_SCRIPTS_MAX",
            )?;
            let mut state = app_state(&scripts, &self.store.get_routes(app)?);
            state
                .scripts
                .insert(name.to_string(), (write.kind, write.imports.clone()));
            if let Err(v) = rules::check(&state)
                && let Some(e) = import_error(&v, &[(name, &analysis)])
            {
                return Err(e);
            }
        }
        let mut exports = ModuleExports::new();
        self.stored_exports(app, &analysis.imports, &mut exports)?;
        check_calls(&ast, &exports).map_err(|e| unknown_call(&e))?;
        let written = self.store.save_script(app, name, &write)?;
        let s = &written.value;
        Ok(json_response(
            if written.created { 201 } else { 200 },
            &json!({
                "name": s.name,
                "kind": s.kind.as_str(),
                "version": s.version,
                "hash": s.hash,
                "imports": s.imports,
            }),
        ))
    }

    pub(super) fn put_script(
        &self,
        app: &str,
        name: &str,
        query: &str,
        body: &[u8],
    ) -> AdminResult {
        validate_script_name(name).map_err(AdminError::invalid)?;
        let source = self.source_of(body)?;
        let kind = match query_param(query, "kind") {
            Some(k) => ScriptKind::parse(&k)
                .ok_or_else(|| AdminError::invalid("kind must be endpoint or module"))?,
            // An update without `kind` keeps the script's kind.
            None => match self.store.get_script(app, name)? {
                Some(s) => s.info.kind,
                None => ScriptKind::Endpoint,
            },
        };
        self.save_script(app, name, kind, source)
    }

    /// `POST /v1/apps/APP/check?kind=K&name=N`: the checks of a save of the body as script N
    /// (compile, module shape, module name, imports against the app's other scripts), storing
    /// nothing. Compiled outside the AST cache: a check must not evict the ASTs being served.
    pub(super) fn check_script(&self, app: &str, query: &str, body: &[u8]) -> AdminResult {
        let name = query_param(query, "name").filter(|n| !n.is_empty());
        if let Some(n) = &name {
            validate_script_name(n).map_err(AdminError::invalid)?;
        }
        let source = self.source_of(body)?;
        // A check needs no app: a missing one is checked as a new, empty app would be.
        let app_exists = self.store.get_app(app)?.is_some();
        let kind = match query_param(query, "kind") {
            Some(k) => ScriptKind::parse(&k)
                .ok_or_else(|| AdminError::invalid("kind must be endpoint or module"))?,
            // Like a save: without `kind`, an existing script keeps its kind.
            None => match &name {
                Some(n) if app_exists => self
                    .store
                    .get_script(app, n)?
                    .map_or(ScriptKind::Endpoint, |s| s.info.kind),
                _ => ScriptKind::Endpoint,
            },
        };
        if kind == ScriptKind::Module
            && let Some(n) = &name
        {
            validate_module_name(n).map_err(AdminError::invalid)?;
        }
        let ast = self
            .ast_cache
            .compile(source)
            .map_err(|e| compile_error(&e))?;
        let analysis = analyze(&ast, kind).map_err(|e| compile_error(&e))?;
        // Imports are checked against the app as it is, as the save of `name` would be; an
        // unnamed source is checked as a new script of that app.
        if app_exists {
            let me = name.as_deref().unwrap_or("\u{0}check");
            let mut state = app_state(&self.store.list_scripts(app)?, &self.store.get_routes(app)?);
            state
                .scripts
                .insert(me.to_string(), (kind, analysis.imports.clone()));
            if let Err(v) = rules::check(&state)
                && let Some(mut e) = import_error(&v, &[(me, &analysis)])
            {
                // An unnamed source has no script name to report.
                if name.is_none() {
                    e.extra.retain(|(k, _)| *k != "script");
                }
                return Err(e);
            }
        }
        let mut exports = ModuleExports::new();
        if app_exists {
            self.stored_exports(app, &analysis.imports, &mut exports)?;
        }
        check_calls(&ast, &exports).map_err(|e| unknown_call(&e))?;
        Ok(json_response(
            200,
            &json!({"ok": true, "kind": kind.as_str(), "imports": analysis.imports}),
        ))
    }

    /// A script body as UTF-8 text within the source size limit.
    fn source_of<'b>(&self, body: &'b [u8]) -> Result<&'b str, AdminError> {
        if body.len() > self.limits.source_bytes_max {
            return Err(AdminError::new(
                ErrorCode::TooLarge,
                format!(
                    "script source is over {} bytes",
                    self.limits.source_bytes_max
                ),
            ));
        }
        std::str::from_utf8(body).map_err(|_| AdminError::invalid("script source must be UTF-8"))
    }

    pub(super) fn delete_script(&self, app: &str, name: &str) -> AdminResult {
        let importers = self.store.dependents(app, name)?;
        if !importers.is_empty() {
            return Err(AdminError::new(
                ErrorCode::Conflict,
                format!("module {name:?} is imported by {}", importers.join(", ")),
            ));
        }
        if self.store.delete_script(app, name)? {
            Ok(no_content())
        } else {
            Err(AdminError::not_found(format!(
                "no script {name:?} in app {app:?}"
            )))
        }
    }

    pub(super) fn script_versions(&self, app: &str, name: &str) -> AdminResult {
        let versions: Vec<Value> = self
            .store
            .script_versions(app, name)?
            .iter()
            .map(version_json)
            .collect();
        Ok(json_response(200, &Value::Array(versions)))
    }

    /// `GET …/scripts/NAME/versions/V`: one kept version with its source (what the dashboard
    /// diffs). 404 if V is not, or no longer, in the history.
    pub(super) fn script_version(&self, app: &str, name: &str, version: &str) -> AdminResult {
        let v: u64 = version.parse().map_err(|_| {
            AdminError::invalid(format!("version must be an integer, not {version:?}"))
        })?;
        let gone = || AdminError::not_found(format!("no version {v} of {name:?} in app {app:?}"));
        let info = self
            .store
            .script_versions(app, name)?
            .into_iter()
            .find(|i| i.version == v)
            .ok_or_else(gone)?;
        let source = self
            .store
            .script_version_source(app, name, v)?
            .ok_or_else(gone)?;
        let mut body = version_json(&info);
        body["source"] = Value::from(source);
        Ok(json_response(200, &body))
    }

    pub(super) fn rollback(&self, app: &str, name: &str, body: &[u8]) -> AdminResult {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rollback {
            version: u64,
        }
        let r: Rollback = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("rollback body: {e}")))?;
        let current = self
            .store
            .get_script(app, name)?
            .ok_or_else(|| AdminError::not_found(format!("no script {name:?} in app {app:?}")))?;
        let source = self
            .store
            .script_version_source(app, name, r.version)?
            .ok_or_else(|| {
                AdminError::not_found(format!("no version {} of {name:?}", r.version))
            })?;
        self.save_script(app, name, current.info.kind, &source)
            .map(|mut resp| {
                resp.status = 200;
                resp
            })
    }
}

/// A compile or analysis failure as the admin API's 422.
pub(super) fn compile_error(e: &CompileError) -> AdminError {
    let mut err = AdminError::new(ErrorCode::CompileError, e.message.clone());
    err.extra = vec![
        ("line", Value::from(e.line)),
        ("column", Value::from(e.column)),
    ];
    err
}

/// A call that resolves to nothing as the admin API's 422: still `compile_error` (clients
/// that know only that code keep working), with `reason: "unknown_function"` to tell it apart,
/// the function as written (`kv::gett`) and the number of arguments.
pub(super) fn unknown_call(e: &UnknownCall) -> AdminError {
    let mut err = AdminError::new(ErrorCode::CompileError, e.message.clone());
    err.extra = vec![
        ("line", Value::from(e.line)),
        ("column", Value::from(e.column)),
        ("reason", Value::from("unknown_function")),
        ("function", Value::from(e.name.as_str())),
        ("arity", Value::from(e.arity)),
    ];
    err
}

/// A rule violation that is the fault of an import in one of `scripts` (being saved), as a 422
/// `compile_error` at that import, naming the script and, for cycles and deep chains, the
/// chain. `None` for violations that are not an import's fault (those are the store's 409s).
pub(super) fn import_error(v: &Violation, scripts: &[(&str, &Analysis)]) -> Option<AdminError> {
    // (importing script, imported module) to point at.
    let culprit = match v {
        Violation::ImportOfMissing { script, module }
        | Violation::ImportOfEndpoint { script, module } => {
            Some((script.as_str(), module.as_str()))
        }
        Violation::Cycle(chain) | Violation::TooDeep(chain) => chain
            .windows(2)
            .find(|w| scripts.iter().any(|(n, _)| *n == w[0]))
            .or_else(|| chain.windows(2).next())
            .map(|w| (w[0].as_str(), w[1].as_str())),
        _ => None,
    }?;
    let (script, analysis) = scripts.iter().find(|(n, _)| *n == culprit.0)?;
    let (line, column) = analysis
        .import_positions
        .iter()
        .find(|(m, _, _)| m == culprit.1)
        .map_or((0, 0), |(_, l, c)| (*l, *c));
    let mut err = AdminError::new(ErrorCode::CompileError, v.to_string());
    err.extra = vec![
        ("script", Value::from(*script)),
        ("line", Value::from(line)),
        ("column", Value::from(column)),
    ];
    Some(err)
}
