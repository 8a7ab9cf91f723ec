//! The host's rules for what a job passes it, as numbers and checks.
//!
//! The real host enforces these in the sandbox; [`crate::testing::TestHost`]
//! enforces the same ones natively, so a job whose tests pass under `cargo
//! test` is not refused for a key, name or size once it runs for real. The
//! host's test suite checks that every value here equals the host's own.
//! Where an operator can change a limit (the kv quota, in a job's manifest
//! entry), the value here is the default.

/// Longest kv key, in bytes.
pub const MAX_KV_KEY: usize = 256;
/// Largest kv value, in bytes (the host's default `max_kv_value_bytes`).
pub const MAX_KV_VALUE: usize = 1 << 20;
/// Keys a job's kv state may hold in all (default; `kv_max_keys` per job).
pub const KV_MAX_KEYS: u64 = 10_000;
/// Bytes of values a job's kv state may hold in all (default; `kv_max_bytes` per job).
pub const KV_MAX_BYTES: u64 = 16 << 20;
/// Longest lock name, in bytes.
pub const MAX_LOCK_NAME: usize = 256;
/// Locks one run may hold at once (default).
pub const MAX_LOCKS_HELD: usize = 16;
/// Longest event name, in bytes.
pub const MAX_EVENT_NAME: usize = 128;
/// Longest idempotency key of an emitted event, in bytes.
pub const MAX_EVENT_KEY: usize = 256;
/// Largest event payload, as JSON text, in bytes.
pub const MAX_EVENT_PAYLOAD: usize = 64 << 10;
/// Events one run may emit.
pub const MAX_EMITS_PER_RUN: u32 = 1_000;
/// Bytes of log lines one run keeps (default); later lines are dropped and counted.
pub const MAX_LOG_BYTES: usize = 64 << 10;
/// Bytes of `details` plus new job data one run may return (default).
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Checks an event name as the host does: 1 to [`MAX_EVENT_NAME`] bytes of
/// `A-Z a-z 0-9 . _ - : /`, starting with a letter or digit.
///
/// # Errors
///
/// What is wrong with the name, in the host's words.
pub fn check_event_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_EVENT_NAME {
        return Err(format!(
            "event name {name:?} must be 1 to {MAX_EVENT_NAME} bytes"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "event name {name:?} must start with a letter or digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-:/".contains(*c)))
    {
        return Err(format!(
            "event name {name:?} contains {bad:?}; use letters, digits and . _ - : /"
        ));
    }
    Ok(())
}

/// Checks a kv key as the host does: 1 to [`MAX_KV_KEY`] bytes.
///
/// # Errors
///
/// What is wrong with the key, in the host's words.
pub fn check_kv_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        Err("kv key is empty".to_owned())
    } else if key.len() > MAX_KV_KEY {
        Err(format!(
            "kv key is {} bytes; the limit is {MAX_KV_KEY}",
            key.len()
        ))
    } else {
        Ok(())
    }
}

/// Checks a lock name as the host does: 1 to [`MAX_LOCK_NAME`] bytes.
///
/// # Errors
///
/// What is wrong with the name, in the host's words.
pub fn check_lock_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_LOCK_NAME {
        Err(format!("lock name must be 1 to {MAX_LOCK_NAME} bytes"))
    } else {
        Ok(())
    }
}
