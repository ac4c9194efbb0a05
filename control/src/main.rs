//! picloud binary
fn main() {}
