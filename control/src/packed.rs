//! Files the binary carries gzip-compressed (`build.rs` compresses them at build time): the
//! Rhai definitions (`picloud defs`), the OpenAPI document (`GET /v1/openapi.json`) and the
//! dashboard's assets. Compressed they take ~60 KB of the binary instead of ~350 KB, which
//! keeps the stripped binary inside its size budget (bench/NOTES.md, "Cross targets").
//!
//! Owns: the [`Packed`] handle and inflating it. Does not own: which files are packed
//! (`build.rs`) or how each is served (the dashboard sends its gzip bytes as they are to a
//! browser that accepts gzip; the others are inflated on each use, which is rare).

/// The fixed gzip header build.rs writes (RFC 1952: magic, method, flags 0, mtime 0, xfl, os).
const GZIP_HEADER_BYTES: usize = 10;
/// CRC-32 and input size.
const GZIP_TRAILER_BYTES: usize = 8;

/// One gzip-compressed file built into the binary.
#[derive(Clone, Copy, Debug)]
pub struct Packed {
    gzip: &'static [u8],
}

/// A [`Packed`] file from `OUT_DIR`, by its name there (`build.rs` decides the names).
macro_rules! packed {
    ($name:expr) => {
        $crate::packed::Packed::new(include_bytes!(concat!(env!("OUT_DIR"), "/", $name)))
    };
}
pub(crate) use packed;

impl Packed {
    /// Only through [`packed!`], which names a file build.rs wrote.
    pub(crate) const fn new(gzip: &'static [u8]) -> Packed {
        Packed { gzip }
    }

    /// The compressed bytes, a complete gzip member (what `Content-Encoding: gzip` carries).
    pub fn gzip(&self) -> &'static [u8] {
        self.gzip
    }

    /// The file's bytes.
    ///
    /// Inflates the member's deflate stream with miniz_oxide's heap-allocated decompressor:
    /// this runs on the admin connection's coroutine, whose stack is small (flate2's reader
    /// overflowed it). build.rs writes a gzip header of exactly [`GZIP_HEADER_BYTES`] (no name,
    /// no extra field) and the usual 8-byte trailer (CRC-32, size), which are skipped unchecked:
    /// nothing outside the build touches these bytes, so a failure is a broken build, not a
    /// runtime condition.
    pub fn bytes(&self) -> Vec<u8> {
        let deflate = &self.gzip[GZIP_HEADER_BYTES..self.gzip.len() - GZIP_TRAILER_BYTES];
        miniz_oxide::inflate::decompress_to_vec(deflate).expect("build.rs packed valid deflate")
    }

    /// The file's text (every packed file is UTF-8: build.rs packs our own text files).
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes()).expect("build.rs packed a UTF-8 text file")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_packed_file_inflates_to_the_source_file() {
        let defs = super::packed!("picloud.d.rhai.gz");
        let source = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/picloud.d.rhai"),
        )
        .expect("docs/picloud.d.rhai");
        assert_eq!(defs.text(), source);
        assert!(defs.gzip().len() * 4 < source.len(), "compressed well");
        // The header bytes() skips is the plain one: no FNAME/FEXTRA/FCOMMENT flags.
        assert_eq!(&defs.gzip()[..4], &[0x1f, 0x8b, 8, 0]);
    }
}
