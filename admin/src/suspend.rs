//! `POST /replicas/{name}/suspend` and `POST /suspend` (several replicas, one
//! consistency group) with `{"at": "<RFC 3339>"}`: schedule a suspension;
//! `DELETE /replicas/{name}/suspend`: cancel one before its instant.

use crate::api::{self, Suspend, SuspendGroup};
use crate::reply::{bad, respond};
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
    match api::parse::<Suspend>(&body, None, Suspend::EXPECTED) {
        Ok(b) => respond(
            src.request(Request::Suspend {
                replicas: vec![name],
                at: b.at,
            })
            .await,
        ),
        Err(why) => bad(&why.0),
    }
}

pub(crate) async fn post_group(
    State(src): State<Source>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    match api::parse::<SuspendGroup>(&body, None, SuspendGroup::EXPECTED) {
        Ok(b) => respond(
            src.request(Request::Suspend {
                replicas: b.replicas,
                at: b.at,
            })
            .await,
        ),
        Err(why) => bad(&why.0),
    }
}

pub(crate) async fn delete(
    State(src): State<Source>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    respond(src.request(Request::CancelSuspend { replica: name }).await)
}
