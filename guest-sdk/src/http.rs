//! Outbound HTTP from a job: a small blocking client over `wasi:http`.
//!
//! The host sends a request only to URLs the job's `http` grants name, and
//! injects the credentials of its secret grants itself: a job never holds
//! them. Errors say who said no: [`HttpError::Denied`] (the host refused:
//! no grant, a private address), [`HttpError::Limit`] (a per-run bound),
//! [`HttpError::Network`] (connecting or reading failed),
//! [`HttpError::Status`] (the server answered 4xx or 5xx, from
//! [`Response::error_for_status`]).
//!
//! Built on the `wasip2` crate, the Bytecode Alliance's generated bindings of
//! WASI 0.2.12, the version the host implements: no async runtime, a few
//! hundred lines, and the same calls any other language's client makes.
//! Redirects of GET and HEAD requests (and 303s) are followed up to
//! [`Request::max_redirects`] times; the host checks each hop against the grants.
//!
//! ```
//! use quartzite_sdk::http;
//! use quartzite_sdk::testing::TestHost;
//! use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result};
//!
//! struct Fetch;
//! impl Job for Fetch {
//!     fn info() -> JobInfo { JobInfo::new("fetch", "0.1.0") }
//!     fn run(_ctx: &Context) -> Result<Outcome> {
//!         let items: Vec<u32> = http::get_json("https://api.example.com/v1/items")?;
//!         Outcome::details(&items.len())
//!     }
//! }
//!
//! let mut host = TestHost::new().stub_http("https://api.example.com/v1/items", 200, "[1,2,3]");
//! let out = host.run::<Fetch>().unwrap();
//! assert_eq!(out.details_text(), Some("3"));
//! assert_eq!(host.http_requests()[0].url, "https://api.example.com/v1/items");
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a request did not give a usable response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused the request: no grant matches its URL, or its host
    /// resolves to an address the job may not reach. Retrying cannot help.
    Denied(String),
    /// A per-run bound (requests, bytes, connections) was reached.
    Limit(String),
    /// Resolving, connecting, TLS or reading failed, or it timed out.
    Network(String),
    /// The server answered with an error status.
    Status {
        /// The HTTP status code, 400 or more.
        status: u16,
        /// The response body as text, cut to 1 KiB.
        body: String,
        /// The `Retry-After` of a 429 or 503, in seconds form.
        retry_after: Option<Duration>,
    },
    /// The request could not be built (bad URL, header or body).
    Invalid(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "request denied by the host: {m}"),
            HttpError::Limit(m) => write!(f, "request over the run's limits: {m}"),
            HttpError::Network(m) => write!(f, "network error: {m}"),
            HttpError::Status { status, body, .. } => write!(f, "server answered {status}: {body}"),
            HttpError::Invalid(m) => write!(f, "invalid request: {m}"),
        }
    }
}

// Not `std::error::Error` on purpose: the SDK's blanket conversion of those
// makes every error retryable, and a denied request or a 4xx must be fatal.
impl HttpError {
    /// Whether trying again later may succeed: network errors, 5xx and 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Network(_) => true,
            HttpError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A job's run fails with a retry for what may pass later, fatally otherwise.
impl From<HttpError> for crate::Error {
    fn from(e: HttpError) -> Self {
        if e.is_retryable() {
            crate::Error::Retry(e.to_string())
        } else {
            crate::Error::Fatal(e.to_string())
        }
    }
}

/// A request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method, upper case (`GET`, `POST`, ...).
    pub method: String,
    /// The whole URL, query included.
    pub url: String,
    /// Headers to send, in order (names as given).
    pub headers: Vec<(String, String)>,
    /// The body to send (empty: none).
    pub body: Vec<u8>,
    /// The longest the whole exchange may take [default: the run's limits].
    pub timeout: Option<Duration>,
    /// Redirects of a GET or HEAD followed at most, each checked by the host
    /// against the job's grants [default: 5].
    pub max_redirects: u32,
}

impl Request {
    /// A request with `method` (`GET`, `POST`, ...) to `url`.
    pub fn new(method: &str, url: impl Into<String>) -> Request {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            max_redirects: 5,
        }
    }

    /// A `GET` request to `url`.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new("GET", url)
    }

    /// A `POST` request to `url`.
    pub fn post(url: impl Into<String>) -> Request {
        Request::new("POST", url)
    }

    /// A `PUT` request to `url`.
    pub fn put(url: impl Into<String>) -> Request {
        Request::new("PUT", url)
    }

    /// A `DELETE` request to `url`.
    pub fn delete(url: impl Into<String>) -> Request {
        Request::new("DELETE", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    ///
    /// # Errors
    ///
    /// [`HttpError::Invalid`] when `value` cannot be serialized.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Request, HttpError> {
        let body = serde_json::to_vec(value).map_err(|e| HttpError::Invalid(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Bounds connecting and waiting for the response (the host's limits still apply).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// How many redirects to follow (0: none) [default: 5].
    pub fn max_redirects(mut self, n: u32) -> Request {
        self.max_redirects = n;
        self
    }

    /// Sends the request, following redirects as documented above.
    ///
    /// # Errors
    ///
    /// Any [`HttpError`] but `Status`: an error status is a response
    /// (see [`Response::error_for_status`]).
    pub fn send(self) -> Result<Response, HttpError> {
        let mut request = self;
        let mut left = request.max_redirects;
        loop {
            let response = imp::send(&request)?;
            let follow = matches!(response.status, 301 | 302 | 303 | 307 | 308)
                && (matches!(request.method.as_str(), "GET" | "HEAD") || response.status == 303);
            let Some(location) = response.header("location").filter(|_| follow && left > 0) else {
                return Ok(response);
            };
            left -= 1;
            request.url = resolve(&request.url, location)?;
            if response.status == 303 {
                request.method = "GET".into();
                request.body.clear();
            }
        }
    }
}

/// A received response, its body read whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, read whole.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    ///
    /// [`HttpError::Invalid`] when it is not JSON of that shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::Invalid(format!("response body is not the expected JSON: {e}")))
    }

    /// The response itself when its status is below 400.
    ///
    /// # Errors
    ///
    /// [`HttpError::Status`] for 4xx and 5xx, with `Retry-After` when given in seconds.
    pub fn error_for_status(self) -> Result<Response, HttpError> {
        if self.status < 400 {
            return Ok(self);
        }
        let retry_after = self
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = self.text();
        if body.len() > 1024 {
            let mut end = 1024;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
        }
        Err(HttpError::Status {
            status: self.status,
            body,
            retry_after,
        })
    }
}

/// `GET url`.
///
/// # Errors
///
/// See [`Request::send`].
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

/// `GET url`, an error status as an error, the body parsed as JSON.
///
/// # Errors
///
/// See [`Request::send`] and [`Response::error_for_status`].
pub fn get_json<T: DeserializeOwned>(url: &str) -> Result<T, HttpError> {
    get(url)?.error_for_status()?.json()
}

/// `POST url` with a JSON body; the response as it came.
///
/// # Errors
///
/// See [`Request::send`].
pub fn post_json<B: Serialize + ?Sized>(url: &str, body: &B) -> Result<Response, HttpError> {
    Request::post(url).json(body)?.send()
}

/// Splits `scheme://authority/path?query`.
fn split(url: &str) -> Result<(&str, &str, &str), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::Invalid(format!("{url:?} is not an absolute URL")))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::Invalid(format!("{url:?} has no host")));
    }
    Ok((scheme, authority, path))
}

/// A `Location` against the URL it came from.
fn resolve(base: &str, location: &str) -> Result<String, HttpError> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let (scheme, authority, _) = split(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    Err(HttpError::Invalid(format!(
        "redirect to {location:?}: relative paths are not followed"
    )))
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{HttpError, Request, Response, split};
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest,
        RequestOptions, Scheme,
    };
    use wasip2::io::streams::StreamError;

    fn from_code(code: ErrorCode) -> HttpError {
        match code {
            ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
                HttpError::Denied("the job's grants do not allow this request".into())
            }
            ErrorCode::ConnectionLimitReached => {
                HttpError::Limit("the run's request or connection limit".into())
            }
            ErrorCode::HttpRequestBodySize(_) => {
                HttpError::Limit("the run's request body bytes".into())
            }
            ErrorCode::HttpResponseBodySize(_) => {
                HttpError::Limit("the run's response body bytes".into())
            }
            ErrorCode::HttpRequestUriInvalid => HttpError::Invalid("the URL".into()),
            other => HttpError::Network(format!("{other:?}")),
        }
    }

    fn stream_error(e: StreamError) -> HttpError {
        match e {
            StreamError::Closed => HttpError::Network("the stream closed early".into()),
            StreamError::LastOperationFailed(err) => {
                match wasip2::http::types::http_error_code(&err) {
                    Some(code) => from_code(code),
                    // wasmtime 48 hands body errors over as text only.
                    None => {
                        let text = err.to_debug_string();
                        let first = text.lines().next().unwrap_or_default().to_string();
                        if first.contains("body size exceeds limit") {
                            HttpError::Limit(first)
                        } else {
                            HttpError::Network(first)
                        }
                    }
                }
            }
        }
    }

    pub(super) fn send(request: &Request) -> Result<Response, HttpError> {
        let (scheme, authority, path) = split(&request.url)?;
        let fields = Fields::new();
        // A known length, not chunked: simple servers read bodies by it.
        let has_length = request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        if !request.body.is_empty() && !has_length {
            let _ = fields.append("content-length", request.body.len().to_string().as_bytes());
        }
        for (name, value) in &request.headers {
            fields.append(name, value.as_bytes()).map_err(|e| match e {
                HeaderError::Forbidden => {
                    HttpError::Denied(format!("header {name:?} is set by the host, not by jobs"))
                }
                _ => HttpError::Invalid(format!("header {name:?}")),
            })?;
        }
        let outgoing = OutgoingRequest::new(fields);
        let method = match request.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => return Err(HttpError::Invalid(format!("scheme {other:?}"))),
        };
        let bad = |what: &str| HttpError::Invalid(format!("the request's {what}"));
        outgoing.set_method(&method).map_err(|()| bad("method"))?;
        outgoing
            .set_scheme(Some(&scheme))
            .map_err(|()| bad("scheme"))?;
        outgoing
            .set_authority(Some(authority))
            .map_err(|()| bad("host"))?;
        outgoing
            .set_path_with_query(Some(path))
            .map_err(|()| bad("path"))?;
        let body = outgoing.body().map_err(|()| bad("body"))?;
        let options = RequestOptions::new();
        if let Some(t) = request.timeout {
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
        }
        let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(from_code)?;
        if !request.body.is_empty() {
            let stream = body.write().map_err(|()| bad("body"))?;
            for chunk in request.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(stream_error)?;
            }
            drop(stream);
        }
        OutgoingBody::finish(body, None).map_err(from_code)?;
        pending.subscribe().block();
        let incoming = match pending.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(code))) => return Err(from_code(code)),
            Some(Err(())) | None => {
                return Err(HttpError::Network("the response was not delivered".into()));
            }
        };
        let status = incoming.status();
        let headers = incoming
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let body = incoming.consume().map_err(|()| bad("response body"))?;
        let mut bytes = Vec::new();
        {
            let stream = body.stream().map_err(|()| bad("response body"))?;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(stream_error(e)),
                }
            }
        }
        drop(IncomingBody::finish(body));
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{HttpError, Request, Response};

    pub(super) fn send(request: &Request) -> Result<Response, HttpError> {
        crate::testing::with_host(|h| h.http.handle(request))
    }
}

/// The stand-in for the host's HTTP in [`crate::testing::TestHost`].
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod fake {
    use super::{HttpError, Request, Response};
    use crate::testing::TestHost;

    /// Stubbed answers and the requests made.
    #[derive(Debug, Default)]
    pub(crate) struct FakeHttp {
        /// URL -> answers in order; the last one repeats.
        stubs: Vec<(String, Vec<Result<Response, HttpError>>)>,
        requests: Vec<Request>,
    }

    impl FakeHttp {
        pub(crate) fn handle(&mut self, request: &Request) -> Result<Response, HttpError> {
            self.requests.push(request.clone());
            let url = request.url.as_str();
            let Some((_, answers)) =
                self.stubs
                    .iter_mut()
                    .find(|(u, _)| match u.strip_suffix('*') {
                        Some(prefix) => url.starts_with(prefix),
                        None => u == url,
                    })
            else {
                return Err(HttpError::Denied(format!(
                    "no stub for {url} (TestHost denies what it was not told about, as the host denies what is not granted)"
                )));
            };
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            }
        }
    }

    impl TestHost {
        /// Answers requests to `url` (exact, or a prefix ending in `*`) with
        /// `status` and `body`. Stubbing a URL again queues another answer:
        /// each is given once, in order, and the last one repeats.
        pub fn stub_http(self, url: &str, status: u16, body: &str) -> Self {
            self.stub_http_response(
                url,
                Response {
                    status,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body.as_bytes().to_vec(),
                },
            )
        }

        /// Like [`TestHost::stub_http`] with a whole response.
        pub fn stub_http_response(self, url: &str, response: Response) -> Self {
            self.stub_http_result(url, Ok(response))
        }

        /// Answers requests to `url` with an error (a denial, a network failure).
        pub fn stub_http_error(self, url: &str, error: HttpError) -> Self {
            self.stub_http_result(url, Err(error))
        }

        fn stub_http_result(mut self, url: &str, answer: Result<Response, HttpError>) -> Self {
            match self.http.stubs.iter_mut().find(|(u, _)| u == url) {
                Some((_, answers)) => answers.push(answer),
                None => self.http.stubs.push((url.to_string(), vec![answer])),
            }
            self
        }

        /// The requests the job made, in order.
        pub fn http_requests(&self) -> &[Request] {
            &self.http.requests
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request_url() {
        assert_eq!(
            resolve("https://a.example/x/y?q", "/z").unwrap(),
            "https://a.example/z"
        );
        assert_eq!(
            resolve("https://a.example/x", "//b.example/z").unwrap(),
            "https://b.example/z"
        );
        assert_eq!(
            resolve("https://a.example/x", "http://c.example/").unwrap(),
            "http://c.example/"
        );
        assert!(resolve("https://a.example/x", "rel").is_err());
    }

    #[test]
    fn errors_say_whether_a_retry_may_help() {
        let status = |s| HttpError::Status {
            status: s,
            body: String::new(),
            retry_after: None,
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!HttpError::Denied("x".into()).is_retryable());
        assert!(HttpError::Network("x".into()).is_retryable());
        let r = Response {
            status: 429,
            headers: vec![("Retry-After".into(), "7".into())],
            body: b"slow down".to_vec(),
        };
        match r.error_for_status() {
            Err(HttpError::Status { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
            }
            other => panic!("{other:?}"),
        }
    }
}
