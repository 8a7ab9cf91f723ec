//! Quartzite: a durable, clustered job scheduler whose jobs are sandboxed
//! WebAssembly components.
//!
//! This crate is both the `quartzite` binary and its library. Each concern has
//! its own module and owns its data; dependencies point one way, from the
//! operator surface ([`cli`]) to the [`runtime`], which knows no SQL.

/// Every binary that links the library (the `quartzite` binary, its tests
/// and benches) allocates with mimalloc: a run's sandbox, its store
/// transaction and its history row make many short-lived allocations on two
/// or more threads, where the system allocator spends a measurable share of
/// the run consolidating and locking (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod grants;
pub mod manifest;
pub mod metrics;
pub mod runtime;
pub mod schedule;
pub mod secrets;
pub mod store;
pub mod text;
