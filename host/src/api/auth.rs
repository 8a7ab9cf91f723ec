//! Who may call the admin API, and the audit log of what they did.
//!
//! The admin token is kept only as its SHA-256 hash and a presented token is
//! hashed and compared in constant time, so neither memory dumps nor response
//! timing give it away. A token is required for every mutating call, and for
//! every call when the server listens beyond loopback (it refuses to start there
//! without one). `/healthz` and `/readyz` stay open for probes.
//!
//! Every mutating call, allowed or not, leaves an audit row: who (the token's
//! id, `anonymous-loopback`, or `denied`), the client's address, the action,
//! its target, the status and a summary of the request. A call that reaches
//! the admin service is audited there, as the CLI's `--db` changes are; this
//! guard writes the row of a call refused before it (a bad token, an
//! unreadable request). Refused calls are
//! limited per client address before they are written: a client that keeps
//! being refused gets 429 without a row, so neither a token-guessing loop nor
//! a hostile page can flood the audit log.

use super::ApiState;
use super::error::{ApiError, ErrorCode};
use crate::admin::Caller;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Refused calls one client may make in a burst, and how many more it earns
/// per second after.
const REFUSAL_BURST: f64 = 20.0;
const REFUSALS_PER_SECOND: f64 = 1.0;
/// Clients remembered; beyond this the table is cleared (the limit then
/// starts afresh, which only ever errs towards writing rows).
const REFUSAL_CLIENTS: usize = 10_000;

/// Refused calls per client address: a token bucket each.
#[derive(Debug, Default)]
pub struct RefusalLimiter {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RefusalLimiter {
    fn refill(tokens: f64, since: Instant, now: Instant) -> f64 {
        (tokens + now.duration_since(since).as_secs_f64() * REFUSALS_PER_SECOND).min(REFUSAL_BURST)
    }

    /// Whether `client` has used up its refusals (then nothing is checked or written).
    fn exhausted(&self, client: IpAddr) -> bool {
        let now = Instant::now();
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        buckets
            .get(&client)
            .is_some_and(|(tokens, since)| Self::refill(*tokens, *since, now) < 1.0)
    }

    /// Counts one refusal of `client`.
    fn refused(&self, client: IpAddr) {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= REFUSAL_CLIENTS && !buckets.contains_key(&client) {
            buckets.clear();
        }
        let (tokens, since) = buckets.entry(client).or_insert((REFUSAL_BURST, now));
        *tokens = (Self::refill(*tokens, *since, now) - 1.0).max(0.0);
        *since = now;
    }
}

/// The actor of calls made without a token on a loopback-only server that has none.
pub const ANONYMOUS: &str = "anonymous-loopback";

/// Shortest admin token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// What the guard knows: the token's hash, and whether reads are open.
#[derive(Clone, Debug)]
pub struct Auth {
    token_sha256: Option<[u8; 32]>,
    /// Loopback only: reads need no token.
    loopback: bool,
}

impl Auth {
    /// The rules for a server listening on `listen`.
    ///
    /// # Errors
    ///
    /// When `listen` is not loopback and there is no token: such a server would
    /// hand the scheduler to anyone who can reach it.
    pub fn new(listen: SocketAddr, token_sha256: Option<[u8; 32]>) -> Result<Self, String> {
        let loopback = listen.ip().is_loopback();
        if !loopback && token_sha256.is_none() {
            return Err(format!(
                "refusing to serve the admin API on {listen}, which is not a loopback address, without an admin token: \
                 set QUARTZITE_ADMIN_TOKEN (or [api] admin_token in the config), or listen on 127.0.0.1"
            ));
        }
        Ok(Auth {
            token_sha256,
            loopback,
        })
    }

    /// The hash under which a token is kept.
    pub fn hash(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The id under which a token's calls are audited: the start of a hash of
    /// the stored hash, which names the token without revealing it or the value
    /// it is checked against.
    fn token_id(hash: &[u8; 32]) -> String {
        let mut id = Sha256::new();
        id.update(b"quartzite audit id\0");
        id.update(hash);
        format!("token:{}", hex::encode(&id.finalize()[..6]))
    }

    /// The caller's identity, or why it is refused.
    fn check(&self, presented: Option<&str>, mutating: bool) -> Result<String, ApiError> {
        match (presented, &self.token_sha256) {
            (Some(token), Some(expected)) => {
                let got = Self::hash(token);
                if constant_time_eq(&got, expected) {
                    Ok(Self::token_id(expected))
                } else {
                    Err(ApiError::unauthorized("the bearer token is not valid"))
                }
            }
            (Some(_), None) => Err(ApiError::unauthorized(
                "this server has no admin token configured; send no Authorization header",
            )),
            (None, Some(_)) if mutating || !self.loopback => Err(ApiError::unauthorized(
                "this call needs the admin token: send Authorization: Bearer TOKEN",
            )),
            (None, _) => Ok(ANONYMOUS.into()),
        }
    }
}

/// Compares two hashes without an early exit, so the time taken does not tell
/// how many leading bytes matched.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Marks a response whose audit row the admin service wrote.
#[derive(Clone, Copy, Debug)]
pub struct Audited;

/// Authenticates every routed request and audits every mutating one.
pub async fn guard(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| path.clone(), |m| m.as_str().to_string());
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let presented = match request.headers().get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| Some(t.trim().to_string()))
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`")
            }),
    };
    // A page of another origin is refused before its token (if any) is looked at.
    let wasm_allowed = method == Method::POST && route == "/api/v1/modules";
    let checked = if mutating {
        state
            .origins
            .check_mutation(request.headers(), wasm_allowed)
            .and(presented)
    } else {
        presented
    }
    .and_then(|p| state.auth.check(p.as_deref(), mutating));
    let caller = |actor: String| Caller::api(actor, client.map(|c| c.to_string()));
    let (caller, response) = match checked {
        Ok(actor) => {
            let caller = caller(actor);
            let mut request = request;
            request.extensions_mut().insert(caller.clone());
            (caller, next.run(request).await)
        }
        Err(e) => {
            // A client refused again and again is answered 429, unwritten.
            if let Some(peer) = client {
                if state.refusals.exhausted(peer.ip()) {
                    return ApiError::new(
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        "too many refused calls from this address; wait a few seconds",
                    )
                    .into_response();
                }
                state.refusals.refused(peer.ip());
            }
            (caller("denied".to_string()), e.into_response())
        }
    };
    if mutating && response.extensions().get::<Audited>().is_none() {
        let summary = serde_json::json!({
            "error": response.extensions().get::<ErrorCode>().map(|c| c.0),
        });
        state
            .admin
            .audit(
                &caller,
                format!("{method} {route}"),
                path,
                response.status().as_u16(),
                summary,
            )
            .await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_reads_open_only_on_loopback() {
        let hash = Auth::hash("s3cret-s3cret-s3cret");
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}"));
        let public: SocketAddr = "0.0.0.0:1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(Auth::new(public, None).is_err());
        let open = Auth::new(local, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(open.check(None, true).ok().as_deref(), Some(ANONYMOUS));
        let guarded = Auth::new(local, Some(hash)).unwrap_or_else(|e| panic!("{e}"));
        assert!(guarded.check(None, false).is_ok());
        assert!(guarded.check(None, true).is_err());
        assert!(guarded.check(Some("wrong"), false).is_err());
        assert!(
            guarded
                .check(Some("s3cret-s3cret-s3cret"), true)
                .is_ok_and(|a| a.starts_with("token:") && !a.contains(&hex::encode(&hash[..6])))
        );
        let remote = Auth::new(public, Some(hash)).unwrap_or_else(|e| panic!("{e}"));
        assert!(remote.check(None, false).is_err());
    }
}
