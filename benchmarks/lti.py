"""The LTI paths under their two bursts: a launch storm at class start, and grade passback at an exam deadline.

    .venv/bin/python -m benchmarks.lti --students 300 --scores 2000

Starts throwaway PostgreSQL and Redis (config.devservers.backing_services; or DATABASE_URL / REDIS_URL), runs
`manage.py migrate`, starts the mock LMS of the test suite (tests/lti/platform.py, `MockPlatform`: a real HTTP
server on 127.0.0.1 that signs id_tokens, issues OAuth2 tokens and stores AGS scores) in this process, seeds
through classrooms.services / classrooms.lti_services, then starts the processes of `make run`
(config.devservers.web_argv: uvicorn with `--workers`; config.devservers.celery_processes) with
`AULA_PUBLIC_URL=http://127.0.0.1:<port>`, `DJANGO_DEBUG=false`, `AULA_ENV=--env` (default `development`:
the production password hasher). Phases, in this order, every loop bounded:

1. **password baseline**: N other students sign in with a password at the same instant (GET /accounts/login/
   for the CSRF token, POST the form; done at the 302 that sets the session cookie);
2. **launch storm, first launch**: N students of one LMS course launch the same placement (a live session) at
   the same instant: POST /lti/login/ (the LMS's login initiation) → GET the LMS's /auth (it answers with the
   auto-submitting form of a signed id_token) → POST /lti/launch/ → GET the hand-off /lti/continue/<t>/ (302
   into the session room, session cookie set). None of them has an Aula account yet: the launch makes it;
3. **launch storm, returning**: the same N students launch again (accounts, identities and enrollments exist);
4. **grade burst, token cache on**: M GradeSync rows with `lti_link` (a placement with its LMS line item) are
   queued at once (`exams.tasks.grade_sync_deliver` on `bulk`, as `exams.services._grade_sync_put` queues
   them) and delivered by the Celery worker to the LMS's /scores;
5. **grade burst with 5 % 500s**: the same, with every 20th score POST answered 500 by the LMS (`fail_next`):
   the retries (`lms.backoff`: 30 s, then 60 s) must bring every score in exactly once;
6. **grade burst, token cache off** (the baseline of 4): the Celery processes are restarted with
   `AULA_BENCH_LTI_TOKEN_CACHE=off` and a `sitecustomize` on PYTHONPATH that installs an import hook: when
   `classrooms.lti` is imported, `CachedTokenConnector.get_access_token` is replaced by pylti1p3's own (no
   Redis cache, a fresh token per delivery). classrooms/lti.py is not changed.

Each phase reports latency percentiles (or throughput), errors, CPU seconds of the web and Celery processes,
and what the LMS saw (token requests, NRPS roster reads, score POSTs). JSON to --out. Figures and method:
docs/benchmarks.md, "LTI: launch storm and grade passback".
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.exams import pct, raise_nofile  # the same percentile rule as the exam benchmark

ROOT = Path(__file__).resolve().parent.parent
LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
PASSWORD = "bench-password-2026"
TOKEN_CACHE_ENV = "AULA_BENCH_LTI_TOKEN_CACHE"
CONTINUE = re.compile(r'data-testid="lti-continue" href="([^"]+)"')
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# --- the token-cache switch (runs inside the Celery worker processes) ---------------------------------------

def disable_token_cache(module) -> None:
    """classrooms.lti with its Redis token cache bypassed: every service call asks the LMS for a token, as
    pylti1p3's ServiceConnector does on its own (it caches per connector instance; Aula makes one per
    delivery)."""
    from pylti1p3.service_connector import ServiceConnector

    def get_access_token(self, scopes):
        return ServiceConnector.get_access_token(self, scopes)

    module.CachedTokenConnector.get_access_token = get_access_token
    module.AULA_BENCH_TOKEN_CACHE_OFF = True


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds classrooms.lti as usual and runs disable_token_cache on the module right after it executes."""

    def find_spec(self, name, path, target=None):
        if name != "classrooms.lti":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            disable_token_cache(module)

        spec.loader.exec_module = exec_module
        return spec


def install_import_hook() -> None:
    """Called from the generated sitecustomize when AULA_BENCH_LTI_TOKEN_CACHE=off."""
    if os.environ.get(TOKEN_CACHE_ENV) == "off" and not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


SITECUSTOMIZE = """\
import os
if os.environ.get("AULA_BENCH_LTI_TOKEN_CACHE") == "off":
    import benchmarks.lti
    benchmarks.lti.install_import_hook()
"""


# --- small helpers --------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"[lti-bench] {msg}", file=sys.stderr, flush=True)


def dist_ms(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    return {"n": len(samples), **{f"p{q}": round(1000 * pct(samples, q), 1) for q in (50, 95, 99)},
            "max": round(1000 * max(samples), 1)}


def cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """User + system CPU of these processes and their children (psutil), now."""
    import psutil

    total = 0.0
    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in tree:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def machine_busy() -> tuple[float, float]:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0), sum(t)


# --- load generator (spawned processes) -----------------------------------------------------------------------

def _launch_one(client, item: dict, public: str) -> dict:
    """One student's launch, as the browser does it; a failure is a measurement."""
    from tests.lti.platform import read_form

    steps, t = {}, time.perf_counter()
    stage = "login"
    try:
        r = client.post(public + "/lti/login/", data=item["params"], allow_redirects=False)
        if r.status_code != 302:
            return {"error": f"login:{r.status_code}"}
        steps["login"], t = time.perf_counter() - t, time.perf_counter()
        stage = "authorize"
        r = client.get(r.headers["location"], allow_redirects=False)
        if r.status_code != 200:
            return {"error": f"authorize:{r.status_code}", "steps": steps}
        action, form = read_form(r.text)
        steps["authorize"], t = time.perf_counter() - t, time.perf_counter()
        stage = "launch"
        r = client.post(action, data=form, allow_redirects=False)
        found = CONTINUE.search(r.text) if r.status_code == 200 else None
        if found is None:
            return {"error": f"launch:{r.status_code}", "steps": steps}
        steps["launch"], t = time.perf_counter() - t, time.perf_counter()
        stage = "handoff"
        r = client.get(public + found.group(1).replace("&amp;", "&"), allow_redirects=False)
        if r.status_code != 302 or r.headers.get("location") != item["landing"] or "sessionid" not in r.cookies:
            return {"error": f"handoff:{r.status_code}", "steps": steps}
        steps["handoff"] = time.perf_counter() - t
        return {"steps": steps}
    except Exception as exc:  # noqa: BLE001 - a timeout or a reset is a result
        return {"error": f"{stage}:{type(exc).__name__}", "steps": steps}


def _password_one(client, item: dict, public: str) -> dict:
    steps, t = {}, time.perf_counter()
    stage = "form"
    try:
        r = client.get(public + "/accounts/login/", allow_redirects=False)
        token = CSRF_INPUT.search(r.text) if r.status_code == 200 else None
        if token is None:
            return {"error": f"form:{r.status_code}"}
        steps["form"], t = time.perf_counter() - t, time.perf_counter()
        stage = "post"
        r = client.post(public + "/accounts/login/", allow_redirects=False, data={
            "csrfmiddlewaretoken": token.group(1), "username": item["email"], "password": item["password"]})
        if r.status_code != 302 or "sessionid" not in r.cookies:
            return {"error": f"post:{r.status_code}", "steps": steps}
        steps["post"] = time.perf_counter() - t
        return {"steps": steps}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{stage}:{type(exc).__name__}", "steps": steps}


class _TimeoutSession:
    """A requests.Session (its own cookie jar and keep-alive connection, like one browser) with a timeout."""

    def __init__(self, timeout: float):
        import requests

        self.session, self.timeout = requests.Session(), timeout

    def get(self, url, **kw):
        return self.session.get(url, timeout=self.timeout, **kw)

    def post(self, url, **kw):
        return self.session.post(url, timeout=self.timeout, **kw)


def _storm(spec: dict) -> list[dict]:
    """One thread per student (requests is in the dependency tree through pylti1p3), all released at
    start_at."""
    import threading

    import tests.lti.platform  # noqa: F401 - imported before the instant, not inside a timed launch

    kind, public, start_at, timeout = spec["kind"], spec["public"], spec["start_at"], spec["timeout"]
    one = _launch_one if kind == "lti" else _password_one
    items = spec["items"]
    results: list[dict | None] = [None] * len(items)
    clients = [_TimeoutSession(timeout) for _ in items]

    def run(n: int) -> None:
        time.sleep(max(start_at - time.time(), 0))
        t0 = time.perf_counter()
        result = one(clients[n], items[n], public)
        result["total"] = time.perf_counter() - t0
        result["done_at"] = time.time()
        results[n] = result

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(len(items))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout * 5 + max(start_at - time.time(), 0))
    return [r if r is not None else {"error": "generator:unfinished", "total": 0.0, "done_at": time.time()}
            for r in results]


def _generator(conn, spec: dict) -> None:
    raise_nofile()
    cpu = time.process_time()
    results = _storm(spec)
    conn.send({"results": results, "cpu_s": time.process_time() - cpu})
    conn.close()


def storm(kind: str, items: list[dict], public: str, procs: int, timeout: float) -> tuple[list[dict], float, float]:
    """All items at one instant, spread over `procs` spawned generator processes. Returns (results, start_at,
    generator CPU seconds)."""
    ctx = mp.get_context("spawn")
    start_at = time.time() + 6 + 0.01 * len(items)  # processes start and clients are made before the instant
    pipes, workers = [], []
    for i in range(procs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_generator, args=(child, {"kind": kind, "public": public, "start_at": start_at,
                                                          "timeout": timeout, "items": items[i::procs]}))
        p.start()
        pipes.append(parent)
        workers.append(p)
    parts = [pipe.recv() for pipe in pipes]
    for p in workers:
        p.join(30)
    return [r for part in parts for r in part["results"]], start_at, sum(part["cpu_s"] for part in parts)


def storm_figures(results: list[dict], start_at: float) -> dict:
    ok = [r for r in results if "error" not in r]
    errors: dict[str, int] = {}
    for r in results:
        if "error" in r:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    step_names = list(ok[0]["steps"]) if ok else []
    return {"requests": len(results), "succeeded": len(ok), "errors": errors,
            "latency_ms": dist_ms([r["total"] for r in ok]),
            "steps_ms": {s: dist_ms([r["steps"][s] for r in ok]) for s in step_names},
            "all_done_s": round(max(r["done_at"] for r in results) - start_at, 2) if results else None}


# --- the mock LMS with spread failures ------------------------------------------------------------------------

def bench_platform(**kwargs):
    from tests.lti.platform import MockPlatform

    class BenchPlatform(MockPlatform):
        """The mock LMS; with `fail_every` = k, every k-th score POST is answered 500 (through fail_next)."""

        fail_every = 0
        score_posts = 0
        injected = 0
        score_delay = 0.0   # seconds each score POST takes (a remote LMS), on the server's own thread

        def _injected_failure(self, path):
            if path.endswith("/scores"):
                if self.score_delay:
                    time.sleep(self.score_delay)
                with self._lock:
                    self.score_posts += 1
                    if self.fail_every and self.score_posts % self.fail_every == 0:
                        self.injected += 1
                        self.fail_next(path, 1, 500)
            return super()._injected_failure(path)

    return BenchPlatform(**kwargs)


# --- seeding (this process, Django) ---------------------------------------------------------------------------

def seed(lms, args, public: str) -> dict:
    from django.contrib.auth.hashers import make_password
    from django.db import transaction

    from classrooms import lti_selectors, lti_services
    from classrooms import services as cs
    from classrooms.models import ExternalIdentity, LtiContext, LtiPlatform, LtiResourceLink, Role, User

    started = time.monotonic()
    launch_url = public + "/lti/launch/"
    with transaction.atomic():
        district = cs.district_upsert(slug="lti-bench", name="LTI Bench District")
        school = cs.institution_upsert(district=district, slug="lti-bench-school", name="LTI Bench School")
        teacher = cs.user_upsert(email="teacher@lti.bench", password=None, first_name="Teacher")
        cs.membership_grant(user=teacher, institution=school, role=Role.TEACHER)
        class_course = cs.course_upsert(institution=school, code="LTI-CLASS", title="Biology 101", term="bench")
        exam_course = cs.course_upsert(institution=school, code="LTI-EXAM", title="Chemistry 201", term="bench")
        for course in (class_course, exam_course):
            cs.enrollment_upsert(course=course, user=teacher, role=Role.TEACHER)
        session = cs.live_session_upsert(course=class_course, title="Today's class", created_by=teacher)
        lti_services.signing_key()
    lms.register_tool(login_url=public + "/lti/login/", launch_url=launch_url, redirect_uris=[launch_url],
                      jwks=lti_selectors.jwks())  # the LMS's copy of Aula's key set
    platform = lti_services.platform_save(platform=LtiPlatform(
        district=district, name="Bench LMS", issuer=lms.issuer, client_id=lms.client_id,
        deployment_ids=[lms.deployment_id], auth_login_url=lms.auth_url, auth_token_url=lms.token_url,
        keyset_url=lms.jwks_url, trust_email=True))

    def linked_context(context_id: str, title: str, course) -> LtiContext:
        lms.add_context(context_id, title=title)
        context = LtiContext.objects.create(platform=platform, context_id=context_id, title=title)
        return lti_services.context_link(context=context, course=course, actor=teacher)

    # The class: N students the LMS knows and Aula does not (their first launch makes their account).
    class_ctx = linked_context("crs-class", "Biology 101", class_course)
    link = LtiResourceLink.objects.create(context=class_ctx, institution=school, target="session",
                                          target_id=session.pk, title=session.title, resource_link_id="rl-class",
                                          created_by=teacher)
    lms.add_resource_link("crs-class", "rl-class", title=session.title, url=launch_url,
                          custom={"aula_link": str(link.pk)})
    for i in range(args.students):
        lms.add_user(f"s{i:05d}", name=f"Student {i}", given_name="Student", family_name=str(i),
                     email=f"lti-s{i:05d}@bench.example")
        lms.enroll("crs-class", f"s{i:05d}", [LEARNER])

    lms.add_context("crs-warm", title="Warm-up (not linked)")
    lms.add_user("warm", name="Warm Up", email="warm@lti.bench")
    lms.enroll("crs-warm", "warm", [LEARNER])

    # The password baseline: N other students of the same school with a password (one hash, copied).
    pw_users = []
    with transaction.atomic():
        for i in range(args.students):
            user = cs.user_upsert(email=f"pw-s{i:05d}@bench.example", password=None, first_name=f"P{i}")
            cs.membership_grant(user=user, institution=school, role=Role.STUDENT)
            cs.enrollment_upsert(course=class_course, user=user, role=Role.STUDENT)
            pw_users.append(user.email)
        warm = cs.user_upsert(email="warm-pw@bench.example", password=None, first_name="Warm")
    t = time.perf_counter()
    encoded = make_password(PASSWORD)
    hash_seconds = time.perf_counter() - t
    for user in User.objects.filter(email__in=pw_users):  # row by row: User refuses bulk writes (audit)
        user.password = encoded
        user.save(update_fields=["password"])

    # The exam: M students who came from the LMS before (an identity each), in the LMS's exam course.
    exam_ctx = linked_context("crs-exam", "Chemistry 201", exam_course)
    grade_students = []
    with transaction.atomic():
        for i in range(args.scores):
            user = cs.user_upsert(email=f"lti-g{i:05d}@bench.example", password=None, first_name=f"G{i}")
            cs.membership_grant(user=user, institution=school, role=Role.STUDENT)
            cs.enrollment_upsert(course=exam_course, user=user, role=Role.STUDENT)
            grade_students.append(user.pk)
        ExternalIdentity.objects.bulk_create([
            ExternalIdentity(district=district, user_id=uid, kind=ExternalIdentity.Kind.LTI, issuer=lms.issuer,
                             subject=f"g{i:05d}") for i, uid in enumerate(grade_students)])
    for i in range(args.scores):
        lms.add_user(f"g{i:05d}", name=f"Examinee {i}", email=f"lti-g{i:05d}@bench.example")
        lms.enroll("crs-exam", f"g{i:05d}", [LEARNER])
    return {"school": school.pk, "teacher": teacher.pk, "exam_course": exam_course.pk, "exam_ctx": exam_ctx.pk,
            "class_ctx": class_ctx.pk, "session": session.pk, "landing": f"/sessions/{session.pk}/",
            "password_users": pw_users, "warm_user": warm.email, "grade_students": grade_students,
            "password_hash": encoded.split("$", 1)[0], "password_hash_seconds": round(hash_seconds, 3),
            "seed_seconds": round(time.monotonic() - started, 1)}


def grade_rows(lms, seeded: dict, name: str) -> dict:
    """A placement with its own LMS line item, and one pending GradeSync per examinee (the rows
    exams.services._grade_sync_put writes: here for a class quiz result; the delivery path is the exam's)."""
    from django.utils import timezone

    from classrooms import services as cs
    from classrooms.models import Course, LtiResourceLink, User
    from exams.models import GradeSync

    course = Course.objects.get(pk=seeded["exam_course"])
    teacher = User.objects.get(pk=seeded["teacher"])
    quiz = cs.live_session_upsert(course=course, title=f"Final quiz ({name})", created_by=teacher)
    placed = lms.add_resource_link("crs-exam", f"rl-{name}", title=quiz.title,
                                   line_item={"label": quiz.title, "scoreMaximum": 100, "tag": "aula"})
    link = LtiResourceLink.objects.create(context_id=seeded["exam_ctx"], institution_id=seeded["school"],
                                          target="session", target_id=quiz.pk, title=quiz.title,
                                          resource_link_id=f"rl-{name}", lineitem_url=placed["lineitem"],
                                          created_by=teacher)
    now = timezone.now().isoformat()
    rows = GradeSync.objects.bulk_create([
        GradeSync(institution_id=seeded["school"], session=quiz, student_id=uid, lti_link=link,
                  idempotency_key=f"bench-{name}-{uid}",
                  payload={"session": quiz.pk, "student": uid, "score": str(50 + n % 50), "max_score": "100",
                           "activity_progress": "Completed", "grading_progress": "FullyGraded", "timestamp": now})
        for n, uid in enumerate(seeded["grade_students"])])
    return {"session": quiz.pk, "lineitem": placed["lineitem"], "ids": [r.pk for r in rows]}


# --- phases ---------------------------------------------------------------------------------------------------

def run_storm(kind: str, items: list[dict], public: str, args, web, celery, lms) -> dict:
    from django.db import close_old_connections

    close_old_connections()
    n_before = len(lms.requests)
    cpu0, cel0, busy0 = cpu_seconds([web]), cpu_seconds(celery), machine_busy()
    results, start_at, gen_cpu = storm(kind, items, public, args.procs, args.timeout)
    cpu1, cel1, busy1 = cpu_seconds([web]), cpu_seconds(celery), machine_busy()
    out = storm_figures(results, start_at)
    out["web_cpu_s"] = round(cpu1 - cpu0, 2)
    out["web_cpu_ms_per_success"] = round(1000 * (cpu1 - cpu0) / max(out["succeeded"], 1), 1)
    out["celery_cpu_s"] = round(cel1 - cel0, 2)
    out["loadgen_cpu_s"] = round(gen_cpu, 2)
    out["machine_busy_pct"] = round(100 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1e-9), 1)
    if kind == "lti":
        seen = lms.requests[n_before:]
        out["lms_auth_requests"] = sum(1 for r in seen if r.path.startswith("/auth"))
        out["lms_jwks_reads"] = sum(1 for r in seen if r.path == "/jwks")
    return out


def settle_roster(lms, n_before: int, quiet: float, limit: float) -> dict:
    """After a launch storm: wait (bounded) until the LMS has seen no roster read for `quiet` seconds, and
    count the roster syncs the storm queued (each reads the first NRPS page once, without a query)."""
    deadline, last_count, last_change = time.time() + limit, -1, time.time()
    while time.time() < deadline:
        count = sum(1 for r in lms.requests[n_before:] if "/memberships" in r.path)
        if count != last_count:
            last_count, last_change = count, time.time()
        elif time.time() - last_change >= quiet:
            break
        time.sleep(0.5)
    seen = lms.requests[n_before:]
    return {"roster_syncs": sum(1 for r in seen if r.path.endswith("/memberships")),
            "nrps_page_reads": sum(1 for r in seen if "/memberships" in r.path),
            "token_requests": sum(1 for r in seen if r.path == "/token")}


def grade_burst(lms, seeded: dict, name: str, celery, timeout: float, fail_every: int = 0) -> dict:
    from django.db import close_old_connections
    from django.db.models import Count, Max, Min

    from exams.models import GradeSync
    from exams.tasks import grade_sync_deliver

    rows = grade_rows(lms, seeded, name)
    ids = rows["ids"]
    close_old_connections()
    lms.fail_every, lms.score_posts, lms.injected = fail_every, 0, 0
    n_before = len(lms.requests)
    cpu0, busy0 = cpu_seconds(celery), machine_busy()
    t0 = time.time()
    for sid in ids:  # what _grade_sync_put queues on commit, for M results at once
        grade_sync_deliver.apply_async(args=[sid], queue="bulk")
    queued_s = time.time() - t0
    deadline = t0 + timeout
    qs = GradeSync.objects.filter(session_id=rows["session"])
    lock_samples = []  # deliveries waiting for a row lock on the placement (lti_services._lineitem_ensure)
    while time.time() < deadline:
        if qs.filter(status=GradeSync.Status.DELIVERED).count() == len(ids):
            break
        lock_samples.append(_lock_waiters())
        time.sleep(0.5)
    cpu1, busy1 = cpu_seconds(celery), machine_busy()
    lms.fail_every = 0
    agg = qs.filter(status=GradeSync.Status.DELIVERED).aggregate(first=Min("delivered_at"), last=Max("delivered_at"))
    delivered = qs.filter(status=GradeSync.Status.DELIVERED).count()
    statuses = dict(qs.values("status").annotate(n=Count("id")).values_list("status", "n"))
    seen = lms.requests[n_before:]
    item = lms.lineitems[rows["lineitem"]]
    score_posts = [r for r in seen if r.path.endswith("/scores")]
    ignored = [s for s in lms.ignored_scores if s.get("lineitem") == rows["lineitem"]]
    last_s = agg["last"].timestamp() - t0 if agg["last"] else None
    out = {
        "scores": len(ids), "delivered": delivered, "statuses": statuses, "queued_in_s": round(queued_s, 2),
        "first_delivery_s": round(agg["first"].timestamp() - t0, 2) if agg["first"] else None,
        "last_delivery_s": round(last_s, 2) if last_s else None,
        "scores_per_s": round(delivered / last_s, 1) if last_s else None,
        "token_requests": sum(1 for r in seen if r.path == "/token"),
        "lms_score_posts": len(score_posts), "lms_injected_500s": lms.injected,
        "lms_scores_stored": len(item["scores"]), "lms_scores_ignored_as_not_newer": len(ignored),
        "lock_wait_samples": len(lock_samples),
        "samples_with_a_delivery_waiting_on_the_link_lock": sum(1 for n in lock_samples if n),
        "celery_cpu_s": round(cpu1 - cpu0, 2),
        "celery_cpu_ms_per_score": round(1000 * (cpu1 - cpu0) / max(delivered, 1), 1),
        "machine_busy_pct": round(100 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1e-9), 1),
    }
    # Every score arrives once: one stored score per examinee, successful POSTs = scores, none re-sent.
    out["every_score_once"] = (out["lms_scores_stored"] == len(ids) and delivered == len(ids)
                               and out["lms_score_posts"] - out["lms_injected_500s"] == len(ids)
                               and not ignored)
    return out


def _lock_waiters() -> int:
    """Backends now waiting for a row lock while selecting the placement FOR UPDATE."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE '%%classrooms_ltiresourcelink%%' AND query ILIKE '%%FOR UPDATE%%'")
        return cur.fetchone()[0]


# --- harness --------------------------------------------------------------------------------------------------

class Processes:
    """The processes of `make run`, with logs in `logdir`; stop() ends each process group it started."""

    def __init__(self, specs: list[tuple[str, list[str]]], env: dict, logdir: Path):
        self.logs = {name: open(logdir / f"{name}.log", "a")  # noqa: SIM115 - closed in stop()
                     for name, _ in specs}
        self.procs = {name: subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.logs[name],
                                             stderr=subprocess.STDOUT, start_new_session=True)
                      for name, argv in specs}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        for f in self.logs.values():
            f.close()


def wait_for_worker(env: dict, timeout: float = 60) -> None:
    """Until a Celery worker consuming `bulk` answers a ping (bounded)."""
    from config.celery import app

    deadline = time.time() + timeout
    while time.time() < deadline:
        replies = app.control.ping(timeout=1.0) or []
        if any("worker@" in name for reply in replies for name in reply):
            return
    raise TimeoutError("no Celery worker answered")


def warm_up(public: str, lms, seeded: dict) -> None:
    """Each web worker imports and connects lazily: requests of every kind before anything is timed. A few
    password sign-ins of a warm-up account, and launches of a warm-up LMS user into an LMS course that is not
    linked (validated in full, then refused: no account, no roster sync, nothing the storms depend on)."""
    from tests.lti.platform import read_form

    for _ in range(6):
        client = _TimeoutSession(120)
        client.get(public + "/lti/jwks.json")
        page = client.get(public + "/accounts/login/").text
        client.post(public + "/accounts/login/", allow_redirects=False, data={
            "csrfmiddlewaretoken": CSRF_INPUT.search(page).group(1), "username": seeded["warm_user"],
            "password": PASSWORD})
        client = _TimeoutSession(120)
        url, params = lms.login_initiation(sub="warm", context_id="crs-warm",
                                           target_link_uri=public + "/lti/launch/", resource_link_id="rl-warm")
        r = client.post(url, data=params, allow_redirects=False)
        action, form = read_form(client.get(r.headers["location"]).text)
        client.post(action, data=form, allow_redirects=False)


def key_load_seconds() -> float:
    """What loading Aula's signing key costs here (median of 5): classrooms.lti.registration_for loads it
    (public_pem_of), and pyjwt loads it again from the PEM for every JWT pylti1p3 signs."""
    from cryptography.hazmat.primitives import serialization

    from classrooms.lti_services import signing_key

    pem = signing_key().private_key.reveal().encode()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        serialization.load_pem_private_key(pem, password=None)
        times.append(time.perf_counter() - t)
    return round(sorted(times)[2], 4)


def app_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "classrooms", "exams", "config"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _save(summary: dict, args) -> None:
    """The summary so far (each phase adds to it), so that a run cut short keeps what it measured."""
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2, default=str))


def run(args) -> dict:
    from config.devservers import backing_services, celery_processes, free_port, wait_for_port, web_argv

    raise_nofile()
    summary: dict = {"students": args.students, "scores": args.scores, "web_workers": args.workers,
                     "env": args.env, "commit": app_revision(), "cores": os.cpu_count(),
                     "load_avg_before": [round(x, 2) for x in os.getloadavg()]}
    with backing_services(persistent=False) as extra, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = {**os.environ, **extra, "AULA_ENV": args.env, "DJANGO_DEBUG": "false", "AULA_PUBLIC_URL": public,
               "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "AULA_LOG_LEVEL": "WARNING", "AULA_WS_ALLOWED_ORIGINS": public,
               "DJANGO_SETTINGS_MODULE": "config.settings"}
        env.pop("PYTEST_XDIST_WORKER", None)
        os.environ.update(env)
        os.environ.pop("PYTEST_XDIST_WORKER", None)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        import django

        django.setup()
        logdir = Path(args.logs or tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        hook_dir = Path(tmp) / "hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        with bench_platform(page_size=100, name="Bench LMS") as lms:
            seeded = seed(lms, args, public)
            lms.score_delay = args.lms_delay_ms / 1000
            summary["lms_score_delay_ms"] = args.lms_delay_ms
            summary["seed_seconds"] = seeded["seed_seconds"]
            summary["password_hash"] = {"hasher": seeded["password_hash"],
                                        "one_hash_s": seeded["password_hash_seconds"]}
            summary["signing_key_load_s"] = key_load_seconds()
            from django.db import connections

            connections.close_all()
            web = Processes([("web", web_argv("127.0.0.1", port, args.workers))], env, logdir)
            celery_specs = celery_processes(Path(tmp) / "beat", loglevel="WARNING")
            celery = Processes(celery_specs, env, logdir)
            try:
                wait_for_port(port, 180)  # a loaded machine starts uvicorn slowly
                wait_for_worker(env)
                warm_up(public, lms, seeded)
                time.sleep(1)
                web_proc, celery_procs = web.procs["web"], list(celery.procs.values())
                pw_items = [{"email": e, "password": PASSWORD} for e in seeded["password_users"]]
                log(f"password baseline: {len(pw_items)} sign-ins")
                summary["password_baseline"] = run_storm("password", pw_items, public, args, web_proc,
                                                         celery_procs, lms)
                _save(summary, args)
                for phase in ("lti_first_launch", "lti_returning"):
                    items = []
                    for i in range(args.students):
                        url, params = lms.login_initiation(sub=f"s{i:05d}", context_id="crs-class",
                                                           target_link_uri=public + "/lti/launch/",
                                                           resource_link_id="rl-class")
                        items.append({"params": params, "landing": seeded["landing"]})
                    n_before = len(lms.requests)
                    log(f"{phase}: {len(items)} launches")
                    summary[phase] = run_storm("lti", items, public, args, web_proc, celery_procs, lms)
                    summary[phase].update(settle_roster(lms, n_before, quiet=3, limit=args.timeout))
                    _save(summary, args)
                summary["lti_accounts"] = _accounts(seeded)
                log(f"grade burst: {args.scores} scores, token cache on")
                summary["grades_cached"] = grade_burst(lms, seeded, "cached", celery_procs, args.grade_timeout)
                _save(summary, args)
                if not args.skip_failures:
                    log(f"grade burst: {args.scores} scores, token cache on, every 20th score POST answered 500")
                    summary["grades_with_failures"] = grade_burst(lms, seeded, "failures", celery_procs,
                                                                  args.grade_timeout, fail_every=20)
                    _save(summary, args)
                celery.stop()
                log("grade burst: token cache off (Celery restarted with the import hook)")
                off_env = {**env, TOKEN_CACHE_ENV: "off",
                           "PYTHONPATH": os.pathsep.join([str(hook_dir), str(ROOT), env.get("PYTHONPATH", "")])}
                celery = Processes(celery_specs, off_env, logdir)
                wait_for_worker(off_env)
                summary["grades_token_cache_off"] = grade_burst(lms, seeded, "nocache", list(celery.procs.values()),
                                                                args.grade_timeout)
                _save(summary, args)
            finally:
                celery.stop()
                web.stop()
                summary["lms_server_errors"] = list(lms.server_errors[:10])
                summary["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
                connections.close_all()
    return summary


def _accounts(seeded: dict) -> dict:
    from classrooms.models import Enrollment, ExternalIdentity, LtiLaunch

    return {"identities": ExternalIdentity.objects.filter(subject__startswith="s").count(),
            "class_enrollments": Enrollment.objects.filter(course__lti_contexts=seeded["class_ctx"],
                                                           user__email__startswith="lti-s").count(),
            "launch_rows": LtiLaunch.objects.filter(context_id=seeded["class_ctx"]).count()}


def table(summary: dict) -> str:
    rows = ["| phase | ok / total | p50 ms | p95 ms | p99 ms | max ms | all done s | web CPU ms per success | errors |",
            "|---|---|---|---|---|---|---|---|---|"]
    for key in ("password_baseline", "lti_first_launch", "lti_returning"):
        p = summary.get(key)
        if not p:
            continue
        lat = p["latency_ms"]
        rows.append(f"| {key} | {p['succeeded']} / {p['requests']} | {lat.get('p50')} | {lat.get('p95')} | "
                    f"{lat.get('p99')} | {lat.get('max')} | {p['all_done_s']} | {p['web_cpu_ms_per_success']} | "
                    f"{p['errors'] or '-'} |")
    rows += ["", "| grade burst | delivered | last delivery s | scores/s | token requests | score POSTs | "
                 "500s injected | stored | every score once | Celery CPU ms/score |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key in ("grades_cached", "grades_with_failures", "grades_token_cache_off"):
        g = summary.get(key)
        if not g:
            continue
        rows.append(f"| {key} | {g['delivered']} / {g['scores']} | {g['last_delivery_s']} | {g['scores_per_s']} | "
                    f"{g['token_requests']} | {g['lms_score_posts']} | {g['lms_injected_500s']} | "
                    f"{g['lms_scores_stored']} | {g['every_score_once']} | {g['celery_cpu_ms_per_score']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lti")
    parser.add_argument("--students", type=int, default=300, help="launches (and password sign-ins) at once")
    parser.add_argument("--scores", type=int, default=2000, help="GradeSync rows delivered in one burst")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--env", default="development", choices=["development", "test"],
                        help="AULA_ENV of the servers (test: MD5 password hasher)")
    parser.add_argument("--timeout", type=float, default=120, help="per-request timeout of the storms (s)")
    parser.add_argument("--grade-timeout", type=float, default=900, help="bound on one grade burst (s)")
    parser.add_argument("--lms-delay-ms", type=float, default=0,
                        help="what-if: each score POST takes this long at the LMS (a remote LMS, not loopback)")
    parser.add_argument("--skip-failures", action="store_true", help="leave out the 5%% 500s burst")
    parser.add_argument("--logs", help="keep the server and worker logs in this directory")
    parser.add_argument("--out", help="write the JSON summary here")
    args = parser.parse_args(argv)
    summary = run(args)
    text = json.dumps(summary, indent=2, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
