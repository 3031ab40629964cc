//! ConnectRPC streaming transport: the enveloped request of a server stream, the request body of a
//! bidirectional stream read message by message as it arrives (`application/connect+proto` or
//! `+json`, optionally gzip per `connect-content-encoding`), a response body of enveloped
//! messages fed from a channel, and the end-of-stream message carrying any error.

use std::convert::Infallible;

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

/// The codec a streaming request's content type names.
fn codec_of(headers: &HeaderMap) -> Result<StreamCodec, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "application/connect+proto" => Ok(StreamCodec::Proto),
        "application/connect+json" => Ok(StreamCodec::Json),
        other => Err(ApiError::unsupported_media(format!(
            "this method streams: send application/connect+proto or application/connect+json (got '{other}')"
        ))),
    }
}

/// One envelope's message, decompressed when its flag says so (gzip per
/// `connect-content-encoding`), at most `max_bytes` once decompressed.
fn unpack(
    headers: &HeaderMap,
    flags: u8,
    payload: &[u8],
    max_bytes: usize,
) -> Result<Bytes, ApiError> {
    if flags & FLAG_COMPRESSED == 0 {
        return Ok(Bytes::copy_from_slice(payload));
    }
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
    super::connect::gunzip(payload, max_bytes, "request message")
}

/// Decodes one message; malformed, or carrying U+0000 in a string, is a 400.
fn decode_message<T: prost::Message + Default + DeserializeOwned + serde::Serialize>(
    codec: StreamCodec,
    message: &[u8],
) -> Result<T, ApiError> {
    let message: T = match codec {
        StreamCodec::Proto => T::decode(message)
            .map_err(|e| ApiError::invalid(format!("malformed protobuf request: {e}")))?,
        StreamCodec::Json if message.iter().all(u8::is_ascii_whitespace) => T::default(),
        StreamCodec::Json => serde_json::from_slice(message)
            .map_err(|e| ApiError::invalid(format!("malformed JSON request: {e}")))?,
    };
    super::connect::check_message(&message)?;
    Ok(message)
}

/// The response (headers now, body as the sink is fed) and the sink to feed it.
fn open_stream(codec: StreamCodec) -> (Response, StreamSink) {
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED_FRAMES);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.content_type()),
    );
    (response, StreamSink { codec, tx })
}

/// A stream that ends at once with `error` (Connect sends stream errors in the end message).
fn failed_stream(codec: StreamCodec, error: &ApiError) -> Response {
    let (response, sink) = open_stream(codec);
    // The channel has room: nothing else was sent.
    let _ = sink.tx.try_send(end_frame(Some(error)));
    response
}

impl StreamRequest {
    pub fn parse(headers: &HeaderMap, body: &[u8], max_bytes: usize) -> Result<Self, ApiError> {
        let codec = codec_of(headers)?;
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
        let message = unpack(headers, flags, payload, max_bytes)?;
        Ok(Self { codec, message })
    }

    /// Decodes the request message; malformed, or carrying U+0000 in a string, is a 400.
    pub fn decode<T: prost::Message + Default + DeserializeOwned + serde::Serialize>(
        &self,
    ) -> Result<T, ApiError> {
        decode_message(self.codec, &self.message)
    }

    /// The response (headers now, body as the sink is fed) and the sink to feed it.
    pub fn open(&self) -> (Response, StreamSink) {
        open_stream(self.codec)
    }

    /// A stream that ends at once with `error` (Connect sends stream errors in the end message).
    pub fn fail(&self, error: &ApiError) -> Response {
        failed_stream(self.codec, error)
    }
}

/// A bidirectional call: the request body is read as enveloped messages while the response
/// streams (HTTP/2 carries both at once).
pub struct BidiRequest {
    codec: StreamCodec,
    headers: HeaderMap,
}

/// The decoded messages of a bidirectional request, as they arrive; an `Err` is the last item.
pub type RequestMessages<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, ApiError>> + Send>>;

impl BidiRequest {
    pub fn parse(headers: &HeaderMap) -> Result<Self, ApiError> {
        Ok(Self {
            codec: codec_of(headers)?,
            headers: headers.clone(),
        })
    }

    /// The request body's messages, each at most `max_bytes`.
    pub fn messages<T>(&self, body: Body, max_bytes: usize) -> RequestMessages<T>
    where
        T: prost::Message + Default + DeserializeOwned + Serialize + Send + 'static,
    {
        struct Reader {
            data: axum::body::BodyDataStream,
            buffer: Vec<u8>,
            codec: StreamCodec,
            headers: HeaderMap,
            failed: bool,
        }
        let reader = Reader {
            data: body.into_data_stream(),
            buffer: Vec::new(),
            codec: self.codec,
            headers: self.headers.clone(),
            failed: false,
        };
        Box::pin(futures::stream::unfold(reader, move |mut r| async move {
            use futures::StreamExt;
            if r.failed {
                return None;
            }
            loop {
                if r.buffer.len() >= 5 {
                    let len =
                        u32::from_be_bytes([r.buffer[1], r.buffer[2], r.buffer[3], r.buffer[4]])
                            as usize;
                    if len > max_bytes {
                        r.failed = true;
                        let e = ApiError::too_large(format!(
                            "a stream message of {len} bytes is over the limit of {max_bytes}"
                        ));
                        return Some((Err(e), r));
                    }
                    if r.buffer.len() >= 5 + len {
                        let flags = r.buffer[0];
                        let frame: Vec<u8> = r.buffer.drain(..5 + len).collect();
                        if flags & FLAG_END_STREAM != 0 {
                            return None;
                        }
                        let item = unpack(&r.headers, flags, &frame[5..], max_bytes)
                            .and_then(|m| decode_message::<T>(r.codec, &m));
                        r.failed = item.is_err();
                        return Some((item, r));
                    }
                }
                match r.data.next().await {
                    Some(Ok(chunk)) => r.buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "reading a Connect stream request failed");
                        return None;
                    }
                    None if r.buffer.is_empty() => return None,
                    None => {
                        r.failed = true;
                        let e = ApiError::invalid("the request stream ended inside a message");
                        return Some((Err(e), r));
                    }
                }
            }
        }))
    }

    pub fn open(&self) -> (Response, StreamSink) {
        open_stream(self.codec)
    }

    pub fn fail(&self, error: &ApiError) -> Response {
        failed_stream(self.codec, error)
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
