"""What the moderation pipeline adds to stream chat delivery: the stream chat phase twice, in one invocation.

    .venv/bin/python -m benchmarks.moderation --viewers 1000 --chat-rate 20 --senders 20 --duration 30

Same machine state for both targets: one throwaway PostgreSQL and Redis, one seed (benchmarks.stream_seed),
the same viewers, senders, message texts and rate. Each target is a fresh Aula server (config.devservers.
web_argv, plus its Celery processes) driven by the stream benchmark's own phases (benchmarks.streams:
connect storm, idle, chat) from benchmarks.stream_loadgen generators on 127.0.0.1:

A. baseline: `AULA_MODERATION_CLASSIFIER=` (no ML stage) and no pattern list anywhere: the pipeline is
   nearly free;
B. moderated: the default classifier, and the pattern lists of `pattern_lists()` (300 terms, 20 wildcards,
   5 regular expressions, platform-wide and on the stream's channel), seeded between A and B through
   moderation.policy_services (rules checked with moderation.patterns.validate_rule).

Chat bodies vary (`chat_text`): a few % hit a list (masked, flagged, notified or held). A held message is
acknowledged with `pending_review` and never delivered: it is counted apart and left out of the delivered
share; latencies are of delivered messages only. Before each measured phase the room gets warm-up chat; in B
until a round passes without a message that skipped the classifier (the server loads it in a background
thread at start and screens with patterns only until then; the skips are counted in Redis).

Between the targets a Django subprocess also times `moderation.pipeline.screen()` alone, in process, over
`--micro-messages` varied texts: without lists and classifier, with the lists only, and with both.
Writes JSON + markdown to benchmarks/measurements/moderation-<viewers>-<commit>.json/.md. Methods and
figures: docs/benchmarks.md, "Moderation: added chat latency".
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import functools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.classroom import (
    PY,
    ROOT,
    CpuWindow,
    Generators,
    Server,
    app_revision,
    backing_processes,
    dist_ms,
    log,
    machine_info,
    pct,
    raise_nofile,
    wait_for_quiet,
)
from benchmarks.stream_loadgen import StreamLoadGen
from benchmarks.streams import Background, run_chat, run_locked, run_storm, save_summary
from config.devservers import backing_services, celery_processes, free_port, web_argv

GENERATOR = "benchmarks.moderation:ModerationLoadGen"
# Both targets: the benchmark's 20 senders at 1 message/s each are at the chat limit (5 per 5 s, a fixed
# window), and 20 messages/s is the room's sampling threshold; neither is what is measured here.
COMMON_SERVER_ENV = {"AULA_RATE_LIMITS": "chat=100000/1", "AULA_STREAM_CHAT_FANOUT_PER_SEC": "100"}


# --- the texts and the lists (pure) ---------------------------------------------------------------------------

BENIGN = [
    "great stream today, thanks for doing this", "what song is playing right now?",
    "can you explain the last part again please", "hello from Lisbon!", "lol that was so close",
    "first time here, loving the vibe", "how long have you been working on this project?",
    "is there a replay later for people in other time zones", "that combo was insane",
    "the audio is a bit quiet on my side", "which keyboard do you use?", "gg everyone",
    "could you share the link to the docs you mentioned", "I tried this yesterday and it worked the second time",
    "what's the plan for next week's stream", "nice, the new layout looks much cleaner",
    "does this work on older versions too?", "haha the cat walking across the desk",
    "my exam is tomorrow, wish me luck", "so the trick is to do it in two steps?",
    "can you zoom in a little, the text is small", "where can I find the slides", "this chat is so wholesome",
    "you should try the other route next time", "I missed the start, what did I miss?",
]
TAILS = ["", "", "", " :)", " haha", " !!", " thanks", " 👍", " 😂", " lol", " omg", " ok"]
# Consonants that no folded digit or punctuation turns into (textnorm folds 0 1 3 4 5 7 | ! $ @ + to letters),
# so a generated term never matches inside the "B|<timestamp>|<n>|" mark of a benchmark message.
_CONSONANTS, _VOWELS = "dgkmnprvz", "aeiou"
_REGEXES = {  # over the folded text
    "hold": [r"discord\W*gg\W*/\W*[a-z0-9]+", r"\b(?:free|cheap)\W+(?:robux|vbucks|followers)\b"],
    "flag": [r"\bbit\W*ly\W*/\W*[a-z0-9]+", r"\b(?:sub|follow)\W*(?:for|a)\W*(?:sub|follow)\b",
             r"\bwww\W+[a-z0-9-]+\W+(?:xyz|top|click)\b"],
}


@functools.cache
def _pseudo_words(count: int) -> tuple[str, ...]:
    """Distinct made-up words (CV CV CVC): list entries of realistic length that no benign text contains."""
    rng, words = random.Random(20261201), []
    seen = set()
    while len(words) < count:
        w = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(3)) + rng.choice(_CONSONANTS)
        if w not in seen:
            seen.add(w)
            words.append(w)
    return tuple(words)


@functools.cache
def pattern_lists() -> tuple[dict, ...]:
    """The moderated target's lists: 300 terms, 20 wildcards and 5 regular expressions in four lists, two
    platform-wide and two on the stream's channel. The terms are made-up words: what a list costs is its
    size and the shape of its entries, and made-up words keep the benign texts clear of accidental hits."""
    words = _pseudo_words(320)
    terms, stems = words[:300], words[300:]

    def wildcards(ws):
        shapes = [lambda s: f"{s[:4]}*", lambda s: f"*{s[-4:]}", lambda s: f"{s[:2]}?{s[3:5]}*"]
        return [("wildcard", shapes[i % 3](s)) for i, s in enumerate(ws)]

    return (
        {"scope": "platform", "name": "Platform: threats and slurs", "action": "hold",
         "rules": [("term", t) for t in terms[:120]] + wildcards(stems[:8])
                  + [("regex", r) for r in _REGEXES["hold"]]},
        {"scope": "platform", "name": "Platform: spam links", "action": "flag",
         "rules": [("regex", r) for r in _REGEXES["flag"]]},
        {"scope": "channel", "name": "Channel: banned words", "action": "censor",
         "rules": [("term", t) for t in terms[120:270]] + wildcards(stems[8:])},
        {"scope": "channel", "name": "Channel: watch words", "action": "notify",
         "rules": [("term", t) for t in terms[270:]]},
    )


def chat_text(n: int) -> str:
    """The text of benchmark chat message n (deterministic). Of every 200 messages, 13 hit a list: 6 a
    censored word, 2 a flagging link, 2 a notifying word, 3 a holding term or link; the rest are clean."""
    rng = random.Random(n)
    text = rng.choice(BENIGN) + rng.choice(TAILS)
    if rng.random() < 0.3:
        text += " " + rng.choice(BENIGN)
    words = _pseudo_words(320)
    m = n % 100
    if m in (13, 63):
        text += f" {words[120 + n % 150]}"                  # censored (masked, delivered)
    elif m == 37:
        text = f"{words[308 + n % 12]} {text}"               # a censoring wildcard (masked, delivered)
    elif m == 47:
        text += f" check bit.ly/x{n}k"                       # flagged (delivered, queued)
    elif m == 88:
        text += f" {words[270 + n % 30]}"                   # notify (delivered)
    elif m == 29:
        text = f"{words[n % 120]} {text}"                   # held
    elif n % 200 == 151:
        text += f" join discord.gg/pr{n}"                    # held
    return text


def outcome_figures(outcomes: list[dict], deliveries: int, receivers: int) -> dict:
    """Per message: shown (acknowledged with a `cseq`), held (acknowledged `pending_review`: never delivered)
    or refused (an error frame). Ack latency apart for shown and held; delivered % of the shown ones."""
    shown = [o for o in outcomes if o["t_ack"] is not None and not o["error"] and not o["held"]]
    held = [o for o in outcomes if o["t_ack"] is not None and not o["error"] and o["held"]]
    errors = collections.Counter(o["error"] for o in outcomes if o["error"])
    expected = len(shown) * receivers
    return {
        "messages": len(outcomes), "shown": len(shown), "held": len(held), "refused": dict(errors),
        "unanswered": sum(1 for o in outcomes if o["t_ack"] is None and not o["error"]),
        "held_pct": round(100 * len(held) / max(len(outcomes), 1), 2),
        "ack_shown": dist_ms([o["t_ack"] - o["t_send"] for o in shown]),
        "ack_held": dist_ms([o["t_ack"] - o["t_send"] for o in held]),
        "expected_deliveries": expected,
        "delivered_pct_of_shown": round(100 * deliveries / max(expected, 1), 3),
    }


def timing_ms(samples: list[float]) -> dict:
    """p50/p95/p99/max in ms (to the µs) of durations in seconds."""
    if not samples:
        return {"n": 0}
    s = sorted(samples)
    return {"n": len(s), **{f"p{q}_ms": round(1000 * pct(s, q), 3) for q in (50, 95, 99)},
            "max_ms": round(1000 * s[-1], 3), "mean_ms": round(1000 * sum(s) / len(s), 3)}


# --- the load generator ----------------------------------------------------------------------------------------

class ModerationLoadGen(StreamLoadGen):
    """The stream generator, with `chat_text(n)` as message n's text after the timing mark, refs unique per
    chat round (the room treats a repeated ref from the same author as a retry: stored and shown once), and
    each round's outcomes (shown, held, refused) for the harness."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.token = uuid.uuid4().hex[:8]
        self.round = 0
        self.round_sends: dict[int, list] = {}

    async def send(self, c, ref: str, message: dict, t_send: float | None = None) -> list:
        if message.get("type") != "chat.send":
            return await super().send(c, ref, message, t_send)
        mark, sent, n, _ = message["body"].split("|", 3)
        ref = f"{self.token}.{self.round}.{ref}"
        record = await super().send(c, ref, {**message, "ref": ref,
                                             "body": f"{mark}|{sent}|{n}| {chat_text(int(n))}"}, t_send)
        self.round_sends[int(n)] = record
        return record

    async def cmd_chat(self, cmd: dict) -> dict:
        self.round += 1
        self.round_sends = {}
        return await super().cmd_chat(cmd)

    async def cmd_chat_outcomes(self, cmd: dict) -> dict:
        return {"outcomes": [{"n": n, "t_send": r[0], "t_ack": r[1], "error": r[3],
                              "held": bool(r[2] and r[2].get("pending_review"))}
                             for n, r in sorted(self.round_sends.items())]}


# --- one target ------------------------------------------------------------------------------------------------

def _skipped(health: dict | None) -> int | None:
    """Messages that skipped the classifier so far (every server process counts them in one Redis hash)."""
    if not health:
        return None
    import redis

    client = redis.Redis.from_url(health["url"])
    try:
        return int(client.hget(health["key"], "skipped") or 0)
    finally:
        client.close()


def run_target(name: str, server: Server, seed: dict, args, backing: dict, health: dict | None) -> dict:
    """Connect storm, idle, warm-up chat, then the measured chat phase (benchmarks.streams' phases)."""
    viewers = seed["viewers"][:args.viewers]
    spec = {"url": f"ws://127.0.0.1:{server.port}/ws/v1/streams/{seed['stream_id']}/?surface=watch",
            "origin": f"http://127.0.0.1:{server.port}", "cookie_name": seed["cookie_name"],
            "client": "sansio", "generator": GENERATOR}
    gens = Generators(args.procs, spec)
    window = CpuWindow({"server": server.workers, "loadgen": gens.psutil_procs, **backing})
    result: dict = {"target": name}
    try:
        time.sleep(1.0)  # generator processes import websockets/uvloop
        owner, per_proc = {}, [[] for _ in range(args.procs)]
        for i, v in enumerate(viewers):
            owner[i] = i % args.procs
            per_proc[i % args.procs].append([i, v["id"], v["key"], i < args.procs * 3])
        storm, joined = run_storm(gens, window, per_proc, args, name)
        result["storm"] = {k: storm[k] for k in ("viewers", "connected", "success_pct", "all_connected_s",
                                                 "failures", "server_cpu_ms_per_connect")}
        present = [c[0] for c in joined]
        if not present:
            raise RuntimeError(f"no viewer connected\n{server.log_tail()}")
        talkers = list(present)
        random.Random(args.seed).shuffle(talkers)
        senders = talkers[:max(1, min(args.senders, len(talkers)))]
        time.sleep(args.settle)
        if args.idle > 0:
            window.start()
            time.sleep(args.idle)
            result["idle"] = window.stop()

        # Warm-up chat (not measured): database connections, caches, and in B the classifier loaded.
        warm_args = argparse.Namespace(**{**vars(args), "duration": args.warmup, "drain": 5.0})
        rounds = []
        for _ in range(6):
            before = _skipped(health)
            chat = run_chat(gens, window, senders, owner, warm_args, f"{name} warm-up", len(present))
            after = _skipped(health)
            rounds.append({"messages": chat["messages"], "skipped_classifier": None if health is None else after - before,
                           "latency_p95_ms": chat["latency"].get("p95_ms")})
            if health is None or after == before:
                break
        result["warm_up"] = rounds
        if health is not None and rounds[-1]["skipped_classifier"]:
            raise RuntimeError(f"the classifier was still skipped after {len(rounds)} warm-up rounds")

        # Other sessions' test runs share this machine: a measured phase during which other processes took
        # more than --max-other cores is run again (up to --attempts), and the least disturbed one is kept.
        attempts = []
        for _ in range(args.attempts):
            time.sleep(args.settle)
            busy = wait_for_quiet(min(args.quiet_wait, 30))
            load = [round(x, 2) for x in os.getloadavg()]
            chat = measure_chat(gens, window, senders, owner, args, name, len(present), health, result.get("idle"))
            chat["machine_busy_before"], chat["load_before"] = busy, load
            attempts.append(chat)
            log(f"{name}: delivery p95 {chat['latency'].get('p95_ms')} ms, other processes "
                f"{chat['cpu']['other_processes_cores']} cores")
            if chat["cpu"]["other_processes_cores"] <= args.max_other:
                break
        best = min(range(len(attempts)), key=lambda i: attempts[i]["cpu"]["other_processes_cores"])
        result["chat"] = {**attempts[best], "attempt": best + 1}
        result["load_before_chat"] = attempts[best]["load_before"]
        result["chat_attempts"] = [{"other_processes_cores": c["cpu"]["other_processes_cores"],
                                    "latency": c["latency"], "ack_shown": c["ack_shown"]} for c in attempts]

        errors: collections.Counter = collections.Counter()
        for r in gens.ask([{"cmd": "close"}] * args.procs, 120):
            errors.update(r["errors"])
        result["error_frames"] = dict(errors)
    finally:
        gens.stop()
    return result


def measure_chat(gens: Generators, window: CpuWindow, senders: list[int], owner: dict, args, name: str,
                 receivers: int, health: dict | None, idle: dict | None) -> dict:
    """One measured chat phase (benchmarks.streams.run_chat) with each message's outcome and CPU per message."""
    skipped_before = _skipped(health)
    chat = run_chat(gens, window, senders, owner, args, name, receivers)
    if health is not None:
        chat["skipped_classifier"] = _skipped(health) - skipped_before
    outcomes = [o for r in gens.ask([{"cmd": "chat_outcomes"}] * args.procs, 60) for o in r["outcomes"]]
    chat.update(outcome_figures(outcomes, chat["deliveries"], chat["receivers"]))
    eventually = round(chat["eventually_delivered_pct"] * chat["expected"] / 100)  # after the quiet wait
    chat["eventually_delivered_pct_of_shown"] = round(100 * eventually / max(chat["expected_deliveries"], 1), 3)
    server_cpu = chat["cpu"]["cpu_s"]["server"]
    chat["server_cpu_ms_per_message"] = round(1000 * server_cpu / max(len(outcomes), 1), 3)
    if idle:
        net = max(server_cpu - idle["cpu_s"]["server"] / idle["seconds"] * chat["cpu"]["seconds"], 0.0)
        chat["server_cpu_ms_per_message_net_of_idle"] = round(1000 * net / max(len(outcomes), 1), 3)
    return chat


# --- the Django step: seed the lists, time screen() in process --------------------------------------------------

def _screen_timings(texts: list[str], ctx, warm: int = 100) -> dict:
    from moderation import pipeline

    actions: collections.Counter = collections.Counter()
    for text in texts[:warm]:
        pipeline.screen(text, ctx)
    samples = []
    for text in texts:
        t0 = time.perf_counter()
        verdict = pipeline.screen(text, ctx)
        samples.append(time.perf_counter() - t0)
        actions[verdict.action] += 1
    return {**timing_ms(samples), "actions": dict(actions)}


def django_step(argv: list[str]) -> int:
    """Run in its own process (it needs Django; the harness does not), between the two targets."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.moderation --django-step")
    p.add_argument("--channel-id", type=int, required=True)
    p.add_argument("--stream-id", type=int, required=True)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test import override_settings

    from moderation import patterns, pipeline, policy_services

    ctx = pipeline.Context(source="stream_chat", channel_id=args.channel_id, room_id=args.stream_id)
    texts = [f"B|{time.time():.6f}|{n}| {chat_text(n)}" for n in range(1, args.messages + 1)]
    out: dict = {"messages": len(texts)}
    with override_settings(AULA_MODERATION_CLASSIFIER=""):
        out["screen_baseline"] = _screen_timings(texts, ctx)  # A's configuration: no lists yet, no classifier

    started, counts = time.monotonic(), collections.Counter()
    for spec in pattern_lists():
        scope = policy_services.ScopeRef(channel_id=args.channel_id if spec["scope"] == "channel" else None)
        plist = policy_services.pattern_list_create(actor=None, scope=scope, name=spec["name"], action=spec["action"])
        rows = [(kind, patterns.validate_rule(kind, pattern), "") for kind, pattern in spec["rules"]]
        policy_services.pattern_rules_upsert(actor=None, list_id=plist.pk, rows=rows, source="benchmark")
        counts.update(kind for kind, _, _ in rows)
    out["lists"] = {"lists": len(pattern_lists()), "rules": dict(counts),
                    "seconds": round(time.monotonic() - started, 2)}

    with override_settings(AULA_MODERATION_CLASSIFIER=""):
        out["screen_patterns_only"] = _screen_timings(texts, ctx)
    pipeline._load()  # loaded (or trained and cached) now, as a server's background warm-up does
    out["classifier"] = pipeline.model_version()
    out["screen_moderated"] = _screen_timings(texts, ctx)
    out["health"] = {"url": settings.REDIS_REALTIME_SHARDS[0], "key": pipeline._health_key()}
    Path(args.out).write_text(json.dumps(out))
    return 0


# --- the run -----------------------------------------------------------------------------------------------------

def wait_for_load(limit_s: float, below: float) -> dict:
    """Wait (bounded, polling every 30 s) until the 1-minute load average is at most `below`."""
    started = time.monotonic()
    while True:
        load = os.getloadavg()
        if load[0] <= below or time.monotonic() - started >= limit_s:
            return {"loadavg": [round(x, 2) for x in load], "waited_s": round(time.monotonic() - started),
                    "calm": load[0] <= below}
        log(f"load average {load[0]:.2f} > {below}: waiting (someone is running tests)")
        time.sleep(30)


def run(args) -> dict:
    nofile = raise_nofile()
    if nofile < args.viewers + 500:
        raise SystemExit(f"open-file limit {nofile} is below the {args.viewers + 500} this run needs")
    summary: dict = {"args": vars(args), "machine": machine_info(),
                     "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    app = Path(args.app_dir).resolve()
    summary["app"] = app_revision(app)
    summary["load_wait"] = wait_for_load(args.load_wait, args.max_load)
    with backing_services(persistent=False) as extra, tempfile.TemporaryDirectory(prefix="aula-mod-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, **extra, "AULA_ENV": "development", "DJANGO_DEBUG": "false",
               "AULA_LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "config.settings",
               "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(app), str(ROOT)]))}
        env.pop("PYTEST_XDIST_WORKER", None)
        log(f"migrating ({app})")
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=app, check=True)
        log(f"seeding {args.viewers} viewers")
        subprocess.run([PY, "-m", "benchmarks.stream_seed", "--viewers", str(args.viewers), "--out",
                        str(tmp / "seed.json")], env=env, cwd=app, check=True)
        seed = json.loads((tmp / "seed.json").read_text())
        backing = backing_processes(env)
        results, health = [], None
        for name in ("A", "B"):
            if name == "B":
                log("seeding pattern lists; timing screen() in process")
                # This file runs from the tree that has it (an exported older commit may not).
                step_cwd = app if (app / "benchmarks" / "moderation.py").exists() else ROOT
                subprocess.run([PY, "-m", "benchmarks.moderation", "--django-step", "--channel-id",
                                str(seed["channel_id"]), "--stream-id", str(seed["stream_id"]),
                                "--messages", str(args.micro_messages), "--out", str(tmp / "micro.json")],
                               env=env, cwd=step_cwd, check=True)
                summary["micro"] = json.loads((tmp / "micro.json").read_text())
                health = summary["micro"]["health"]
            port = free_port()
            server_env = {**env, **COMMON_SERVER_ENV, "AULA_WS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"}
            if name == "A":
                server_env["AULA_MODERATION_CLASSIFIER"] = ""
            argv = web_argv("127.0.0.1", port, args.workers)
            summary["server_command"] = " ".join(argv[1:])
            background = Background(celery_processes(tmp / f"beat-{name}", loglevel="WARNING"), server_env, app, tmp)
            server = Server(argv, server_env, port, tmp / f"aula-{name}.log", health=True, cwd=app)
            log(f"{name} listening on 127.0.0.1:{port} (pid {server.proc.pid})")
            try:
                busy = wait_for_quiet(args.quiet_wait)
                result = run_target(name, server, seed, args, {**backing, "celery": background.processes}, health)
                result["machine_busy_before"] = busy
                results.append(result)
            finally:
                server.stop()
                background.stop()
            results[-1]["server_exceptions"] = server.exceptions()
        summary["results"] = results
    summary["added"] = added(results[0]["chat"], results[1]["chat"])
    return summary


def added(a: dict, b: dict) -> dict:
    """B − A, in ms (server CPU in ms per message)."""
    def diff(x, y):
        return None if x is None or y is None else round(y - x, 2)

    out = {}
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        out[f"delivery_{q}"] = diff(a["latency"].get(q), b["latency"].get(q))
        out[f"ack_{q}"] = diff(a["ack_shown"].get(q), b["ack_shown"].get(q))
    out["server_cpu_ms_per_message"] = diff(a["server_cpu_ms_per_message"], b["server_cpu_ms_per_message"])
    p95 = out["delivery_p95_ms"]
    out["target_delivery_p95_lt_50_ms"] = None if p95 is None else p95 < 50
    return out


def markdown(summary: dict) -> str:
    a, (ra, rb) = summary["args"], summary["results"]
    d = summary["added"]
    ca, cb = ra["chat"], rb["chat"]

    def trio(c, key):
        x = c[key]
        return f"{x.get('p50_ms')} / {x.get('p95_ms')} / {x.get('p99_ms')}"

    def pair(c, key):
        x = c[key]
        return f"{x.get('p50_ms')} / {x.get('p95_ms')}" if x.get("n") else "–"

    rows = [
        ("viewers connected", ra["storm"]["connected"], rb["storm"]["connected"], ""),
        ("messages sent / shown / held / refused",
         f"{ca['messages']} / {ca['shown']} / {ca['held']} / {sum(ca['refused'].values())}",
         f"{cb['messages']} / {cb['shown']} / {cb['held']} / {sum(cb['refused'].values())}", ""),
        ("chat ack p50 / p95 (ms), shown messages", pair(ca, "ack_shown"), pair(cb, "ack_shown"),
         f"{d['ack_p50_ms']} / {d['ack_p95_ms']}"),
        ("chat ack p50 / p95 (ms), held messages", pair(ca, "ack_held"), pair(cb, "ack_held"), ""),
        ("delivery p50 / p95 / p99 (ms)", trio(ca, "latency"), trio(cb, "latency"),
         f"{d['delivery_p50_ms']} / {d['delivery_p95_ms']} / {d['delivery_p99_ms']}"),
        ("delivered % of shown messages (within drain / eventually)",
         f"{ca['delivered_pct_of_shown']} / {ca['eventually_delivered_pct_of_shown']}",
         f"{cb['delivered_pct_of_shown']} / {cb['eventually_delivered_pct_of_shown']}", ""),
        ("server CPU per message (ms; net of idle)",
         f"{ca['server_cpu_ms_per_message']}; {ca.get('server_cpu_ms_per_message_net_of_idle')}",
         f"{cb['server_cpu_ms_per_message']}; {cb.get('server_cpu_ms_per_message_net_of_idle')}",
         d["server_cpu_ms_per_message"]),
        ("server CPU µs per delivery", ca["server_cpu_us_per_delivery"], cb["server_cpu_us_per_delivery"], ""),
        ("messages that skipped the classifier", "– (disabled)", cb.get("skipped_classifier"), ""),
        ("measured chat attempt kept (of tried)", f"{ca['attempt']} of {len(ra['chat_attempts'])}",
         f"{cb['attempt']} of {len(rb['chat_attempts'])}", ""),
        ("machine busy % / other processes (cores), chat phase",
         f"{ca['cpu']['machine_busy_pct']} / {ca['cpu']['other_processes_cores']}",
         f"{cb['cpu']['machine_busy_pct']} / {cb['cpu']['other_processes_cores']}", ""),
        ("load average before chat (1/5/15 min)", ra["load_before_chat"], rb["load_before_chat"], ""),
        ("error frames / server exceptions",
         f"{sum(ra['error_frames'].values())} / {sum(ra['server_exceptions'].values())}",
         f"{sum(rb['error_frames'].values())} / {sum(rb['server_exceptions'].values())}", ""),
    ]
    lines = [f"### {a['viewers']} viewers, chat {a['chat_rate']}/s from {a['senders']} senders, {a['duration']} s, "
             f"uvicorn --workers {a['workers']} (commit {(summary['app'].get('commit') or '?')[:7]})", "",
             "| measure | A: baseline (no classifier, no lists) | B: classifier + lists | B − A |", "|---|---|---|---|"]
    lines += [f"| {label} | {x} | {y} | {z} |" for label, x, y, z in rows]
    met = d["target_delivery_p95_lt_50_ms"]
    lines += ["", f"Added delivery latency p95: **{d['delivery_p95_ms']} ms** (target < 50 ms: "
                  f"{'met' if met else 'NOT met' if met is not None else 'not measured'})."]
    m = summary.get("micro")
    if m:
        lines += ["", f"`moderation.pipeline.screen()` alone, in process, {m['messages']} varied messages "
                      f"(classifier {m['classifier']}; lists: {m['lists']['rules']}):", "",
                  "| configuration | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | verdicts |", "|---|---|---|---|---|---|"]
        for key, label in (("screen_baseline", "no classifier, no lists (A)"),
                           ("screen_patterns_only", "lists only"),
                           ("screen_moderated", "classifier + lists (B)")):
            x = m[key]
            lines.append(f"| {label} | {x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['max_ms']} | "
                         + ", ".join(f"{k} {v}" for k, v in sorted(x["actions"].items())) + " |")
    lw = summary["load_wait"]
    lines += ["", f"Load average at start {lw['loadavg']} (waited {lw['waited_s']} s)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--django-step"]:
        return django_step(argv[1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks.moderation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--viewers", type=int, default=1000)
    p.add_argument("--chat-rate", type=float, default=20.0, help="chat messages per second, stream-wide")
    p.add_argument("--senders", type=int, default=20, help="viewers who send the chat messages")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of measured chat per target")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of each warm-up chat round")
    p.add_argument("--workers", type=int, default=1, help="uvicorn --workers")
    p.add_argument("--procs", type=int, default=2, help="load-generator processes")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle measurement after the storm")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between phases")
    p.add_argument("--connect-timeout", type=float, default=60.0)
    p.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for deliveries after the last send")
    p.add_argument("--attempts", type=int, default=3, help="measured chat phases at most, per target")
    p.add_argument("--max-other", type=float, default=0.25,
                   help="run the chat phase again when other processes took more cores than this")
    p.add_argument("--micro-messages", type=int, default=2000, help="texts timed through screen() in process")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="wait up to this long for the machine to calm down before each target")
    p.add_argument("--max-load", type=float, default=1.5, help="wait for the 1-minute load average to be at most this")
    p.add_argument("--load-wait", type=float, default=900.0, help="... for at most this many seconds")
    p.add_argument("--app-dir", default=str(ROOT), help="the Aula checkout to serve (default: this one)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="JSON path (default: benchmarks/measurements/moderation-<viewers>-<commit>.json)")
    args = p.parse_args(argv)
    if not 1 <= args.viewers <= 20000 or not 0 < args.duration <= 300 or not 0 < args.chat_rate <= 100:
        p.error("viewers 1..20000, duration 0..300 s, chat-rate 0..100")
    if not 0 < args.warmup <= 30 or not 1 <= args.micro_messages <= 20000:
        p.error("warmup 0..30 s, micro-messages 1..20000")
    summary = run_locked(run, args)
    out = save_summary(summary, args, "moderation", markdown)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
