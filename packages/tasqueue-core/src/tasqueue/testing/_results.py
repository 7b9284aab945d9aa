"""``ResultsSuite``: the behaviour every ``tasqueue.results.Results`` store must have."""

from __future__ import annotations

import asyncio

import pytest

from tasqueue._keys import RECORD_KEYS, error_key, job_key, result_key
from tasqueue.errors import NotFoundError
from tasqueue.results import NotifyingResults, Results, Write
from tasqueue.testing._common import ResultsFactory, ResultsFixtures, eventually


@pytest.mark.asyncio
class ResultsSuite(ResultsFixtures):
    """Subclass and override the ``results_factory`` fixture (see ``tasqueue.testing``)."""

    async def test_starts_empty(self, results: Results) -> None:
        # Sentinel: a fixture that leaks state between tests makes every other test unreliable.
        assert await results.get_success() == []
        assert await results.get_failed() == []
        assert await results.get_many(["k"]) == [None]

    async def test_is_a_results_store(self, results: Results) -> None:
        assert isinstance(results, Results)

    async def test_another_event_loop_in_another_thread_may_use_it(self, results: Results) -> None:
        # srv.sync calls a backend from a loop of its own in a background thread, and a
        # module-level Server outlives the loop of each test: nothing may stay bound to one loop.
        self.capabilities.require("any_loop")
        await results.set_many([Write("here", b"1")], success=["a"])

        async def elsewhere() -> list[bytes | None]:
            await results.set_many([Write("there", b"2")], success=["b"])
            return await results.get_many(["here", "there"])

        assert await asyncio.to_thread(asyncio.run, elsewhere()) == [b"1", b"2"]
        assert await results.get_many(["here", "there"]) == [b"1", b"2"]
        assert await results.get_success() == ["a", "b"]

    async def test_get_of_a_missing_key_raises_not_found(self, results: Results) -> None:
        with pytest.raises(NotFoundError):
            await results.get("missing")
        with pytest.raises(KeyError):  # NotFoundError is also a KeyError
            await results.get("missing")

    async def test_set_then_get(self, results: Results) -> None:
        assert await results.set("k", b"\x00value\xff") is True
        assert await results.get("k") == b"\x00value\xff"
        assert await results.set("k", b"new") is True
        assert await results.get("k") == b"new"

    async def test_get_many_keeps_order_and_marks_missing(self, results: Results) -> None:
        await results.set("a", b"1")
        await results.set("c", b"3")
        assert await results.get_many(["c", "b", "a"]) == [b"3", None, b"1"]
        assert await results.get_many([]) == []

    async def test_version_zero_writes_only_if_absent(self, results: Results) -> None:
        assert await results.set("job", b"first", version=0) is True
        assert await results.set("job", b"second", version=0) is False
        assert await results.get("job") == b"first"

    async def test_versions_only_move_forward(self, results: Results) -> None:
        assert await results.set("job", b"v5", version=5) is True
        assert await results.set("job", b"v3", version=3) is False
        assert await results.set("job", b"v5-again", version=5) is False
        assert await results.get("job") == b"v5"
        assert await results.set("job", b"v9", version=9) is True
        assert await results.get("job") == b"v9"

    async def test_large_versions_are_compared_exactly(self, results: Results) -> None:
        # The core packs progress into versions up to 2**51; stores must not round them.
        big = 2**49 + 3
        assert await results.set("job", b"a", version=big) is True
        assert await results.set("job", b"b", version=big - 1) is False
        assert await results.set("job", b"c", version=big + 1) is True
        assert await results.get("job") == b"c"

    async def test_set_many_applies_in_order_and_reports_each_write(self, results: Results) -> None:
        done = await results.set_many(
            [
                Write("x", b"1", version=1),
                Write("x", b"0", version=0),
                Write("y", b"plain"),
                Write("x", b"2", version=2),
            ],
            success=["j1", "j2"],
            failed=["j3"],
        )
        assert done == [True, False, True, True]
        assert await results.get_many(["x", "y"]) == [b"2", b"plain"]
        assert await results.get_success() == ["j1", "j2"]
        assert await results.get_failed() == ["j3"]

    async def test_a_writes_list_entry_is_added_only_if_the_write_happens(self, results: Results) -> None:
        # The fence of an outcome: a worker whose status write is refused lists nothing.
        done = await results.set_many(
            [Write("job:a", b"done", version=5, success="a"), Write("job:b", b"done", version=5, failed="b")]
        )
        assert done == [True, True]
        stale = await results.set_many(
            [Write("job:a", b"stale", version=5, failed="a"), Write("job:b", b"stale", version=4, success="b")],
            success=["listed-anyway"],
        )
        assert stale == [False, False]
        assert await results.get_success() == ["a", "listed-anyway"]
        assert await results.get_failed() == ["b"]
        assert await results.get_many(["job:a", "job:b"]) == [b"done", b"done"]

    async def test_a_replayed_write_counts_as_happened(self, results: Results) -> None:
        # A batch resent after a lost reply must not look refused to the worker that sent it.
        first = [Write("job:r", b"final", version=7, success="r"), Write("result:r", b"x")]
        assert await results.set_many(first) == [True, True]
        assert await results.set_many(first) == [True, True]
        assert await results.set_many([Write("job:r", b"other", version=7, success="r2")]) == [False]
        assert await results.get_success() == ["r"]

    async def test_set_many_with_nothing_is_fine(self, results: Results) -> None:
        assert await results.set_many([]) == []

    async def test_lists_keep_insertion_order_without_duplicates(self, results: Results) -> None:
        for n in range(5):
            await results.set_many([], success=[f"s{n}"])
        await results.set_many([], success=["s2"], failed=["f1"])
        success = await results.get_success()
        assert sorted(success) == ["s0", "s1", "s2", "s3", "s4"]
        assert success[:2] == ["s0", "s1"]
        assert await results.get_failed() == ["f1"]

    async def test_delete_removes_keys_and_list_entries(self, results: Results) -> None:
        await results.set_many(
            [Write("job:1", b"m"), Write("result:1", b"r"), Write("job:2", b"m")], success=["1", "2"], failed=["1"]
        )
        await results.delete(["job:1", "result:1", "never-existed"], ids=["1"])
        assert await results.get_many(["job:1", "result:1", "job:2"]) == [None, None, b"m"]
        assert await results.get_success() == ["2"]
        assert await results.get_failed() == []

    async def test_a_deleted_versioned_key_can_be_written_again(self, results: Results) -> None:
        await results.set("job", b"old", version=7)
        await results.delete(["job"])
        assert await results.set("job", b"new", version=0) is True

    async def test_keys_and_list_entries_expire(self, results_factory: ResultsFactory) -> None:
        self.capabilities.require("expiry")
        store = await results_factory(expiry=1.0)
        await store.set_many([Write("gone", b"1"), Write("kept", b"2", persist=True)], success=["s"], failed=["f"])
        assert await store.get("gone") == b"1"

        async def expired() -> bool:
            return (
                (await store.get_many(["gone"])) == [None] and await store.get_success() == [] and await store.get_failed() == []
            )

        await eventually(expired, timeout=10.0, every=0.1)
        assert await store.get("kept") == b"2"

    async def test_a_capped_list_drops_its_oldest_ids_and_their_records(self, results_factory: ResultsFactory) -> None:
        self.capabilities.require("count_retention")
        store = await results_factory(expiry=None, list_limit=3)
        for name in ("success", "failed"):
            for n in range(5):
                job_id = f"{name}{n}"
                records = [Write(result_key(job_id), b"result"), Write(error_key(job_id), b"traceback")]
                ok, no = (job_id, "") if name == "success" else ("", job_id)
                if n % 2:  # listed by its status write, as a worker's outcome is
                    await store.set_many([Write(job_key(job_id), b"record", version=1, success=ok, failed=no), *records])
                else:  # listed by id, as a Server lists a follow-up it could not enqueue
                    status = Write(job_key(job_id), b"record", version=1)
                    await store.set_many([status, *records], success=[ok] if ok else [], failed=[no] if no else [])
        assert await store.get_success() == ["success2", "success3", "success4"]
        assert await store.get_failed() == ["failed2", "failed3", "failed4"]
        ids = [f"{name}{n}" for name in ("success", "failed") for n in range(5)]
        keys = [make(job_id) for job_id in ids for make in RECORD_KEYS]
        gone = [key for key, value in zip(keys, await store.get_many(keys), strict=True) if value is None]
        assert gone == [make(i) for i in ("success0", "success1", "failed0", "failed1") for make in RECORD_KEYS]

    async def test_no_expiry_keeps_everything(self, results_factory: ResultsFactory) -> None:
        store = await results_factory(expiry=None)
        await store.set_many([Write("k", b"v")], success=["s"])
        assert await store.get("k") == b"v"
        assert await store.get_success() == ["s"]

    async def test_a_watch_wakes_when_a_watched_job_finishes(self, results: Results) -> None:
        # Optional: a store that cannot notify is polled by Server.wait / Server.result.
        if not isinstance(results, NotifyingResults):
            pytest.skip("the store does not notify (no NotifyingResults.watch); waiters poll")
        async with results.watch(["a", "b"]) as watch:
            if watch is None:
                pytest.skip("the store yields no watch for this client; waiters poll")
            assert await watch.wait(0.05) is False  # nothing finished yet: it must not just return
            await results.set_many([Write("job:a", b"done")], success=["a"])
            assert await watch.wait(10.0) is True
            await results.set_many([], failed=["b"])
            assert await watch.wait(10.0) is True
        # Leaving the watch unsubscribes; a later finish wakes nobody and breaks nothing.
        await results.set_many([], success=["a"])
