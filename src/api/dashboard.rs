//! The web dashboard: the Vite bundle in `dashboard/dist`, embedded in the binary at build time
//! (so the server never needs Node), served at `/` on the API's port. Every `GET` that is not
//! an API path may be its; a path that is not a file is a client-side route and gets
//! `index.html` when a browser navigates to it (`Accept: text/html`).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "dashboard/dist"]
struct Bundle;

/// Paths the API owns: the dashboard never answers them, whatever the method.
const API_PREFIXES: [&str; 7] = [
    "/api/",
    "/ws",
    "/health",
    "/ready",
    "/metrics",
    "/webhooks/",
    "/ironflow/",
];

/// Whether a request is the dashboard's: a `GET`/`HEAD` outside the API's paths, and not a
/// Connect or gRPC call (`/<package.Service>/<Method>`: a dotted first segment with a second).
pub fn is_dashboard_request(method: &Method, path: &str) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    if path == "/api" || API_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return false;
    }
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let first = segments.next().unwrap_or_default();
    let rest = segments.next().unwrap_or_default();
    !first.contains('.') || rest.is_empty()
}

/// What a dashboard request gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// A file of the bundle (an asset, or `index.html` for a client-side route).
    File(&'a str),
    /// A hashed asset name the bundle no longer has (a stale page): 404.
    MissingAsset,
    /// Not the dashboard's: the API answers (its JSON 404).
    Api,
}

/// A bundle file is served as itself; any other path is a client-side route and gets
/// `index.html`, but only for a browser navigation (`Accept: text/html`) — a program that
/// mistypes an API path gets the API's JSON 404, not a page.
pub fn answer_for(path: &str, accepts_html: bool) -> Answer<'_> {
    let name = path.trim_start_matches('/');
    if !name.is_empty() && Bundle::get(name).is_some() {
        return Answer::File(name);
    }
    if name.starts_with("assets/") {
        return Answer::MissingAsset;
    }
    if accepts_html {
        Answer::File("index.html")
    } else {
        Answer::Api
    }
}

fn asset(name: &str) -> Response {
    let Some(file) = Bundle::get(name) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut response = Response::new(Body::from(file.data));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(file.metadata.mimetype()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    // Hashed asset names change with their content; index.html must always be re-read.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Middleware in front of the router: answers the dashboard's requests, passes the rest on.
pub async fn serve(request: Request, next: Next) -> Response {
    if !is_dashboard_request(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let accepts_html = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    let path = request.uri().path().to_owned();
    match answer_for(&path, accepts_html) {
        Answer::File(name) => asset(name),
        Answer::MissingAsset => super::error::ApiError::not_found(format!(
            "no dashboard asset {path}: reload the page for the current bundle"
        ))
        .into_response(),
        Answer::Api => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_and_rpc_calls_are_not_the_dashboards() {
        for path in [
            "/api/v1/runs",
            "/api",
            "/ws",
            "/health",
            "/metrics",
            "/ironflow.v1.IronflowService/GetRun",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(!is_dashboard_request(&Method::GET, path), "{path}");
        }
        assert!(!is_dashboard_request(&Method::POST, "/runs/abc"));
    }

    #[test]
    fn pages_and_assets_are() {
        for path in [
            "/",
            "/runs",
            "/runs/01J/",
            "/functions/x.y",
            "/favicon.ico",
            "/assets/index.js",
        ] {
            assert!(is_dashboard_request(&Method::GET, path), "{path}");
        }
        assert!(is_dashboard_request(&Method::HEAD, "/"));
    }

    #[test]
    fn navigations_get_the_index_programs_the_api_and_a_stale_asset_404() {
        assert_eq!(answer_for("/", true), Answer::File("index.html"));
        assert_eq!(answer_for("/runs/01JABC", true), Answer::File("index.html"));
        assert_eq!(answer_for("/runs/01JABC", false), Answer::Api);
        assert_eq!(answer_for("/", false), Answer::Api);
        assert_eq!(answer_for("/index.html", false), Answer::File("index.html"));
        assert_eq!(
            answer_for("/assets/index-gone.js", true),
            Answer::MissingAsset
        );
    }
}
