//! Quartzite: a durable, clustered job scheduler whose jobs are sandboxed
//! WebAssembly components.
//!
//! This crate is both the `quartzite` binary and its library. Each concern has
//! its own module and owns its data; dependencies point one way, down: from
//! the operator surface ([`cli`]) through the composition root ([`node`]), the
//! admin API ([`api`]) and service ([`admin`]) and the [`engine`], to the
//! [`store`] and the [`runtime`] (which know nothing of each other), and the
//! vocabulary they share ([`domain`], [`schedule`]). ARCHITECTURE.md draws the
//! layers and says what each may import.
//!
//! The library sets no global allocator: the binary and the benches choose
//! theirs (mimalloc).
// The OpenAPI document is one `json!` literal, deeper than the default limit.
#![recursion_limit = "256"]

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod diagnostics;
pub mod domain;
pub mod engine;
pub mod grants;
pub mod manifest;
pub mod metrics;
pub mod node;
pub mod runtime;
pub mod schedule;
pub mod secrets;
pub mod store;
pub mod text;
