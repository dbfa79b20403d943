//! `GET /metrics`: Prometheus text format.

use crate::Source;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

pub(crate) async fn get(State(src): State<Source>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        src.metrics(),
    )
}
