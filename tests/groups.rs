//! Consumer groups on both backends: CRUD over Connect, members sharing messages over `/ws`
//! (each message to exactly one member), nak redelivery, dead letters after the redelivery
//! limit, a leaving member's messages going to the others, and the Connect
//! `JoinConsumerGroup` stream with `AckEvent`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::ws::{Socket, connect, connect_to, next_frame, send};
use common::{Backend, TestServer};
use serde_json::{Value, json};

async fn join(socket: &mut Socket, group: &str, pattern: &str) -> Value {
    send(
        socket,
        json!({"type": "subscribe", "subscription": {"pattern": pattern,
               "options": {"consumerGroup": group, "ackMode": "manual"}}}),
    )
    .await;
    next_frame(socket).await
}

async fn publish(server: &TestServer, topic: &str, data: Value) -> String {
    let (status, body) = (*server)
        .pubsub_json("Publish", json!({"topic": topic, "data": data}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["eventId"].as_str().expect("eventId").to_owned()
}

async fn group_crud(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, created) = server
        .pubsub_json(
            "CreateConsumerGroup",
            json!({"name": "billing", "pattern": "orders.*", "ackMode": "ACK_MODE_MANUAL",
               "maxRedeliveries": 3, "metadata": {"team": "payments"}}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["pattern"], "orders.*");
    assert_eq!(created["maxRedeliveries"], 3);
    assert_eq!(created["maxInflight"], 100, "zero takes the default");
    assert_eq!(created["status"], "CONSUMER_GROUP_STATUS_ACTIVE");

    let (status, again) = server
        .pubsub_json(
            "CreateConsumerGroup",
            json!({"name": "billing", "pattern": "x"}),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["code"], "already_exists");

    for (body, names) in [
        (json!({"name": "bad name", "pattern": "a"}), "name"),
        (json!({"name": "g", "pattern": ""}), "pattern"),
        (json!({"name": "g", "pattern": "a..b"}), "pattern"),
        (
            json!({"name": "g", "pattern": "a", "filterExpr": "data.x =="}),
            "filter_expr",
        ),
        (
            json!({"name": "g", "pattern": "a", "maxInflight": 999999}),
            "max_inflight",
        ),
    ] {
        let (status, err) = server
            .pubsub_json("CreateConsumerGroup", body.clone())
            .await;
        assert_eq!(status, 400, "{body} → {err}");
        assert_eq!(err["code"], "invalid_argument");
        assert!(
            err["message"].as_str().unwrap_or_default().contains(names),
            "{err} should name {names}"
        );
    }

    let (status, updated) = server.pubsub_json("UpdateConsumerGroup",
        json!({"group": {"name": "billing", "status": "CONSUMER_GROUP_STATUS_PAUSED", "maxInflight": 5},
               "updateMask": "status"}),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["status"], "CONSUMER_GROUP_STATUS_PAUSED");
    assert_eq!(updated["maxInflight"], 100, "outside the mask: unchanged");
    assert_eq!(updated["pattern"], "orders.*");

    let (_, listed) = server.pubsub_json("ListConsumerGroups", json!({})).await;
    assert_eq!(listed["groups"].as_array().map(Vec::len), Some(1));
    let (_, got) = server
        .pubsub_json("GetConsumerGroup", json!({"name": "billing"}))
        .await;
    assert_eq!(got["metadata"]["team"], "payments");

    let (status, _) = server
        .pubsub_json("DeleteConsumerGroup", json!({"name": "billing"}))
        .await;
    assert_eq!(status, 200);
    let (status, missing) = server
        .pubsub_json("GetConsumerGroup", json!({"name": "billing"}))
        .await;
    assert_eq!(status, 404, "{missing}");
    let history = common::raw_count(
        &server.url,
        "SELECT count(*) FROM history WHERE kind = 'consumer_group.changed'",
    )
    .await;
    assert_eq!(history, 3, "created, updated, deleted");
    server.stop().await;
}

/// Three members share 300 messages: every message reaches exactly one member.
async fn members_share_messages(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server
        .pubsub_json(
            "CreateConsumerGroup",
            json!({"name": "workers", "pattern": "jobs.>", "maxInflight": 20}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut socket = connect(&server).await;
        let joined = join(&mut socket, "workers", "jobs.>").await;
        assert_eq!(joined["success"], true, "{joined}");
        members.push(socket);
    }
    let publisher = {
        let base = server.base.clone();
        let key = server.key.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..300 {
                let response = http
                    .post(format!("{base}/ironflow.v1.PubSubService/Publish"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(json!({"topic": format!("jobs.{}", i % 7), "data": {"i": i}}).to_string())
                    .send()
                    .await
                    .expect("publish sent");
                assert_eq!(response.status(), 200);
            }
        })
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, i64, String)>();
    let mut readers = Vec::new();
    for (n, mut socket) in members.into_iter().enumerate() {
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            loop {
                let frame = next_frame(&mut socket).await;
                assert_eq!(frame["type"], "event", "{frame}");
                assert_eq!(frame["consumerGroup"], "workers");
                let id = frame["eventId"].as_str().expect("eventId").to_owned();
                send(
                    &mut socket,
                    json!({"type": "ack", "eventId": id, "ackType": "ack"}),
                )
                .await;
                if tx
                    .send((n, frame["data"]["i"].as_i64().expect("i"), id))
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let mut seen: HashMap<i64, usize> = HashMap::new();
    let mut per_member = [0usize; 3];
    while seen.len() < 300 {
        let (member, i, _) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("all 300 delivered within 30 s")
            .expect("readers alive");
        assert!(
            seen.insert(i, member).is_none(),
            "message {i} was delivered twice"
        );
        per_member[member] += 1;
    }
    publisher.await.expect("publisher done");
    assert_eq!(per_member.iter().sum::<usize>(), 300);
    for r in readers {
        r.abort();
    }
    server.stop().await;
}

/// A nak'd message comes back (attempt 2); after the redelivery limit it is a dead letter and
/// never delivered again; a terminated message is never delivered again either.
async fn nak_redelivery_and_dead_letters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server
        .pubsub_json(
            "CreateConsumerGroup",
            json!({"name": "retrying", "pattern": "tasks", "maxRedeliveries": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut socket = connect(&server).await;
    assert_eq!(
        join(&mut socket, "retrying", "tasks").await["success"],
        true
    );

    let first = publish(&server, "tasks", json!({"n": 1})).await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["eventId"], first.as_str());
    assert_eq!(frame["deliveryAttempt"], 1);
    send(
        &mut socket,
        json!({"type": "ack", "eventId": first, "ackType": "nak"}),
    )
    .await;
    let again = next_frame(&mut socket).await;
    assert_eq!(
        again["eventId"],
        first.as_str(),
        "nak'd message redelivered"
    );
    assert_eq!(again["deliveryAttempt"], 2);
    // The second nak exhausts max_redeliveries = 1: the message becomes a dead letter.
    send(
        &mut socket,
        json!({"type": "ack", "eventId": first, "ackType": "nak"}),
    )
    .await;
    let second = publish(&server, "tasks", json!({"n": 2})).await;
    let next = next_frame(&mut socket).await;
    assert_eq!(
        next["eventId"],
        second.as_str(),
        "the exhausted message is not delivered a third time: {next}"
    );
    send(
        &mut socket,
        json!({"type": "ack", "eventId": second, "ackType": "term"}),
    )
    .await;
    let third = publish(&server, "tasks", json!({"n": 3})).await;
    let next = next_frame(&mut socket).await;
    assert_eq!(
        next["eventId"],
        third.as_str(),
        "terminated: never again: {next}"
    );
    send(&mut socket, json!({"type": "ack", "eventId": third})).await;

    // Acking something never delivered here is refused clearly.
    send(&mut socket, json!({"type": "ack", "eventId": "nope"})).await;
    let refused = next_frame(&mut socket).await;
    assert_eq!(refused["type"], "error", "{refused}");

    // The member task settles acks after the socket answered the refused one: poll for it.
    common::eventually(
        "the exhausted and the terminated message are dead",
        std::time::Duration::from_secs(10),
        || async {
            let dead = common::raw_count(
                &server.url,
                "SELECT count(*) FROM group_deliveries WHERE state = 'dead'",
            )
            .await;
            (dead == 2).then_some(())
        },
    )
    .await;
    server.stop().await;
}

/// A member that leaves with an unacked message hands it to another member at once.
async fn leaving_member_hands_over(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut first = connect(&server).await;
    // Joining over /ws creates the group on first use.
    let joined = join(&mut first, "handover", "work.*").await;
    assert_eq!(joined["success"], true, "{joined}");
    let id = publish(&server, "work.a", json!({})).await;
    let frame = next_frame(&mut first).await;
    assert_eq!(frame["eventId"], id.as_str());
    let mut second = connect(&server).await;
    assert_eq!(
        join(&mut second, "handover", "work.*").await["success"],
        true
    );
    first.close(None).await.expect("closed");
    let handed = next_frame(&mut second).await;
    assert_eq!(handed["eventId"], id.as_str(), "{handed}");
    assert_eq!(handed["deliveryAttempt"], 2);

    let mismatch = join(&mut second, "handover", "other.*").await;
    assert_eq!(mismatch["success"], false, "{mismatch}");
    assert!(
        mismatch["error"]
            .as_str()
            .unwrap_or_default()
            .contains("work.*")
    );
    server.stop().await;
}

fn envelope(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .expect("test value")
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// Reads enveloped messages off a Connect stream body: (flags, JSON).
struct Frames {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Frames {
    async fn next(&mut self) -> (u8, Value) {
        loop {
            if self.buffer.len() >= 5 {
                let len =
                    u32::from_be_bytes(self.buffer[1..5].try_into().expect("test value")) as usize;
                if self.buffer.len() >= 5 + len {
                    let flags = self.buffer[0];
                    let body: Value =
                        serde_json::from_slice(&self.buffer[5..5 + len]).expect("JSON message");
                    self.buffer.drain(..5 + len);
                    return (flags, body);
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), self.response.chunk())
                .await
                .expect("a message within 15 s")
                .expect("stream readable")
                .expect("stream still open");
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

async fn connect_stream_and_ack_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server
        .pubsub_json(
            "CreateConsumerGroup",
            json!({"name": "streamed", "pattern": "s.*"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let missing = server
        .post("/ironflow.v1.PubSubService/JoinConsumerGroup")
        .header("content-type", "application/connect+json")
        .body(envelope(br#"{"groupName":"nope","consumerId":"c1"}"#))
        .send()
        .await
        .expect("sent");
    let mut frames = Frames {
        response: missing,
        buffer: Vec::new(),
    };
    let (flags, end) = frames.next().await;
    assert_eq!(flags & 2, 2, "an end-of-stream message");
    assert_eq!(end["error"]["code"], "not_found", "{end}");

    let response = server
        .post("/ironflow.v1.PubSubService/JoinConsumerGroup")
        .header("content-type", "application/connect+json")
        .body(envelope(br#"{"groupName":"streamed","consumerId":"c1"}"#))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.headers()["content-type"],
        "application/connect+json"
    );
    let mut frames = Frames {
        response,
        buffer: Vec::new(),
    };
    let mut published = HashSet::new();
    for i in 0..3 {
        published.insert(publish(&server, "s.x", json!({"i": i})).await);
    }
    let mut received = HashSet::new();
    for _ in 0..3 {
        let (flags, event) = frames.next().await;
        assert_eq!(flags, 0);
        assert_eq!(event["topic"], "s.x");
        assert_eq!(event["deliveryAttempt"], 1);
        received.insert(event["eventId"].as_str().expect("test value").to_owned());
    }
    assert_eq!(received, published);
    let nak_id = received.iter().next().expect("test value").clone();
    for id in &received {
        let ack_type = if *id == nak_id {
            "ACK_TYPE_NAK"
        } else {
            "ACK_TYPE_ACK"
        };
        let (status, body) = server.pubsub_json("AckEvent",
            json!({"groupName": "streamed", "consumerId": "c1", "eventId": id, "ackType": ack_type}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, again) = frames.next().await;
    assert_eq!(again["eventId"], nak_id.as_str());
    assert_eq!(again["deliveryAttempt"], 2);
    let (status, body) = server
        .pubsub_json(
            "AckEvent",
            json!({"groupName": "streamed", "eventId": "unknown", "ackType": "ACK_TYPE_ACK"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    server.stop().await;
}

/// Members on two nodes sharing one Postgres: a message published on one node reaches the
/// member on the other (woken over NOTIFY), and still exactly one member gets each message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_two_nodes() {
    let first = TestServer::start(Backend::Postgres).await;
    let second = first.second_node().await;
    let (status, body) = first
        .pubsub_json(
            "CreateConsumerGroup",
            json!({"name": "spread", "pattern": "n.*"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut remote = connect_to(&second.local_addr.to_string(), &first.key).await;
    assert_eq!(join(&mut remote, "spread", "n.*").await["success"], true);
    // Only the member on the second node: the message published on the first must wake it.
    let id = publish(&first, "n.one", json!({})).await;
    let frame = next_frame(&mut remote).await;
    assert_eq!(frame["eventId"], id.as_str(), "{frame}");
    send(&mut remote, json!({"type": "ack", "eventId": id})).await;

    let mut local = connect(&first).await;
    assert_eq!(join(&mut local, "spread", "n.*").await["success"], true);
    let mut published = HashSet::new();
    for i in 0..40 {
        published.insert(publish(&first, "n.many", json!({"i": i})).await);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut readers = Vec::new();
    for mut socket in [remote, local] {
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            loop {
                let frame = next_frame(&mut socket).await;
                let id = frame["eventId"].as_str().expect("eventId").to_owned();
                send(&mut socket, json!({"type": "ack", "eventId": id})).await;
                if tx.send(id).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let mut received = HashSet::new();
    while received.len() < published.len() {
        let id = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("all delivered within 30 s")
            .expect("readers alive");
        assert!(received.insert(id.clone()), "{id} delivered twice");
    }
    assert_eq!(received, published);
    for r in readers {
        r.abort();
    }
    second.shutdown.cancel();
    second.wait().await.expect("second stops");
    first.stop().await;
}

both_backends! {
    crud => group_crud;
    share => members_share_messages;
    nak => nak_redelivery_and_dead_letters;
    handover => leaving_member_hands_over;
    connect_stream => connect_stream_and_ack_event;
}
