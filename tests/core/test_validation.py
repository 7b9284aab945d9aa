"""Bad input is a clear exception at the call that caused it."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from tasqueue import (
    Backoff,
    Chain,
    ConfigurationError,
    Group,
    Job,
    JobOpts,
    NotFoundError,
    Server,
    TaskOpts,
    UnknownSchemeError,
)


async def noop(payload: bytes, ctx: object) -> None:
    return None


def test_payload_must_be_bytes() -> None:
    with pytest.raises(TypeError, match=r"payload must be bytes, got str.*encode it"):
        Job("t", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got dict"):
        Job("t", {"a": 1})  # type: ignore[arg-type]


def test_task_name_must_be_given() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        Job("", b"")


def test_eta_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match=r"timezone-aware.*naive"):
        JobOpts(eta=datetime(2030, 1, 1))


@pytest.mark.parametrize("timeout", [-1, 0, timedelta(seconds=-5)])
def test_timeout_must_be_positive(timeout: float | timedelta) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        JobOpts(timeout=timeout)


def test_timedelta_timeout_becomes_seconds() -> None:
    assert JobOpts(timeout=timedelta(milliseconds=1500)).timeout == 1.5
    assert JobOpts(timeout=2).timeout == 2.0


def test_retries_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="max_retries must be an int >= 0"):
        JobOpts(max_retries=-1)


@pytest.mark.parametrize("concurrency", [0, -3])
def test_concurrency_must_be_at_least_one(concurrency: int) -> None:
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        TaskOpts(concurrency=concurrency)


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="factor must be >= 1"):
        Backoff(factor=0.5)
    with pytest.raises(ValueError, match=">= 0 seconds"):
        Backoff(initial=-1)


def test_backoff_grows_exponentially_up_to_its_cap() -> None:
    fixed = Backoff(initial=1, factor=2, max=10, jitter=False)
    assert [fixed.delay(n) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    jittered = Backoff(initial=1, factor=2, max=300)
    for n in range(12):
        top = min(300, 2**n)
        assert top / 2 <= jittered.delay(n) <= top
    assert jittered.delay(10_000) <= 300  # no overflow for absurd retry counts


def test_default_backoff_starts_near_a_second_and_caps_at_minutes() -> None:
    default = Backoff()
    assert 0.5 <= default.delay(0) <= 1.0
    assert 60 <= default.max <= 600


def test_chain_needs_two_jobs_and_group_one() -> None:
    with pytest.raises(ValueError, match="at least 2 jobs, got 1"):
        Chain([Job("a", b"")])
    with pytest.raises(ValueError, match="at least one job"):
        Group([])


@pytest.mark.asyncio
@pytest.mark.parametrize("schedule", ["bad", "* * * *", "61 * * * *", "* * * * * *", "*/0 * * * *"])
async def test_invalid_cron_is_a_value_error_at_enqueue(schedule: str) -> None:
    srv = Server(load_entrypoints=False)
    with pytest.raises(ValueError, match="invalid cron schedule"):
        await srv.enqueue(Job("t", b"", JobOpts(schedule=schedule)))
    assert await srv.get_pending() == []


def test_unknown_scheme_names_installed_ones_and_the_package_to_install() -> None:
    with pytest.raises(UnknownSchemeError) as err:
        Server(broker="redis://127.0.0.1:6379/0", load_entrypoints=False)
    text = str(err.value)
    assert "'redis://'" in text and "memory://" in text and "pip install tasqueue-redis" in text
    with pytest.raises(UnknownSchemeError, match="pip install tasqueue-nats"):
        Server(results="nats://127.0.0.1:4222", load_entrypoints=False)
    with pytest.raises(UnknownSchemeError) as err:
        Server(broker="kafka://x", load_entrypoints=False)
    assert "pip install" not in str(err.value)


def test_a_url_without_scheme_is_explained() -> None:
    with pytest.raises(UnknownSchemeError, match="has no scheme"):
        Server(broker="127.0.0.1:6379", load_entrypoints=False)


def test_memory_url_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option 'bogus' for a memory:// broker.*allowed: visibility_timeout"):
        Server(broker="memory://?bogus=1", load_entrypoints=False)
    with pytest.raises(ConfigurationError, match="must be a number of seconds greater than 0, or none"):
        Server(results="memory://?expiry=soon", load_entrypoints=False)
    with pytest.raises(ConfigurationError, match=r"visibility_timeout='0' .* greater than 0"):
        Server(broker="memory://?visibility_timeout=0", load_entrypoints=False)
    srv = Server(broker="memory://?visibility_timeout=2.5", results="memory://?expiry=none", load_entrypoints=False)
    assert srv.broker.visibility_timeout == 2.5
    assert srv.results.expiry is None  # type: ignore[attr-defined]


def test_server_options_are_checked() -> None:
    with pytest.raises(ValueError, match="shutdown_timeout"):
        Server(shutdown_timeout=-1, load_entrypoints=False)
    with pytest.raises(ValueError, match="max_stalls"):
        Server(max_stalls=-1, load_entrypoints=False)


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("fetch_timeout", 0, "fetch_timeout must be a number of seconds > 0"),  # used to spin a busy loop
        ("fetch_timeout", -1.0, "fetch_timeout must be a number of seconds > 0"),
        ("fetch_timeout", float("nan"), "fetch_timeout must be a number of seconds > 0"),
        ("fetch_timeout", "5", "fetch_timeout must be a number of seconds > 0"),
        ("shutdown_timeout", float("inf"), "shutdown_timeout must be a number of seconds >= 0"),
        ("unknown_task_timeout", -0.5, "unknown_task_timeout must be a number of seconds >= 0"),
        ("max_stalls", 1.5, "max_stalls must be an int >= 0"),
        ("max_stalls", True, "max_stalls must be an int >= 0"),
    ],
)
def test_every_server_option_says_what_is_allowed(option: str, value: object, allowed: str) -> None:
    with pytest.raises(ValueError, match=allowed) as caught:
        Server(load_entrypoints=False, **{option: value})  # type: ignore[arg-type]
    assert repr(value) in str(caught.value)


def test_job_and_task_options_refuse_what_would_hang_or_spin() -> None:
    with pytest.raises(ValueError, match=re.escape("Backoff delays")):
        Backoff(initial=float("nan"))
    with pytest.raises(ValueError, match=re.escape("Backoff factor")):
        Backoff(factor=float("inf"))
    with pytest.raises(ValueError, match=re.escape("JobOpts.timeout")):
        JobOpts(timeout=float("nan"))
    with pytest.raises(ValueError, match=re.escape("JobOpts.max_retries must be an int >= 0, got 1.5")):
        JobOpts(max_retries=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("TaskOpts.concurrency")):
        TaskOpts(concurrency=True)
    with pytest.raises(TypeError, match=re.escape("TaskOpts.success_cb must be callable")):
        TaskOpts(success_cb="print")  # type: ignore[arg-type]


def test_server_objects_of_the_wrong_kind_are_refused() -> None:
    with pytest.raises(TypeError, match=re.escape("backoff must be a tasqueue.Backoff, got dict")):
        Server(load_entrypoints=False, backoff={"initial": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("middleware must be tasqueue.Middleware instances, got function")):
        Server(load_entrypoints=False, middleware=[lambda m, n: n(m)])  # type: ignore[list-item]


def test_registering_tasks() -> None:
    srv = Server(load_entrypoints=False)
    srv.register_task("a", noop)
    with pytest.raises(ValueError, match="already registered"):
        srv.register_task("a", noop)
    with pytest.raises(TypeError, match="must be callable"):
        srv.register_task("b", "not a function")  # type: ignore[arg-type]

    @srv.task("c", queue="q2", concurrency=3)
    async def c(payload: bytes, ctx: object) -> None:
        return None

    assert srv.get_tasks() == ["a", "c"]
    assert srv.queues["q2"].concurrency == 3


def test_a_later_explicit_concurrency_overrides_an_implicit_default() -> None:
    srv = Server(load_entrypoints=False)
    srv.register_task("a", noop, TaskOpts(queue="q"))
    srv.register_task("b", noop, TaskOpts(queue="q", concurrency=7))
    assert srv.queues["q"].concurrency == 7
    with pytest.raises(ValueError, match="already has concurrency 7"):
        srv.register_task("c", noop, TaskOpts(queue="q", concurrency=1))


@pytest.mark.asyncio
async def test_start_without_tasks_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no tasks are registered"):
        await Server(load_entrypoints=False).start()


@pytest.mark.asyncio
async def test_missing_things_raise_not_found_with_the_id() -> None:
    srv = Server(load_entrypoints=False)
    for call in (srv.get_job, srv.get_result, srv.get_group, srv.get_chain, srv.cancel_schedule):
        with pytest.raises(NotFoundError, match="'nope'"):
            await call("nope")
