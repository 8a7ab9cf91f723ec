//! The CLI's client of a running server's admin API (`--server URL`): each call
//! returns the JSON the API answers, and an API error becomes the exit code a
//! script would get from the same mistake made against the database.

use super::{EXIT_FAILED, EXIT_USAGE};
use crate::admin::AdminError;
use reqwest::Method;
use serde_json::Value;

/// A failed command: the exit code and the message for stderr.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    /// The admin API's error code, when the error is the server's answer.
    pub api_code: Option<String>,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            api_code: None,
        }
    }
}

impl From<crate::store::StoreError> for CliError {
    fn from(e: crate::store::StoreError) -> Self {
        CliError::new(EXIT_FAILED, e.to_string())
    }
}

/// An admin service error on `--db` gets the exit code and message the API's
/// answer to the same call gets on `--server`.
impl From<AdminError> for CliError {
    fn from(e: AdminError) -> Self {
        let code = e.code();
        CliError {
            api_code: Some(code.to_string()),
            ..CliError::new(AdminError::exit_code(e.http_status(), code), e.to_string())
        }
    }
}

/// A server's admin API.
#[derive(Debug)]
pub struct Remote {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Remote {
    /// A client of the server at `url` (`http://HOST:PORT`).
    ///
    /// # Errors
    ///
    /// A URL that is not `http://...`.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = url.trim_end_matches('/');
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(CliError::new(
                EXIT_USAGE,
                format!("--server {url:?}: expected http://HOST:PORT (e.g. http://127.0.0.1:7878)"),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::new(EXIT_FAILED, format!("cannot make an HTTP client: {e}")))?;
        Ok(Remote {
            base: base.to_string(),
            token: token.filter(|t| !t.trim().is_empty()),
            http,
        })
    }

    /// Sends a request and returns the JSON answer.
    ///
    /// # Errors
    ///
    /// The server cannot be reached (exit 1), or answers an error: bad input is
    /// exit 2, a rejected module exit 3, anything else exit 1; the message is the
    /// server's.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Value, CliError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Some(Body::Json(v)) => request.json(&v),
            Some(Body::Wasm(bytes)) => request
                .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                .body(bytes),
            // The server accepts changes only with a JSON (or wasm) content
            // type, which a cross-site browser form cannot send.
            None if method != Method::GET => {
                request.header(reqwest::header::CONTENT_TYPE, "application/json")
            }
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            CliError::new(
                EXIT_FAILED,
                format!("cannot reach the server at {}: {e}", self.base),
            )
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            CliError::new(
                EXIT_FAILED,
                format!("reading the answer of {}: {e}", self.base),
            )
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            CliError::new(
                EXIT_FAILED,
                format!(
                    "{} answered {status} with something that is not JSON: {}",
                    self.base,
                    text.chars().take(200).collect::<String>()
                ),
            )
        })?;
        if status.is_success() {
            return Ok(value);
        }
        let code = value["error"]["code"].as_str().unwrap_or("");
        let message = value["error"]["message"].as_str().map_or_else(
            || format!("{} answered {status}", self.base),
            str::to_string,
        );
        let exit = AdminError::exit_code(status.as_u16(), code);
        Err(CliError {
            api_code: Some(code.to_string()),
            ..CliError::new(exit, message)
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::POST, path, None).await
    }

    /// A POST with a JSON body when there is one.
    pub async fn post_json(&self, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        self.call(Method::POST, path, body.map(Body::Json)).await
    }
}

/// A request body.
#[derive(Debug)]
pub enum Body {
    Json(Value),
    Wasm(Vec<u8>),
}

/// Percent-encodes a query value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
