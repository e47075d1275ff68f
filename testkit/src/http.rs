//! One small HTTP/1.1 server for the test doubles that receive what the
//! services send (the OTLP collector, the HTTP sink), on hyper: a handler
//! sees each request with its whole body (chunked or not, hyper decodes it)
//! and returns the response. It serves on 127.0.0.1:0 on a thread of its
//! own until dropped.

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    sync::Arc,
    thread::JoinHandle,
};

use http_body_util::{BodyExt as _, Full};
use hyper::{body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

/// A request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The `Content-Type` header (empty when absent).
    pub content_type: String,
    /// The whole body.
    pub body: Vec<u8>,
}

/// What a handler answers.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

/// A running server; dropping it stops it.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds 127.0.0.1:0 and serves every request with `handler` on a
    /// thread named `name`.
    ///
    /// # Errors
    /// If it cannot bind or start its thread.
    pub fn start(
        name: &str,
        handler: impl Fn(Request) -> Response + Send + Sync + 'static,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let handler = Arc::new(handler);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        let conn = tokio::select! {
                            _ = &mut stopped => return,
                            conn = listener.accept() => conn,
                        };
                        let Ok((stream, _)) = conn else { continue };
                        let handler = handler.clone();
                        let service = service_fn(move |req| {
                            let handler = handler.clone();
                            async move { Ok::<_, Infallible>(answer(req, &*handler).await) }
                        });
                        tokio::spawn(
                            http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                        );
                    }
                });
            })?;
        Ok(HttpServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    handler: &(impl Fn(Request) -> Response + ?Sized),
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let response = match body.collect().await {
        Ok(body) => handler(Request {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            content_type: parts
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: body.to_bytes().to_vec(),
        }),
        Err(e) => Response {
            status: 400,
            content_type: "text/plain",
            body: format!("cannot read the body: {e}\n").into_bytes(),
        },
    };
    let mut out = hyper::Response::new(Full::new(Bytes::from(response.body)));
    *out.status_mut() = hyper::StatusCode::from_u16(response.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(response.content_type),
    );
    out
}
