//! `POST /nodes/{name}/remove`: a node other than the master leaves the
//! cluster for good (a failed master that will not come back, a retired
//! replica); the master forgets its position, so that the outbox clean-up
//! no longer waits for it.

use crate::reply::respond;
use crate::{Request, Source};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

pub(crate) async fn post(
    State(src): State<Source>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    respond(src.request(Request::RemoveNode { node: name }).await)
}
