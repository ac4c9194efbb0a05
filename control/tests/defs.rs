//! `docs/picloud.d.rhai`, the file `picloud defs` prints, is what the engine's own definitions
//! say: the engine changed (a function added, renamed, documented) and the file did not →
//! this test fails. `PICLOUD_BLESS=1 cargo test -p picloud-control --test defs` rewrites the
//! file from the engine; commit it with the change.

use std::path::Path;

#[test]
fn the_committed_definitions_are_the_engines() {
    let generated = picloud_worker::engine::definitions();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/picloud.d.rhai");
    if std::env::var_os("PICLOUD_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/picloud.d.rhai");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "docs/picloud.d.rhai differs from the engine's definitions from line {} on; \
             rerun with PICLOUD_BLESS=1 and commit the file",
            line + 1
        );
    }
    assert_eq!(
        picloud_control::cli::defs::definitions(),
        generated,
        "the binary embeds the committed file"
    );
}
