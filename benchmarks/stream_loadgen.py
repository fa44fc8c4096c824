"""One load-generator process for the stream benchmark: many stream viewers on one event loop.

A subclass of benchmarks.loadgen.LoadGen (same sockets, same pipe protocol, same chat phase), started by
benchmarks/streams.py through `classroom.Generators` with `spec["generator"]` naming this class. What it
adds is the stream room's frames: `viewers` {count, peak}, `reactions` {window_ms, counts} (batched deltas)
and `chat.message` without a room sequence number (a stream's chat may be sampled, so it is not numbered
per room); and the phases that drive them: reactions at a fixed aggregate rate, a partial leave, and reads
of what each viewer saw. A viewer counts as connected at its first frame from the server. Every loop here
is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time

from benchmarks import loadgen
from benchmarks.loadgen import BODY_MARK, Client, LoadGen, _sleep_until

# A stream's chat.message; when it carries a numeric room seq, LoadGen's own chat path (gaps, order) runs.
STREAM_CHAT_PREFIX = '{"v":1,"type":"chat.message",'
REACTIONS_PREFIX = '{"v":1,"type":"reactions",'
VIEWERS_PREFIX = '{"v":1,"type":"viewers",'
SNAPSHOT_PREFIX = '{"v":1,"type":"snapshot",'


class Viewer(Client):
    __slots__ = ("observer", "rx_total", "rx_frames", "rx_by_emoji", "rx_timeline", "viewers", "first_type")

    def __init__(self, idx: int, user_id: int | None, key: str, observer: bool = False):
        super().__init__(idx, user_id or 0, key)
        self.observer = observer  # records timelines (viewer counts, reaction totals); never leaves early
        self.rx_total = self.rx_frames = 0
        self.rx_by_emoji: collections.Counter[str] = collections.Counter()
        self.rx_timeline: list[tuple] = []  # observers: (receive time, running total, window_start or None)
        self.viewers: tuple[float, int, int] | None = None  # last viewers frame: (time, count, peak)
        self.first_type: str | None = None


class StreamLoadGen(LoadGen):
    def __init__(self, spec: dict):
        super().__init__(spec)
        self.viewer_frames: list[tuple[float, int, int, int]] = []  # observers: (time, idx, count, peak)
        self.window_ms: int | None = None
        self.rx_last = 0.0  # when the last reactions frame arrived (drain detection)

    # --- frames ------------------------------------------------------------------------------------
    def on_frame(self, c: Viewer, raw, now: float | None = None) -> None:
        if now is None:
            now = time.time()
        if c.first_type is None and isinstance(raw, str):
            # Connected: the first frame from the room (a snapshot, or the first viewers count).
            c.first_type = raw[len(loadgen.ENVELOPE):raw.find('"', len(loadgen.ENVELOPE))]
            if c.first_type != "error":
                c.t_snapshot = now
                if c.snapshot is not None and not c.snapshot.done():
                    c.snapshot.set_result(None)
        if raw.startswith(REACTIONS_PREFIX):
            self.nframes += 1
            self.types["reactions"] += 1
            data = json.loads(raw)["data"]
            counts = data.get("counts") or {}
            n = sum(counts.values())
            c.rx_total += n
            c.rx_frames += 1
            c.rx_by_emoji.update(counts)
            self.window_ms = data.get("window_ms", self.window_ms)
            self.rx_last = now
            if c.observer:
                c.rx_timeline.append((now, c.rx_total, data.get("window_start")))
            return
        if raw.startswith(VIEWERS_PREFIX):
            self.nframes += 1
            self.types["viewers"] += 1
            data = json.loads(raw)["data"]
            c.viewers = (now, data.get("count"), data.get("peak"))
            if c.observer:
                self.viewer_frames.append((now, c.idx, data.get("count"), data.get("peak")))
            return
        if raw.startswith(STREAM_CHAT_PREFIX):
            if raw.startswith(loadgen.CHAT_PREFIX) and raw[len(loadgen.CHAT_PREFIX)].isdigit():
                return super().on_frame(c, raw, now)  # numbered: LoadGen checks gaps and order too
            # Unnumbered (seq null): latency and count only.
            self.nframes += 1
            i = raw.find(BODY_MARK)
            if i >= 0:
                i += len(BODY_MARK)
                sent = float(raw[i:raw.index("|", i)])
                self.lat.append(now - sent)
                self.lat_sent.append(sent)
                c.chat += 1
            else:
                self.types["chat.message"] += 1  # someone else's message (not the benchmark's)
            return
        if raw.startswith(SNAPSHOT_PREFIX):
            # The snapshot carries the count at connect: what the viewer shows until the next `viewers` frame.
            shown = json.loads(raw)["data"].get("viewers")
            if isinstance(shown, dict):
                c.viewers = (now, shown.get("count"), shown.get("peak"))
        super().on_frame(c, raw, now)

    # --- phases ----------------------------------------------------------------------------------------
    async def cmd_join(self, cmd: dict) -> dict:
        new = []
        for idx, user_id, key, observer in cmd["clients"]:
            c = self.clients[idx] = Viewer(idx, user_id, key or "", observer=observer)
            new.append(c)
        await _sleep_until(cmd["start_at"])
        cpu = time.process_time()
        await asyncio.gather(*(self.open_client(c, cmd["timeout"]) for c in new))
        return {"clients": [(c.idx, c.t_start, c.t_open, c.t_snapshot, c.fail, c.first_type) for c in new],
                "cpu": time.process_time() - cpu}

    async def cmd_viewers(self, cmd: dict) -> dict:
        """The observers' viewers frames since `since`, and every open viewer's last count."""
        last = collections.Counter(c.viewers[1] if c.viewers else None for c in self.alive())
        return {"frames": [f for f in self.viewer_frames if f[0] >= cmd.get("since", 0)],
                "last_counts": dict(last), "open": len(self.alive())}

    async def cmd_reactions(self, cmd: dict) -> dict:
        """Send the scheduled reactions; then wait (bounded) until reaction frames stop; report what each
        viewer added up. `sends` holds [client idx, offset from start_at, emoji, number]."""
        receivers = self.alive()
        for c in receivers:
            c.rx_total = c.rx_frames = 0
            c.rx_by_emoji = collections.Counter()
            c.rx_timeline = []
        start_at = cmd["start_at"]
        records: list[tuple[str, list]] = []
        frames_before = self.nframes
        await _sleep_until(start_at - 0.05)
        cpu = time.process_time()
        for idx, off, emoji, n in cmd["sends"]:
            await _sleep_until(start_at + off)
            c = self.clients.get(idx)
            if c is None or c.ws is None:
                continue
            ref = f"r{n}"
            records.append((emoji, await self.send(c, ref, {"type": "reaction", "emoji": emoji, "ref": ref})))
        # Drain: the last batch window closes after the last send; wait until no reactions frame has come
        # for `quiet` seconds (and every send has its ack or error), at most drain_max after the last send.
        last_send = start_at + (cmd["sends"][-1][1] if cmd["sends"] else 0)
        await _sleep_until(last_send + cmd["drain_min"])
        hard_stop = last_send + cmd["drain_max"]
        while time.time() < hard_stop:
            quiet = time.time() - max(self.rx_last, last_send) >= cmd["quiet"]
            # A room that acks reactions: also wait for every answer. One that does not: errors only.
            acks = any(r[1] is not None and r[3] is None for _, r in records)
            answered = not acks or all(r[1] is not None or r[3] is not None for _, r in records)
            if quiet and answered:
                break
            await asyncio.sleep(0.1)
        cpu = time.process_time() - cpu
        totals = collections.Counter(
            (c.rx_total, tuple(sorted(c.rx_by_emoji.items()))) for c in receivers)
        return {
            "receivers": len(receivers),
            "sends": [(r[0], r[1], r[3], emoji) for emoji, r in records],  # (t_send, t_ack, error, emoji)
            "totals": [[total, dict(by), k] for (total, by), k in totals.items()],
            "rx_frames": sum(c.rx_frames for c in receivers),
            "timelines": [c.rx_timeline for c in receivers if c.observer],
            "frames": self.nframes - frames_before,
            "closed_during": sum(1 for c in receivers if not c.ws.is_open()),
            "window_ms": self.window_ms,
            "errors": dict(self.errors),
            "cpu": cpu,
        }

    async def cmd_frames(self, cmd: dict) -> dict:
        return {"frames": self.nframes}

    async def cmd_leave_some(self, cmd: dict) -> dict:
        """Close the listed viewers' sockets (a partial leave); report when the last close completed."""
        leaving = [self.clients[i] for i in cmd["idxs"] if i in self.clients and self.clients[i].ws is not None]
        await asyncio.gather(*(c.ws.close() for c in leaving))
        for c in leaving:
            del self.clients[c.idx]
        return {"closed": len(leaving), "t_done": time.time()}

    async def cmd_close(self, cmd: dict) -> dict:
        reply = await super().cmd_close(cmd)
        reply["errors"] = dict(self.errors)  # every error frame of the run, by code
        return reply
