"""The broker protocol: what a queue backend implements to carry jobs from producers to workers.

A broker moves opaque bytes; only tasqueue's core encodes and decodes messages, so a new
message field never needs a plugin release. Delivery is at-least-once: ``fetch`` hands out a
*lease* on each message, the worker renews it with ``extend`` while the handler runs and
settles it with ``ack`` or ``nack``. A message whose lease runs out unsettled (its worker died)
is delivered again, with ``Delivery.deliveries`` one higher, so the core can tell a worker that
keeps dying apart from a handler that raises.

Backends prove they honour this contract with the conformance kit in ``tasqueue.testing``.

Two capabilities are optional, and the core looks them up with ``getattr``: a broker whose
messages live where a results store keeps its records (one Redis, say) may offer
``fused_enqueue(results)``, returning a ``FusedEnqueue`` that stores new jobs' records and
publishes their messages in one step (one round trip per enqueue instead of two), and
``fused_settle(results)``, returning a ``FusedSettle`` that writes a batch of outcomes and acks
the deliveries they end in one step (one round trip per batch instead of two); each returns
``None`` for a store it cannot fuse with. The core uses the first for jobs whose ids it made up,
the second for outcomes that end in a plain ack (no retry, no follow-up jobs to publish first).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

import msgspec

if TYPE_CHECKING:
    from tasqueue.results import Write

__all__ = ["PENDING_LIMIT", "Broker", "Delivery", "Envelope", "FusedEnqueue", "FusedSettle"]

#: Most messages one ``Broker.get_pending`` call returns: listing a long queue must not stall
#: the broker (or the process) for everyone else.
PENDING_LIMIT = 1000


class Envelope(msgspec.Struct, frozen=True):
    """A message to publish.

    Attributes:
        id: The message id (the job id). A broker ignores an envelope whose id it already holds
            (queued, delayed or leased), so that a publish retried after a lost reply, or
            repeated by a redelivered parent job, does not create a second message.
        data: The bytes to deliver.
        delay: Seconds to hold the message before it can be fetched.
    """

    id: str
    data: bytes
    delay: float = 0.0


class Delivery(msgspec.Struct, frozen=True):
    """A leased message handed to a worker by ``Broker.fetch``.

    Attributes:
        id: The id the message was published with.
        data: Its bytes (as last replaced by ``nack``).
        deliveries: How many times these bytes have been fetched, this time included: 1 on
            first delivery, more after leases ran out unsettled or after a ``nack``. A
            ``nack`` with new ``data`` starts the count again.
        receipt: Whatever the broker needs to settle this delivery (a lease token, a
            native message object). Opaque to the core.
    """

    id: str
    data: bytes
    deliveries: int = 1
    receipt: Any = None


#: ``(queue, envelopes, writes)``: apply the results ``writes`` (plain or "only if absent",
#: maybe ``persist``) and publish ``envelopes`` to ``queue``, in one step. Raises
#: ``tasqueue.errors.BrokerError`` when it could not, leaving no record written for a message
#: it did not publish.
FusedEnqueue: TypeAlias = Callable[[str, Sequence[Envelope], Sequence["Write"]], Awaitable[None]]

#: ``(writes, acks)``: apply ``writes`` as ``Results.set_many(writes)`` does and return its
#: answer, then ``ack`` the deliveries of ``acks`` (queue -> deliveries) whatever the writes did,
#: in one step. When it raises, neither half is known to have happened: the caller writes and
#: acks again the usual way (both are safe to replay).
FusedSettle: TypeAlias = Callable[[Sequence["Write"], Mapping[str, Sequence[Delivery]]], Awaitable[list[bool]]]


@runtime_checkable
class Broker(Protocol):
    """A queue backend. Every method may raise ``tasqueue.errors.BrokerError``."""

    @property
    def visibility_timeout(self) -> float:
        """Seconds a lease lasts without ``extend``; the worker renews leases every third of it."""
        ...

    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        """Publish messages to ``queue``, each fetchable after its ``delay``, FIFO among equals.

        Returns once the broker holds them durably (as durable as the backend is). Envelopes
        whose id the broker already holds are skipped.
        """
        ...

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        """Lease up to ``max_count`` ready messages, oldest first.

        Waits up to ``timeout`` seconds for the first one and returns ``[]`` if none came.
        Must be safe to cancel: a fetch cancelled mid-way loses nothing (at worst a message
        is leased to nobody and comes back when its lease runs out).
        """
        ...

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries for good: the broker forgets the messages.

        Deliveries whose lease was lost (and perhaps given to another worker) are ignored.
        """
        ...

    async def nack(self, queue: str, delivery: Delivery, *, data: bytes | None = None, delay: float = 0.0) -> None:
        """Give a delivery back: fetchable again after ``delay`` seconds, with ``data`` if given.

        With ``delay == 0`` the message goes to the front of the queue. A lost lease makes
        this a no-op.
        """
        ...

    async def extend(self, queue: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Renew the leases of deliveries still being worked on.

        Returns the ones (the same objects) whose lease was lost: acked or taken back meanwhile.
        """
        ...

    async def get_pending(self, queue: str) -> list[bytes]:
        """The messages of ``queue`` waiting to be fetched (ready or delayed, not leased), oldest first.

        At most ``PENDING_LIMIT`` of them, the oldest: ready ones first, then delayed ones by due time.
        """
        ...

    async def close(self) -> None:
        """Release connections; the broker is not used afterwards."""
        ...
