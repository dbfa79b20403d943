//! `GET /status`: the cluster at a glance, as JSON (what `ferry status` prints).

use crate::Source;
use axum::extract::State;
use axum::Json;

pub(crate) async fn get(State(src): State<Source>) -> Json<serde_json::Value> {
    Json(src.status())
}
