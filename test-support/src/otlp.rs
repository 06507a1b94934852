//! An in-process OTLP/gRPC receiver: the collector's `TraceService`
//! (`opentelemetry-proto`) on `127.0.0.1`, keeping every span it is sent with
//! its resource's attributes, for tests of what homeservers and clients export.
//! Point an exporter at [`OtlpReceiver::endpoint`] and wait for the spans with
//! [`OtlpReceiver::wait_for`].

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// One span as received, ids in lowercase hex as W3C `traceparent` writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Attributes, each value as text (see [`value_text`]).
    pub attributes: BTreeMap<String, String>,
    /// The attributes of the resource that exported it (`service.name`,
    /// `service.instance.id`, ...).
    pub resource: BTreeMap<String, String>,
}

impl ReceivedSpan {
    /// The `service.name` of its resource.
    pub fn service_name(&self) -> Option<&str> {
        self.resource.get("service.name").map(String::as_str)
    }

    /// The `service.instance.id` of its resource.
    pub fn service_instance_id(&self) -> Option<&str> {
        self.resource.get("service.instance.id").map(String::as_str)
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The receiver; stops serving when dropped.
pub struct OtlpReceiver {
    address: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// Bumped after each export, for [`OtlpReceiver::wait_for`].
    received: watch::Receiver<u64>,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Serves the trace service on `127.0.0.1`, on a port the OS chooses.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the OTLP receiver");
        let address = listener.local_addr().expect("a bound address");
        let spans = Arc::default();
        let (notify, received) = watch::channel(0);
        let service = TraceServiceServer::new(Collector {
            spans: Arc::clone(&spans),
            notify,
        });
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("the OTLP receiver failed");
        });
        OtlpReceiver {
            address,
            spans,
            received,
            server,
        }
    }

    /// The URL to export to (`OTEL_EXPORTER_OTLP_ENDPOINT`, `[telemetry]
    /// otlp_endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far, in the order received.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `found` returns `Some` for the spans received, looking again
    /// after each export; panics naming `what` after `limit`, listing the
    /// spans received.
    pub async fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        mut found: impl FnMut(&[ReceivedSpan]) -> Option<T>,
    ) -> T {
        let mut received = self.received.clone();
        let waited = tokio::time::timeout(limit, async {
            loop {
                received.borrow_and_update();
                if let Some(value) = found(&self.spans()) {
                    return value;
                }
                received
                    .changed()
                    .await
                    .expect("the receiver outlives its collector");
            }
        })
        .await;
        match waited {
            Ok(value) => value,
            Err(_) => {
                let summary: Vec<String> = self
                    .spans()
                    .iter()
                    .map(|span| {
                        format!(
                            "{} {} trace {} span {} parent {:?}",
                            span.service_name().unwrap_or("?"),
                            span.name,
                            span.trace_id,
                            span.span_id,
                            span.parent_span_id
                        )
                    })
                    .collect();
                panic!(
                    "{what} did not arrive within {} seconds; received:\n{}",
                    limit.as_secs_f32(),
                    summary.join("\n")
                )
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The trace service: keeps what it is sent.
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    notify: watch::Sender<u64>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|resource| attributes(&resource.attributes))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        name: span.name,
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: (!span.parent_span_id.is_empty())
                            .then(|| hex::encode(&span.parent_span_id)),
                        attributes: attributes(&span.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(received);
        self.notify.send_modify(|count| *count += 1);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attributes(key_values: &[KeyValue]) -> BTreeMap<String, String> {
    key_values
        .iter()
        .map(|key_value| (key_value.key.clone(), value_text(key_value.value.as_ref())))
        .collect()
}

/// An attribute value as text: strings as they are, numbers and booleans as
/// Rust prints them, anything else in its debug form.
pub fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
