//! The engine joins the runtime to the store: it owns the adapters that give
//! guests durable state, and (with the scheduler) the acquire -> run -> complete
//! loop. It is the only layer that knows both wasm and SQL exist.

pub mod services;
