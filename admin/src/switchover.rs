//! `POST /switchover` with an optional `{"to": "b"}`: a planned switchover
//! — new statements are held, transactions under way finish, the replica
//! applies the last batches and becomes master, the old master its
//! replica. Answers with the timings, or why it was cancelled (nothing
//! changed then).

use crate::suspend::respond;
use crate::{Request, Source};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

pub(crate) async fn post(State(src): State<Source>, body: Bytes) -> (StatusCode, Json<Value>) {
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(doc) if doc["to"].is_string() || doc["to"].is_null() => {
                doc["to"].as_str().map(str::to_string)
            }
            _ => {
                return respond((
                    400,
                    serde_json::json!({"error": "bad_request",
                        "message": "expected no body or {\"to\": \"node\"}"}),
                ))
            }
        }
    };
    respond(src.request(Request::Switchover { to }).await)
}
