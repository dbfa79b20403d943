//! `POST /replicas/{name}/resume`: return a suspended replica to shipping;
//! it first receives what changed meanwhile, netted per key.

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
    respond(src.request(Request::Resume { replica: name }).await)
}
