"""Group commit of outcomes: write many jobs' outcomes in one batch, then settle their deliveries.

A run's outcome is never written inline: it goes to the ``Settler``, which batches the writes of
every job finished meanwhile into one ``set_many`` and then acks (or gives back) their
deliveries. So the results store always sees an outcome before the broker forgets the job, the
hot path costs two round trips per batch rather than per job, and a handler's slot is free for
the next job while the previous outcome is written. A broker that can write the outcomes and ack
in one step (``fused_settle``, see ``tasqueue.broker``) settles the outcomes that end in a plain
ack with the batch's writes: one round trip.

Each outcome's status write is its fence. Its success/failed list entry rides on that write and
is added only if the write happens; its follow-up jobs are published only if it happened; and
an outcome whose write did not happen (another worker has the job now, or already finished this
attempt) is acked rather than given back, which the broker ignores for a lease it no longer
holds. So a worker that lost its lease commits nothing of its outcome.

A batch the store refuses is retried job by job: writes the store keeps refusing while it works
otherwise (a result larger than it takes, say) fail that one job with a clear error, and the
rest flow on. A store that answers nothing is down: its writes are retried with backoff until
it is back, and the jobs stay leased meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from tasqueue._codec import encode
from tasqueue._keys import job_key
from tasqueue._outage import Outage
from tasqueue.broker import Broker, Delivery, FusedSettle
from tasqueue.messages import JobMessage, JobStatus
from tasqueue.results import Results, Write

Publish = Callable[[Sequence[JobMessage]], Awaitable[object]]

_STRIKES = 3  # failed tries of one job's writes, while the store works, before they count as refused


class Outcome:
    """How one delivery ends: what to write, then ack it or give it back.

    Attributes:
        queue, delivery: What to settle.
        writes: Written before settling, in order; ``status`` (one of them) is the fence.
        status: The job-status write whose success decides whether the rest takes effect.
        record: The job as of this run, to record a failure in place of an outcome the store refuses.
        done_version: The version of a finished status for this delivery.
        nack, data, delay: Give the delivery back (with new bytes, after a delay) instead of acking.
        follow_ups: Jobs to publish once ``status`` is written; ``published`` gets their ids.
        note: Logged at info once the delivery is settled.
        won: Set by the settler: whether the status write happened.
        acked: Set by the settler: the delivery was acked with the writes (``fused_settle``).
    """

    __slots__ = (
        "acked",
        "data",
        "delay",
        "delivery",
        "done_version",
        "follow_ups",
        "nack",
        "note",
        "published",
        "queue",
        "record",
        "status",
        "won",
        "writes",
    )

    def __init__(
        self,
        queue: str,
        delivery: Delivery,
        writes: Sequence[Write] = (),
        *,
        status: Write | None = None,
        record: JobMessage | None = None,
        done_version: int = 0,
        nack: bool = False,
        data: bytes | None = None,
        delay: float = 0.0,
        note: str = "",
    ) -> None:
        self.queue = queue
        self.delivery = delivery
        self.writes = writes
        self.status = status
        self.record = record
        self.done_version = done_version
        self.nack = nack
        self.data = data
        self.delay = delay
        self.note = note
        self.follow_ups: Sequence[JobMessage] = ()
        self.won = True  # the status write happened (or there is none)
        self.acked = False
        self.published: asyncio.Future[list[str]] | None = None

    def refused(self, exc: BaseException) -> Write | None:
        """The failed status to record instead of writes the store refused, if this is a job's outcome."""
        if self.record is None:
            return None
        err = f"ResultsError: the results store refused this job's outcome ({type(exc).__name__}: {exc}); recorded as failed"
        failed = msgspec.structs.replace(self.record, status=JobStatus.FAILED, prev_err=err, on_success_ids=[])
        return Write(job_key(failed.id), encode(failed), version=self.done_version, failed=failed.id)


class Settler:
    """Batches outcome writes, publishes follow-ups of the writes that happened, settles deliveries.

    Args:
        results, broker: Where outcomes are written and deliveries settled.
        publish: Stores and publishes follow-up jobs (the enqueue middleware already ran).
        retry_delay: How long a job whose follow-ups could not be published waits to come back.
        settled: Called with the queue of each settled delivery.
        recorded: Called with the queue of each job, and the ids that went on the success and
            failed lists, once a batch is written.
    """

    def __init__(
        self,
        results: Results,
        broker: Broker,
        publish: Publish,
        *,
        log: logging.Logger,
        retry_delay: Callable[[], float],
        settled: Callable[[str], None],
        recorded: Callable[[dict[str, str], list[str], list[str]], None],
    ) -> None:
        self._results = results
        self._broker = broker
        fuse = getattr(broker, "fused_settle", None)
        self._fused: FusedSettle | None = fuse(results) if callable(fuse) else None
        self._publish = publish
        self._log = log
        self._retry_delay = retry_delay
        self._settled = settled
        self._recorded = recorded
        self._writes: dict[str, Write] = {}
        self._outcomes: list[Outcome] = []
        self._parents = 0  # outcomes queued with follow-ups
        self._in_flight: list[Outcome] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._store_outage = Outage(log, "writing job outcomes to the results store")
        self._broker_outage = Outage(log, "settling deliveries with the broker")
        #: Outcomes queued or being written, per queue (the fetch loops pause when it grows).
        self.pending: dict[str, int] = {}

    def write(self, write: Write) -> None:
        """Queue a write; within one batch only the newest version of a key is sent."""
        current = self._writes.get(write.key)
        if current is not None and write.version is not None and current.version is not None and current.version > write.version:
            return
        # Re-insert so that keys keep the order of their last write.
        self._writes.pop(write.key, None)
        self._writes[write.key] = write
        self._wakeup.set()

    def settle(self, outcome: Outcome) -> None:
        """Queue an outcome: its writes go first, then the delivery is acked or given back."""
        for w in outcome.writes:
            self.write(w)
        self._outcomes.append(outcome)
        self.pending[outcome.queue] = self.pending.get(outcome.queue, 0) + 1
        self._wakeup.set()

    def settle_then_publish(self, outcome: Outcome, follow_ups: Sequence[JobMessage]) -> asyncio.Future[list[str]]:
        """``settle``, publishing ``follow_ups`` once the outcome's status is written; the future gets their ids.

        The ids are ``[]`` when the status write did not happen (nothing was published); the
        future fails when publishing did (the job then comes back later to publish them again).
        """
        outcome.follow_ups = follow_ups
        outcome.published = asyncio.get_running_loop().create_future()
        self._parents += 1
        self.settle(outcome)
        return outcome.published

    def deliveries(self) -> list[tuple[str, Delivery]]:
        """Deliveries whose outcome is not settled yet: their leases still need renewing."""
        return [(o.queue, o.delivery) for o in (*self._outcomes, *self._in_flight)]

    async def run(self) -> None:
        """Flush whenever something is queued; after ``close()``, until nothing is left."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()
            if self._closing and not (self._writes or self._outcomes):
                return

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()

    async def flush(self) -> None:
        """Write everything queued so far, publish the follow-ups it allows, then settle."""
        if not (self._writes or self._outcomes):
            return
        writes = list(self._writes.values())
        outcomes = self._in_flight = self._outcomes
        self._writes, self._outcomes = {}, []
        try:
            happened = await self._store(writes, outcomes)
            success: list[str] = []
            failed: list[str] = []
            parents: list[Outcome] = []
            for o in outcomes:
                status = o.status
                if status is not None:
                    if happened is not None and not happened.get(id(status), False):
                        o.won = False
                    elif status.success:
                        success.append(status.success)
                    elif status.failed:
                        failed.append(status.failed)
                if o.follow_ups and o.won:
                    parents.append(o)
            if success or failed:
                self._recorded({o.delivery.id: o.queue for o in outcomes}, success, failed)
            if parents:
                await self._publish_follow_ups(parents)
            await self._settle(outcomes)
        finally:
            self._in_flight = []
            for o in outcomes:
                if o.published is not None and not o.published.done():
                    o.published.set_result([])  # nothing published: the status write did not happen
                self.pending[o.queue] -= 1
                self._settled(o.queue)

    # ---- writing -------------------------------------------------------------------------

    async def _store(self, writes: list[Write], outcomes: list[Outcome]) -> dict[int, bool] | None:
        """Write the batch; return, by ``id()`` of each write sent, whether it happened (``None``: all did).

        After a failure, each job's writes go alone, so that those the store takes are done and
        one it refuses holds nobody back. A job whose writes fail ``_STRIKES`` times while the
        store works (it takes other writes, or answers a read of the same keys) is recorded as
        failed instead. Retrying is safe: versioned writes replay as "happened", list adds move
        an id to the end. Until it works the jobs stay leased (the heartbeat renews them), and
        fetching pauses once enough outcomes wait.
        """
        # Outcomes that end in a plain ack, whatever their writes do, can be acked with them.
        plain = [o for o in outcomes if not (o.nack or o.follow_ups)] if self._fused is not None else []
        try:
            if plain and self._fused is not None:
                acks: dict[str, list[Delivery]] = {}
                for each in plain:
                    acks.setdefault(each.queue, []).append(each.delivery)
                done = await self._fused(writes, acks)
                for each in plain:
                    each.acked = True
                self._broker_outage.ok()
            else:
                done = await self._results.set_many(writes)
        except Exception as exc:
            failure = exc
        else:
            self._store_outage.ok()
            return None if all(done) else {id(w): ok for w, ok in zip(writes, done, strict=True)}
        happened: dict[int, bool] = {}
        strikes: dict[int, int] = {}
        groups = _groups(writes, outcomes)
        while True:
            await asyncio.sleep(self._store_outage.failed(failure))
            failed: list[tuple[Outcome | None, list[Write], Exception]] = []
            alive = False
            for o, ws in groups:
                try:
                    done = await self._results.set_many(ws)
                except Exception as exc:
                    failed.append((o, ws, exc))
                    continue
                happened.update(zip(map(id, ws), done, strict=True))
                alive = True
            if not failed:
                self._store_outage.ok()
                return happened
            failure = failed[0][2]
            if not alive:
                alive = await self._readable([w.key for w in failed[0][1]])
            groups = []
            for o, ws, refusal in failed:
                strike = strikes[id(ws[0])] = strikes.get(id(ws[0]), 0) + alive
                if strike < _STRIKES:
                    groups.append((o, ws))
                elif not await self._record_refusal(o, ws, refusal, happened):
                    groups.append((o, ws))  # not even its failure could be written: keep trying
            if not groups:
                self._store_outage.ok()
                return happened

    async def _readable(self, keys: list[str]) -> bool:
        """Whether the store answers at all: a store that reads but refuses a write is picky, not down."""
        try:
            await self._results.get_many(keys)
        except Exception:
            return False
        return True

    async def _record_refusal(self, o: Outcome | None, ws: list[Write], exc: Exception, happened: dict[int, bool]) -> bool:
        """Record a job as failed in place of writes the store keeps refusing; False if that fails too."""
        fallback = None if o is None else o.refused(exc)
        if o is None or fallback is None:
            self._log.error("the results store keeps refusing %s (%s); left unwritten", ", ".join(w.key for w in ws), exc)
            return True
        try:
            (ok,) = await self._results.set_many([fallback])
        except Exception:
            return False
        self._log.error("the results store keeps refusing the outcome of job %s (%s); recorded it as failed", o.delivery.id, exc)
        happened[id(fallback)] = ok
        o.writes, o.status, o.nack, o.follow_ups = [fallback], fallback, False, ()
        return True

    # ---- follow-ups and the broker -------------------------------------------------------

    async def _publish_follow_ups(self, parents: list[Outcome]) -> None:
        if not parents:
            return
        try:
            await self._publish([m for o in parents for m in o.follow_ups])
        except Exception as exc:
            # The parents' outcomes are recorded; each comes back after a delay and, being
            # finished, only publishes its follow-ups again (their ids are derived: no duplicates).
            delay = self._retry_delay()
            self._log.warning(
                "could not publish the follow-up jobs of %d finished job(s) (%s); sending them again in %.1fs",
                len(parents),
                exc,
                delay,
            )
            for o in parents:
                o.nack, o.data, o.delay = True, None, delay
                if o.published is not None:
                    o.published.set_exception(exc)
                    o.published.exception()  # retrieved here: the run may have stopped waiting
        else:
            for o in parents:
                if o.published is not None:
                    o.published.set_result([m.id for m in o.follow_ups])

    async def _settle(self, outcomes: list[Outcome]) -> None:
        acks: dict[str, list[Delivery]] = {}
        nacks: list[Outcome] = []
        for o in outcomes:
            if o.acked:
                continue
            if o.nack and o.won:
                nacks.append(o)
            else:
                # A lost status write means the job is another worker's now, or finished: never
                # give it back. The broker ignores the ack if this worker's lease is gone.
                acks.setdefault(o.queue, []).append(o.delivery)
        try:
            for queue, deliveries in acks.items():
                await self._broker.ack(queue, deliveries)
            for o in nacks:
                await self._broker.nack(o.queue, o.delivery, data=o.data, delay=o.delay)
        except Exception as exc:
            # The outcome is stored; a job left unsettled comes back after its lease and is
            # recognised as finished instead of being run again.
            self._broker_outage.failed(exc)
            return
        self._broker_outage.ok()
        for o in outcomes:
            if o.note and o.won:
                self._log.info("%s", o.note)


def _groups(writes: list[Write], outcomes: list[Outcome]) -> list[tuple[Outcome | None, list[Write]]]:
    """The writes of a batch by job: each outcome's own, then the others (``processing`` statuses) one by one."""
    sent = {id(w) for w in writes}
    groups: list[tuple[Outcome | None, list[Write]]] = []
    owned: set[int] = set()
    for o in outcomes:
        mine = [w for w in o.writes if id(w) in sent]
        if mine:
            groups.append((o, mine))
            owned.update(id(w) for w in mine)
    groups += [(None, [w]) for w in writes if id(w) not in owned]
    return groups
