"""What the Redis broker promises beyond the conformance kit: poison, replays, cancellation, key hygiene."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest
import redis.asyncio as redis
from redis.crc import key_slot

from servers import blocked_in_blpop
from tasqueue.broker import Delivery, Envelope
from tasqueue.testing import eventually
from tasqueue_redis import QueueStats, RedisBroker, _lanes, _lua

pytestmark = pytest.mark.asyncio
Q = "q"


def keys_of(broker: RedisBroker, queue: str = Q) -> dict[str, str]:
    base = f"{broker._prefix}:{{{queue}}}:"
    return {name: base + name for name in ("pending", "delayed", "active", "data", "meta", "state", "wake", "sent:")}


async def fetch_all(broker: RedisBroker, count: int, *, timeout: float = 10.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += await broker.fetch(Q, count - len(got), timeout=timeout)
    return got


async def test_bytes_pushed_by_hand_become_deliveries_under_a_stable_id(redis_broker: RedisBroker) -> None:
    k = keys_of(redis_broker)
    garbage = b"\x00\xff" + bytes(range(256))
    await redis_broker.enqueue(Q, [Envelope("good", b"ok")])
    await redis_broker.client.lpush(k["pending"], garbage, "ghost", garbage)
    assert await redis_broker.get_pending(Q) == [b"ok", garbage, b"ghost", garbage]

    got = await fetch_all(redis_broker, 3)
    raw_id = "raw:" + hashlib.sha1(garbage).hexdigest()
    # The same bytes twice are one message (the second copy is a duplicate of a held id).
    assert [(d.id, d.data, d.deliveries) for d in got] == [("good", b"ok", 1), (raw_id, garbage, 1), ("ghost", b"ghost", 1)]
    assert await redis_broker.fetch(Q, 5, timeout=0.1) == []
    await redis_broker.ack(Q, got)
    assert await redis_broker.stats(Q) == QueueStats(0, 0, 0)


async def test_a_cancelled_fetch_hands_its_claim_back_at_once(redis_server, prefix: str) -> None:
    # A long lease: anything not handed back would only come back after 30 s, failing the test.
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix, visibility_timeout=30)
    ids = [f"m{n}" for n in range(300)]
    await broker.enqueue(Q, [Envelope(i, i.encode()) for i in ids])
    rng = random.Random(7)
    taken: list[Delivery] = []
    cancelled = 0
    for _ in range(60):
        fetching = asyncio.create_task(broker.fetch(Q, 5, timeout=1))
        for _ in range(rng.randrange(6)):
            await asyncio.sleep(0)  # cancel at a different point of the fetch each time
        fetching.cancel()
        try:
            taken += await fetching
        except asyncio.CancelledError:
            cancelled += 1
    await asyncio.gather(*broker._background)
    rest = await fetch_all(broker, len(ids) - len(taken), timeout=10)
    everything = taken + rest
    assert sorted(d.id for d in everything) == sorted(ids)
    assert {d.deliveries for d in everything} == {1}  # an undone claim does not count as a delivery
    assert cancelled > 0
    await broker.ack(Q, everything)
    await broker.close()


async def test_a_fetch_cancelled_while_idle_stops_waiting_at_once(redis_server, prefix: str) -> None:
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix, visibility_timeout=30)
    raw = redis.Redis.from_url(redis_server.url)
    for _ in range(3):
        fetching = asyncio.create_task(broker.fetch(Q, 5, timeout=20))
        await eventually(lambda: blocked_in_blpop(raw))
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        # Its wait blocks for 2 s at a time; the clean-up unblocks it instead of waiting that out.
        async with asyncio.timeout(1):
            await asyncio.gather(*broker._background)
        assert not await blocked_in_blpop(raw)
    await raw.aclose()
    await broker.close()


async def test_without_the_client_command_a_waiting_fetch_still_works(redis_server, prefix: str) -> None:
    """Managed Redis often forbids CLIENT: fetch must not need it, and a cancelled wait then runs out."""
    raw = redis.Redis.from_url(redis_server.url)
    user = f"noclient-{prefix}"
    await raw.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-client")
    url = redis_server.url.replace("redis://", f"redis://{user}:pw@")
    broker = RedisBroker.from_url(url, prefix=prefix, visibility_timeout=4)  # waits block for 1 s
    fetching = asyncio.create_task(broker.fetch(Q, 5, timeout=10))
    await eventually(lambda: blocked_in_blpop(raw))
    await broker.enqueue(Q, [Envelope("a", b"1")])
    (got,) = await fetching
    await broker.ack(Q, [got])

    fetching = asyncio.create_task(broker.fetch(Q, 5, timeout=10))
    await eventually(lambda: blocked_in_blpop(raw))
    fetching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetching
    await broker.enqueue(Q, [Envelope("b", b"2")])  # wakes the orphaned wait, whose claim takes "b"
    await asyncio.gather(*broker._background)  # ...and hands it back
    (again,) = await fetch_all(broker, 1, timeout=3)  # long before a 4 s lease could run out
    assert (again.id, again.deliveries) == ("b", 1)
    await broker.ack(Q, [again])
    await raw.execute_command("ACL", "DELUSER", user)
    await raw.aclose()
    await broker.close()


async def test_a_fetch_cancelled_while_waiting_gives_back_what_a_racing_wake_leased(redis_server, prefix: str) -> None:
    """A waiting fetch has its claim queued behind the BLPOP: a wake-up that lands as the fetch is
    cancelled leases messages nobody will read. They must come back at once, not after the lease."""
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix, visibility_timeout=30)
    raw = redis.Redis.from_url(redis_server.url)
    everything: list[Delivery] = []
    cancelled = 0
    for n in range(40):
        fetching = asyncio.create_task(broker.fetch(Q, 5, timeout=20))
        await eventually(lambda: blocked_in_blpop(raw))
        await broker.enqueue(Q, [Envelope(f"m{n}", b"x")])  # the wake has happened: the claim ran
        for _ in range(n % 4):
            await asyncio.sleep(0)  # and its reply is on its way, or read, or being read
        fetching.cancel()
        try:
            everything += await fetching
        except asyncio.CancelledError:
            cancelled += 1
            # Far sooner than the 30 s lease: the cancelled wait was ended and its claim given back.
            everything += await fetch_all(broker, 1, timeout=5)
        await asyncio.gather(*broker._background)
    assert [d.id for d in everything] == [f"m{n}" for n in range(40)]
    assert {d.deliveries for d in everything} == {1}  # a claim given back is not a delivery
    assert cancelled > 0
    assert not await blocked_in_blpop(raw)
    await broker.ack(Q, everything)
    await raw.aclose()
    await broker.close()


async def test_without_hiredis_redis_py_packs_the_commands(redis_server, prefix: str) -> None:
    """hiredis is an optional extra: the pure-Python packer must carry single and pipelined commands."""
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix)
    assert broker._lanes is not None
    broker._lanes._pack = _lanes._pack_python
    raw = redis.Redis.from_url(redis_server.url)
    fetching = asyncio.create_task(broker.fetch(Q, 5, timeout=10))
    await eventually(lambda: blocked_in_blpop(raw))  # the pipelined wait-then-claim is on the wire
    await broker.enqueue(Q, [Envelope("a", b"1")])
    (got,) = await fetching
    assert (got.id, got.data, got.deliveries) == ("a", b"1", 1)
    await broker.ack(Q, [got])
    assert await broker.stats(Q) == QueueStats(0, 0, 0)
    await raw.aclose()
    await broker.close()


async def test_a_replayed_claim_returns_its_own_leases_again(redis_broker: RedisBroker) -> None:
    """A claim whose reply was lost with its connection is sent again: it must not strand its leases."""
    client, k = redis_broker.client, keys_of(redis_broker)
    await redis_broker.enqueue(Q, [Envelope(f"m{i}", f"{i}".encode()) for i in range(5)])
    claim_keys = [k[name] for name in ("pending", "active", "delayed", "data", "meta", "state", "wake")]
    claim_keys.append(f"{redis_broker._prefix}:{{{Q}}}:claim:replayed")
    args = [3, 30_000, 5_000, 15_000, 1_000]
    first = await _lua.CLAIM(client, claim_keys, args)
    assert len(first[2:]) == 9  # three messages
    replay = await _lua.CLAIM(client, claim_keys, args)
    assert replay[0] == first[0] and replay[2:] == first[2:]  # the same leases, token and counts
    assert await redis_broker.stats(Q) == QueueStats(pending=2, delayed=0, active=3)

    # What the claim no longer holds (acked here) is not handed out again by a later replay.
    token, first_id = first[0], first[2].decode()
    await redis_broker.ack(Q, [Delivery(first_id, first[3], first[4], token)])
    late = await _lua.CLAIM(client, claim_keys, args)
    assert [x.decode() if isinstance(x, bytes) else x for x in late[2::3]] == [i.decode() for i in first[5::3]]
    assert await redis_broker.stats(Q) == QueueStats(pending=2, delayed=0, active=2)


async def test_every_script_can_be_replayed(redis_broker: RedisBroker) -> None:
    """redis-py resends a command after a connection error without knowing whether it ran."""
    client, k = redis_broker.client, keys_of(redis_broker)
    enqueue = [k["pending"], k["delayed"], k["data"], k["wake"], k["sent:"] + "call-1"]
    call = [30_000, "a", b"1", 0, "b", b"2", 0, "c", b"3", 0]
    assert await _lua.ENQUEUE(client, enqueue, call) == 3
    assert await _lua.ENQUEUE(client, enqueue, call) == -1  # the replay recognises its call
    assert await redis_broker.get_pending(Q) == [b"1", b"2", b"3"]

    a, b, c = await fetch_all(redis_broker, 3)
    ack = [k["active"], k["data"], k["meta"]]
    assert await _lua.ACK(client, ack, [a.id, a.receipt]) == 1
    assert await _lua.ACK(client, ack, [a.id, a.receipt]) == 0

    nack = [k["pending"], k["active"], k["delayed"], k["data"], k["meta"], k["wake"]]
    assert await _lua.NACK(client, nack, [0, "r", b.id, b.receipt, b"2-retry"]) == 1
    assert await _lua.NACK(client, nack, [0, "r", b.id, b.receipt, b"2-retry"]) == 0
    assert await redis_broker.get_pending(Q) == [b"2-retry"]  # once, not twice

    extend = [k["active"], k["meta"], k["state"]]
    for _ in range(2):
        assert await _lua.EXTEND(client, extend, [30000, 15000, c.id, c.receipt]) == []
    await redis_broker.ack(Q, [c])
    (again,) = await fetch_all(redis_broker, 1)
    assert (again.id, again.data, again.deliveries) == ("b", b"2-retry", 1)
    await redis_broker.ack(Q, [again])


async def test_a_stale_nack_leaves_the_new_delivery_alone(redis_broker: RedisBroker) -> None:
    await redis_broker.enqueue(Q, [Envelope("x", b"data")])
    (stale,) = await fetch_all(redis_broker, 1)
    (fresh,) = await fetch_all(redis_broker, 1, timeout=redis_broker.visibility_timeout * 10)  # the lease ran out
    await redis_broker.nack(Q, stale, data=b"stale retry")
    await redis_broker.nack(Q, stale)
    assert await redis_broker.extend(Q, [fresh, stale]) == [stale]
    assert await redis_broker.stats(Q) == QueueStats(pending=0, delayed=0, active=1)
    await redis_broker.ack(Q, [fresh])


async def test_acked_messages_leave_no_keys_behind(redis_broker: RedisBroker) -> None:
    n = 2500  # more than one enqueue chunk, claim and ack batch
    await redis_broker.enqueue(Q, [Envelope(f"m{i}", b"x" * 100, 0.2 if i % 5 == 0 else 0.0) for i in range(n)])
    got = await fetch_all(redis_broker, n)
    assert len({d.id for d in got}) == n
    await redis_broker.ack(Q, got)
    left = [key.decode() async for key in redis_broker.client.scan_iter(match=f"{redis_broker._prefix}:*")]
    k = keys_of(redis_broker)
    # Only the queue's bookkeeping stays: the token counter and pause detector, the wake list, the
    # receipt of the last claim (earlier ones were deleted by the next claim) and those of recent
    # enqueue calls, which expire.
    receipts = {key for key in left if key.startswith(f"{redis_broker._prefix}:{{{Q}}}:claim:")}
    assert len(receipts) <= 1
    for key in receipts:
        assert 0 < await redis_broker.client.pttl(key) <= 10_000
    sent = {key for key in left if key.startswith(k["sent:"])}
    assert sent  # the enqueue calls' receipts
    for key in sent:
        assert 0 < await redis_broker.client.pttl(key) <= 60_000
    control = {f"{redis_broker._prefix}:{{control}}:queues"}  # the Inspector's set of queue names
    assert set(left) - receipts - sent <= {k["state"], k["wake"], *control}


async def test_dedupe_holds_while_queued_delayed_or_leased_and_ends_with_the_ack(redis_broker: RedisBroker) -> None:
    await redis_broker.enqueue(Q, [Envelope("later", b"1", 30.0), Envelope("now", b"2")])
    await redis_broker.enqueue(Q, [Envelope("later", b"other"), Envelope("now", b"other")])
    assert sorted(await redis_broker.get_pending(Q)) == [b"1", b"2"]
    (now,) = await fetch_all(redis_broker, 1)
    await redis_broker.enqueue(Q, [Envelope("now", b"while leased")])
    assert await redis_broker.stats(Q) == QueueStats(pending=0, delayed=1, active=1)
    await redis_broker.ack(Q, [now])
    await redis_broker.enqueue(Q, [Envelope("now", b"again")])
    (again,) = await fetch_all(redis_broker, 1)
    assert (again.data, again.deliveries) == (b"again", 1)
    await redis_broker.ack(Q, [again])


async def test_keys_of_a_queue_share_its_hash_tag(redis_broker: RedisBroker) -> None:
    queue = "orders{eu}"
    await redis_broker.enqueue(queue, [Envelope("a", b"1"), Envelope("b", b"2", 10.0)])
    got = await redis_broker.fetch(queue, 1, timeout=1)
    keys = [key.decode() async for key in redis_broker.client.scan_iter(match=f"{redis_broker._prefix}:*")]
    keys = [key for key in keys if ":{control}:" not in key]  # the Inspector's keys live apart
    assert len(keys) >= 6
    assert all(key.startswith(f"{redis_broker._prefix}:{{orders{{eu}}}}:") for key in keys)
    assert len({key_slot(key.encode()) for key in keys}) == 1  # one Cluster slot for the whole queue
    await redis_broker.ack(queue, got)


@pytest.mark.fault
async def test_after_redis_was_paused_expired_leases_are_held_for_a_lease(make_redis, prefix: str) -> None:
    server = make_redis()
    vt = 2.0
    holder = RedisBroker.from_url(server.url, prefix=prefix, visibility_timeout=vt)
    other = RedisBroker.from_url(server.url, prefix=prefix, visibility_timeout=vt)
    await holder.enqueue(Q, [Envelope("job", b"1")])
    (held,) = await holder.fetch(Q, 1, timeout=1)
    server.pause()
    await asyncio.sleep(vt + 1.0)  # the fault: Redis is stopped past the lease and its grace
    server.resume()
    # The first claim after the pause sees that nobody could renew anything: it takes nothing.
    assert await other.fetch(Q, 1, timeout=0.2) == []
    assert await holder.extend(Q, [held]) == []
    # Without renewals the lease does run out, and the message comes back.
    (again,) = await other.fetch(Q, 1, timeout=vt * 5)
    assert (again.id, again.deliveries) == ("job", 2)
    assert await holder.extend(Q, [held]) == [held]
    await other.ack(Q, [again])
    await holder.close()
    await other.close()


async def test_get_pending_lists_ready_then_delayed(redis_broker: RedisBroker) -> None:
    envelopes = [Envelope("d2", b"d2", 20.0), Envelope("d1", b"d1", 10.0), Envelope("r1", b"r1"), Envelope("r2", b"r2")]
    await redis_broker.enqueue(Q, envelopes)
    assert await redis_broker.get_pending(Q) == [b"r1", b"r2", b"d1", b"d2"]


async def test_a_client_with_a_short_socket_timeout_blocks_less(redis_server, prefix: str) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.4)
    broker = RedisBroker(client, prefix=prefix, visibility_timeout=30)
    assert broker._block <= 0.2  # a blocking read always ends before the socket times out
    assert await broker.fetch(Q, 1, timeout=1.0) == []
    await broker.close()
    await client.aclose()


async def test_connections_killed_by_the_server_are_opened_again(redis_server, prefix: str) -> None:
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix, visibility_timeout=5)
    admin = redis.Redis.from_url(redis_server.url)
    await broker.enqueue(Q, [Envelope("before", b"1")])
    # Drop every connection but this one, as a proxy restart or a network blip would.
    assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
    await broker.enqueue(Q, [Envelope("after", b"2")])
    got = await fetch_all(broker, 2)
    assert [d.id for d in got] == ["before", "after"]
    await admin.client_kill_filter(_type="normal", skipme=True)
    await broker.ack(Q, got)
    assert await broker.stats(Q) == QueueStats(0, 0, 0)
    await broker.close()
    await admin.aclose()


async def test_big_batches_of_results_writes_are_split(redis_results_factory) -> None:
    from tasqueue.results import Write

    results = await redis_results_factory()
    writes = [Write(f"k{i}", b"v%d" % i, version=0) for i in range(2500)]
    done = await results.set_many(writes, success=[f"s{i}" for i in range(3)])
    assert done == [True] * 2500
    assert await results.set_many([Write(w.key, b"other", version=0) for w in writes[:10]]) == [False] * 10
    assert await results.set_many(writes[:10]) == [True] * 10  # the same writes replayed: they happened
    assert await results.get_many(["k0", "k2499"]) == [b"v0", b"v2499"]
    assert await results.get_success() == ["s0", "s1", "s2"]
