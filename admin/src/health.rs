//! `GET /health`: 200 when the process can serve, 503 otherwise, for load
//! balancers and orchestrators; the body lists what is wrong with the
//! cluster meanwhile (a replica that differs from the master). `GET
//! /nodes/{name}/health`: 200 when that node serves in its role, 503 with
//! the reason otherwise (404 for an unknown node), for monitoring each
//! replica.

use crate::Source;
use axum::extract::{Path, State};
use axum::http::StatusCode;

pub(crate) async fn get(State(src): State<Source>) -> (StatusCode, String) {
    let code = if src.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let problems = src.problems();
    let mut body = match (code == StatusCode::OK, problems.is_empty()) {
        (true, true) => "ok\n".to_string(),
        (true, false) => "degraded\n".to_string(),
        (false, _) => "unavailable\n".to_string(),
    };
    for p in problems {
        body.push_str(&p);
        body.push('\n');
    }
    (code, body)
}

pub(crate) async fn node(
    State(src): State<Source>,
    Path(name): Path<String>,
) -> (StatusCode, String) {
    match src.node_health(&name) {
        None => (StatusCode::NOT_FOUND, format!("unknown node {name}\n")),
        Some((true, why)) => (StatusCode::OK, format!("ok: {why}\n")),
        Some((false, why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}
