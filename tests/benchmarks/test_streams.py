"""The stream benchmark's measurements: the reaction-latency method, and the whole harness against the bare
stream room (real processes and sockets on loopback), where every answer is known exactly."""

from __future__ import annotations

import argparse
import sys
import time

import pytest

from benchmarks.classroom import CpuWindow, Generators, Server
from benchmarks.streams import (
    GENERATOR,
    reaction_latency,
    run_chat,
    run_leave,
    run_reactions,
    run_storm,
    viewer_count_check,
)
from config.devservers import free_port


def test_a_reaction_shows_with_the_first_delta_whose_window_could_hold_it():
    # Two deltas of a 500 ms window: [0.5, 1.0) received at 1.05 (running total 2), [1.0, 1.5) at 1.55 (3).
    timeline = [(1.05, 2, 0.5), (1.55, 3, 1.0)]
    accepted = [(0.6,), (0.9,), (1.2,), (2.0,)]  # the last one is in no delta the viewer received
    got = reaction_latency(accepted, [timeline], 0.5)
    could = got["could_include"]
    assert could["n"] == 3 and could["never_seen"] == 1
    assert could["max_ms"] == 450.0  # sent at 0.6, shown at 1.05
    assert could["p50_ms"] == 350.0  # sent at 1.2, in the window ending at 1.5, shown at 1.55
    # By running count: reactions 1 and 2 by the first delta, reaction 3 by the second.
    assert got["by_count"]["n"] == 3 and got["by_count"]["max_ms"] == 450.0


def test_a_delta_without_window_start_counts_from_its_arrival():
    got = reaction_latency([(1.0,)], [[(0.9, 1, None), (1.3, 1, None)]], 0.5)
    assert got["could_include"]["max_ms"] == 300.0


@pytest.fixture
def bare_room(tmp_path):
    port = free_port()
    server = Server([sys.executable, "-m", "benchmarks.bare_stream_server", "--port", str(port), "--window-ms",
                     "250"], None, port, tmp_path / "bare.log", health=False)
    yield server
    server.stop()


def test_the_harness_measures_the_bare_stream_room_exactly(bare_room):
    args = argparse.Namespace(viewers=24, connect_timeout=30, reactions_per_second=60, duration=2.0,
                              emojis=["fire", "heart"], window_ms=250, drain=10, chat_rate=5, viewers_interval=1.0)
    spec = {"url": f"ws://127.0.0.1:{bare_room.port}/ws/v1/streams/1/?surface=watch",
            "origin": f"http://127.0.0.1:{bare_room.port}", "cookie_name": "sessionid", "client": "sansio",
            "generator": GENERATOR}
    gens = Generators(2, spec)
    try:
        window = CpuWindow({"server": bare_room.workers, "loadgen": gens.psutil_procs})
        owner = {i: i % 2 for i in range(args.viewers)}
        per_proc = [[[i, i + 1, "", i < 4] for i in range(args.viewers) if owner[i] == p] for p in range(2)]
        storm, joined = run_storm(gens, window, per_proc, args, "bare")
        assert storm["connected"] == 24 and storm["success_pct"] == 100.0
        time.sleep(1.5)  # the next viewers frame (once a second)

        counted = viewer_count_check(gens, 24, 24, storm["start_at"], storm["t_done"], 1.0)
        assert counted["observers_latest_counts"] == [24] and counted["viewers_with_right_count"] == 24

        reactions = run_reactions(gens, window, list(range(args.viewers)), owner, args, "bare", None)
        assert reactions["sent"] == reactions["accepted"] == 120
        assert reactions["exact_viewers"] == 24  # every viewer's deltas add up to 60 fire + 60 heart
        assert reactions["viewer_total_min"] == reactions["viewer_total_max"] == 120
        assert reactions["latency"]["could_include"]["never_seen"] == 0

        chat = run_chat(gens, window, [0, 1, 2], owner, args, "bare", 24)
        assert chat["messages"] == 10 and chat["delivered_pct"] == 100.0 and chat["deliveries"] == 240

        leave_start = time.time()
        t_done = run_leave(gens, [[4, 6], [5]], args, "bare")
        time.sleep(1.5)  # the next viewers frame (once a second)
        counted = viewer_count_check(gens, 21, 24, leave_start, t_done, 1.0)
        assert counted["observers_latest_counts"] == [21] and counted["peak_right"]
        gens.ask([{"cmd": "close"}] * 2, 30)
    finally:
        gens.stop()
