//! Traces of fires over OTLP/HTTP, off unless an endpoint is named
//! (`otel.endpoint`, or the standard `OTEL_EXPORTER_OTLP_*` variables).
//!
//! The scheduler and the runtime open the spans of a fire (target
//! [`FIRE_TARGET`], level TRACE; `domain::trace` says which and how they are
//! tied); only the OpenTelemetry layer built here listens to that target, so
//! without an endpoint no layer is interested and a fire's spans cost one
//! check of a cached interest each.
//!
//! Spans leave in batches from the SDK's own thread. The exporter posts them
//! with the host's HTTP client on a runtime of its own (one thread), so a slow
//! or absent collector never holds up the scheduler's threads.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;

pub use crate::domain::trace::FIRE_TARGET;

/// Where traces go, from the configured endpoint (`otel.endpoint`, which
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` also sets) and the standard
/// variables `env` reads: `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none` turn tracing off; without an endpoint,
/// `OTEL_EXPORTER_OTLP_ENDPOINT` names the collector's base URL, and
/// `/v1/traces` is appended, as the OpenTelemetry specification says.
pub fn endpoint(configured: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let is =
        |name: &str, value: &str| env(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value));
    if is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none") {
        return None;
    }
    if let Some(endpoint) = configured.filter(|e| !e.is_empty()) {
        return Some(endpoint.to_string());
    }
    let base = env("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let base = base.trim();
    (base.starts_with("http://") || base.starts_with("https://"))
        .then(|| format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// The layer that exports the fire spans, and nothing else, through `tracer`.
pub fn fire_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    let only_fires =
        tracing_subscriber::filter::Targets::new().with_target(FIRE_TARGET, tracing::Level::TRACE);
    // Spans carry what `domain::trace` records and no more: not the source
    // location, thread, target or busy/idle times of each span (eight
    // attributes a span that cost more than the span), and the OTel context
    // is not made current on every poll of a fire's task (parents are given
    // explicitly).
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(only_fires)
}

/// Caps the level of `log` records (sqlx logs every statement through the
/// `log` crate) at `shown`, the most verbose level the log output shows.
/// The `log` bridge otherwise follows the most verbose layer, which with a
/// trace exporter is TRACE (for the fire spans): each statement's record
/// would be formatted, handed over and discarded.
pub fn cap_log_records(shown: Option<tracing::level_filters::LevelFilter>) {
    use tracing::level_filters::LevelFilter;
    let level = match shown {
        Some(LevelFilter::OFF) => log::LevelFilter::Off,
        Some(LevelFilter::ERROR) => log::LevelFilter::Error,
        Some(LevelFilter::WARN) => log::LevelFilter::Warn,
        Some(LevelFilter::INFO) => log::LevelFilter::Info,
        Some(LevelFilter::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    log::set_max_level(level);
}

/// The exporter's tracer provider; dropping it sends what is still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("quartzite: sending the last traces failed: {e}");
        }
    }
}

impl Telemetry {
    /// No exporter: what a process without a trace endpoint holds.
    pub fn off() -> Self {
        Telemetry { provider: None }
    }

    /// An exporter posting OTLP/HTTP protobuf to `endpoint` (the full URL,
    /// e.g. `http://127.0.0.1:4318/v1/traces`), and the tracer its layer uses.
    ///
    /// # Errors
    ///
    /// When the exporter or its HTTP client cannot be built.
    pub fn otlp(endpoint: &str) -> Result<(Self, opentelemetry_sdk::trace::Tracer), String> {
        let client = Poster::start()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter for {endpoint}: {e}"))?;
        // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the
        // resource builder; the service is `quartzite` unless they name one.
        let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
        let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
        if !named {
            resource = resource.with_service_name("quartzite");
        }
        // The sampler comes from OTEL_TRACES_SAMPLER; a fire's trace id is
        // derived from its id, so `traceidratio` keeps or drops a fire's
        // attempts together, on every node.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(crate::domain::trace::FireIdGenerator::default())
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("quartzite");
        // The root span of a fire is built through the global provider.
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok((
            Telemetry {
                provider: Some(provider),
            },
            tracer,
        ))
    }
}

/// The exporter's HTTP client: the host's reqwest on a one-thread runtime
/// of its own, awaited from the SDK's export thread.
#[derive(Debug)]
struct Poster {
    client: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Poster {
    fn start() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("quartzite-otlp")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the OTLP exporter's runtime: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter's HTTP client: {e}"))?;
        Ok(Poster {
            client,
            runtime: Some(runtime),
        })
    }
}

impl Drop for Poster {
    fn drop(&mut self) {
        // May be dropped on any thread, an async one included.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for Poster {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let Some(runtime) = &self.runtime else {
            return Err("the OTLP exporter is shut down".into());
        };
        runtime
            .spawn(async move {
                let response: reqwest::Response = client.execute(request).await?;
                let mut answer = Response::builder().status(response.status());
                if let Some(headers) = answer.headers_mut() {
                    *headers = response.headers().clone();
                }
                let body = response.bytes().await?;
                Ok::<_, HttpError>(answer.body(body)?)
            })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_variables_name_or_silence_the_collector() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_string())
            }
        };
        let configured = Some("http://127.0.0.1:4318/v1/traces");
        assert_eq!(endpoint(None, &env(&[])), None, "off by default");
        assert_eq!(endpoint(Some(""), &env(&[])), None);
        assert_eq!(
            endpoint(configured, &env(&[])).as_deref(),
            configured,
            "the configured endpoint is used as it is"
        );
        assert_eq!(
            endpoint(
                None,
                &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318/")])
            )
            .as_deref(),
            Some("http://otel:4318/v1/traces"),
            "the base URL gets the traces path"
        );
        assert_eq!(
            endpoint(
                configured,
                &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318")])
            )
            .as_deref(),
            configured,
            "the traces endpoint wins over the base URL"
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let pairs: &'static [(&str, &str)] = Box::leak(Box::new([off]));
            assert_eq!(endpoint(configured, &env(pairs)), None, "{off:?}");
        }
        assert_eq!(
            endpoint(None, &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "otel:4318")])),
            None,
            "a base URL without a scheme is not used"
        );
    }
}
