//! The HTTP request duration histogram: every request, labelled with its route pattern (never
//! the raw path, so ids do not become labels), method and status code. A streaming response
//! counts until its headers are sent.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        "ironflow_http_request_duration_seconds",
        "route" => route,
        "method" => method,
        "code" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}
