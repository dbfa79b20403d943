//! `GET /status`: the cluster at a glance, as JSON (what `ferry status`
//! prints). The text of schema changes and failed statements (which may
//! hold a password, as in `ALTER ROLE … PASSWORD`) only for a caller with
//! the admin token, when one is configured.

use crate::{Access, Source};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use std::sync::Arc;

/// What replaces statement text for a caller without the token.
const REDACTED: &str = "(redacted: send the admin token to see statement text)";

pub(crate) async fn get(
    State(src): State<Source>,
    State(access): State<Arc<Access>>,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    let mut doc = src.status();
    if !access.may_read_all(&headers) {
        redact(&mut doc);
    }
    Json(doc)
}

/// Blanks every statement text in a status document.
fn redact(doc: &mut serde_json::Value) {
    let texts = [("schema_changes", "query"), ("nodes", "failed_statement")];
    for (list, field) in texts {
        if let Some(items) = doc.get_mut(list).and_then(|v| v.as_array_mut()) {
            for item in items {
                if let Some(v) = item.get_mut(field).filter(|v| v.is_string()) {
                    *v = serde_json::Value::String(REDACTED.into());
                }
            }
        }
    }
}
