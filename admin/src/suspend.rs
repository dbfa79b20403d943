//! `POST /replicas/{name}/suspend` and `POST /suspend` (several replicas, one
//! consistency group) with `{"at": "<RFC 3339>"}`: schedule a suspension;
//! `DELETE /replicas/{name}/suspend`: cancel one before its instant.

use crate::{Request, Source};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

/// Turns an answer into a response.
pub(crate) fn respond((status, body): (u16, Value)) -> (StatusCode, Json<Value>) {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
}

/// A refusal of a malformed request body.
fn bad(message: &str) -> (StatusCode, Json<Value>) {
    respond((
        400,
        serde_json::json!({"error": "bad_request", "message": message}),
    ))
}

pub(crate) async fn post(
    State(src): State<Source>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let Some(at) = body["at"].as_str() else {
        return bad("expected {\"at\": \"<RFC 3339 time>\"}");
    };
    respond(
        src.request(Request::Suspend {
            replicas: vec![name],
            at: at.to_string(),
        })
        .await,
    )
}

pub(crate) async fn post_group(
    State(src): State<Source>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let (Some(at), Some(names)) = (body["at"].as_str(), body["replicas"].as_array()) else {
        return bad("expected {\"replicas\": [\"name\", ...], \"at\": \"<RFC 3339 time>\"}");
    };
    let replicas: Vec<String> = names
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    respond(
        src.request(Request::Suspend {
            replicas,
            at: at.to_string(),
        })
        .await,
    )
}

pub(crate) async fn delete(
    State(src): State<Source>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    respond(src.request(Request::CancelSuspend { replica: name }).await)
}
