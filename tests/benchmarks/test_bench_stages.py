"""The stage profile charges each call to the innermost stage and adds up; it still runs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from benchmarks.bench_stages import STAGES, StageClock, timed_stages


def test_a_stage_called_inside_another_is_taken_out_of_it() -> None:
    ticks = itertools.count(step=10)  # every read of the clock is 10 ns after the one before
    clock = StageClock(clock=lambda: next(ticks))

    inner = clock.wrap("inner", lambda: None)

    def body() -> None:
        inner()
        inner()

    outer = clock.wrap("outer", body)
    outer()
    # Clock reads: outer in 0; inner in 10, out 20; inner in 30, out 40; outer out 50.
    assert clock.spent_ns() == {"outer": 30, "inner": 20}
    assert clock.calls() == {"outer": 1, "inner": 2}


def test_a_coroutine_is_refused_rather_than_timed_wrongly() -> None:
    async def waits() -> None:
        return None

    with pytest.raises(TypeError, match="coroutine"):
        StageClock().wrap("waits", waits)


def test_timing_puts_every_function_back() -> None:
    from connector import moveplan, moves
    from connector.crypto import Keyring

    before = (Keyring.seal_json, moves.page_ids, moveplan.page_ids)
    with timed_stages(StageClock()):
        assert Keyring.seal_json is not before[0]
        assert moveplan.page_ids is not before[2]  # the importer's own name is timed too
        assert moveplan.page_ids is moves.page_ids
    assert (Keyring.seal_json, moves.page_ids, moveplan.page_ids) == before


def test_stage_benchmark_runs_and_sees_every_stage(tmp_path: Path) -> None:
    from benchmarks.bench_stages import run

    argv = ["--customers", "300", "--cpu", "none", "--workdir", str(tmp_path), "--again", "--json"]
    result = run(argv)
    assert [row["stage"] for row in result["stages"]] == [stage.label for stage in STAGES]
    assert all(row["calls_per_record"] > 0 for row in result["stages"])
    again = result["again"]
    for figures in (result, again):
        staged = sum(row["us_per_record"] for row in figures["stages"])
        parts = staged + figures["rest_us_per_record"] + figures["timers_us_per_record"]
        assert parts == pytest.approx(figures["total_us_per_record"])
    # The re-sync's stages were counted afresh: it maps every record once and seals none.
    calls = {row["stage"]: row["calls_per_record"] for row in again["stages"]}
    assert calls[STAGES[0].label] == 1
    assert calls["sealing the payload (AES-GCM over its JSON)"] == 0


def test_counting_afresh_empties_every_stage() -> None:
    ticks = itertools.count(step=10)
    clock = StageClock(clock=lambda: next(ticks))
    clock.wrap("one", lambda: None)()
    clock.reset()
    assert clock.spent_ns() == {} and clock.calls() == {}
    clock.wrap("two", lambda: None)()
    assert clock.calls() == {"two": 1}
