//! Grants: what a job may do beyond its sandbox. Outbound HTTP to URL
//! patterns, plain config values, event names it may emit, and secrets the
//! host injects into matching requests. Everything is denied by default.
//!
//! One definition serves the manifest (`[job.grants]`), `job add` flags, the
//! API's job body, the store (as JSON) and the runtime: [`Grants`] is the form
//! an operator writes, [`Grants::compile`] checks it and gives the
//! [`CompiledGrants`] a run matches requests against.
//!
//! Why one long file: the form, its checks and the matching must agree on
//! every pattern, network and secret; they change together and are read
//! together, and a fifth of the file is their tests. This module is pure:
//! no I/O, no clock; name resolution and connecting live in
//! `runtime::http`, which asks [`address_refusal`] about every address.
//!
//! What a URL pattern means:
//! - `https://api.example.com/v1/*`: scheme `https`, host `api.example.com`,
//!   port 443 (the scheme's default unless one is written), and every path at
//!   or below `/v1` (`/v1`, `/v1/`, `/v1/items`; not `/v10`).
//! - `https://api.example.com/v1/items`: that path only (with or without a
//!   trailing `/`).
//! - `https://*.example.com/*`: every subdomain of `example.com` at any depth,
//!   never `example.com` itself nor `badexample.com`.
//! - `https://*/*`: any host; the address checks below still apply.
//! - `http://127.0.0.1:8080/*`: an address literal. Naming a loopback, private
//!   or link-local address literally is what lets a request reach it.
//! - `:*` as the port: any port.
//!
//! Hosts are compared after IDNA (`bücher.example` is `xn--bcher-kva.example`)
//! and lower-casing; paths after percent-decoding of unreserved characters and
//! removal of `.`/`..` segments, so `/v1/../admin` does not match `/v1/*`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Grants as written in the manifest, the API and the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// URL patterns outbound requests may go to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// Values served through `wasi:config/store`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Event name patterns the job may emit: `report.done`, `report.*`, `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emit: Vec<String>,
    /// Secrets the host injects into requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret: Vec<SecretGrant>,
    /// Let requests reach loopback, private, link-local and CGNAT addresses
    /// even when no grant names them literally. Off by default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_private: bool,
    /// Networks (CIDR, e.g. `10.20.0.0/16`) of special addresses that
    /// requests granted by name may reach: an internal service's subnet,
    /// without opening every private address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_networks: Vec<String>,
    /// Per-run bounds on outbound HTTP; unset fields take the defaults.
    #[serde(default, skip_serializing_if = "HttpLimitsSpec::is_empty")]
    pub http_limits: HttpLimitsSpec,
    /// Certificate authorities trusted, besides the public roots, for the
    /// HTTPS requests matching their patterns (an internal service's CA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca: Vec<CaGrant>,
}

/// An extra certificate authority for the HTTPS requests matching `url`. It
/// grants no request by itself: an `http` pattern must still allow it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaGrant {
    /// The URL pattern (https) of the requests that trust it.
    pub url: String,
    /// The authority's certificate, PEM (several may follow one another).
    pub pem: String,
}

/// The most PEM text one CA grant may hold.
const MAX_CA_PEM: usize = 64 << 10;

fn is_false(b: &bool) -> bool {
    !*b
}

/// A stored secret injected into a header of requests matching `url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGrant {
    /// The secret's name, as `quartzite secret set NAME` stored it.
    pub name: String,
    /// The URL pattern of the requests that carry it.
    pub url: String,
    /// The header it goes into [default: Authorization].
    #[serde(default = "default_header")]
    pub header: String,
    /// The header value, `{}` standing for the secret [default: `{}`].
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_header() -> String {
    "Authorization".into()
}

fn default_format() -> String {
    "{}".into()
}

/// Per-run HTTP bounds as written; `None` takes the default of [`HttpLimits`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimitsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Bytes of request bodies per run, e.g. `8MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<String>,
    /// Bytes of response bodies per run, e.g. `16MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<String>,
    /// e.g. `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// From sending a request to the end of its response body, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
}

impl HttpLimitsSpec {
    fn is_empty(&self) -> bool {
        *self == HttpLimitsSpec::default()
    }
}

/// Per-run HTTP bounds. A run's requests also end with the run: none outlives
/// its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Requests a run may send. Default 100.
    pub max_requests: u32,
    /// Requests a run may have in flight at once. Default 8.
    pub max_concurrent: u32,
    /// Bytes of request bodies a run may send in all. Default 8 MiB.
    pub max_request_bytes: u64,
    /// Bytes of response bodies a run may receive in all. Default 16 MiB.
    pub max_response_bytes: u64,
    /// Time to open a connection (TCP and TLS). Default 10 s.
    pub connect_timeout: Duration,
    /// Time from sending a request to the end of its response. Default 30 s.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_requests: 100,
            max_concurrent: 8,
            max_request_bytes: 8 << 20,
            max_response_bytes: 16 << 20,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The most patterns of each kind one job may hold: grants are checked on
/// every request, and a list this long is a mistake, not a policy.
pub const MAX_PATTERNS: usize = 256;
/// The longest pattern, config key or value accepted, in bytes.
pub const MAX_GRANT_TEXT: usize = 2048;

/// A grant that cannot be accepted, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct GrantError {
    /// e.g. `http[2]`, `secret[1].header`.
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> GrantError {
    GrantError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checked grants, ready to match requests.
#[derive(Clone, Debug, Default)]
pub struct CompiledGrants {
    pub http: Vec<UrlPattern>,
    pub ca: Vec<CompiledCa>,
    pub config: BTreeMap<String, String>,
    pub emit: Vec<String>,
    pub secrets: Vec<CompiledSecret>,
    pub allow_private: bool,
    pub private_networks: Vec<ipnet::IpNet>,
    pub limits: HttpLimits,
}

/// A CA grant with its pattern parsed and its certificates decoded and
/// checked as trust anchors.
#[derive(Clone, Debug)]
pub struct CompiledCa {
    pub url: UrlPattern,
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// A secret grant with its pattern parsed and its header checked.
#[derive(Clone, Debug)]
pub struct CompiledSecret {
    pub name: String,
    pub url: UrlPattern,
    pub header: http::HeaderName,
    pub format: String,
}

impl Grants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        *self == Grants::default()
    }

    /// The grants as a job's row keeps them: JSON text, `None` when nothing
    /// is granted.
    pub fn to_stored(&self) -> Option<String> {
        (!self.is_empty()).then(|| serde_json::to_string(self).expect("grants serialize to JSON"))
    }

    /// Grants from a job row's text (see [`Grants::to_stored`]).
    ///
    /// # Errors
    ///
    /// When the text is not grants (written by hand into the database), as
    /// a message naming the job.
    pub fn from_stored(job_key: &str, text: Option<&str>) -> Result<Grants, String> {
        match text {
            None => Ok(Grants::default()),
            Some(text) => serde_json::from_str(text)
                .map_err(|e| format!("the stored grants of job {job_key} are not valid: {e}")),
        }
    }

    /// Checks every field and parses the patterns.
    ///
    /// # Errors
    ///
    /// The first field that is wrong, named by its path (`http[2]`).
    pub fn compile(&self) -> Result<CompiledGrants, GrantError> {
        if self.http.len() > MAX_PATTERNS || self.emit.len() > MAX_PATTERNS {
            return Err(bad(
                "grants",
                format!("at most {MAX_PATTERNS} http and {MAX_PATTERNS} emit patterns"),
            ));
        }
        let http = self
            .http
            .iter()
            .enumerate()
            .map(|(i, p)| UrlPattern::parse(p).map_err(|m| bad(format!("http[{}]", i + 1), m)))
            .collect::<Result<Vec<_>, _>>()?;
        for (k, v) in &self.config {
            if k.is_empty() || k.len() > MAX_GRANT_TEXT || v.len() > MAX_GRANT_TEXT {
                return Err(bad(
                    format!("config.{k}"),
                    format!(
                        "keys must be 1 to {MAX_GRANT_TEXT} bytes, values at most {MAX_GRANT_TEXT}"
                    ),
                ));
            }
        }
        for (i, p) in self.emit.iter().enumerate() {
            check_emit_pattern(p).map_err(|m| bad(format!("emit[{}]", i + 1), m))?;
        }
        let mut secrets = Vec::new();
        for (i, s) in self.secret.iter().enumerate() {
            let field = |f: &str| format!("secret[{}].{f}", i + 1);
            check_secret_name(&s.name).map_err(|m| bad(field("name"), m))?;
            let url = UrlPattern::parse(&s.url).map_err(|m| bad(field("url"), m))?;
            let header = http::HeaderName::from_bytes(s.header.as_bytes()).map_err(|_| {
                bad(
                    field("header"),
                    format!("{:?} is not a header name", s.header),
                )
            })?;
            if wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(&header)
                || header == http::header::CONTENT_LENGTH
            {
                return Err(bad(
                    field("header"),
                    format!("{header} is set by the host; choose another header"),
                ));
            }
            if s.format.matches("{}").count() != 1 || s.format.len() > MAX_GRANT_TEXT {
                return Err(bad(
                    field("format"),
                    format!("{:?} must hold `{{}}` exactly once", s.format),
                ));
            }
            secrets.push(CompiledSecret {
                name: s.name.clone(),
                url,
                header,
                format: s.format.clone(),
            });
        }
        if self.private_networks.len() > MAX_PATTERNS {
            return Err(bad(
                "private_networks",
                format!("at most {MAX_PATTERNS} networks"),
            ));
        }
        let private_networks = self
            .private_networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.parse::<ipnet::IpNet>().map(|n| n.trunc()).map_err(|_| {
                    bad(
                        format!("private_networks[{}]", i + 1),
                        format!("{n:?} is not a network (e.g. 10.20.0.0/16 or fd00:1::/64)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.ca.len() > MAX_PATTERNS {
            return Err(bad("ca", format!("at most {MAX_PATTERNS} CA grants")));
        }
        let ca = self
            .ca
            .iter()
            .enumerate()
            .map(|(i, c)| compile_ca(c).map_err(|(f, m)| bad(format!("ca[{}].{f}", i + 1), m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledGrants {
            http,
            ca,
            config: self.config.clone(),
            emit: self.emit.clone(),
            secrets,
            allow_private: self.allow_private,
            private_networks,
            limits: self.http_limits.resolve()?,
        })
    }

    /// Grants from `job add` flags: `--grant-http URL`, `--grant-emit NAME`,
    /// `--grant-config KEY=VALUE`, `--grant-secret NAME@URL[#HEADER[=FORMAT]]`.
    ///
    /// # Errors
    ///
    /// A flag whose value does not have its shape.
    pub fn from_flags(
        http: &[String],
        emit: &[String],
        config: &[String],
        secret: &[String],
        allow_private: bool,
    ) -> Result<Grants, GrantError> {
        let mut grants = Grants {
            http: http.to_vec(),
            emit: emit.to_vec(),
            allow_private,
            ..Grants::default()
        };
        for c in config {
            let (k, v) = c
                .split_once('=')
                .ok_or_else(|| bad("grant-config", format!("{c:?}: expected KEY=VALUE")))?;
            grants.config.insert(k.to_string(), v.to_string());
        }
        for s in secret {
            let (name, rest) = s.split_once('@').ok_or_else(|| {
                bad(
                    "grant-secret",
                    format!("{s:?}: expected NAME@URL[#HEADER[=FORMAT]]"),
                )
            })?;
            let (url, header) = match rest.split_once('#') {
                Some((u, h)) => (u, Some(h)),
                None => (rest, None),
            };
            let (header, format) = match header.map(|h| h.split_once('=').unwrap_or((h, "{}"))) {
                Some((h, f)) => (h.to_string(), f.to_string()),
                None => (default_header(), default_format()),
            };
            grants.secret.push(SecretGrant {
                name: name.to_string(),
                url: url.to_string(),
                header,
                format,
            });
        }
        grants.compile()?;
        Ok(grants)
    }
}

/// Checks a CA grant: an https pattern and PEM certificates that are
/// usable trust anchors. Errors name the field.
fn compile_ca(c: &CaGrant) -> Result<CompiledCa, (&'static str, String)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let url = UrlPattern::parse(&c.url).map_err(|m| ("url", m))?;
    if !c.url.starts_with("https://") {
        return Err(("url", format!("{:?}: a CA is for https requests", c.url)));
    }
    if c.pem.len() > MAX_CA_PEM {
        return Err(("pem", format!("at most {} KiB of PEM", MAX_CA_PEM >> 10)));
    }
    let certs = CertificateDer::pem_slice_iter(c.pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("pem", format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(("pem", "holds no CERTIFICATE block".into()));
    }
    let mut anchors = rustls::RootCertStore::empty();
    for cert in &certs {
        anchors.add(cert.clone()).map_err(|e| {
            (
                "pem",
                format!("a certificate is not a usable authority: {e}"),
            )
        })?;
    }
    Ok(CompiledCa { url, certs })
}

impl HttpLimitsSpec {
    fn resolve(&self) -> Result<HttpLimits, GrantError> {
        let d = HttpLimits::default();
        let size = |v: &Option<String>, f: &str, def: u64| match v {
            None => Ok(def),
            Some(t) => crate::domain::parse_size(t).map_err(|m| bad(format!("http_limits.{f}"), m)),
        };
        let time = |v: &Option<String>, f: &str, def: Duration| match v {
            None => Ok(def),
            Some(t) => humantime::parse_duration(t).map_err(|e| {
                bad(
                    format!("http_limits.{f}"),
                    format!("invalid duration {t:?}: {e}"),
                )
            }),
        };
        let positive = |v: Option<u32>, f: &str, def: u32| match v {
            None => Ok(def),
            Some(0) => Err(bad(format!("http_limits.{f}"), "must be at least 1")),
            Some(n) => Ok(n),
        };
        Ok(HttpLimits {
            max_requests: positive(self.max_requests, "max_requests", d.max_requests)?,
            max_concurrent: positive(self.max_concurrent, "max_concurrent", d.max_concurrent)?,
            max_request_bytes: size(
                &self.max_request_bytes,
                "max_request_bytes",
                d.max_request_bytes,
            )?,
            max_response_bytes: size(
                &self.max_response_bytes,
                "max_response_bytes",
                d.max_response_bytes,
            )?,
            connect_timeout: time(&self.connect_timeout, "connect_timeout", d.connect_timeout)?,
            request_timeout: time(&self.request_timeout, "request_timeout", d.request_timeout)?,
        })
    }
}

/// Secret names: what environment variables look like, so they survive shells.
///
/// # Errors
///
/// A message naming the name and the allowed characters.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("secret name {name:?} must be 1 to 128 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(format!(
            "secret name {name:?}: use letters, digits, _ - and ., starting with a letter or _"
        ));
    }
    Ok(())
}

fn check_emit_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    let name = p.strip_suffix(".*").unwrap_or(p);
    if name.contains('*') {
        return Err(format!(
            "{p:?}: `*` may only stand alone or end a pattern as `.*`"
        ));
    }
    crate::store::events::check_event_name(name)
}

impl CompiledGrants {
    /// Whether an emit of `name` is granted: an exact name, `PREFIX.*` (any
    /// name below `PREFIX.`) or `*`.
    pub fn emit_allowed(&self, name: &str) -> bool {
        self.emit.iter().any(|p| {
            p == "*"
                || p == name
                || p.strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with('.') && name.starts_with(prefix))
        })
    }

    /// The first `http` pattern matching `url`.
    pub fn http_grant(&self, url: &RequestUrl) -> Option<&UrlPattern> {
        self.http.iter().find(|p| p.matches(url))
    }

    /// The extra certificate authorities a request to `url` trusts.
    pub fn ca_for(&self, url: &RequestUrl) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.ca
            .iter()
            .filter(|c| c.url.matches(url))
            .flat_map(|c| c.certs.iter().cloned())
            .collect()
    }

    /// Header names the guest may not set: those secrets go into.
    pub fn secret_headers(&self) -> Vec<http::HeaderName> {
        let mut names: Vec<http::HeaderName> =
            self.secrets.iter().map(|s| s.header.clone()).collect();
        names.dedup();
        names
    }

    /// Names of the stored secrets these grants need.
    pub fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.secrets.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// What a pattern's host is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// Any host.
    Any,
    /// This name exactly (ASCII, lower case).
    Name(String),
    /// Any subdomain of this name, at any depth.
    Subdomains(String),
    /// This address literally.
    Ip(IpAddr),
}

/// A parsed URL pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPattern {
    /// The pattern as written, for messages.
    pub text: String,
    pub https: bool,
    pub host: HostPattern,
    /// `None`: any port.
    pub port: Option<u16>,
    /// Normalised, no trailing `/` (empty for the root).
    pub path: String,
    /// Whether paths below `path` match too.
    pub prefix: bool,
}

/// A request URL, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestUrl {
    pub https: bool,
    pub host: RequestHost,
    pub port: u16,
    /// Normalised path, starting with `/`.
    pub path: String,
    /// The query, without `?`.
    pub query: Option<String>,
}

/// A request's host: a name or an address literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestHost {
    Name(String),
    Ip(IpAddr),
}

impl std::fmt::Display for RequestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestHost::Name(n) => f.write_str(n),
            RequestHost::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            RequestHost::Ip(a) => write!(f, "{a}"),
        }
    }
}

impl RequestUrl {
    /// Parses and normalises `scheme://authority/path?query`.
    ///
    /// # Errors
    ///
    /// When the text is not an absolute http(s) URL with a host.
    pub fn parse(text: &str) -> Result<RequestUrl, String> {
        let url = url::Url::parse(text).map_err(|e| format!("invalid URL {text:?}: {e}"))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("URLs with user info are not accepted".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => RequestHost::Name(d.trim_end_matches('.').to_string()),
            Some(url::Host::Ipv4(a)) => RequestHost::Ip(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => RequestHost::Ip(match a.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(a),
            }),
            None => return Err(format!("URL {text:?} has no host")),
        };
        let port = url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        Ok(RequestUrl {
            https,
            host,
            port,
            path: url.path().to_string(),
            query: url.query().map(str::to_string),
        })
    }

    /// `scheme://host[:port]/path`, without the query (which may carry
    /// credentials): what logs and messages show.
    pub fn display_without_query(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            format!("{scheme}://{}{}", self.host, self.path)
        } else {
            format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }

    /// The pattern that would grant exactly this URL's directory, for a
    /// denied request's message.
    pub fn suggested_pattern(&self) -> String {
        let dir = match self.path.rfind('/') {
            Some(0) | None => String::new(),
            Some(i) => self.path[..i].to_string(),
        };
        let base = RequestUrl {
            path: format!("{dir}/*"),
            query: None,
            ..self.clone()
        };
        base.display_without_query()
    }
}

impl UrlPattern {
    /// Parses a pattern (see the module docs).
    ///
    /// # Errors
    ///
    /// A message quoting the pattern and what is wrong with it.
    pub fn parse(text: &str) -> Result<UrlPattern, String> {
        if text.len() > MAX_GRANT_TEXT {
            return Err(format!("pattern is over {MAX_GRANT_TEXT} bytes"));
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?}: expected http://HOST/... or https://HOST/..."))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            other => return Err(format!("{text:?}: scheme {other:?} is not http or https")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/*"),
        };
        if authority.contains('@') || authority.contains('?') || authority.contains('#') {
            return Err(format!("{text:?}: the host part may not hold @, ? or #"));
        }
        // Split the port off, minding `[v6]:port`.
        let (host_text, port_text) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| format!("{text:?}: unclosed [ in the host"))?;
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("{text:?}: unexpected {after:?} after the address")),
            };
            (&authority[..end + 2], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port_text {
            None => Some(if https { 443 } else { 80 }),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("{text:?}: port {p:?} is not 1 to 65535 or *"))?,
            ),
        };
        let host = if host_text == "*" {
            HostPattern::Any
        } else if let Some(domain) = host_text.strip_prefix("*.") {
            match parse_host(domain).map_err(|m| format!("{text:?}: {m}"))? {
                HostPattern::Name(n) => HostPattern::Subdomains(n),
                _ => return Err(format!("{text:?}: `*.` must be followed by a domain name")),
            }
        } else if host_text.contains('*') {
            return Err(format!(
                "{text:?}: `*` in a host may only be the whole host or a leading `*.`"
            ));
        } else {
            parse_host(host_text).map_err(|m| format!("{text:?}: {m}"))?
        };
        let (path, prefix) = match path.strip_suffix('*') {
            Some(p) if p.ends_with('/') => (p, true),
            Some(_) => {
                return Err(format!(
                    "{text:?}: `*` in a path may only end it, after a `/`"
                ));
            }
            None => (path, false),
        };
        if path.contains('*') || path.contains('?') || path.contains('#') {
            return Err(format!(
                "{text:?}: the path may hold `*` only at its end and no query"
            ));
        }
        let path = normalise_path(path).map_err(|m| format!("{text:?}: {m}"))?;
        Ok(UrlPattern {
            text: text.to_string(),
            https,
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
            prefix,
        })
    }

    /// Whether `url` is granted by this pattern.
    pub fn matches(&self, url: &RequestUrl) -> bool {
        if self.https != url.https || self.port.is_some_and(|p| p != url.port) {
            return false;
        }
        let host_ok = match (&self.host, &url.host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Name(p), RequestHost::Name(h)) => p == h,
            (HostPattern::Subdomains(p), RequestHost::Name(h)) => h
                .strip_suffix(p.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            (HostPattern::Ip(p), RequestHost::Ip(h)) => p == h,
            _ => false,
        };
        if !host_ok {
            return false;
        }
        let path = url.path.trim_end_matches('/');
        if path == self.path {
            return true;
        }
        self.prefix
            && path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The address this pattern names literally, if it does.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match self.host {
            HostPattern::Ip(ip) => Some(ip),
            _ => None,
        }
    }
}

fn parse_host(text: &str) -> Result<HostPattern, String> {
    if text.is_empty() {
        return Err("no host".into());
    }
    match url::Host::parse(text) {
        Ok(url::Host::Domain(d)) => Ok(HostPattern::Name(d.trim_end_matches('.').to_string())),
        Ok(url::Host::Ipv4(a)) => Ok(HostPattern::Ip(IpAddr::V4(a))),
        Ok(url::Host::Ipv6(a)) => Ok(HostPattern::Ip(match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        })),
        Err(e) => Err(format!("invalid host {text:?}: {e}")),
    }
}

/// Normalises a path the way the request side is (through the URL parser).
fn normalise_path(path: &str) -> Result<String, String> {
    let url = url::Url::parse(&format!("http://h{path}"))
        .map_err(|e| format!("invalid path {path:?}: {e}"))?;
    Ok(url.path().to_string())
}

/// Why the host will not connect to `ip`, if it will not: loopback, private,
/// link-local (the cloud metadata address 169.254.169.254 among them), CGNAT,
/// unspecified, multicast, documentation and their IPv6 equivalents are
/// refused unless `literal` (the address the matching grant names) is `ip`,
/// one of `networks` holds it, or `allow_private` is set.
pub fn address_refusal(
    ip: IpAddr,
    literal: Option<IpAddr>,
    allow_private: bool,
    networks: &[ipnet::IpNet],
) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let class = special_class(ip)?;
    // Unspecified and multicast addresses are never a server, granted or not.
    if class == "unspecified" || class == "multicast" || class == "broadcast" {
        return Some(class);
    }
    if allow_private || literal == Some(ip) || networks.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    Some(class)
}

fn special_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => v4_class(a),
        IpAddr::V6(a) => v6_class(a),
    }
}

fn v4_class(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("CGNAT (shared address space)")
    } else if a.is_broadcast() {
        Some("broadcast")
    } else if a.is_multicast() {
        Some("multicast")
    } else if a.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
    {
        Some("reserved")
    } else {
        None
    }
}

fn v6_class(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if a.is_unspecified() {
        Some("unspecified")
    } else if a.is_loopback() {
        Some("loopback")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private (unique local)")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if a.is_multicast() {
        Some("multicast")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("reserved")
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64: the IPv4 address it embeds decides.
        let v4 = Ipv4Addr::new(
            (s[6] >> 8) as u8,
            (s[6] & 0xff) as u8,
            (s[7] >> 8) as u8,
            (s[7] & 0xff) as u8,
        );
        v4_class(v4).map(|_| "NAT64 of a special IPv4 address")
    } else if s[0] == 0x2002 {
        // 6to4: the embedded IPv4 address decides.
        let v4 = Ipv4Addr::new(
            (s[1] >> 8) as u8,
            (s[1] & 0xff) as u8,
            (s[2] >> 8) as u8,
            (s[2] & 0xff) as u8,
        );
        v4_class(v4).map(|_| "6to4 of a special IPv4 address")
    } else {
        None
    }
}

/// Replaces every occurrence of a secret's value in guest-produced text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Values, longest first, so one that contains another is replaced whole.
    values: Vec<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

/// What stands in for a redacted secret.
pub const REDACTED: &str = "[redacted]";

impl Redactor {
    /// A redactor of these values (empty ones are ignored).
    pub fn new(values: impl IntoIterator<Item = zeroize::Zeroizing<String>>) -> Self {
        let mut values: Vec<_> = values.into_iter().filter(|v| !v.is_empty()).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced by [`REDACTED`].
    pub fn apply<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(v.as_str(), REDACTED));
            }
        }
        out
    }

    /// `bytes` with every secret value replaced, for kv values and payloads.
    pub fn apply_bytes(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for v in &self.values {
            let needle = v.as_bytes();
            let hay = out.as_deref().unwrap_or(bytes);
            if hay.windows(needle.len()).any(|w| w == needle) {
                let mut next = Vec::with_capacity(hay.len());
                let mut i = 0;
                while i < hay.len() {
                    if hay[i..].starts_with(needle) {
                        next.extend_from_slice(REDACTED.as_bytes());
                        i += needle.len();
                    } else {
                        next.push(hay[i]);
                        i += 1;
                    }
                }
                out = Some(next);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RequestUrl {
        RequestUrl::parse(s).unwrap()
    }

    fn pat(s: &str) -> UrlPattern {
        UrlPattern::parse(s).unwrap()
    }

    #[test]
    fn a_path_prefix_matches_at_segment_boundaries_with_or_without_a_trailing_slash() {
        let p = pat("https://api.example.com/v1/*");
        assert!(p.matches(&url("https://api.example.com/v1")));
        assert!(p.matches(&url("https://api.example.com/v1/")));
        assert!(p.matches(&url("https://api.example.com/v1/items?x=1")));
        assert!(!p.matches(&url("https://api.example.com/v10")));
        assert!(!p.matches(&url("https://api.example.com/")));
        assert!(
            !p.matches(&url("http://api.example.com/v1/items")),
            "scheme"
        );
        assert!(
            !p.matches(&url("https://api.example.com:8443/v1/items")),
            "port"
        );
        let exact = pat("https://api.example.com/v1/items/");
        assert!(exact.matches(&url("https://api.example.com/v1/items")));
        assert!(!exact.matches(&url("https://api.example.com/v1/items/7")));
    }

    #[test]
    fn dot_segments_and_encoded_dots_cannot_climb_out_of_a_prefix() {
        let p = pat("https://api.example.com/v1/*");
        assert!(!p.matches(&url("https://api.example.com/v1/../admin")));
        assert!(!p.matches(&url("https://api.example.com/v1/%2e%2e/admin")));
        assert!(p.matches(&url("https://api.example.com/v1/./items")));
    }

    #[test]
    fn subdomain_wildcards_match_subdomains_only() {
        let p = pat("https://*.example.com/*");
        assert!(p.matches(&url("https://a.example.com/x")));
        assert!(p.matches(&url("https://a.b.example.com/")));
        assert!(!p.matches(&url("https://example.com/")));
        assert!(!p.matches(&url("https://badexample.com/")));
        assert!(!p.matches(&url("https://example.com.evil.net/")));
    }

    #[test]
    fn hosts_compare_after_case_folding_and_idna() {
        let p = pat("https://Bücher.Example/*");
        assert!(p.matches(&url("https://xn--bcher-kva.example/a")));
        assert!(p.matches(&url("https://BÜCHER.example./a")));
        assert!(pat("HTTPS://API.example.com").matches(&url("https://api.EXAMPLE.com/anything")));
    }

    #[test]
    fn ports_default_by_scheme_and_may_be_any() {
        assert!(pat("http://h.test/*").matches(&url("http://h.test:80/")));
        assert!(!pat("http://h.test/*").matches(&url("http://h.test:8080/")));
        assert!(pat("http://h.test:*/*").matches(&url("http://h.test:8080/")));
        assert!(pat("http://127.0.0.1:8080/*").matches(&url("http://127.0.0.1:8080/a")));
        assert!(pat("http://[::1]:8080/*").matches(&url("http://[::1]:8080/a")));
        assert!(!pat("http://127.0.0.1:8080/*").matches(&url("http://localhost:8080/a")));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_pattern_quoted() {
        for bad in [
            "api.example.com/*",
            "ftp://x/*",
            "https://a*b.com/*",
            "https://x.com/v1*",
            "https://x.com/*/v1",
            "https://x.com:0/",
            "https://x.com:99999/",
            "https://[::1/",
            "https://user@x.com/",
            "https:///x",
            "https://*./x",
        ] {
            let e = UrlPattern::parse(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) || e.contains("host"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn special_addresses_are_refused_unless_named_literally_or_allowed() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (a, class) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "CGNAT (shared address space)"),
            ("::1", "loopback"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "NAT64 of a special IPv4 address"),
        ] {
            assert_eq!(address_refusal(ip(a), None, false, &[]), Some(class), "{a}");
            assert_eq!(address_refusal(ip(a), None, true, &[]), None, "{a} allowed");
        }
        assert_eq!(
            address_refusal(ip("127.0.0.1"), Some(ip("127.0.0.1")), false, &[]),
            None
        );
        assert_eq!(
            address_refusal(ip("127.0.0.2"), Some(ip("127.0.0.1")), false, &[]),
            Some("loopback")
        );
        assert_eq!(
            address_refusal(ip("0.0.0.0"), Some(ip("0.0.0.0")), true, &[]),
            Some("unspecified")
        );
        assert_eq!(address_refusal(ip("93.184.216.34"), None, false, &[]), None);
        assert_eq!(
            address_refusal(ip("2606:2800:220:1::1"), None, false, &[]),
            None
        );
    }

    #[test]
    fn emit_patterns_match_names_and_prefixes() {
        let g = Grants {
            emit: vec!["report.*".into(), "billing.run".into()],
            ..Grants::default()
        }
        .compile()
        .unwrap();
        assert!(g.emit_allowed("report.done"));
        assert!(g.emit_allowed("report.a.b"));
        assert!(!g.emit_allowed("report"));
        assert!(!g.emit_allowed("reports.x"));
        assert!(g.emit_allowed("billing.run"));
        assert!(!g.emit_allowed("billing.run2"));
        assert!(!Grants::default().compile().unwrap().emit_allowed("x"));
        let e = Grants {
            emit: vec!["re*rt".into()],
            ..Grants::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(e.field, "emit[1]");
    }

    #[test]
    fn secret_grants_are_checked_field_by_field() {
        let secret = |header: &str, format: &str| Grants {
            secret: vec![SecretGrant {
                name: "TOKEN".into(),
                url: "https://hooks.example.com/*".into(),
                header: header.into(),
                format: format.into(),
            }],
            ..Grants::default()
        };
        assert!(secret("Authorization", "Bearer {}").compile().is_ok());
        assert_eq!(
            secret("Host", "{}").compile().unwrap_err().field,
            "secret[1].header"
        );
        assert_eq!(
            secret("X-Key", "none").compile().unwrap_err().field,
            "secret[1].format"
        );
        assert_eq!(
            secret("bad header", "{}").compile().unwrap_err().field,
            "secret[1].header"
        );
    }

    #[test]
    fn flags_build_the_same_grants_as_the_manifest_form() {
        let g = Grants::from_flags(
            &["https://api.example.com/*".into()],
            &["report.*".into()],
            &["channel=#ops".into()],
            &["SLACK@https://hooks.example.com/*#Authorization=Bearer {}".into()],
            false,
        )
        .unwrap();
        assert_eq!(g.config["channel"], "#ops");
        assert_eq!(g.secret[0].format, "Bearer {}");
        assert_eq!(g.secret[0].header, "Authorization");
        assert!(Grants::from_flags(&[], &[], &["novalue".into()], &[], false).is_err());
    }

    #[test]
    fn limits_default_and_can_be_overridden() {
        let g = Grants {
            http_limits: HttpLimitsSpec {
                max_requests: Some(3),
                max_response_bytes: Some("1KiB".into()),
                ..HttpLimitsSpec::default()
            },
            ..Grants::default()
        }
        .compile()
        .unwrap();
        assert_eq!(g.limits.max_requests, 3);
        assert_eq!(g.limits.max_response_bytes, 1024);
        assert_eq!(
            g.limits.connect_timeout,
            HttpLimits::default().connect_timeout
        );
    }

    #[test]
    fn redaction_replaces_every_occurrence() {
        let r = Redactor::new([zeroize::Zeroizing::new("s3cr3t".to_string())]);
        assert_eq!(r.apply("a s3cr3t b s3cr3t"), "a [redacted] b [redacted]");
        assert_eq!(r.apply("clean"), "clean");
        assert_eq!(r.apply_bytes(b"xs3cr3ty").unwrap(), b"x[redacted]y");
        assert!(r.apply_bytes(b"clean").is_none());
    }

    #[test]
    fn grants_round_trip_through_json() {
        let g = Grants {
            http: vec!["https://a.example/*".into()],
            emit: vec!["x.*".into()],
            ..Grants::default()
        };
        let text = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<Grants>(&text).unwrap(), g);
        assert!(serde_json::from_str::<Grants>(r#"{"htp": []}"#).is_err());
    }
}
