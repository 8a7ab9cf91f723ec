//! Which browsers' requests the API answers. A page of another origin must not
//! change anything (cross-site request forgery), and a page that rebinds its
//! own DNS name to the server's address must not read anything (DNS
//! rebinding), even on a loopback server with no token.
//!
//! Three checks, in the order a request meets them:
//! * the `Host` header must be one of the names the server listens as (its
//!   address, `localhost`, `127.0.0.1` and `[::1]` at its port, plus
//!   `[api] allowed_hosts`), else 421 `host_not_allowed`; a rebinding page
//!   sends its own name and is refused;
//! * a mutating call whose `Sec-Fetch-Site` is neither `same-origin` nor `none`,
//!   or whose `Origin` is not one of those hosts, is refused with 403
//!   `forbidden_origin`;
//! * a mutating call must say `Content-Type: application/json` (or
//!   `application/wasm` for a module upload), else 415: a form POST or a
//!   `no-cors` fetch cannot send those types without a CORS preflight, which
//!   this server never grants.

use super::error::ApiError;
use axum::http::{HeaderMap, StatusCode, header};
use std::collections::HashSet;
use std::net::SocketAddr;

/// The `Host` names a server answers.
#[derive(Clone, Debug)]
pub struct Origins {
    /// Lowercase `NAME:PORT`; `None`: any (a server listening on every
    /// address, with no list configured, is reached under names it cannot
    /// know, and needs a token for every call anyway).
    hosts: Option<HashSet<String>>,
}

impl Origins {
    /// The names a server bound to `local` answers: its own addresses, and
    /// `configured` besides.
    pub fn new(local: SocketAddr, configured: Option<&[String]>) -> Self {
        let port = local.port();
        let mut hosts: HashSet<String> = configured
            .unwrap_or_default()
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if local.ip().is_unspecified() && configured.is_none() {
            return Origins { hosts: None };
        }
        hosts.insert(local.to_string().to_ascii_lowercase());
        for name in ["localhost", "127.0.0.1", "[::1]"] {
            hosts.insert(format!("{name}:{port}"));
        }
        Origins { hosts: Some(hosts) }
    }

    fn allowed(&self, host: &str) -> bool {
        self.hosts
            .as_ref()
            .is_none_or(|h| h.contains(&host.trim().to_ascii_lowercase()))
    }

    /// Refuses a request whose `Host` header names another server.
    ///
    /// # Errors
    ///
    /// 421 `host_not_allowed`.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(host) = headers.get(header::HOST) else {
            // HTTP/1.0 without Host: not a browser, so not a rebinding page.
            return Ok(());
        };
        match host.to_str() {
            Ok(h) if self.allowed(h) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                format!(
                    "Host {:?} is not a name this server answers (add it to [api] allowed_hosts)",
                    String::from_utf8_lossy(host.as_bytes())
                ),
            )),
        }
    }

    /// Refuses a mutating call from a page of another origin, or one whose body
    /// type a cross-site page could send without a preflight.
    ///
    /// # Errors
    ///
    /// 403 `forbidden_origin` or 415 `unsupported_media_type`.
    pub fn check_mutation(&self, headers: &HeaderMap, wasm_allowed: bool) -> Result<(), ApiError> {
        let forbidden = |why: String| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!(
                    "{why}: changes are accepted only from this server's own pages and from non-browser clients"
                ),
            )
        };
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("");
            if !matches!(site, "same-origin" | "none") {
                return Err(forbidden(format!("a {site:?} request (Sec-Fetch-Site)")));
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let text = origin.to_str().unwrap_or("");
            let host = text
                .strip_prefix("http://")
                .or_else(|| text.strip_prefix("https://"))
                .filter(|h| !h.contains('/'));
            let host_header = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            let ok = host.is_some_and(|h| {
                // With any Host allowed, the page must at least be the server's own.
                self.hosts.is_some() && self.allowed(h)
                    || self.hosts.is_none()
                        && host_header.is_some_and(|hh| hh.eq_ignore_ascii_case(h))
            });
            if !ok {
                return Err(forbidden(format!(
                    "a request from the page origin {text:?}"
                )));
            }
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        match content_type.as_deref() {
            Some("application/json") => Ok(()),
            Some("application/wasm") if wasm_allowed => Ok(()),
            other => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "a change must be JSON: send Content-Type: application/json{} (got {}), even with an empty body",
                    if wasm_allowed {
                        " or application/wasm"
                    } else {
                        ""
                    },
                    other.map_or_else(|| "none".to_string(), |c| format!("{c:?}"))
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_own_hosts_and_origins_with_json_bodies_pass() {
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap_or_else(|e| panic!("{e}"));
        let o = Origins::new(local, Some(&["sched.example:7878".to_string()]));
        assert!(
            o.check_host(&headers(&[("host", "localhost:7878")]))
                .is_ok()
        );
        assert!(
            o.check_host(&headers(&[("host", "SCHED.example:7878")]))
                .is_ok()
        );
        assert!(
            o.check_host(&headers(&[("host", "evil.example:7878")]))
                .is_err()
        );
        let json = ("content-type", "application/json");
        assert!(o.check_mutation(&headers(&[json]), false).is_ok());
        assert!(
            o.check_mutation(
                &headers(&[json, ("origin", "http://127.0.0.1:7878")]),
                false
            )
            .is_ok()
        );
        assert!(
            o.check_mutation(
                &headers(&[json, ("origin", "http://127.0.0.1:9999")]),
                false
            )
            .is_err()
        );
        assert!(
            o.check_mutation(&headers(&[json, ("sec-fetch-site", "cross-site")]), false)
                .is_err()
        );
        assert!(o.check_mutation(&headers(&[]), false).is_err());
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert!(o.check_mutation(&headers(&[form]), false).is_err());
        let wasm = ("content-type", "application/wasm");
        assert!(o.check_mutation(&headers(&[wasm]), true).is_ok());
        assert!(o.check_mutation(&headers(&[wasm]), false).is_err());
    }
}
