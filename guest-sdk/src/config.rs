//! Plain configuration from the job's `config` grants, read through
//! `wasi:config/store`: values the operator sets per job (a channel name, an
//! API base URL) without rebuilding the module. Not for credentials: those
//! are secret grants, which the host injects into requests and the job never
//! sees.
//!
//! ```
//! use quartzite_sdk::testing::TestHost;
//! use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, config};
//!
//! struct Notify;
//! impl Job for Notify {
//!     fn info() -> JobInfo { JobInfo::new("notify", "0.1.0") }
//!     fn run(_ctx: &Context) -> Result<Outcome> {
//!         let channel = config::get("channel")?.unwrap_or_else(|| "#general".into());
//!         Outcome::details(&channel)
//!     }
//! }
//!
//! let mut host = TestHost::new().config("channel", "#ops");
//! assert_eq!(host.run::<Notify>().unwrap().details_json().unwrap(), "#ops");
//! ```

use crate::error::Result;

/// The value of config key `key`, `None` when the job's grants give none.
///
/// # Errors
///
/// When the host cannot serve config now (retryable).
pub fn get(key: &str) -> Result<Option<String>> {
    imp::get(key)
}

/// Every config key and value the job's grants give.
///
/// # Errors
///
/// When the host cannot serve config now (retryable).
pub fn get_all() -> Result<Vec<(String, String)>> {
    imp::get_all()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::error::{Error, Result};

    mod bindings {
        wit_bindgen::generate!({
            inline: "
                package wasi:config@0.2.0-rc.1;
                interface store {
                    variant error { upstream(string), io(string) }
                    get: func(key: string) -> result<option<string>, error>;
                    get-all: func() -> result<list<tuple<string, string>>, error>;
                }
                world imports { import store; }
            ",
            world: "wasi:config/imports",
        });
    }
    use bindings::wasi::config::store;

    fn convert(e: store::Error) -> Error {
        match e {
            store::Error::Upstream(m) | store::Error::Io(m) => {
                Error::Retry(format!("config unavailable: {m}"))
            }
        }
    }

    pub fn get(key: &str) -> Result<Option<String>> {
        store::get(key).map_err(convert)
    }

    pub fn get_all() -> Result<Vec<(String, String)>> {
        store::get_all().map_err(convert)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::error::Result;
    use crate::testing::{TestHost, with_host};

    pub fn get(key: &str) -> Result<Option<String>> {
        Ok(with_host(|h| h.config.get(key).cloned()))
    }

    pub fn get_all() -> Result<Vec<(String, String)>> {
        Ok(with_host(|h| {
            h.config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    impl TestHost {
        /// Sets config key `key`, as a `config` grant would.
        pub fn config(mut self, key: &str, value: &str) -> Self {
            self.config.insert(key.to_string(), value.to_string());
            self
        }
    }
}
