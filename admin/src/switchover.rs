//! `POST /switchover` with an optional `{"to": "b"}`: a planned switchover
//! — new statements are held, transactions under way finish, the replica
//! applies the last batches and becomes master, the old master its
//! replica. Answers with the timings, or why it was cancelled (nothing
//! changed then).

use crate::api::{self, Switchover};
use crate::reply::{bad, respond};
use crate::{Request, Source};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

pub(crate) async fn post(State(src): State<Source>, body: Bytes) -> (StatusCode, Json<Value>) {
    match api::parse(&body, Some(Switchover::default()), Switchover::EXPECTED) {
        Ok(b) => respond(src.request(Request::Switchover { to: b.to }).await),
        Err(why) => bad(&why.0),
    }
}
