//! `picloud check FILE.rhai...` and `picloud check DIR`: the checks a save or a deploy would
//! make, locally, without a node.
//!
//! Owns: reading the files, checking a whole app folder the way a deploy is checked, and
//! printing one `FILE:LINE:COLUMN: message` (or `DIR/picloud.toml: message`) per error, the
//! format editors and CI understand. Does not own any rule: folder reading is `deploy::load`
//! (so check and deploy read a folder the same way), compilation and module shapes are the
//! worker's (`AstCache`, `analyze`, `check_calls`: a call to a function that does not exist, in
//! the SDK, the standard library, the script or the folder's modules, is an error at the call;
//! a single file's imports cannot be known, so calls into them are not checked), import and
//! route integrity `picloud_core::rules`,
//! route patterns `RouteTable::compile`, cron syntax `scheduler::parse_cron`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use picloud_core::model::validate_module_name;
use picloud_core::rules::{self, AppState, Violation};
use picloud_core::{Limits, RouteTable, ScriptKind};
use picloud_worker::engine::{Analysis, AstCache, ModuleExports, analyze, check_calls};

use super::deploy;

/// Runs the subcommand; exit code 1 if anything fails (clap refuses an empty list with 2). A
/// folder argument is checked as an app folder, any other as one script.
pub fn run(files: &[String]) -> ExitCode {
    let limits = Limits::default();
    let mut failed = false;
    for file in files {
        if Path::new(file).is_dir() {
            match check_dir(Path::new(file), &limits) {
                Ok(summary) => super::output::line(&format!("{file}: ok ({summary})")),
                Err(lines) => {
                    for line in lines {
                        super::output::eprint_line(&line);
                    }
                    failed = true;
                }
            }
            continue;
        }
        match check_file(file, &limits) {
            Ok(()) => super::output::line(&format!("{file}: ok")),
            Err(line) => {
                super::output::eprint_line(&line);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks one file; the error is the line to print.
pub fn check_file(file: &str, limits: &Limits) -> Result<(), String> {
    let source = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    if source.len() > limits.source_bytes_max {
        return Err(format!(
            "{file}:1:1: script source is over {} bytes",
            limits.source_bytes_max
        ));
    }
    let source = String::from_utf8(source).map_err(|_| format!("{file}:1:1: not UTF-8"))?;
    let at =
        |line: usize, column: usize, message: &str| format!("{file}:{line}:{column}: {message}");
    let ast = AstCache::new(limits)
        .compile(&source)
        .map_err(|e| at(e.line, e.column, &e.message))?;
    check_calls(&ast, &ModuleExports::new()).map_err(|e| at(e.line, e.column, &e.message))
}

/// Checks an app folder as a deploy of it to an empty app would be checked: the manifest and
/// file names, every script compiled with its kind's shape, imports resolving within the
/// folder without cycles, route patterns, schedules' cron expressions and names, and that every
/// route, schedule and trigger names an endpoint of the folder. Returns a one-line summary, or
/// every error found (all scripts are compiled, so one run shows every broken file).
pub fn check_dir(dir: &Path, limits: &Limits) -> Result<String, Vec<String>> {
    let bundle = deploy::load(dir, false).map_err(|e| vec![e.to_string()])?;
    let manifest = deploy::manifest_path(dir);
    let file_of = |script: &str| dir.join(format!("{script}.rhai")).display().to_string();
    let at = |script: &str, line: usize, column: usize, message: &str| {
        if line == 0 {
            format!("{}: {message}", file_of(script))
        } else {
            format!("{}:{line}:{column}: {message}", file_of(script))
        }
    };
    let mut errors = Vec::new();

    let cache = AstCache::new(limits);
    let mut state = AppState::default();
    let mut analyses: Vec<(&str, Analysis)> = Vec::new();
    let mut asts = Vec::new();
    let mut exports = ModuleExports::new();
    for (name, script) in &bundle.body.scripts {
        if script.source.len() > limits.source_bytes_max {
            errors.push(at(
                name,
                1,
                1,
                &format!("script source is over {} bytes", limits.source_bytes_max),
            ));
            continue;
        }
        if script.kind == ScriptKind::Module
            && let Err(why) = validate_module_name(name)
        {
            errors.push(format!("{}: module name: {why}", manifest.display()));
            continue;
        }
        let analysis = cache
            .get_or_compile(&picloud_core::content_hash(&script.source), &script.source)
            .and_then(|ast| analyze(&ast, script.kind).map(|a| (a, ast)));
        match analysis {
            Ok((analysis, ast)) => {
                if script.kind == ScriptKind::Module {
                    exports.add(name, &ast);
                }
                asts.push((name.as_str(), ast));
                state
                    .scripts
                    .insert(name.clone(), (script.kind, analysis.imports.clone()));
                analyses.push((name.as_str(), analysis));
            }
            Err(e) => {
                errors.push(at(name, e.line, e.column, &e.message));
                // Kept with no imports, so the rules below still see it exists.
                state
                    .scripts
                    .insert(name.clone(), (script.kind, Vec::new()));
            }
        }
    }

    // Calls, once every module of the folder is known.
    for (name, ast) in &asts {
        if let Err(e) = check_calls(ast, &exports) {
            errors.push(at(name, e.line, e.column, &e.message));
        }
    }

    let in_manifest = |message: String| format!("{}: {message}", manifest.display());
    if let Some(routes) = &bundle.body.routes {
        match RouteTable::compile(routes) {
            Ok(_) => state.routes = routes.clone(),
            Err(e) => errors.push(in_manifest(format!("routes: {e}"))),
        }
    }
    let schedules = bundle.body.schedules.as_deref().unwrap_or_default();
    let triggers = bundle.body.triggers.as_deref().unwrap_or_default();
    let mut names = BTreeSet::new();
    for s in schedules {
        if let Err(why) = picloud_core::model::validate_script_name(&s.name) {
            errors.push(in_manifest(format!("schedule {:?}: {why}", s.name)));
        }
        if !names.insert(s.name.as_str()) {
            errors.push(in_manifest(format!("schedule {:?} appears twice", s.name)));
        }
        if let Err(why) = crate::scheduler::parse_cron(&s.cron) {
            errors.push(in_manifest(format!("schedule {:?}: {why}", s.name)));
        }
    }
    let mut seen = BTreeSet::new();
    for t in triggers {
        if t.event.is_empty() || t.event.len() > 128 {
            errors.push(in_manifest(format!(
                "trigger event {:?} must be 1-128 bytes",
                t.event
            )));
        }
        if !seen.insert((t.event.as_str(), t.script.as_str())) {
            errors.push(in_manifest(format!(
                "trigger {:?} → {:?} appears twice",
                t.event, t.script
            )));
        }
    }
    state.runners = picloud_core::store::runners(schedules, triggers);

    // The rules stop at the first violation; fix it and run again for the next.
    if let Err(v) = rules::check(&state) {
        errors
            .push(violation_line(&v, &analyses, &at).unwrap_or_else(|| in_manifest(v.to_string())));
    }

    if errors.is_empty() {
        Ok(format!(
            "{} scripts, {} routes, {} schedules, {} triggers",
            bundle.body.scripts.len(),
            bundle.body.routes.as_ref().map_or(0, Vec::len),
            schedules.len(),
            triggers.len()
        ))
    } else {
        Err(errors)
    }
}

/// For an import that breaks a rule (missing, an endpoint, a cycle, too deep): the line of the
/// importing file at its `import`. `None` for the other violations, which are the manifest's.
fn violation_line(
    v: &Violation,
    analyses: &[(&str, Analysis)],
    at: &dyn Fn(&str, usize, usize, &str) -> String,
) -> Option<String> {
    let (script, module) = match v {
        Violation::ImportOfMissing { script, module }
        | Violation::ImportOfEndpoint { script, module } => (script.as_str(), module.as_str()),
        Violation::Cycle(chain) | Violation::TooDeep(chain) => {
            let w = chain.windows(2).next()?;
            (w[0].as_str(), w[1].as_str())
        }
        _ => return None,
    };
    let (_, analysis) = analyses.iter().find(|(n, _)| *n == script)?;
    let (line, column) = analysis
        .import_positions
        .iter()
        .find(|(m, _, _)| m == module)
        .map_or((0, 0), |(_, l, c)| (*l, *c));
    Some(at(script, line, column, &v.to_string()))
}
