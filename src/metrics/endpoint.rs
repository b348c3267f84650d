//! Serves `GET /metrics` in the Prometheus text format on its own listener;
//! other paths get 404, other methods 405.

use super::Metrics;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;

pub struct MetricsApp {
    metrics: Arc<Metrics>,
}

impl MetricsApp {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsApp { metrics }
    }
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let readable = matches!(request.method, http::Method::GET | http::Method::HEAD);
        let (status, content_type, body) = if !readable {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed: /metrics is read with GET\n".to_vec(),
            )
        } else if request.uri.path() == "/metrics" {
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /metrics\n".to_vec(),
            )
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        if !readable {
            response.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
        }
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        let length = response.body().len();
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, length.into());
        response
    }
}
