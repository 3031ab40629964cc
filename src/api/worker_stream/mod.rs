//! `ironflow.v1.WorkerService/Connect`, the worker stream, on the REST port over two
//! transports with one schema (ironflow-py's `WorkerMessage` / `EngineMessage`): Connect's
//! bidirectional protocol (HTTP/2, `application/connect+proto` / `+json`) as ironflow-py's
//! `StreamingWorker` speaks it, and gRPC (tonic) as the Rust SDK speaks it. Both
//! authenticate, then hand the stream to one [`session`].

mod session;
mod wire;

use std::pin::Pin;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use tonic::{Status, Streaming};
use tower::ServiceExt;

use crate::api::auth::{Operation, RequestContext};
use crate::api::connect_stream::BidiRequest;
use crate::api::error::{ApiError, Code};
use crate::proto::v1 as pb;
use crate::proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};

use super::AppState;

/// `POST /ironflow.v1.WorkerService/{method}`: gRPC requests go to tonic, the rest are
/// Connect calls.
pub fn routes(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/ironflow.v1.WorkerService/{method}",
            axum::routing::any(dispatch),
        )
        .with_state(state)
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

async fn dispatch(
    State(state): State<AppState>,
    Path(method): Path<String>,
    request: Request,
) -> Response {
    if is_grpc(request.headers()) {
        let service = WorkerServiceServer::new(GrpcWorkerStream {
            state: state.clone(),
        })
        .max_decoding_message_size(state.max_request_bytes);
        return match service.oneshot(request.map(tonic::body::Body::new)).await {
            Ok(response) => response.map(Body::new),
            Err(never) => match never {},
        };
    }
    connect(state, method, request).await
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    method: &str,
) -> Result<RequestContext, ApiError> {
    let operation = Operation {
        facts: crate::domain::policy::RequestFacts {
            method: "POST".into(),
            path: format!("/ironflow.v1.WorkerService/{method}"),
            rpc: format!("WorkerService/{method}"),
            ..Default::default()
        },
        // An unknown method answers `unimplemented` to any authenticated caller.
        permission: crate::api::access::connect_permission("WorkerService", method),
    };
    state.auth.authorize(headers, None, None, operation).await
}

/// The Connect transport: authenticate, then stream.
async fn connect(state: AppState, method: String, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method != axum::http::Method::POST {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::InvalidArgument,
            "Connect calls are POST requests",
        )
        .into_response();
    }
    let ctx = match authorize(&state, &parts.headers, &method).await {
        Ok(ctx) => ctx,
        Err(e) => return e.into_response(),
    };
    if method != "Connect" {
        return ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            Code::Unimplemented,
            format!("ironflow.v1.WorkerService/{method} is not implemented by this server"),
        )
        .into_response();
    }
    let bidi = match BidiRequest::parse(&parts.headers) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let inbound = bidi.messages::<pb::WorkerMessage>(body, state.max_request_bytes);
    let mut outbound = match session::open(state.engine.clone(), ctx.env, inbound).await {
        Ok(rx) => rx,
        Err(e) => return bidi.fail(&e),
    };
    let (response, sink) = bidi.open();
    tokio::spawn(async move {
        let mut error = None;
        loop {
            tokio::select! {
                next = outbound.recv() => match next {
                    Some(Ok(m)) => {
                        if !sink.send(&m).await {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        error = Some(e);
                        break;
                    }
                    None => break,
                },
                () = sink.closed() => return,
            }
        }
        sink.finish(error.as_ref()).await;
    });
    response
}

/// The gRPC transport (tonic), authenticated from the stream's metadata.
struct GrpcWorkerStream {
    state: AppState,
}

type GrpcOutbound = Pin<Box<dyn Stream<Item = Result<pb::EngineMessage, Status>> + Send>>;

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match e.code {
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::Unauthenticated => tonic::Code::Unauthenticated,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::Aborted => tonic::Code::Aborted,
            Code::FailedPrecondition => tonic::Code::FailedPrecondition,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Code::Unimplemented => tonic::Code::Unimplemented,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::Internal => tonic::Code::Internal,
        };
        Status::new(code, e.message)
    }
}

#[tonic::async_trait]
impl WorkerService for GrpcWorkerStream {
    type ConnectStream = GrpcOutbound;

    async fn connect(
        &self,
        request: tonic::Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<tonic::Response<Self::ConnectStream>, Status> {
        let headers = request.metadata().clone().into_headers();
        let ctx = authorize(&self.state, &headers, "Connect").await?;
        let inbound = request.into_inner().map(|m| {
            m.map_err(|s| ApiError::invalid(format!("the worker stream broke: {}", s.message())))
        });
        let mut outbound =
            session::open(self.state.engine.clone(), ctx.env, Box::pin(inbound)).await?;
        let stream = futures::stream::poll_fn(move |cx| outbound.poll_recv(cx))
            .map(|m| m.map_err(Status::from));
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
