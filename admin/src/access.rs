//! Who may change what the cluster does.
//!
//! With a token configured, every mutating request must carry it
//! (`Authorization: Bearer …`) or gets 401 and changes nothing; without
//! one, only a caller on this machine (a loopback address) may — Ferry
//! refuses to listen beyond loopback without a token. Reads stay open
//! (`/health`, `/metrics`, `/status`), but `/status` shows the text of
//! schema changes and failed statements (which may hold passwords) only to
//! a caller with the token. Every mutating request is logged with its
//! source address and whether it was let in.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{info, warn};

/// The admin endpoint's access rule.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// The bearer token mutating requests must carry (None: loopback
    /// callers only).
    pub token: Option<String>,
}

impl Access {
    /// Whether `headers` carry the configured token.
    pub(crate) fn authenticated(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()))
    }

    /// Whether the caller may see everything in `/status`.
    pub(crate) fn may_read_all(&self, headers: &HeaderMap) -> bool {
        self.token.is_none() || self.authenticated(headers)
    }
}

/// Compares in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The peer's address, when the server recorded it.
fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// Lets a mutating request through, or answers 401.
pub(crate) async fn require(
    State(access): State<Arc<Access>>,
    req: Request,
    next: Next,
) -> Response {
    let from = peer(&req);
    let what = format!("{} {}", req.method(), req.uri().path());
    let allowed = match &access.token {
        Some(_) => access.authenticated(req.headers()),
        None => from.is_some_and(|a| a.ip().is_loopback()),
    };
    let source = from.map_or_else(|| "unknown".to_string(), |a| a.to_string());
    if !allowed {
        warn!(request = %what, source, "admin request refused: no valid token");
        let body = serde_json::json!({
            "error": "unauthorized",
            "message": "this request needs the admin token (Authorization: Bearer …; \
                        `ferry` commands read it from [admin] token or FERRY_ADMIN_TOKEN)",
        });
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(body),
        )
            .into_response();
    }
    info!(request = %what, source, "admin request");
    next.run(req).await
}
