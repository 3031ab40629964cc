//! ConnectRPC server-streaming transport: the enveloped request (`application/connect+proto` or
//! `+json`, optionally gzip per `connect-content-encoding`), a response body of enveloped
//! messages fed from a channel, and the end-of-stream message carrying any error.

use std::convert::Infallible;
use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::error::ApiError;

const FLAG_COMPRESSED: u8 = 0b01;
const FLAG_END_STREAM: u8 = 0b10;
/// Frames buffered towards a slow client before the producer waits.
const BUFFERED_FRAMES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamCodec {
    Proto,
    Json,
}

impl StreamCodec {
    fn content_type(self) -> &'static str {
        match self {
            Self::Proto => "application/connect+proto",
            Self::Json => "application/connect+json",
        }
    }
}

/// A decoded server-stream request and the codec to answer in.
pub struct StreamRequest {
    codec: StreamCodec,
    message: Bytes,
}

impl StreamRequest {
    pub fn parse(headers: &HeaderMap, body: &[u8], max_bytes: usize) -> Result<Self, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let codec = match content_type.as_str() {
            "application/connect+proto" => StreamCodec::Proto,
            "application/connect+json" => StreamCodec::Json,
            other => {
                return Err(ApiError::unsupported_media(format!(
                    "this method streams its response: send application/connect+proto or application/connect+json (got '{other}')"
                )));
            }
        };
        if body.len() < 5 {
            return Err(ApiError::invalid(
                "a streaming request body must be one enveloped message (5-byte prefix + message)",
            ));
        }
        let flags = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let Some(payload) = body.get(5..5 + len) else {
            return Err(ApiError::invalid(
                "the request envelope's length is larger than its body",
            ));
        };
        let message = if flags & FLAG_COMPRESSED == 0 {
            Bytes::copy_from_slice(payload)
        } else {
            let encoding = headers
                .get("connect-content-encoding")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("identity")
                .trim()
                .to_ascii_lowercase();
            if encoding != "gzip" {
                return Err(ApiError::invalid(format!(
                    "the request message is compressed with '{encoding}'; only gzip is supported"
                )));
            }
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(payload)
                .take(
                    u64::try_from(max_bytes)
                        .unwrap_or(u64::MAX)
                        .saturating_add(1),
                )
                .read_to_end(&mut out)
                .map_err(|e| ApiError::invalid(format!("malformed gzip request message: {e}")))?;
            if out.len() > max_bytes {
                return Err(ApiError::too_large(format!(
                    "request message is over the limit of {max_bytes} bytes once decompressed"
                )));
            }
            Bytes::from(out)
        };
        Ok(Self { codec, message })
    }

    /// Decodes the request message; malformed, or carrying U+0000 in a string, is a 400.
    pub fn decode<T: prost::Message + Default + DeserializeOwned + serde::Serialize>(
        &self,
    ) -> Result<T, ApiError> {
        let message: T = match self.codec {
            StreamCodec::Proto => T::decode(self.message.as_ref())
                .map_err(|e| ApiError::invalid(format!("malformed protobuf request: {e}")))?,
            StreamCodec::Json if self.message.iter().all(u8::is_ascii_whitespace) => T::default(),
            StreamCodec::Json => serde_json::from_slice(&self.message)
                .map_err(|e| ApiError::invalid(format!("malformed JSON request: {e}")))?,
        };
        super::connect::check_message(&message)?;
        Ok(message)
    }

    /// The response (headers now, body as the sink is fed) and the sink to feed it.
    pub fn open(&self) -> (Response, StreamSink) {
        let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED_FRAMES);
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.codec.content_type()),
        );
        (
            response,
            StreamSink {
                codec: self.codec,
                tx,
            },
        )
    }

    /// A stream that ends at once with `error` (Connect sends stream errors in the end message).
    pub fn fail(&self, error: &ApiError) -> Response {
        let (response, sink) = self.open();
        let frame = end_frame(Some(error));
        // The channel has room: nothing else was sent.
        let _ = sink.tx.try_send(frame);
        response
    }
}

/// Feeds one streaming response.
pub struct StreamSink {
    codec: StreamCodec,
    tx: mpsc::Sender<Bytes>,
}

impl StreamSink {
    /// Sends one message; false when the client has gone.
    pub async fn send<T: prost::Message + Serialize>(&self, message: &T) -> bool {
        let payload = match self.codec {
            StreamCodec::Proto => message.encode_to_vec(),
            StreamCodec::Json => match serde_json::to_vec(message) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "encoding a Connect stream message");
                    return false;
                }
            },
        };
        self.tx.send(envelope(0, &payload)).await.is_ok()
    }

    /// Resolves when the client has gone (the response body was dropped).
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Ends the stream, with `error` when it failed.
    pub async fn finish(self, error: Option<&ApiError>) {
        let _ = self.tx.send(end_frame(error)).await;
    }
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    Bytes::from(out)
}

fn end_frame(error: Option<&ApiError>) -> Bytes {
    let body = match error {
        Some(e) => serde_json::json!({"error": {"code": e.code.as_str(), "message": e.message}}),
        None => serde_json::json!({}),
    };
    envelope(FLAG_END_STREAM, body.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(ct).expect("test value"),
        );
        h
    }

    #[test]
    fn parses_an_enveloped_json_request() {
        let body = envelope(0, br#"{"groupName":"g"}"#);
        let req = StreamRequest::parse(&headers("application/connect+json"), &body, 1024)
            .expect("test value");
        let decoded: crate::proto::v1::JoinConsumerGroupRequest = req.decode().expect("test value");
        assert_eq!(decoded.group_name, "g");
    }

    #[test]
    fn refuses_truncated_and_unary_bodies() {
        let body = envelope(0, b"{}");
        let err = StreamRequest::parse(&headers("application/connect+json"), &body[..4], 1024)
            .err()
            .expect("test value");
        assert!(err.message.contains("enveloped"));
        let err = StreamRequest::parse(&headers("application/connect+json"), &body[..6], 1024)
            .err()
            .expect("test value");
        assert!(err.message.contains("length"));
        let err = StreamRequest::parse(&headers("application/json"), &body, 1024)
            .err()
            .expect("test value");
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn end_frame_carries_the_error() {
        let frame = end_frame(Some(&ApiError::not_found("consumer group 'x' not found")));
        assert_eq!(frame[0], FLAG_END_STREAM);
        let body: serde_json::Value = serde_json::from_slice(&frame[5..]).expect("test value");
        assert_eq!(body["error"]["code"], "not_found");
    }
}
