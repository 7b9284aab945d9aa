"""``BrokerSuite``: the behaviour every ``tasqueue.broker.Broker`` must have."""

from __future__ import annotations

import asyncio
import os

import pytest

from tasqueue.broker import Broker, Delivery, Envelope
from tasqueue.testing._common import BrokerFixture
from tasqueue.testing._edges import BrokerEdges

Q = "tasqueue:conformance"
OTHER = "tasqueue:conformance-other"


def _env(n: int, delay: float = 0.0) -> Envelope:
    return Envelope(f"id-{n}", f"data-{n}".encode(), delay)


async def _fetch_all(broker: Broker, queue: str, count: int, *, timeout: float = 5.0) -> list[Delivery]:
    """Fetch until ``count`` deliveries came (brokers may hand out fewer than asked per call)."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += await broker.fetch(queue, count - len(got), timeout=timeout)
    return got


@pytest.mark.asyncio
class BrokerSuite(BrokerFixture, BrokerEdges):
    """Subclass and override the ``broker`` fixture (see ``tasqueue.testing``)."""

    async def test_starts_empty(self, broker: Broker) -> None:
        # Sentinel: a fixture that leaks messages between tests makes every other test unreliable.
        assert await broker.get_pending(Q) == []
        assert await broker.fetch(Q, 10, timeout=0.05) == []

    async def test_is_a_broker(self, broker: Broker) -> None:
        assert isinstance(broker, Broker)
        assert broker.visibility_timeout > 0

    async def test_fetch_returns_messages_fifo_with_their_bytes(self, broker: Broker) -> None:
        await broker.enqueue(Q, [_env(n) for n in range(5)])
        got = await _fetch_all(broker, Q, 5)
        assert [d.id for d in got] == [f"id-{n}" for n in range(5)]
        assert [d.data for d in got] == [f"data-{n}".encode() for n in range(5)]
        assert all(d.deliveries == 1 for d in got)

    async def test_fifo_holds_across_many_publishes(self, broker: Broker) -> None:
        for n in range(50):
            await broker.enqueue(Q, [_env(n)])
        got = await _fetch_all(broker, Q, 50)
        assert [d.id for d in got] == [f"id-{n}" for n in range(50)]

    async def test_fetch_takes_at_most_max_count(self, broker: Broker) -> None:
        await broker.enqueue(Q, [_env(n) for n in range(5)])
        first = await broker.fetch(Q, 2, timeout=1.0)
        assert 1 <= len(first) <= 2
        rest = await _fetch_all(broker, Q, 5 - len(first))
        assert sorted(d.id for d in first + rest) == [f"id-{n}" for n in range(5)]

    async def test_binary_payloads_survive(self, broker: Broker) -> None:
        data = bytes(range(256)) * 64 + b"\x00\xff" + os.urandom(1024)
        await broker.enqueue(Q, [Envelope("bin", data)])
        (got,) = await _fetch_all(broker, Q, 1)
        assert got.data == data

    async def test_fetch_on_an_empty_queue_times_out_empty(self, broker: Broker) -> None:
        assert await broker.fetch(Q, 1, timeout=0.2) == []

    async def test_a_waiting_fetch_wakes_for_a_new_message(self, broker: Broker) -> None:
        waiting = asyncio.create_task(broker.fetch(Q, 1, timeout=10.0))
        await asyncio.sleep(0.05)  # let the fetch start waiting; correctness does not depend on it
        await broker.enqueue(Q, [_env(1)])
        async with asyncio.timeout(5.0):
            got = await waiting
        assert [d.id for d in got] == ["id-1"]

    async def test_another_event_loop_in_another_thread_may_use_it(self, broker: Broker) -> None:
        # srv.sync calls a backend from a loop of its own in a background thread, and a
        # module-level Server outlives the loop of each test: nothing may stay bound to one loop.
        self.capabilities.require("any_loop")
        await broker.enqueue(Q, [_env(1)])

        async def elsewhere() -> list[str]:
            got = await _fetch_all(broker, Q, 1)
            await broker.ack(Q, got)
            # A fetch waiting on this loop wakes for an enqueue made on the test's loop.
            return [d.id for d in await broker.fetch(Q, 1, timeout=30.0)]

        waiting = asyncio.create_task(asyncio.to_thread(asyncio.run, elsewhere()))
        await asyncio.sleep(0.2)  # let it start waiting; correctness does not depend on it
        await broker.enqueue(Q, [_env(2)])
        async with asyncio.timeout(10.0):
            assert await waiting == ["id-2"]
        assert await broker.get_pending(Q) == []

    async def test_queues_are_separate(self, broker: Broker) -> None:
        await broker.enqueue(Q, [_env(1)])
        await broker.enqueue(OTHER, [_env(2)])
        (a,) = await _fetch_all(broker, Q, 1)
        (b,) = await _fetch_all(broker, OTHER, 1)
        assert (a.id, b.id) == ("id-1", "id-2")
        await broker.ack(Q, [a])
        await broker.ack(OTHER, [b])

    async def test_acked_messages_are_gone(self, broker: Broker) -> None:
        await broker.enqueue(Q, [_env(1), _env(2)])
        got = await _fetch_all(broker, Q, 2)
        await broker.ack(Q, got)
        assert await broker.get_pending(Q) == []
        assert await broker.fetch(Q, 10, timeout=0.1) == []
        assert [d.id for d in await broker.extend(Q, got)] == ["id-1", "id-2"]

    async def test_leased_messages_are_not_pending_nor_fetched_twice(self, broker: Broker) -> None:
        await broker.enqueue(Q, [_env(1), _env(2)])
        (first,) = await broker.fetch(Q, 1, timeout=1.0)
        assert [p for p in await broker.get_pending(Q)] == [b"data-2"]
        (second,) = await _fetch_all(broker, Q, 1)
        assert second.id == "id-2" and first.id == "id-1"
        assert await broker.fetch(Q, 1, timeout=0.1) == []

    async def test_nack_gives_the_message_back_at_the_front(self, broker: Broker) -> None:
        await broker.enqueue(Q, [_env(1), _env(2)])
        (first,) = await broker.fetch(Q, 1, timeout=1.0)
        await broker.nack(Q, first)
        again = await _fetch_all(broker, Q, 2)
        assert [d.id for d in again] == ["id-1", "id-2"]
        assert again[0].deliveries == 2
        assert again[0].data == b"data-1"

    async def test_nack_with_data_replaces_it_and_restarts_the_count(self, broker: Broker) -> None:
        await broker.enqueue(Q, [_env(1)])
        (first,) = await broker.fetch(Q, 1, timeout=1.0)
        await broker.nack(Q, first, data=b"retry-1")
        (again,) = await _fetch_all(broker, Q, 1)
        assert (again.id, again.data, again.deliveries) == ("id-1", b"retry-1", 1)

    async def test_nack_with_delay_holds_the_message(self, broker: Broker) -> None:
        self.capabilities.require("delayed")
        await broker.enqueue(Q, [_env(1)])
        (first,) = await broker.fetch(Q, 1, timeout=1.0)
        await broker.nack(Q, first, data=b"later", delay=0.6)
        assert await broker.fetch(Q, 1, timeout=0.1) == []
        (again,) = await _fetch_all(broker, Q, 1)
        assert again.data == b"later"

    async def test_delayed_messages_wait_their_turn(self, broker: Broker) -> None:
        self.capabilities.require("delayed")
        await broker.enqueue(Q, [_env(1, delay=0.8), _env(2)])
        pending = await broker.get_pending(Q)
        assert sorted(pending) == [b"data-1", b"data-2"]
        (now,) = await broker.fetch(Q, 5, timeout=0.2)
        assert now.id == "id-2"
        await broker.ack(Q, [now])
        (later,) = await _fetch_all(broker, Q, 1)
        assert later.id == "id-1"

    async def test_many_messages_due_at_once_are_all_delivered(self, broker: Broker) -> None:
        # The Go original moved one due message per second; every due message must come.
        self.capabilities.require("delayed")
        await broker.enqueue(Q, [_env(n, delay=0.3) for n in range(200)])
        got: list[str] = []
        async with asyncio.timeout(10.0):
            while len(got) < 200:
                batch = await broker.fetch(Q, 200 - len(got), timeout=10.0)
                # Acked as they come, as a worker would: held unacked while the rest is promoted
                # (longer than the visibility timeout on a loaded machine), they would come again.
                await broker.ack(Q, batch)
                got += [d.id for d in batch]
        assert sorted(got) == sorted(f"id-{n}" for n in range(200))  # each once: none twice, none lost

    async def test_enqueue_skips_ids_already_held(self, broker: Broker) -> None:
        self.capabilities.require("dedupe")
        await broker.enqueue(Q, [_env(1)])
        await broker.enqueue(Q, [Envelope("id-1", b"other")])
        (got,) = await _fetch_all(broker, Q, 1)
        await broker.enqueue(Q, [Envelope("id-1", b"while-leased")])
        assert got.data == b"data-1"
        assert await broker.fetch(Q, 5, timeout=0.2) == []

    async def test_an_expired_lease_is_delivered_again(self, broker: Broker) -> None:
        self.capabilities.require("lease_expiry")
        await broker.enqueue(Q, [_env(1)])
        (first,) = await broker.fetch(Q, 1, timeout=1.0)
        # Nobody settles it: a dead worker. It must come back, counted.
        (again,) = await _fetch_all(broker, Q, 1, timeout=broker.visibility_timeout * 10 + 5)
        assert (again.id, again.data, again.deliveries) == ("id-1", b"data-1", 2)
        # The dead worker's late ack must not remove the new delivery.
        await broker.ack(Q, [first])
        assert await broker.extend(Q, [again]) == []
        assert await broker.extend(Q, [first]) == [first]
        await broker.ack(Q, [again])
        assert await broker.get_pending(Q) == []

    async def test_extend_keeps_a_lease_past_the_visibility_timeout(self, broker: Broker) -> None:
        self.capabilities.require("lease_expiry")
        await broker.enqueue(Q, [_env(1)])
        (held,) = await broker.fetch(Q, 1, timeout=1.0)
        vt = broker.visibility_timeout
        stolen = asyncio.create_task(broker.fetch(Q, 1, timeout=vt * 2.5))
        while not stolen.done():
            assert await broker.extend(Q, [held]) == []
            await asyncio.sleep(vt / 4)  # a heartbeat's cadence
        assert stolen.result() == []
        await broker.ack(Q, [held])

    async def test_a_cancelled_fetch_loses_nothing(self, broker: Broker) -> None:
        waiting = asyncio.create_task(broker.fetch(Q, 1, timeout=10.0))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await broker.enqueue(Q, [_env(1)])
        (got,) = await _fetch_all(broker, Q, 1, timeout=broker.visibility_timeout * 10 + 5)
        assert got.id == "id-1"

    async def test_pending_lists_waiting_messages_oldest_first(self, broker: Broker) -> None:
        await broker.enqueue(Q, [_env(n) for n in range(3)])
        assert await broker.get_pending(Q) == [b"data-0", b"data-1", b"data-2"]
        assert await broker.get_pending(OTHER) == []
