//! The dashboard: a web console for the admin API, served by the node on its admin address
//! (`GET /` and `GET /assets/...`), built into the binary.
//!
//! Owns: the asset table (every file of `assets/`, built into the binary gzip-compressed by
//! `build.rs`, with its content type), each asset's ETags (a hash of its compressed bytes,
//! computed once per process; one per representation), and the answers to the dashboard's
//! paths: 200 with the bytes — the gzip bytes as they are (`Content-Encoding: gzip`) to a
//! client that accepts gzip, as every browser does, inflated for one that does not — 304 for a
//! matching `If-None-Match`, 405 for a method other than GET or HEAD, and the security headers
//! on every one of them (a strict Content-Security-Policy: the pages run no inline script or
//! style and talk only to the node that served them).
//!
//! Does not own: the admin API the pages call (`admin/`: the pages are a client like any other,
//! with the user's bearer token), or where these answers are made: the admin front end
//! (`node.rs`) asks [`serve`] first, on the connection's coroutine, so static bytes never queue
//! behind admin writes on the control thread; only the rare answer that must be inflated (a
//! client that refuses gzip) goes to the control thread ([`serve_inflating`]), because inflating
//! needs more stack than a coroutine's 32 KiB. The public port never serves these paths.
//!
//! The assets are plain ES modules and CSS (no build step). `Cache-Control: no-cache` makes a
//! browser revalidate every time (a 304 when nothing changed), so a new binary's pages are
//! used at once.

use std::sync::OnceLock;

use picloud_worker::http::{Request, Response};

use crate::packed::{Packed, packed};

/// The Content-Security-Policy of every dashboard answer: only this origin's scripts, styles
/// and connections; no inline code, no `eval`, no framing, no forms posting elsewhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                       base-uri 'none'; form-action 'none'";

/// One embedded file.
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes, compressed.
    pub file: Packed,
}

impl Asset {
    /// The file's bytes, as in `assets/`.
    pub fn bytes(&self) -> Vec<u8> {
        self.file.bytes()
    }
}

macro_rules! asset {
    ($path:literal, $file:literal, $ctype:expr) => {
        Asset {
            path: $path,
            content_type: $ctype,
            file: packed!(concat!("dashboard/", $file, ".gz")),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the dashboard. `/` is the page; everything else is under `/assets/`.
pub const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/assets/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/assets/favicon.svg", "favicon.svg", "image/svg+xml"),
    asset!("/assets/main.js", "main.js", JS),
    asset!("/assets/api.js", "api.js", JS),
    asset!("/assets/dom.js", "dom.js", JS),
    asset!("/assets/editor.js", "editor.js", JS),
    asset!("/assets/toml.js", "toml.js", JS),
    asset!("/assets/overview.js", "overview.js", JS),
    asset!("/assets/apps.js", "apps.js", JS),
    asset!("/assets/scripts.js", "scripts.js", JS),
    asset!("/assets/tables.js", "tables.js", JS),
    asset!("/assets/data.js", "data.js", JS),
    asset!("/assets/logs.js", "logs.js", JS),
    asset!("/assets/deploy.js", "deploy.js", JS),
    asset!("/assets/access.js", "access.js", JS),
];

/// The sum of every asset's size uncompressed, in bytes (the tests keep it within budget).
pub fn total_bytes() -> usize {
    ASSETS.iter().map(|a| a.bytes().len()).sum()
}

/// The sum of every asset's size as sent to a browser (gzip), in bytes.
pub fn total_gzip_bytes() -> usize {
    ASSETS.iter().map(|a| a.file.gzip().len()).sum()
}

/// Whether `path` is one of the dashboard's: the admin front end serves these itself.
pub fn is_dashboard_path(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.starts_with("/assets/")
}

/// Each asset's ETag stem, in [`ASSETS`] order: the first 16 hex digits of the SHA-256 of its
/// compressed bytes (which change exactly when the file does). Computed on first use, once per
/// process.
fn etag_stems() -> &'static [String] {
    static STEMS: OnceLock<Vec<String>> = OnceLock::new();
    STEMS.get_or_init(|| {
        use sha2::{Digest, Sha256};
        ASSETS
            .iter()
            .map(|a| hex::encode(Sha256::digest(a.file.gzip()))[..16].to_string())
            .collect()
    })
}

/// The quoted ETag of one representation: the gzip bytes and the inflated bytes are different
/// byte sequences, so each has its own strong validator (RFC 9110 §8.8.3).
fn etag(stem: &str, gzip: bool) -> String {
    if gzip {
        format!("\"{stem}-gz\"")
    } else {
        format!("\"{stem}\"")
    }
}

/// Whether an `Accept-Encoding` value accepts gzip: `gzip`, `x-gzip` or `*` with a weight other
/// than 0 (RFC 9110 §12.5.3). A `gzip;q=0` refuses it even when `*` is listed.
fn accepts_gzip(accept_encoding: &str) -> bool {
    let mut star = false;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        match coding.as_str() {
            "gzip" | "x-gzip" => return !refused,
            "*" => star = !refused,
            _ => {}
        }
    }
    star
}

/// Adds the headers every dashboard answer carries.
fn secured(resp: Response) -> Response {
    resp.with_header("content-security-policy", CSP)
        .with_header("x-content-type-options", "nosniff")
        .with_header("referrer-policy", "no-referrer")
        .with_header("x-frame-options", "DENY")
}

/// Whether an `If-None-Match` value names `etag` (a list, weak validators or `*`).
fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// The answer to a dashboard request that needs no inflating (every answer but a 200 to a
/// client that refuses gzip), or `None`: `req` is not for the dashboard, or its answer must be
/// inflated; then [`serve_inflating`] answers it off the coroutine. No token is needed: the
/// files hold no data; the pages then call the API with the user's token.
pub fn serve(req: &Request) -> Option<Response> {
    answer(req, false)
}

/// The answer to any dashboard request, inflating the file when the client refuses gzip; `None`
/// when `req` is not for the dashboard. Needs a thread's stack (the control thread's), not a
/// coroutine's.
pub fn serve_inflating(req: &Request) -> Option<Response> {
    answer(req, true)
}

fn answer(req: &Request, may_inflate: bool) -> Option<Response> {
    if !is_dashboard_path(&req.path) {
        return None;
    }
    let path = if req.path == "/index.html" {
        "/"
    } else {
        req.path.as_str()
    };
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return Some(secured(Response::new(
            404,
            "text/plain; charset=utf-8",
            "no such dashboard file\n",
        )));
    };
    if req.method != "GET" && req.method != "HEAD" {
        return Some(secured(
            Response::new(
                405,
                "text/plain; charset=utf-8",
                "the dashboard answers GET and HEAD\n",
            )
            .with_header("allow", "GET, HEAD"),
        ));
    }
    let asset = &ASSETS[i];
    let gzip = req.header("accept-encoding").is_some_and(accepts_gzip);
    let etag = etag(&etag_stems()[i], gzip);
    let fresh = req
        .header("if-none-match")
        .is_some_and(|v| matches(v, &etag));
    let resp = if fresh {
        Response {
            status: 304,
            headers: Vec::new(),
            body: Vec::new(),
        }
    } else if gzip {
        Response::new(200, asset.content_type, asset.file.gzip())
            .with_header("content-encoding", "gzip")
    } else if may_inflate {
        Response::new(200, asset.content_type, asset.bytes())
    } else {
        return None;
    };
    Some(secured(
        resp.with_header("etag", etag)
            .with_header("vary", "accept-encoding")
            .with_header("cache-control", "no-cache"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &[(&str, &str)]) -> Option<Response> {
        serve_inflating(&Request {
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            version_minor: 1,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            peer: None,
        })
    }

    fn header<'r>(resp: &'r Response, name: &str) -> Option<&'r str> {
        resp.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn api_paths_are_not_the_dashboards() {
        assert!(get("/v1/apps", &[]).is_none());
        assert!(get("/metrics", &[]).is_none());
        assert!(get("/v1/health", &[]).is_none());
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_the_security_headers() {
        for a in ASSETS {
            let resp = get(a.path, &[]).expect("a dashboard path");
            assert_eq!(resp.status, 200, "{}", a.path);
            assert_eq!(header(&resp, "content-type"), Some(a.content_type));
            assert_eq!(header(&resp, "content-security-policy"), Some(CSP));
            assert_eq!(header(&resp, "x-content-type-options"), Some("nosniff"));
            assert_eq!(header(&resp, "cache-control"), Some("no-cache"));
            assert_eq!(header(&resp, "vary"), Some("accept-encoding"));
            assert_eq!(header(&resp, "content-encoding"), None);
            assert_eq!(resp.body, a.bytes());
            let zipped = get(a.path, &[("accept-encoding", "gzip, deflate, br")]).expect("served");
            assert_eq!(header(&zipped, "content-encoding"), Some("gzip"));
            assert_eq!(zipped.body, a.file.gzip());
            assert_ne!(header(&zipped, "etag"), header(&resp, "etag"));
        }
    }

    #[test]
    fn accept_encoding_weights_are_honoured() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, GZIP;q=0.5"));
        assert!(accepts_gzip("x-gzip"));
        assert!(accepts_gzip("*"));
        assert!(accepts_gzip("br, *;q=0.1"));
        assert!(!accepts_gzip(""));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip("br, deflate"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("*, gzip; q=0.0"));
        assert!(!accepts_gzip("*;q=0"));
    }

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        assert!(matches("\"abc\"", "\"abc\""));
        assert!(matches("W/\"abc\"", "\"abc\""));
        assert!(matches("\"x\", \"abc\"", "\"abc\""));
        assert!(matches("*", "\"abc\""));
        assert!(!matches("\"abd\"", "\"abc\""));
        assert!(!matches("", "\"abc\""));
    }

    #[test]
    fn the_page_loads_nothing_inline_and_nothing_from_elsewhere() {
        for a in ASSETS {
            let bytes = a.bytes();
            let text = String::from_utf8_lossy(&bytes);
            // No other host: every URL in the files is relative to this node.
            for scheme in ["http://", "https://", "//fonts", "//cdn"] {
                let hits: Vec<&str> = text
                    .lines()
                    // The SVG namespace is a name, not a request.
                    .filter(|l| l.contains(scheme) && !l.contains("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{}: {hits:?}", a.path);
            }
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(banned), "{} uses {banned}", a.path);
            }
        }
        let index_bytes = ASSETS[0].bytes();
        let index = String::from_utf8_lossy(&index_bytes);
        assert!(!index.contains("<script>"), "inline script in index.html");
        assert!(!index.contains("style="), "inline style in index.html");
        assert!(!index.contains("<style"), "inline style in index.html");
    }
}
