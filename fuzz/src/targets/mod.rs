//! The fuzz targets: what each generates and what it checks on every input.
//!
//! Owns: the [`Target`] trait and the table of targets. Each target's file owns its grammar
//! (inputs built from framing-relevant pieces), its dictionary for mutations and its checks.

mod chunked;
mod deploy;
mod head;
mod json;
mod routes;

use crate::rng::Rng;

/// What a target's checks said about one input.
pub enum Check {
    /// Every property held; the string is a coarse outcome signature (inputs with a new one
    /// are kept for mutation, a poor man's coverage feedback).
    Ok(String),
    /// A property failed: `kind: details`. The kind groups findings in the summary.
    Finding(String),
}

pub trait Target {
    /// A fresh input from the target's own grammar.
    fn generate(&mut self, rng: &mut Rng) -> Vec<u8>;
    /// Runs the code under test on `input` and checks its properties.
    fn run(&mut self, input: &[u8]) -> Check;
    /// Tokens spliced in by the mutator.
    fn tokens(&self) -> &'static [&'static [u8]];
    /// Longest input the mutator makes.
    fn len_max(&self) -> usize {
        4096
    }
}

pub const NAMES: &[&str] = &["head", "chunked", "json", "routes", "deploy"];

pub fn by_name(name: &str) -> Option<Box<dyn Target>> {
    Some(match name {
        "head" => Box::new(head::Head::default()),
        "chunked" => Box::new(chunked::Chunked),
        "json" => Box::new(json::Json),
        "routes" => Box::new(routes::Routes),
        "deploy" => Box::new(deploy::Deploy),
        _ => return None,
    })
}

/// Glues `n` pieces picked from `pieces`.
pub fn glue(rng: &mut Rng, pieces: &[&'static [u8]], n: usize, out: &mut Vec<u8>) {
    for _ in 0..n {
        out.extend_from_slice(rng.pick_b(pieces));
    }
}
