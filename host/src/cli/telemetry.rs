//! Traces of fires over OTLP/HTTP, off unless `log.otlp_endpoint` is set.
//!
//! The scheduler opens a span per fire (target [`FIRE_TARGET`], level TRACE)
//! with child spans for its steps; only the OpenTelemetry layer built here
//! listens to that target, so without an endpoint no layer is interested and
//! a fire's spans cost one check of a cached interest each.
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

/// The `tracing` target of the scheduler's fire spans (see `engine::scheduler`).
pub const FIRE_TARGET: &str = "quartzite::fire";

/// The layer that exports the fire spans, and nothing else, through `tracer`.
pub fn fire_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    let only_fires =
        tracing_subscriber::filter::Targets::new().with_target(FIRE_TARGET, tracing::Level::TRACE);
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(only_fires)
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
    /// No exporter: what a process without `log.otlp_endpoint` holds.
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
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name("quartzite")
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("quartzite");
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
