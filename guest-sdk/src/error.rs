//! How a job says it failed: [`Error::Retry`] or [`Error::Fatal`].

use std::fmt;

/// A failed run.
///
/// `?` converts any `std::error::Error` into [`Error::Retry`]: an unexpected error
/// is treated as transient unless the job says otherwise with [`ResultExt::or_fatal`]
/// or [`fatal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Transient: the job's retry policy applies.
    Retry(String),
    /// Permanent: the fire is never retried.
    Fatal(String),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The failure message.
    pub fn message(&self) -> &str {
        match self {
            Error::Retry(m) | Error::Fatal(m) => m,
        }
    }

    /// Whether the retry policy applies.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Retry(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Retry(m) => write!(f, "retryable: {m}"),
            Error::Fatal(m) => write!(f, "fatal: {m}"),
        }
    }
}

// `Error` deliberately does not implement `std::error::Error`, so that this
// blanket conversion (which is what makes `?` work) does not overlap `From<T> for T`.
impl<E: std::error::Error> From<E> for Error {
    fn from(err: E) -> Self {
        Error::Retry(err.to_string())
    }
}

/// A transient failure with `message`.
pub fn retry(message: impl Into<String>) -> Error {
    Error::Retry(message.into())
}

/// A permanent failure with `message`.
pub fn fatal(message: impl Into<String>) -> Error {
    Error::Fatal(message.into())
}

/// Classifies an ordinary error and adds context to it.
pub trait ResultExt<T> {
    /// Turns the error into [`Error::Fatal`], prefixed with `context`.
    fn or_fatal(self, context: &str) -> Result<T>;
    /// Turns the error into [`Error::Retry`], prefixed with `context`.
    fn or_retry(self, context: &str) -> Result<T>;
}

impl<T, E: fmt::Display> ResultExt<T> for std::result::Result<T, E> {
    fn or_fatal(self, context: &str) -> Result<T> {
        self.map_err(|e| Error::Fatal(format!("{context}: {e}")))
    }

    fn or_retry(self, context: &str) -> Result<T> {
        self.map_err(|e| Error::Retry(format!("{context}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<u32> {
        Ok(s.parse::<u32>()?)
    }

    #[test]
    fn question_mark_on_std_errors_is_retryable() {
        let err = parse("x").unwrap_err();
        assert!(err.is_retryable());
        assert!(err.message().contains("invalid digit"));
    }

    #[test]
    fn or_fatal_classifies_and_prefixes() {
        let err = "x".parse::<u32>().or_fatal("reading limit").unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message().starts_with("reading limit: "));
    }
}
