//! `POST /nodes/{name}/repair` (optional body `{"table": "public.t"}`):
//! rewrite on a replica, with the master's rows, the key ranges the
//! background check found different there (in one table, or that whole
//! table when none were found).

use crate::api::{self, Repair};
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
    match api::parse(&body, Some(Repair::default()), Repair::EXPECTED) {
        Ok(b) => respond(
            src.request(Request::Repair {
                replica: name,
                table: b.table,
            })
            .await,
        ),
        Err(why) => bad(&why.0),
    }
}
