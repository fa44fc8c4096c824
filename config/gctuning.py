"""Garbage-collector settings of the web server processes, and their pause figures.

A server holding thousands of sockets tracks millions of objects; CPython 3.11's full (generation 2)
collection walks all of them with the GIL held. Measured with 5,000 stream viewers on one process: full
collections of 150–560 ms, a handful during the join storm and then every minute or two, each one a stall
of every socket of the process (chat p95 went from 84 ms in a run without one to 400–590 ms in runs with
one: docs/benchmarks.md, "Live streams"). So, in the server processes only (config/asgi.py):

* `gc.freeze()` once Django and the routes are loaded: everything imported at start-up lives as long as
  the process and is never scanned again;
* larger thresholds (AULA_GC_THRESHOLDS, default 50000,20,100): young collections are rarer (each is still
  short), and a full collection needs 100 middle ones, so the long pauses become rare; cyclic garbage waits
  longer, which costs some memory (RSS per socket is measured by the benchmarks).

Every collection's duration is counted per generation and exposed on /metrics (`aula_process_gc_*`).
"""

from __future__ import annotations

import gc
import time

from django.conf import settings

pauses = {0: 0, 1: 0, 2: 0}  # collections per generation
pause_seconds = {0: 0.0, 1: 0.0, 2: 0.0}
longest = {0: 0.0, 1: 0.0, 2: 0.0}
_started = [0.0]


def _observe(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    generation = info["generation"]
    seconds = time.perf_counter() - _started[0]
    pauses[generation] += 1
    pause_seconds[generation] += seconds
    longest[generation] = max(longest[generation], seconds)


def tune_server_process() -> None:
    """Call once, at the end of the ASGI application's import (idempotent)."""
    if _observe in gc.callbacks:
        return
    thresholds = settings.AULA_GC_THRESHOLDS
    if thresholds:
        gc.set_threshold(*thresholds)
    gc.collect()
    gc.freeze()
    gc.callbacks.append(_observe)


def figures() -> dict[str, dict[int, float]]:
    return {"collections": dict(pauses), "seconds": dict(pause_seconds), "longest": dict(longest)}
