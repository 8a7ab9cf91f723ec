//! `sync`: pages through a JSON HTTP API (`GET {base_url}/items?cursor=C&limit=N`
//! answering `{"items": [...], "next_cursor": "..." | null}`), keeping its
//! cursor in kv so the next fire goes on where this one stopped.
//!
//! Idempotent per fire: every request carries the fire id as
//! `Idempotency-Key`, and a fire that already finished (a retry after a lost
//! completion) changes nothing. The base URL is config (`base_url`), so the
//! same module syncs another API with another job.

use quartzite_sdk::http::Request;
use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, cancelled, config, fatal, info, kv};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    page_size: Option<u32>,
    /// Pages fetched at most per fire.
    max_pages: Option<u32>,
}

#[derive(Deserialize)]
struct Page {
    items: Vec<Value>,
    next_cursor: Option<String>,
}

pub struct Sync;

impl Job for Sync {
    fn info() -> JobInfo {
        JobInfo::new("sync", env!("CARGO_PKG_VERSION"))
            .description("pages through a JSON API with a cursor kept in kv")
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let data: Data = ctx.data::<Option<Data>>()?.unwrap_or_default();
        let base = config::get("base_url")?
            .ok_or_else(|| fatal("no base_url in the job's config grants"))?;
        let done_key = format!("done/{}", ctx.fire_id);
        if let Some(previous) = kv::get_json::<Value>(&done_key)? {
            info!("fire {} already synced; nothing to do", ctx.fire_id);
            return Outcome::details(&previous);
        }
        let limit = data.page_size.unwrap_or(50).clamp(1, 1000);
        let mut cursor = kv::get_json::<String>("cursor")?;
        let mut total = kv::get_json::<u64>("items")?.unwrap_or(0);
        let (mut pages, mut items) = (0u32, 0u64);
        while pages < data.max_pages.unwrap_or(10) && !cancelled() {
            let mut url = format!("{}/items?limit={limit}", base.trim_end_matches('/'));
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Page = Request::get(&url)
                .header("idempotency-key", ctx.fire_id.clone())
                .send()?
                .error_for_status()?
                .json()?;
            pages += 1;
            items += page.items.len() as u64;
            total += page.items.len() as u64;
            // The cursor moves with the items it covers: a run cut short resumes here.
            kv::set_json("items", &total)?;
            match page.next_cursor {
                Some(next) => {
                    kv::set_json("cursor", &next)?;
                    cursor = Some(next);
                }
                None => break,
            }
        }
        info!("synced {items} items in {pages} pages ({total} in all)");
        let summary = json!({ "pages": pages, "items": items, "total": total, "cursor": cursor });
        kv::set_json(&done_key, &summary)?;
        Outcome::details(&summary)
    }
}

quartzite_sdk::export_job!(Sync);

#[cfg(test)]
mod tests {
    use super::*;
    use quartzite_sdk::testing::TestHost;

    const BASE: &str = "https://api.example.com/v1";

    #[test]
    fn pages_until_the_end_keeping_the_cursor() {
        let mut h = TestHost::new()
            .config("base_url", BASE)
            .fire_id("f1")
            .stub_http(
                &format!("{BASE}/items?limit=2"),
                200,
                r#"{"items":[1,2],"next_cursor":"c2"}"#,
            )
            .stub_http(
                &format!("{BASE}/items?limit=2&cursor=c2"),
                200,
                r#"{"items":[3],"next_cursor":null}"#,
            )
            .data(r#"{"page_size":2}"#);
        let out = h.run::<Sync>().unwrap();
        assert_eq!(out.details_json().unwrap()["items"], 3);
        assert_eq!(h.http_requests().len(), 2);
        assert!(h.http_requests().iter().all(|r| {
            r.headers
                .iter()
                .any(|(n, v)| n == "idempotency-key" && v == "f1")
        }));
        // The same fire again (a retry) changes nothing and sends nothing.
        let again = h.run::<Sync>().unwrap();
        assert_eq!(again.details_json().unwrap()["items"], 3);
        assert_eq!(h.http_requests().len(), 2);
    }

    #[test]
    fn a_server_error_is_retried_by_the_fire() {
        let mut h = TestHost::new().config("base_url", BASE).stub_http(
            &format!("{BASE}/items*"),
            503,
            "busy",
        );
        let err = h.run::<Sync>().unwrap_err();
        assert!(matches!(err, quartzite_sdk::Error::Retry(_)), "{err:?}");
    }
}
