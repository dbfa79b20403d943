//! The endpoint's answers: a status and a JSON body; a request the endpoint
//! cannot read is refused with 400 and `bad_request`.

use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

/// An answer of [`crate::StatusSource::request`] as axum sends it.
pub(crate) fn respond((status, body): (u16, Value)) -> (StatusCode, Json<Value>) {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
}

/// A request body the endpoint cannot read.
pub(crate) fn bad(message: &str) -> (StatusCode, Json<Value>) {
    respond((
        400,
        serde_json::json!({"error": "bad_request", "message": message}),
    ))
}
