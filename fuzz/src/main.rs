//! `picloud-fuzz`: fuzzing on the stable tool chain. Each target generates inputs from a seeded
//! PRNG (half from its own grammar, half by mutating its corpus), runs them in-process under
//! `catch_unwind`, and checks properties and differential oracles on every input. A watchdog
//! thread flags any input that runs longer than the per-input cap as a hang.
//!
//! Owns: the command line, the campaign loop, the watchdog, findings on disk and the summary
//! line. Does not own: what a target checks (`targets/`), the framing oracle (`oracle.rs`).
//!
//! ```text
//! picloud-fuzz TARGET [--secs S] [--execs N] [--seed S] [--hang-ms MS] [--corpus DIR]
//!                     [--findings DIR] [--dump ITER FILE] [--replay FILE...]
//! ```
//! TARGET: head, chunked, json, routes, deploy (or `list`). A campaign is reproducible from
//! its seed: `--dump ITER FILE` reruns it and writes input ITER (the one a hang report names).

mod oracle;
mod rng;
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rng::Rng;
use targets::{Check, Target};

/// Entries kept in memory besides the corpus: inputs that showed a new outcome signature.
const POOL_MAX: usize = 4096;
/// Distinct findings printed in full; more are counted.
const FINDINGS_SHOWN_MAX: usize = 20;

struct Args {
    target: String,
    secs: Option<u64>,
    execs: Option<u64>,
    seed: u64,
    hang_ms: u64,
    corpus: PathBuf,
    findings: PathBuf,
    dump: Option<(u64, PathBuf)>,
    replay: Vec<PathBuf>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: picloud-fuzz TARGET [--secs S] [--execs N] [--seed S] [--hang-ms MS] \
         [--corpus DIR] [--findings DIR] [--dump ITER FILE] [--replay FILE...]\n\
         targets: {}",
        targets::NAMES.join(", ")
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Args> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut it = std::env::args().skip(1);
    let target = it.next()?;
    let mut args = Args {
        corpus: root.join("corpus").join(&target),
        findings: root.join("findings"),
        target,
        secs: None,
        execs: None,
        seed: 1,
        hang_ms: 1000,
        dump: None,
        replay: Vec::new(),
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--secs" => args.secs = Some(it.next()?.parse().ok()?),
            "--execs" => args.execs = Some(it.next()?.parse().ok()?),
            "--seed" => args.seed = it.next()?.parse().ok()?,
            "--hang-ms" => args.hang_ms = it.next()?.parse().ok()?,
            "--corpus" => args.corpus = it.next()?.into(),
            "--findings" => args.findings = it.next()?.into(),
            "--dump" => {
                let iter = it.next()?.parse().ok()?;
                args.dump = Some((iter, it.next()?.into()));
            }
            "--replay" => args.replay.extend(it.by_ref().map(PathBuf::from)),
            _ => return None,
        }
    }
    Some(args)
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        return usage();
    };
    if args.target == "list" {
        println!("{}", targets::NAMES.join("\n"));
        return ExitCode::SUCCESS;
    }
    let Some(target) = targets::by_name(&args.target) else {
        return usage();
    };
    if !args.replay.is_empty() {
        return replay(target, &args.replay);
    }
    campaign(target, &args)
}

/// Runs saved inputs once each and prints what the target's checks say.
fn replay(mut target: Box<dyn Target>, files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        let input = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return ExitCode::from(2);
            }
        };
        match catch_unwind(AssertUnwindSafe(|| target.run(&input))) {
            Ok(Check::Ok(sig)) => println!("{}: ok ({sig})", f.display()),
            Ok(Check::Finding(msg)) => {
                failed = true;
                println!("{}: FINDING {msg}", f.display());
            }
            Err(_) => {
                failed = true;
                println!("{}: PANIC", f.display());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn campaign(mut target: Box<dyn Target>, args: &Args) -> ExitCode {
    let corpus = load_corpus(&args.corpus);
    let mut pool: Vec<Vec<u8>> = corpus.clone();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut signatures = std::collections::HashSet::new();
    let mut rng = Rng::new(args.seed);

    // The watchdog: the loop publishes the iteration it is on; if that does not move for
    // hang_ms, the current input is a hang. It names the iteration, which `--dump` recreates.
    let progress = Arc::new(AtomicU64::new(0));
    {
        let progress = Arc::clone(&progress);
        let (hang_ms, seed, name) = (args.hang_ms, args.seed, args.target.clone());
        std::thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(move || watchdog(&progress, hang_ms, seed, &name))
            .expect("spawning the watchdog");
    }
    // Panics are caught and reported as findings; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));

    let started = Instant::now();
    let deadline = args.secs.map(|s| started + Duration::from_secs(s));
    let execs_max = args.execs.unwrap_or(u64::MAX);
    let (mut panics, mut findings, mut kinds) = (0u64, 0u64, std::collections::HashMap::new());
    let mut slowest = (Duration::ZERO, 0u64);
    let mut iter: u64 = 0;
    while iter < execs_max {
        if iter.is_multiple_of(1024) && deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        iter += 1;
        progress.store(iter, Ordering::Relaxed);
        let input = if rng.one_in(2) {
            target.generate(&mut rng)
        } else {
            let mut data = rng.pick(&pool).clone();
            let other = rng.pick(&pool).clone();
            rng::mutate(
                &mut rng,
                &mut data,
                &other,
                target.tokens(),
                target.len_max(),
            );
            data
        };
        if let Some((at, file)) = &args.dump
            && *at == iter
        {
            return match std::fs::write(file, &input) {
                Ok(()) => {
                    println!("wrote input {at} to {}", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::FAILURE
                }
            };
        }
        // Every 4096th input is timed, to report the slowest seen.
        let timed = iter.is_multiple_of(4096);
        let t0 = timed.then(Instant::now);
        let outcome = catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        if let Some(t0) = t0 {
            let took = t0.elapsed();
            if took > slowest.0 {
                slowest = (took, iter);
            }
        }
        let (kind, msg) = match outcome {
            Ok(Check::Ok(sig)) => {
                if pool.len() < POOL_MAX && signatures.insert(sig) {
                    pool.push(input);
                }
                continue;
            }
            Ok(Check::Finding(msg)) => {
                findings += 1;
                (msg.split(':').next().unwrap_or("").to_string(), msg)
            }
            Err(payload) => {
                panics += 1;
                let what = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                (format!("panic {what}"), format!("panic: {what}"))
            }
        };
        let seen = kinds.entry(kind).or_insert(0u64);
        *seen += 1;
        if *seen == 1 && kinds.len() <= FINDINGS_SHOWN_MAX {
            let file =
                args.findings
                    .join(format!("{}-{:016x}", args.target, rng::input_hash(&input)));
            let _ = std::fs::create_dir_all(&args.findings);
            let _ = std::fs::write(&file, &input);
            println!(
                "finding at iteration {iter}: {msg}\n  input saved as {}",
                file.display()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {iter} execs in {secs:.1} s ({:.0}/s), seed {}, corpus {} + {} kept, \
         {} signatures, slowest timed input {:?} (iteration {}), panics {panics}, findings {findings} \
         ({} kinds), hangs 0",
        args.target,
        iter as f64 / secs,
        args.seed,
        corpus.len(),
        pool.len().saturating_sub(corpus.len().max(1)),
        signatures.len(),
        slowest.0,
        slowest.1,
        kinds.len(),
    );
    if panics + findings > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn watchdog(progress: &AtomicU64, hang_ms: u64, seed: u64, target: &str) {
    let tick = Duration::from_millis((hang_ms / 4).max(10));
    let mut last = progress.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        std::thread::sleep(tick);
        let now = progress.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_millis(hang_ms) {
            println!(
                "HANG: {target} input {now} ran over {hang_ms} ms (seed {seed}); \
                 recreate it with: picloud-fuzz {target} --seed {seed} --dump {now} FILE"
            );
            std::process::exit(3);
        }
    }
}
