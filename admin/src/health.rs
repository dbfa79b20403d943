//! `GET /health`: 200 when the process can serve, 503 otherwise, for load
//! balancers and orchestrators.

use crate::Source;
use axum::extract::State;
use axum::http::StatusCode;

pub(crate) async fn get(State(src): State<Source>) -> (StatusCode, &'static str) {
    if src.healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n")
    }
}
