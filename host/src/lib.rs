//! Quartzite: a durable, clustered job scheduler whose jobs are sandboxed
//! WebAssembly components.
//!
//! This crate is both the `quartzite` binary and its library. Each concern has
//! its own module and owns its data; dependencies point one way, from the
//! operator surface ([`cli`]) to the [`runtime`], which knows no SQL.

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod manifest;
pub mod metrics;
pub mod runtime;
pub mod schedule;
pub mod store;
