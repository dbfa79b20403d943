//! `POST /nodes` with `{"name": "d", "dsn": "postgresql://...", "priority":
//! 4}`: a new, empty node gets the replicated tables' definitions and a
//! consistent copy of their rows from the master, then joins as a replica.
//! Progress is in `/status` under `adding` meanwhile.

use crate::api::{self, AddNode};
use crate::reply::{bad, respond};
use crate::{Request, Source};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

pub(crate) async fn post(State(src): State<Source>, body: Bytes) -> (StatusCode, Json<Value>) {
    let body: AddNode = match api::parse(&body, None, AddNode::EXPECTED) {
        Ok(b) => b,
        Err(why) => return bad(&why.0),
    };
    let priority = body.priority.unwrap_or(AddNode::DEFAULT_PRIORITY);
    let Ok(priority) = i32::try_from(priority) else {
        return bad("priority out of range");
    };
    respond(
        src.request(Request::AddNode {
            name: body.name,
            dsn: body.dsn,
            priority,
        })
        .await,
    )
}
