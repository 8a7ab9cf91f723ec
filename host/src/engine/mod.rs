//! The engine joins the runtime to the store: module resolution, store-backed
//! host services, and the acquire -> run -> complete loop. It is the only layer
//! that knows both wasm and SQL exist.

pub mod alerts;
pub mod jobs;
pub mod locks;
pub mod modules;
pub mod scheduler;
pub mod services;
mod shares;
pub mod wake;
pub mod watch;
