//! `POST /force-master` with `{"node": "a"}`: make a node master when the
//! cluster cannot decide by itself (after a total outage, the node that was
//! master last is missing). Recorded on the node and shown in `/status` as
//! forced: possible data loss.

use crate::suspend::respond;
use crate::{Request, Source};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

pub(crate) async fn post(
    State(src): State<Source>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let Some(node) = body["node"].as_str() else {
        return respond((
            400,
            serde_json::json!({"error": "bad_request", "message": "expected {\"node\": \"name\"}"}),
        ));
    };
    respond(
        src.request(Request::ForceMaster {
            node: node.to_string(),
        })
        .await,
    )
}
