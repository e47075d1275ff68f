//! An OTLP/HTTP trace collector for tests: accepts `POST /v1/traces` with
//! OTLP/JSON bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`), keeps the
//! spans flattened ([`ExportedSpan`]) and lets a test wait for the ones it
//! expects.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

use crate::http::{HttpServer, Request, Response};

/// One exported span, flattened out of its resource and scope.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    /// `service.name` of the resource.
    pub service: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id (empty for a root).
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: u64,
    /// Attributes, values as JSON (`stringValue`, `intValue`, … unwrapped).
    pub attributes: BTreeMap<String, Value>,
    /// Links: (trace id, span id).
    pub links: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ExportedSpan>,
    posts: usize,
    problems: Vec<String>,
}

/// An OTLP/HTTP collector on 127.0.0.1 accepting `POST /v1/traces` with JSON
/// bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`).
#[derive(Debug)]
pub struct OtlpCollector {
    server: HttpServer,
    state: Arc<Mutex<Received>>,
}

impl OtlpCollector {
    /// Binds 127.0.0.1:0 and serves on a background thread until dropped.
    pub fn start() -> OtlpCollector {
        let state: Arc<Mutex<Received>> = Arc::default();
        let st = state.clone();
        let server = HttpServer::start("otlp-collector", move |req| receive(&st, &req))
            .expect("start the OTLP collector");
        OtlpCollector { server, state }
    }

    /// `http://127.0.0.1:<port>`: the value of `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.server.url()
    }

    /// Spans received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.lock().spans.clone()
    }

    /// Requests that were not a well-formed OTLP/JSON export.
    pub fn problems(&self) -> Vec<String> {
        self.lock().problems.clone()
    }

    /// Export requests received so far.
    pub fn posts(&self) -> usize {
        self.lock().posts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `f` finds what it needs in the spans received, up to
    /// `timeout`; `None` at the deadline.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&[ExportedSpan]) -> Option<T>,
    ) -> Option<T> {
        crate::wait::poll_until(timeout, || f(&self.lock().spans))
    }
}

/// Takes one request of an OTLP exporter: `POST /v1/traces` with a JSON
/// body is an export; anything else is answered 404.
fn receive(state: &Mutex<Received>, req: &Request) -> Response {
    if req.method != "POST" || req.path != "/v1/traces" {
        return Response {
            status: 404,
            content_type: "text/plain",
            body: b"not found\n".to_vec(),
        };
    }
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.posts += 1;
    if !req.content_type.starts_with("application/json") {
        st.problems.push(format!(
            "export with Content-Type {:?}, not JSON",
            req.content_type
        ));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) => st.spans.extend(flatten_spans(&v)),
        Err(e) => st.problems.push(format!(
            "export body is not JSON ({e}): {}",
            String::from_utf8_lossy(&req.body[..req.body.len().min(200)])
        )),
    }
    Response {
        status: 200,
        content_type: "application/json",
        body: b"{}".to_vec(),
    }
}

/// An OTLP `AnyValue` as plain JSON.
fn any_value(v: &Value) -> Value {
    if let Some(s) = v.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = v.get("intValue") {
        // proto3 JSON writes int64 as a string; accept both.
        return i
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .map_or(i.clone(), Value::from);
    }
    for k in ["boolValue", "doubleValue", "arrayValue", "kvlistValue"] {
        if let Some(x) = v.get(k) {
            return x.clone();
        }
    }
    Value::Null
}

/// The elements of a JSON array (none if `v` is not one).
fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A JSON string's text (empty if `v` is not one).
fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn attributes(kvs: &Value) -> BTreeMap<String, Value> {
    list(kvs)
        .filter_map(|kv| Some((kv["key"].as_str()?.to_owned(), any_value(&kv["value"]))))
        .collect()
}

/// The spans of one `ExportTraceServiceRequest` (OTLP/JSON).
pub fn flatten_spans(req: &Value) -> Vec<ExportedSpan> {
    let mut out = Vec::new();
    for rs in list(&req["resourceSpans"]) {
        let resource = attributes(&rs["resource"]["attributes"]);
        let service = text(resource.get("service.name").unwrap_or(&Value::Null));
        for ss in list(&rs["scopeSpans"]) {
            for s in list(&ss["spans"]) {
                let kind = s["kind"]
                    .as_u64()
                    .or_else(|| kind_by_name(s["kind"].as_str()?))
                    .unwrap_or(0);
                out.push(ExportedSpan {
                    service: service.clone(),
                    trace_id: text(&s["traceId"]),
                    span_id: text(&s["spanId"]),
                    parent_span_id: text(&s["parentSpanId"]),
                    name: text(&s["name"]),
                    kind,
                    attributes: attributes(&s["attributes"]),
                    links: list(&s["links"])
                        .map(|l| (text(&l["traceId"]), text(&l["spanId"])))
                        .collect(),
                });
            }
        }
    }
    out
}

fn kind_by_name(name: &str) -> Option<u64> {
    Some(match name {
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        _ => return None,
    })
}
