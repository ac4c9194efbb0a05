//! The OpenAPI document (`docs/openapi.json`) against the node: it is OpenAPI 3.1, its
//! operations are exactly the admin route table's (`picloud_control::admin::ROUTES`), its
//! public operations are exactly the table's `Public` routes, and a live node serves it
//! byte for byte at `/v1/openapi.json` without a token.
//!
//! Owns: the parity checks between the document and the route table. Does not own: whether the
//! answers match the document's schemas (the schemathesis run, `.ci/schemathesis.sh`).

mod support;

use std::collections::BTreeSet;

use picloud_control::admin::{Access, ROUTES, openapi_document};
use serde_json::Value;
use support::{TestNode, request};

/// The HTTP methods an OpenAPI path item may hold as operations.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(&openapi_document())
        .unwrap_or_else(|e| panic!("docs/openapi.json is not JSON: {e}"))
}

/// `(METHOD, path)` pairs.
type Ops = BTreeSet<(String, String)>;

/// Every `(METHOD, path)` of the document, and the same for operations with `security: []`.
fn operations(doc: &Value) -> (Ops, Ops) {
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("docs/openapi.json has no `paths` object"));
    let mut all = BTreeSet::new();
    let mut public = BTreeSet::new();
    for (path, item) in paths {
        let item = item
            .as_object()
            .unwrap_or_else(|| panic!("path item {path} is not an object"));
        for (key, op) in item {
            if !METHODS.contains(&key.as_str()) {
                continue;
            }
            let id = (key.to_ascii_uppercase(), path.clone());
            if op.get("security") == Some(&Value::Array(Vec::new())) {
                public.insert(id.clone());
            }
            all.insert(id);
        }
    }
    (all, public)
}

#[test]
fn document_is_openapi_3_1() {
    let doc = document();
    let version = doc["openapi"].as_str().unwrap_or("");
    assert!(
        version.starts_with("3.1."),
        "openapi is {version:?}, not 3.1.x"
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "the bearer security scheme"
    );
}

#[test]
fn operations_are_exactly_the_route_table() {
    let (documented, public) = operations(&document());
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(table.len(), ROUTES.len(), "the route table has a duplicate");
    let undocumented: Vec<_> = table.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&table).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from docs/openapi.json: {undocumented:?}; \
         operations in docs/openapi.json the node does not route: {unrouted:?}"
    );
    let table_public: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(
        public, table_public,
        "operations documented with `security: []` must be exactly the public routes"
    );
}

#[test]
fn every_reference_resolves() {
    fn walk(v: &Value, doc: &Value, bad: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let found = r
                        .strip_prefix('#')
                        .and_then(|pointer| doc.pointer(pointer))
                        .is_some();
                    if !found {
                        bad.push(r.clone());
                    }
                }
                map.values().for_each(|x| walk(x, doc, bad));
            }
            Value::Array(items) => items.iter().for_each(|x| walk(x, doc, bad)),
            _ => {}
        }
    }
    let doc = document();
    let mut bad = Vec::new();
    walk(&doc, &doc, &mut bad);
    assert!(bad.is_empty(), "unresolved $ref: {bad:?}");

    // Links name operations by id: each id is unique and each link's target exists.
    let mut ids = BTreeSet::new();
    let mut targets = Vec::new();
    for item in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for (key, op) in item.as_object().into_iter().flatten() {
            if !METHODS.contains(&key.as_str()) {
                continue;
            }
            let id = op["operationId"].as_str().unwrap_or("").to_string();
            assert!(!id.is_empty(), "an operation without operationId");
            assert!(ids.insert(id.clone()), "operationId {id} appears twice");
            for resp in op["responses"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                for l in resp["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values())
                {
                    targets.push(l["operationId"].as_str().unwrap_or("").to_string());
                }
            }
        }
    }
    let dangling: Vec<_> = targets.iter().filter(|t| !ids.contains(*t)).collect();
    assert!(
        dangling.is_empty(),
        "links to unknown operations: {dangling:?}"
    );
}

#[test]
fn the_node_serves_the_document_without_a_token() {
    let n = TestNode::start();
    let r = request(n.admin, "GET", "/v1/openapi.json", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.body == openapi_document().as_bytes(),
        "the served document differs from docs/openapi.json"
    );
}
