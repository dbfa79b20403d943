//! `POST /nodes/{name}/resync`: copy the master's replicated tables to a
//! node fenced out of the cluster (an old master, a replica that missed a
//! failover) at one snapshot, then take it back as a replica.

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
    respond(src.request(Request::Resync { node: name }).await)
}
