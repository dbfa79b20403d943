//! `POST /force-master` with `{"node": "a"}`: make a node master when the
//! cluster cannot decide by itself (after a total outage, the node that was
//! master last is missing). Recorded on the node and shown in `/status` as
//! forced: possible data loss.

use crate::api::{self, ForceMaster};
use crate::reply::{bad, respond};
use crate::{Request, Source};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

pub(crate) async fn post(State(src): State<Source>, body: Bytes) -> (StatusCode, Json<Value>) {
    match api::parse::<ForceMaster>(&body, None, ForceMaster::EXPECTED) {
        Ok(b) => respond(src.request(Request::ForceMaster { node: b.node }).await),
        Err(why) => bad(&why.0),
    }
}
