"""Cron schedules: validating an expression and finding its next fire time (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

from cronsim import CronSim, CronSimError


def validate(expr: str) -> None:
    """Raise ``ValueError`` unless ``expr`` is a valid 5-field cron expression."""
    next_fire(expr, datetime.now(UTC))


def next_fire(expr: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` (aware) that ``expr`` fires, in UTC."""
    fields = expr.split()
    if len(fields) != 5:
        msg = (
            f"invalid cron schedule {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week), e.g. '*/5 * * * *'"
        )
        raise ValueError(msg)
    try:
        # CronSim yields times after its start, with seconds dropped, in the start's timezone.
        return next(CronSim(expr, after.astimezone(UTC)))
    except CronSimError as exc:
        msg = f"invalid cron schedule {expr!r}: {exc}"
        raise ValueError(msg) from None
    except StopIteration:
        msg = f"cron schedule {expr!r} never fires"
        raise ValueError(msg) from None
