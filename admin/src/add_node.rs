//! `POST /nodes` with `{"name": "d", "dsn": "postgresql://...", "priority":
//! 4}`: a new, empty node gets the replicated tables' definitions and a
//! consistent copy of their rows from the master, then joins as a replica.
//! Progress is in `/status` under `adding` meanwhile.

use crate::suspend::respond;
use crate::{Request, Source};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

/// Priority of a node added without one (as in the configuration).
const DEFAULT_PRIORITY: i64 = 100;

pub(crate) async fn post(
    State(src): State<Source>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let (Some(name), Some(dsn)) = (body["name"].as_str(), body["dsn"].as_str()) else {
        return respond((
            400,
            serde_json::json!({"error": "bad_request",
                "message": "expected {\"name\": \"d\", \"dsn\": \"postgresql://...\", \"priority\": 4}"}),
        ));
    };
    let priority = body["priority"].as_i64().unwrap_or(DEFAULT_PRIORITY);
    let Ok(priority) = i32::try_from(priority) else {
        return respond((
            400,
            serde_json::json!({"error": "bad_request", "message": "priority out of range"}),
        ));
    };
    respond(
        src.request(Request::AddNode {
            name: name.to_string(),
            dsn: dsn.to_string(),
            priority,
        })
        .await,
    )
}
