//! `POST /nodes/{name}/repair` (optional body `{"table": "public.t"}`):
//! rewrite on a replica, with the master's rows, the key ranges the
//! background check found different there (in one table, or that whole
//! table when none were found).

use crate::suspend::respond;
use crate::{Request, Source};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

pub(crate) async fn post(
    State(src): State<Source>,
    Path(name): Path<String>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let doc: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(doc) => doc,
            Err(e) => {
                return respond((
                    400,
                    serde_json::json!({"error": "bad_request", "message": format!("expected {{\"table\": \"schema.name\"}}: {e}")}),
                ))
            }
        }
    };
    let table = doc["table"].as_str().map(str::to_string);
    respond(
        src.request(Request::Repair {
            replica: name,
            table,
        })
        .await,
    )
}
