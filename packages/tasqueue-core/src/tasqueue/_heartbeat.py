"""The heartbeat: renews the leases of everything a worker holds, so no other worker takes it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tasqueue._outage import Outage
from tasqueue.broker import Broker, Delivery


class Heartbeat:
    """Every third of the broker's lease, ``extend`` what ``held()`` lists; report the lost ones.

    Args:
        broker: Whose leases to renew.
        held: The deliveries to keep, by queue (running, waiting for their outcome, prefetched).
        lost: Called with the deliveries whose lease the broker gave away.
    """

    def __init__(
        self,
        broker: Broker,
        held: Callable[[], dict[str, list[Delivery]]],
        lost: Callable[[list[Delivery]], None],
        log: logging.Logger,
    ) -> None:
        self._broker = broker
        self._held = held
        self._lost = lost
        self._outage = Outage(log, "renewing leases")

    async def run(self) -> None:
        interval = self._broker.visibility_timeout / 3
        while True:
            await asyncio.sleep(interval)
            for queue, deliveries in self._held().items():
                try:
                    lost = await self._broker.extend(queue, deliveries)
                except Exception as exc:
                    self._outage.failed(exc)
                    continue
                self._outage.ok()
                if lost:
                    self._lost(lost)
