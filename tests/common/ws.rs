//! A WebSocket client for `/ws` tests: connect with the admin key, read JSON text frames.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::TestServer;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `/ws` on `addr` (`host:port`) with `key`, in the default environment.
pub async fn connect_to(addr: &str, key: &str) -> Socket {
    let url = format!("ws://{addr}/ws?env=default&token={key}");
    tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connects")
        .0
}

pub async fn connect(server: &TestServer) -> Socket {
    connect_to(server.base.trim_start_matches("http://"), &server.key).await
}

/// The next JSON text frame (waiting at most 15 s).
pub async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a frame within 15 s")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON frame");
        }
    }
}

pub async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("sent");
}
