//! Quartzite's integration tests, one binary (one link of the host and
//! wasmtime instead of one per topic): a module per topic, and the helpers
//! they share in [`common`]. Run one topic with `cargo test -p quartzite
//! --test all TOPIC::`, e.g. `cargo test -p quartzite --test all cluster::`.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

#[macro_use]
mod common;

mod api;
mod backfill;
mod cli;
mod cluster;
mod config;
mod cron_vectors;
mod dashboard;
mod engine;
mod events;
mod flow;
mod grants;
mod hotload;
mod new;
mod observability;
mod polyglot;
mod process;
mod runtime;
mod store;
