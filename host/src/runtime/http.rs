//! Outbound HTTP for guests (`wasi:http/outgoing-handler`), behind the job's
//! grants. This is the one place a guest's request leaves the host.
//!
//! Every request is: parsed and normalised; matched against the job's `http`
//! grants (denied with a run log line naming the URL and the grant that would
//! allow it); counted against the run's limits; resolved by the host itself,
//! every address checked ([`crate::grants::address_refusal`]) and the
//! connection made to a checked address, so a name cannot be rebound to
//! 127.0.0.1 or 169.254.169.254 between check and connect; given the headers
//! of the secret grants matching its URL; and bounded in time by its own
//! timeout and the run's deadline, in bytes by the run's budgets.
//!
//! Redirects are not followed here: a 3xx goes back to the guest, and the
//! request a guest makes to follow it is checked like any other, so a
//! redirect reaches only granted URLs and carries only the secrets granted
//! for its own URL.
//!
//! It must never: connect to an address it did not check, let a guest set a
//! header a secret goes into, or write a secret's value or a URL's query to a
//! log.

use super::logs::RunLog;
use super::outcome::{LogLevel, LogSource};
use super::services::{GrantSource, RunGrants};
use crate::grants::{CompiledGrants, HttpLimits, RequestHost, RequestUrl, address_refusal};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, ForbiddenHeaderFilter, RequestOptions, WasiBody,
    WasiHttpHooks,
};

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// The `wasi:http` hooks of one run.
pub(crate) struct RunHttp {
    shared: Arc<Shared>,
}

struct Shared {
    grants: Option<Arc<CompiledGrants>>,
    secrets: Vec<(String, zeroize::Zeroizing<String>)>,
    limits: HttpLimits,
    log: RunLog,
    job_key: Arc<str>,
    source: Arc<dyn GrantSource>,
    /// When the run is asked to stop: no request outlives it.
    deadline: Instant,
    requests: AtomicU32,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    concurrent: Arc<Semaphore>,
    forbidden: Arc<Vec<http::HeaderName>>,
    /// Where the run is in its fire's trace: each request's span goes below it.
    trace: Option<crate::domain::trace::RunContext>,
}

impl RunHttp {
    pub(crate) fn new(
        grants: Option<&RunGrants>,
        log: RunLog,
        job_key: Arc<str>,
        source: Arc<dyn GrantSource>,
        deadline: Instant,
        trace: Option<crate::domain::trace::RunContext>,
    ) -> RunHttp {
        let compiled = grants.map(|g| Arc::clone(&g.grants));
        let limits = compiled.as_ref().map(|g| g.limits).unwrap_or_default();
        let forbidden = compiled
            .as_ref()
            .map(|g| g.secret_headers())
            .unwrap_or_default();
        let secrets = grants
            .map(|g| {
                g.secrets
                    .iter()
                    .map(|(n, _, v)| (n.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        RunHttp {
            shared: Arc::new(Shared {
                grants: compiled,
                secrets,
                limits,
                log,
                job_key,
                source,
                deadline,
                requests: AtomicU32::new(0),
                request_bytes: AtomicU64::new(0),
                response_bytes: AtomicU64::new(0),
                concurrent: Arc::new(Semaphore::new(limits.max_concurrent as usize)),
                forbidden: Arc::new(forbidden),
                trace,
            }),
        }
    }
}

impl WasiHttpHooks for RunHttp {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        let extra = Arc::clone(&self.shared.forbidden);
        Arc::new(move |name| DEFAULT_FORBIDDEN_HEADERS.contains(name) || extra.contains(name))
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        drop(fut);
        let shared = Arc::clone(&self.shared);
        Box::new(async move { shared.send(request, options).await })
    }
}

/// What became of a request, for its log line, its metric and its span.
struct Ended<'a> {
    method: &'a http::Method,
    shown: &'a str,
    host: &'a str,
    span: &'a tracing::Span,
}

impl Shared {
    fn refuse(&self, e: &Ended<'_>, result: &str, why: &str) {
        e.span.record("outcome", result);
        self.log.push(
            LogLevel::Warn,
            LogSource::Log,
            &format!("http {} {} {result}: {why}", e.method, e.shown),
        );
        self.source.http_request(&self.job_key, e.host, result);
    }

    async fn send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let started = Instant::now();
        let method = request.method().clone();
        let span = tracing::trace_span!(
            target: crate::domain::trace::FIRE_TARGET,
            parent: None,
            "http",
            http.request.method = %method,
            url.full = tracing::field::Empty,
            server.address = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        if let Some(run) = &self.trace {
            run.adopt(&span);
        }
        let url = match RequestUrl::parse(&request.uri().to_string()) {
            Ok(u) => u,
            Err(why) => {
                let e = Ended {
                    method: &method,
                    shown: "(invalid URL)",
                    host: "(invalid)",
                    span: &span,
                };
                self.refuse(&e, "denied", &why);
                return Err(Error::HttpRequestUriInvalid);
            }
        };
        let shown = url.display_without_query();
        let host = url.host.to_string();
        if !span.is_disabled() {
            // The URL as logged: without its query, which may carry secrets.
            span.record("url.full", shown.as_str());
            span.record("server.address", host.as_str());
        }
        let ungranted = Ended {
            method: &method,
            shown: &shown,
            host: "(ungranted)",
            span: &span,
        };
        let Some(grants) = self.grants.as_ref().filter(|g| !g.http.is_empty()) else {
            self.refuse(
                &ungranted,
                "denied",
                &format!(
                    "the job has no http grant; `http = [\"{}\"]` in [job.grants] would allow it",
                    url.suggested_pattern()
                ),
            );
            return Err(Error::HttpRequestDenied);
        };
        let Some(grant) = grants.http_grant(&url) else {
            self.refuse(
                &ungranted,
                "denied",
                &format!(
                    "no http grant matches (granted: {}); `{}` would allow it",
                    grants
                        .http
                        .iter()
                        .map(|p| p.text.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    url.suggested_pattern()
                ),
            );
            return Err(Error::HttpRequestDenied);
        };
        let ended = Ended {
            method: &method,
            shown: &shown,
            host: &host,
            span: &span,
        };
        let limits = self.limits;
        if self.requests.fetch_add(1, Ordering::Relaxed) >= limits.max_requests {
            self.refuse(
                &ended,
                "limit",
                &format!("a run may send at most {} requests", limits.max_requests),
            );
            return Err(Error::ConnectionLimitReached);
        }
        let Ok(permit) = Arc::clone(&self.concurrent).try_acquire_owned() else {
            self.refuse(
                &ended,
                "limit",
                &format!(
                    "a run may have at most {} requests in flight",
                    limits.max_concurrent
                ),
            );
            return Err(Error::ConnectionLimitReached);
        };
        let deadline = (started + limits.request_timeout).min(self.deadline);
        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .map_or(limits.connect_timeout, |t| t.min(limits.connect_timeout));

        // Resolve, then check every address: the connection goes to a checked one.
        let addrs: Vec<SocketAddr> = match &url.host {
            RequestHost::Ip(ip) => vec![SocketAddr::new(*ip, url.port)],
            RequestHost::Name(name) => {
                let lookup = tokio::net::lookup_host((name.as_str(), url.port));
                match tokio::time::timeout_at(
                    (Instant::now() + connect_timeout).min(deadline).into(),
                    lookup,
                )
                .await
                {
                    Ok(Ok(found)) => found.collect(),
                    Ok(Err(_)) => {
                        self.refuse(&ended, "error", &format!("{name} does not resolve"));
                        return Err(Error::DnsError {
                            rcode: Some("name not resolved".into()),
                            info_code: None,
                        });
                    }
                    Err(_) => {
                        self.refuse(&ended, "error", &format!("resolving {name} timed out"));
                        return Err(Error::DnsTimeout);
                    }
                }
            }
        };
        let mut allowed = Vec::new();
        let mut refused = None;
        for a in addrs {
            match address_refusal(
                a.ip(),
                grant.literal_ip(),
                grants.allow_private,
                &grants.private_networks,
            ) {
                None => allowed.push(a),
                Some(class) => refused = refused.or(Some((a.ip(), class))),
            }
        }
        if allowed.is_empty() {
            let why = match refused {
                Some((ip, class)) => format!(
                    "{} is {ip}, a {class} address; only a grant naming {ip} literally, \
                     a private_networks entry holding it, or allow_private = true lets a request reach it",
                    url.host
                ),
                None => format!("{} has no address", url.host),
            };
            self.refuse(&ended, "denied", &why);
            return Err(Error::HttpRequestDenied);
        }

        // Secrets go into the headers of the requests their grant's URL matches, only.
        for name in self.forbidden.iter() {
            request.headers_mut().remove(name);
        }
        for secret in &grants.secrets {
            if !secret.url.matches(&url) {
                continue;
            }
            let Some((_, value)) = self.secrets.iter().find(|(n, _)| *n == secret.name) else {
                continue;
            };
            let text = zeroize::Zeroizing::new(secret.format.replacen("{}", value, 1));
            let Ok(mut header) = http::HeaderValue::from_str(&text) else {
                self.refuse(
                    &ended,
                    "denied",
                    &format!(
                        "secret {:?} cannot be sent in a header (it holds control characters)",
                        secret.name
                    ),
                );
                return Err(Error::HttpRequestDenied);
            };
            header.set_sensitive(true);
            request.headers_mut().insert(secret.header.clone(), header);
        }
        // The request's span goes with it, unless the guest named its own.
        if !request.headers().contains_key("traceparent")
            && let Some(traceparent) = crate::domain::trace::traceparent(&span)
            && let Ok(value) = http::HeaderValue::from_str(&traceparent)
        {
            request.headers_mut().insert("traceparent", value);
        }
        // The request line carries the normalised path, the one that was checked.
        let path_and_query = match &url.query {
            Some(q) => format!("{}?{q}", url.path),
            None => url.path.clone(),
        };
        let Ok(uri) = http::Uri::builder().path_and_query(path_and_query).build() else {
            self.refuse(&ended, "denied", "the path cannot be sent");
            return Err(Error::HttpRequestUriInvalid);
        };
        *request.uri_mut() = uri;

        let extra_roots = grants.ca_for(&url);
        let stream = match connect(&allowed, &url, &extra_roots, connect_timeout, deadline).await {
            Ok(s) => s,
            Err((err, why)) => {
                self.refuse(&ended, "error", &why);
                return Err(err);
            }
        };
        let handshake = hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream));
        let (mut sender, conn) = match tokio::time::timeout_at(deadline.into(), handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                self.refuse(&ended, "error", &format!("HTTP handshake failed: {e}"));
                return Err(Error::Hyper(e));
            }
            Err(_) => {
                self.refuse(&ended, "error", "timed out opening the connection");
                return Err(Error::ConnectionTimeout);
            }
        };
        let request = request.map(|body| CountedRequest {
            inner: body,
            shared: Arc::clone(&self),
        });
        let mut conn = Box::pin(conn);
        let send = sender.send_request(request);
        tokio::pin!(send);
        let mut conn_done = false;
        // Drive the connection while waiting for the response head.
        let response = tokio::time::timeout_at(
            deadline.into(),
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = send.as_mut().poll(cx) {
                    return Poll::Ready(r.map_err(Error::from));
                }
                if !conn_done && let Poll::Ready(r) = conn.as_mut().poll(cx) {
                    conn_done = true;
                    if let Err(e) = r {
                        return Poll::Ready(Err(Error::from(e)));
                    }
                    return send.as_mut().poll(cx).map_err(Error::from);
                }
                Poll::Pending
            }),
        )
        .await;
        let response = match response {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let limit = matches!(e, Error::HttpRequestBodySize(_));
                let why = if limit {
                    format!(
                        "the run's request bodies reached {} bytes, the limit",
                        limits.max_request_bytes
                    )
                } else {
                    format!("{e}")
                };
                self.refuse(&ended, if limit { "limit" } else { "error" }, &why);
                return Err(e);
            }
            Err(_) => {
                self.refuse(&ended, "error", "timed out waiting for the response");
                return Err(Error::HttpResponseTimeout);
            }
        };
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        let io: IoFuture = if conn_done {
            Box::new(async { Ok(()) })
        } else {
            Box::new(async move {
                match tokio::time::timeout_at(deadline.into(), conn).await {
                    Ok(r) => r.map_err(Error::from),
                    Err(_) => Err(Error::HttpResponseTimeout),
                }
            })
        };
        let body = response.map(|incoming| {
            ResponseBody {
                inner: incoming,
                shared: Arc::clone(&self),
                deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
                bytes: 0,
                log: Some(RequestLog {
                    method: method.clone(),
                    shown: shown.clone(),
                    host: host.clone(),
                    status,
                    started,
                    span,
                    _permit: permit,
                }),
            }
            .boxed_unsync()
        });
        Ok((body, io))
    }
}

/// The stream to a server: plain TCP or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

async fn connect(
    addrs: &[SocketAddr],
    url: &RequestUrl,
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
    connect_timeout: std::time::Duration,
    deadline: Instant,
) -> Result<Box<dyn Stream>, (Error, String)> {
    let until = (Instant::now() + connect_timeout).min(deadline);
    let mut last = String::from("no address");
    let mut tcp = None;
    for addr in addrs {
        match tokio::time::timeout_at(until.into(), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => {
                return Err((
                    Error::ConnectionTimeout,
                    format!("connecting to {addr} timed out"),
                ));
            }
        }
    }
    let Some(tcp) = tcp else {
        return Err((Error::ConnectionRefused, last));
    };
    let _ = tcp.set_nodelay(true);
    if !url.https {
        return Ok(Box::new(tcp));
    }
    let name = match &url.host {
        RequestHost::Name(n) => {
            rustls::pki_types::ServerName::try_from(n.clone()).map_err(|e| {
                (
                    Error::TlsProtocolError,
                    format!("invalid TLS name {n}: {e}"),
                )
            })?
        }
        RequestHost::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
    };
    let config = if extra_roots.is_empty() {
        tls_config()
    } else {
        client_config(extra_roots)
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout_at(until.into(), connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => Err((Error::TlsCertificateError, format!("TLS failed: {e}"))),
        Err(_) => Err((Error::ConnectionTimeout, "TLS handshake timed out".into())),
    }
}

/// TLS with the Mozilla root set (webpki-roots), built once per process.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| client_config(&[])))
}

/// TLS trusting the Mozilla root set and `extra` (a job's CA grants, checked
/// as usable anchors when the grants were compiled).
fn client_config(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    for cert in extra {
        let _ = roots.add(cert.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    Arc::new(config)
}

/// The guest's request body, counted against the run's request-byte budget.
struct CountedRequest {
    inner: WasiBody,
    shared: Arc<Shared>,
}

impl Body for CountedRequest {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame
            && let Some(data) = f.data_ref()
        {
            let limit = self.shared.limits.max_request_bytes;
            let total = self
                .shared
                .request_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed)
                + data.len() as u64;
            if total > limit {
                return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(limit)))));
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the log line of a request that got a response says, written once
/// when its body ends, fails or is dropped.
struct RequestLog {
    method: http::Method,
    shown: String,
    host: String,
    status: http::StatusCode,
    started: Instant,
    /// The request's trace span, ended with its body.
    span: tracing::Span,
    /// Held until the response is done: the run's in-flight bound.
    _permit: OwnedSemaphorePermit,
}

/// A response body bounded by the run's response-byte budget and the
/// request's deadline.
struct ResponseBody {
    inner: hyper::body::Incoming,
    shared: Arc<Shared>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    bytes: u64,
    log: Option<RequestLog>,
}

impl ResponseBody {
    fn finish(&mut self, problem: Option<&str>) {
        let Some(l) = self.log.take() else {
            return;
        };
        let ms = l.started.elapsed().as_millis();
        let class = format!("{}xx", l.status.as_u16() / 100);
        let (level, result, tail) = match problem {
            None => (LogLevel::Info, class.as_str(), String::new()),
            Some(p) if p.starts_with("limit") => (LogLevel::Warn, "limit", format!("; {p}")),
            Some(p) => (LogLevel::Warn, "error", format!("; {p}")),
        };
        l.span.record("outcome", result);
        self.shared.log.push(
            level,
            LogSource::Log,
            &format!(
                "http {} {} -> {}, {} bytes in {ms} ms{tail}",
                l.method,
                l.shown,
                l.status.as_u16(),
                self.bytes
            ),
        );
        self.shared
            .source
            .http_request(&self.shared.job_key, &l.host, result);
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.finish(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(Some(&format!("the response failed: {e}")));
                Poll::Ready(Some(Err(Error::from(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    self.bytes += n;
                    let limit = self.shared.limits.max_response_bytes;
                    let total = self.shared.response_bytes.fetch_add(n, Ordering::Relaxed) + n;
                    if total > limit {
                        self.finish(Some(&format!(
                            "limit: the run's response bodies reached {limit} bytes, the limit"
                        )));
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    self.finish(Some("timed out reading the response"));
                    return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
