//! Compresses the text files the `picloud` binary carries (the Rhai definitions `picloud defs`
//! prints, the admin API's OpenAPI document, the dashboard's assets, the `picloud new`
//! templates) into `OUT_DIR` as gzip, so the binary holds ~70 KB of them instead of ~380 KB
//! (`src/packed.rs` reads them back).
//!
//! The output is a pure function of the inputs: flate2's gzip header carries no time or name
//! unless asked, which keeps release builds reproducible.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let docs = manifest.join("../docs");
    pack(&docs.join("picloud.d.rhai"), &out.join("picloud.d.rhai.gz"));
    pack(&docs.join("openapi.json"), &out.join("openapi.json.gz"));

    pack_folder(
        &manifest.join("src/dashboard/assets"),
        &out.join("dashboard"),
    );
    pack_folder(&manifest.join("src/cli/templates"), &out.join("templates"));
}

/// Packs every file under `src` (recursively) as `dst/RELATIVE_PATH.gz`.
fn pack_folder(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).expect("OUT_DIR is writable");
    // A file added to or removed from the folder reruns the script too.
    println!("cargo::rerun-if-changed={}", src.display());
    for entry in fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let path = entry.expect("a readable directory entry").path();
        let name = path.file_name().expect("a file name").to_owned();
        if path.is_dir() {
            pack_folder(&path, &dst.join(name));
        } else {
            let mut gz_name = name;
            gz_name.push(".gz");
            pack(&path, &dst.join(gz_name));
        }
    }
}

/// Writes `src` gzip-compressed (best compression: it is done once per build) to `dst`.
fn pack(src: &Path, dst: &Path) {
    println!("cargo::rerun-if-changed={}", src.display());
    let bytes = fs::read(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&bytes).expect("writing to memory");
    let gz = encoder.finish().expect("writing to memory");
    fs::write(dst, gz).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
}
