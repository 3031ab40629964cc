"""Pub/sub through ironflow-py's `IronflowRPC.pubsub`: consumer groups (create / get / list / update /
delete), members joined with the `JoinConsumerGroup` server stream sharing messages (each delivered to
exactly one member), `AckEvent` ack / nak (redelivery), the `Subscribe` server stream with replay, and
live messages crossing from one node to another over NATS (`--nats-url`).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ironflow.rpc import IronflowRPCError, v1
from protobuf.wkt import Struct

import ifconf
from ifconf import Server

STREAM_TIMEOUT = 60.0


def publish(rpc: Any, topic: str, data: dict[str, Any]) -> v1.PublishResponse:
    return rpc.pubsub.publish(v1.PublishRequest(topic=topic, data=Struct.from_python(data)))


def test_consumer_group_lifecycle(rpc: Any, uid: str) -> None:
    name = f"{uid}-billing"
    created = rpc.pubsub.create_consumer_group(
        v1.CreateConsumerGroupRequest(
            name=name,
            pattern=f"{uid}.orders.*",
            ack_mode=v1.AckMode.MANUAL,
            max_redeliveries=4,
            redeliver_delay_ms=250,
        )
    )
    assert created.name == name and created.pattern == f"{uid}.orders.*"
    assert created.max_redeliveries == 4 and created.redeliver_delay_ms == 250
    assert created.max_inflight == 100  # zero means the default
    assert created.status == v1.ConsumerGroupStatus.ACTIVE
    assert created.id

    with pytest.raises(IronflowRPCError) as dup:
        rpc.pubsub.create_consumer_group(v1.CreateConsumerGroupRequest(name=name, pattern="x"))
    assert dup.value.code == "already_exists"
    with pytest.raises(IronflowRPCError) as bad:
        rpc.pubsub.create_consumer_group(v1.CreateConsumerGroupRequest(name=f"{uid}-bad", pattern="a..b"))
    assert bad.value.code == "invalid_argument" and "pattern" in str(bad.value)

    got = rpc.pubsub.get_consumer_group(v1.GetConsumerGroupRequest(name=name))
    assert got.id == created.id
    listed = rpc.pubsub.list_consumer_groups(v1.ListConsumerGroupsRequest())
    assert name in [g.name for g in listed.groups]

    paused = rpc.pubsub.update_consumer_group(
        v1.UpdateConsumerGroupRequest(
            group=v1.ConsumerGroup(name=name, status=v1.ConsumerGroupStatus.PAUSED),
        )
    )
    assert paused.status == v1.ConsumerGroupStatus.PAUSED
    assert paused.max_redeliveries == 4  # unset fields keep their values

    rpc.pubsub.delete_consumer_group(v1.DeleteConsumerGroupRequest(name=name))
    with pytest.raises(IronflowRPCError) as gone:
        rpc.pubsub.get_consumer_group(v1.GetConsumerGroupRequest(name=name))
    assert gone.value.code == "not_found"


def test_three_members_share_300_messages(server: Server, rpc: Any, uid: str) -> None:
    group = f"{uid}-workers"
    topic = f"{uid}.jobs"
    rpc.pubsub.create_consumer_group(
        v1.CreateConsumerGroupRequest(name=group, pattern=f"{topic}.>", max_inflight=20)
    )
    received: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    joined = threading.Barrier(4)

    def member(consumer: str) -> None:
        client = server.rpc()
        got: list[int] = []
        try:
            stream: Iterator[v1.SubscriptionEvent] = client.pubsub.join_consumer_group(
                v1.JoinConsumerGroupRequest(group_name=group, consumer_id=consumer), timeout=STREAM_TIMEOUT
            )
            joined.wait(timeout=30)
            for event in stream:
                client.pubsub.ack_event(
                    v1.AckEventRequest(group_name=group, consumer_id=consumer, event_id=event.event_id,
                                       ack_type=v1.AckType.ACK)
                )
                if event.topic.endswith(".stop"):
                    break
                got.append(int(event.data.to_python()["i"]))
            stream.close()
        except BaseException as exc:  # noqa: BLE001 — reported to the main thread
            with lock:
                errors.append(exc)
        finally:
            with lock:
                received[consumer] = got
            client.close()

    threads = [threading.Thread(target=member, args=(f"m{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    joined.wait(timeout=30)
    # The streams are open once the members start reading; messages published before a member's
    # first claim wait in the group's queue, so nothing here depends on timing.
    for i in range(300):
        publish(rpc, f"{topic}.{i % 5}", {"i": i})
    # One stop message per member, queued after every job: a member leaves at its first stop, and
    # whatever else it held goes back to the others, so each member takes exactly one stop.
    for _ in range(3):
        publish(rpc, f"{topic}.stop", {})
    for t in threads:
        t.join(timeout=STREAM_TIMEOUT)
        assert not t.is_alive(), "a member did not stop"
    assert not errors, errors
    everything = [i for got in received.values() for i in got]
    assert sorted(everything) == list(range(300)), "each message exactly once across the members"


def test_nak_redelivers_through_ack_event(server: Server, rpc: Any, uid: str) -> None:
    group = f"{uid}-nak"
    topic = f"{uid}.retry"
    rpc.pubsub.create_consumer_group(v1.CreateConsumerGroupRequest(name=group, pattern=topic))
    client = server.rpc()
    try:
        stream = client.pubsub.join_consumer_group(
            v1.JoinConsumerGroupRequest(group_name=group, consumer_id="solo"), timeout=STREAM_TIMEOUT
        )
        sent = publish(rpc, topic, {"n": 1})
        attempts = []
        for event in stream:
            assert event.event_id == sent.event_id
            attempts.append(event.delivery_attempt)
            ack_type = v1.AckType.NAK if len(attempts) < 3 else v1.AckType.ACK
            client.pubsub.ack_event(
                v1.AckEventRequest(group_name=group, consumer_id="solo", event_id=event.event_id,
                                   ack_type=ack_type)
            )
            if ack_type == v1.AckType.ACK:
                break
        stream.close()
        assert attempts == [1, 2, 3]
        with pytest.raises(IronflowRPCError) as settled:
            client.pubsub.ack_event(
                v1.AckEventRequest(group_name=group, consumer_id="solo", event_id=sent.event_id,
                                   ack_type=v1.AckType.ACK)
            )
        assert settled.value.code == "not_found"
    finally:
        client.close()


def test_subscribe_stream_replays_then_follows(server: Server, rpc: Any, uid: str) -> None:
    topic = f"{uid}.feed"
    first = [publish(rpc, topic, {"n": n}) for n in range(3)]
    client = server.rpc()
    try:
        stream = client.pubsub.subscribe(
            v1.SubscribeRequest(pattern=topic, options=v1.SubscribeOptions(replay=2)), timeout=STREAM_TIMEOUT
        )
        seen = []
        live_sent = None
        for event in stream:
            seen.append(event.sequence)
            if len(seen) == 2:
                # Replay done: what is published now arrives live.
                live_sent = publish(rpc, topic, {"n": 3})
            if len(seen) == 3:
                break
        stream.close()
        assert live_sent is not None
        assert seen == [first[1].sequence, first[2].sequence, live_sent.sequence]
    finally:
        client.close()

    with pytest.raises(IronflowRPCError) as bad:
        for _ in rpc.pubsub.subscribe(v1.SubscribeRequest(pattern="a..b"), timeout=10.0):
            pass
    assert bad.value.code == "invalid_argument"


def test_live_messages_cross_nodes_over_nats(postgres_admin: str, nats_url: str, uid: str) -> None:
    """Two nodes on one Postgres with `--nats-url`: a subscriber on the second sees, live and once each,
    what is published on the first (with NATS the second node takes live copies only from NATS)."""
    args = ("--nats-url", nats_url)
    first, db = ifconf.start_server("postgres", args)
    second = Server(backend="postgres", workdir=Path(tempfile.mkdtemp(prefix="ironflow-conf-postgres-")),
                    db_url=first.db_url, extra_args=list(args))
    topic = f"{uid}.fan"
    try:
        second.key_file.write_text(first.api_key)  # one database, one tenancy: the first boot's key
        second.start()
        publisher, subscriber = first.rpc(), second.rpc()
        try:
            anchor = publish(publisher, topic, {"n": 0})
            stream = subscriber.pubsub.subscribe(
                v1.SubscribeRequest(pattern=topic, options=v1.SubscribeOptions(replay=1)), timeout=STREAM_TIMEOUT
            )
            seen: list[tuple[int, int]] = []
            sent = [anchor.sequence]
            for event in stream:
                seen.append((event.sequence, int(event.data.to_python()["n"])))
                if len(seen) == 1:
                    # The replayed anchor came from the database; what follows is live, from the other node.
                    sent += [publish(publisher, topic, {"n": n}).sequence for n in (1, 2, 3)]
                if len(seen) == 4:
                    break
            stream.close()
            assert seen == list(zip(sent, [0, 1, 2, 3], strict=True)), seen
        finally:
            publisher.close()
            subscriber.close()
    finally:
        second.kill()
        shutil.rmtree(second.workdir, ignore_errors=True)
        ifconf.cleanup(first, db)


def test_topics_are_listed_with_their_stats(rpc: Any, uid: str) -> None:
    topic = f"{uid}.stats.orders"
    group = rpc.pubsub.create_consumer_group(v1.CreateConsumerGroupRequest(name=f"{uid}-stats", pattern=f"{uid}.stats.*"))
    sent = [publish(rpc, topic, {"n": n}) for n in range(3)]
    publish(rpc, f"{uid}.stats.other", {"n": 9})

    listed = {t.name: t for t in rpc.pubsub.list_topics(v1.ListTopicsRequest()).topics}
    assert listed[topic].message_count == 3, listed[topic]
    assert listed[topic].consumer_count == 1
    assert listed[topic].first_message_at is not None and listed[topic].last_message_at is not None
    assert listed[f"{uid}.stats.other"].message_count == 1

    stats = rpc.pubsub.get_topic_stats(v1.GetTopicStatsRequest(topic=topic))
    assert stats.name == topic and stats.message_count == 3 and stats.consumer_count == 1
    assert (stats.first_seq, stats.last_seq) == (sent[0].sequence, sent[-1].sequence), stats
    assert stats.lag == 3, "the group has acked none of the three"

    none = rpc.pubsub.get_topic_stats(v1.GetTopicStatsRequest(topic=f"{uid}.stats.never"))
    assert none.message_count == 0 and none.lag == 0
    with pytest.raises(IronflowRPCError) as bad:
        rpc.pubsub.get_topic_stats(v1.GetTopicStatsRequest(topic="a..b"))
    assert bad.value.code == "invalid_argument"
    rpc.pubsub.delete_consumer_group(v1.DeleteConsumerGroupRequest(name=group.name))


def test_pubsub_emit_triggers_functions(rpc: Any, uid: str) -> None:
    ifconf.register(rpc, f"{uid}-on-emit", [f"{uid}.emitted"])
    out = rpc.pubsub.emit(v1.EmitRequest(event=f"{uid}.emitted", data=Struct.from_python({"a": 1})))
    assert out.event_id and len(out.run_ids) == 1, out
    again = rpc.pubsub.emit(v1.EmitRequest(event=f"{uid}.emitted", data=Struct.from_python({"a": 1}),
                                           idempotency_key=f"{uid}-k"))
    repeat = rpc.pubsub.emit(v1.EmitRequest(event=f"{uid}.emitted", idempotency_key=f"{uid}-k"))
    assert repeat.event_id == again.event_id and list(repeat.run_ids) == list(again.run_ids)
    with pytest.raises(IronflowRPCError) as bad:
        rpc.pubsub.emit(v1.EmitRequest(event="a..b"))
    assert bad.value.code == "invalid_argument"


def test_subscribe_with_a_consumer_group_joins_it(server: Server, rpc: Any, uid: str) -> None:
    group = f"{uid}-subgroup"
    topic = f"{uid}.subgroup.orders"
    rpc.pubsub.create_consumer_group(
        v1.CreateConsumerGroupRequest(name=group, pattern=topic, ack_mode=v1.AckMode.MANUAL))
    sent = [publish(rpc, topic, {"n": n}) for n in range(2)]  # queued for the group until a member claims
    client = server.rpc()
    try:
        stream = client.pubsub.subscribe(
            v1.SubscribeRequest(pattern=topic, options=v1.SubscribeOptions(consumer_group=group)),
            timeout=STREAM_TIMEOUT)
        got = []
        for event in stream:
            got.append(event)
            if len(got) == 2:
                break
        assert [e.sequence for e in got] == [s.sequence for s in sent], got
        member = got[0].subscription_id
        assert member, "the stream names the member to ack as"
        rpc.pubsub.ack_event(v1.AckEventRequest(group_name=group, consumer_id=member, event_id=got[0].event_id,
                                                ack_type=v1.AckType.ACK))
        assert rpc.pubsub.get_topic_stats(v1.GetTopicStatsRequest(topic=topic)).lag == 1, "one left unacked"
        stream.close()
    finally:
        client.close()
    with pytest.raises(IronflowRPCError) as missing:
        for _ in rpc.pubsub.subscribe(
                v1.SubscribeRequest(pattern=topic, options=v1.SubscribeOptions(consumer_group=f"{uid}-nope")),
                timeout=10.0):
            pass
    assert missing.value.code == "not_found"
    # A viewer may subscribe to topics but not join a group (that takes messages from its members).
    viewer = server.rest().api_keys_create({"name": f"viewer-{uid}", "role_ids": ["viewer"]})["key"]
    with server.rpc(api_key=viewer) as watcher:
        with pytest.raises(IronflowRPCError) as refused:
            for _ in watcher.pubsub.subscribe(
                    v1.SubscribeRequest(pattern=topic, options=v1.SubscribeOptions(consumer_group=group)),
                    timeout=10.0):
                pass
        assert refused.value.code == "permission_denied", refused.value


def test_subscribe_bidirectional_joins_and_acks_on_one_stream(server: Server, rpc: Any, uid: str) -> None:
    """The SDK's generated `PubSubServiceClient.subscribe_bidirectional` over HTTP/2: join, messages,
    acks answered by `ack_result` (a NAK redelivers, an unknown id is NOT_FOUND), all on one stream."""
    import asyncio

    import pyqwest
    from ironflow._gen.pubsub_connect import PubSubServiceClient
    from ironflow._gen.pubsub_pb import (
        JoinConsumerGroupRequest,
        SubscribeBidirectionalRequest,
        SubscriptionAck,
    )
    from protobuf import Oneof

    group = f"{uid}-bidi"
    topic = f"{uid}.bidi.orders"
    rpc.pubsub.create_consumer_group(
        v1.CreateConsumerGroupRequest(name=group, pattern=topic, ack_mode=v1.AckMode.MANUAL))
    sent = [publish(rpc, topic, {"n": n}) for n in range(2)]

    async def conversation() -> tuple[Any, list[tuple[str, int]], list[Any]]:
        http = pyqwest.Client(transport=pyqwest.HTTPTransport(http_version=pyqwest.HTTPVersion.HTTP2))
        client = PubSubServiceClient(server.url, http_client=http)
        outbox: asyncio.Queue[SubscribeBidirectionalRequest | None] = asyncio.Queue()
        await outbox.put(SubscribeBidirectionalRequest(payload=Oneof(
            "join", JoinConsumerGroupRequest(group_name=group, consumer_id="bidi-1"))))

        async def requests():  # noqa: ANN202
            while (item := await outbox.get()) is not None:
                yield item

        def ack(event_id: str, ack_id: int, ack_type: Any) -> SubscribeBidirectionalRequest:
            return SubscribeBidirectionalRequest(payload=Oneof(
                "ack", SubscriptionAck(event_id=event_id, ack_type=ack_type, ack_id=ack_id)))

        joined = None
        deliveries: list[tuple[str, int]] = []
        results: list[Any] = []
        stream = client.subscribe_bidirectional(
            requests(), headers={"Authorization": f"Bearer {server.api_key}"}, timeout_ms=20_000)
        from ironflow._gen.pubsub_pb import AckType
        async for message in stream:
            kind, value = message.payload.field, message.payload.value
            if kind == "joined":
                joined = value
            elif kind == "event":
                deliveries.append((value.event_id, value.delivery_attempt))
                first_try = value.event_id == sent[0].event_id and value.delivery_attempt == 1
                await outbox.put(ack(value.event_id, len(deliveries), AckType.NAK if first_try else AckType.ACK))
            elif kind == "ack_result":
                results.append(value)
                if len(results) == 3:
                    await outbox.put(ack("no-such-message", 99, AckType.ACK))
                if len(results) == 4:
                    break
        await outbox.put(None)
        return joined, deliveries, results

    joined, deliveries, results = asyncio.run(asyncio.wait_for(conversation(), 30))
    assert joined is not None and joined.group_name == group and joined.subscription_id == "bidi-1", joined
    ids = [s.event_id for s in sent]
    assert sorted(set(d[0] for d in deliveries)) == sorted(ids), deliveries
    assert (ids[0], 2) in deliveries, f"the NAKed message comes again: {deliveries}"
    from ironflow._gen.pubsub_pb import AckResultCode
    assert [r.code for r in results[:3]] == [AckResultCode.OK] * 3, results
    assert results[3].ack_id == 99 and results[3].code == AckResultCode.NOT_FOUND, results[3]
    assert rpc.pubsub.get_topic_stats(v1.GetTopicStatsRequest(topic=topic)).lag == 0
