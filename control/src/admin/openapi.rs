//! The OpenAPI 3.1 document of the admin API, kept in the repository as
//! `docs/openapi.json` and embedded in the binary (compressed, [`crate::packed`]), served at `GET /v1/openapi.json` without a
//! token (it describes the API; it holds no data).
//!
//! Owns: serving the document. Does not own: its content (the file; a test checks that its
//! paths and methods are exactly the route table's, `control/tests/openapi.rs`).

use picloud_worker::http::Response;

/// The document, as stored in `docs/openapi.json`. Inflated on each call (~0.3 ms): clients
/// fetch it once, and keeping it inflated would cost ~100 KB of memory for good.
pub fn openapi_document() -> String {
    crate::packed::packed!("openapi.json.gz").text()
}

/// The `GET /v1/openapi.json` answer.
pub(super) fn response() -> Response {
    Response::new(200, "application/json", openapi_document())
}
