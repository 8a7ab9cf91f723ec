//! A job built for `quartzite:job@2.0.0`: a 1.x host must refuse it as incompatible.

wit_bindgen::generate!({ path: "wit", world: "quartzite:job/job@2.0.0" });

use exports::quartzite::job::runner::{Context, Guest, JobInfo};

struct FutureJob;

impl Guest for FutureJob {
    fn describe() -> JobInfo {
        JobInfo {
            name: "future-major".into(),
            version: "2.0.0".into(),
        }
    }

    fn run(ctx: Context) -> Result<String, String> {
        Ok(ctx.fire_id)
    }
}

// Only a component has somewhere to export to.
#[cfg(target_arch = "wasm32")]
export!(FutureJob);
