"""The moderation pipeline every piece of user text passes before others see it: classify, match, decide.

1. Classification (moderation/classifier.py, local scikit-learn models): per-category scores and sentiment,
   in a small thread pool with a time limit, behind a circuit breaker (pybreaker). A classifier that raises,
   times out or is not loaded yet is skipped: the verdict says so (`degraded`), the skip is counted in Redis
   for the queue page and /metrics, and each open/close of the breaker is audited.
2. Pattern matching (moderation/patterns.py): the room's lists, on the folded text.
3. The decision: the strongest action of the thresholds that the scores reach (the room's policy) and of the
   lists hit. A degraded verdict in a fail-closed room is held. "censor" masks the matched words, or holds the
   message when the hit is not maskable word by word.

`screen()` is synchronous and runs in the caller's database thread (a consumer's database_sync_to_async),
never on the event loop; it reads policies and lists from a per-process cache, so a message costs no query
in the steady state. It writes nothing: the domain service stores the content, then calls
`moderation.services.verdict_record` in its transaction to queue and audit it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field

import pybreaker
from django.conf import settings
from django.utils.module_loading import import_string

from analytics import sentiment as vader
from moderation import patterns
from moderation.models import ACTION_STRENGTH, Action, Category, ModerationPolicy
from moderation.selectors import policy_for

log = logging.getLogger(__name__)

SEVERITY_LEVELS = ("notify", "flag", "hold", "block")


@dataclass(frozen=True)
class Context:
    """Where the text will be shown. Exactly one of institution (a class) or channel (a stream) is set."""

    source: str
    institution_id: int | None = None
    course_id: int | None = None
    channel_id: int | None = None
    room_id: int | None = None
    author_id: int | None = None
    minors: bool = False


@dataclass
class Verdict:
    text: str  # what to store and show (the input, or with matched words masked)
    action: str = Action.ALLOW
    category: str = ""
    severity: int = 0  # 0-100: the driving score, or the pattern list's strength
    scores: dict = field(default_factory=dict)
    sentiment: float = 0.0
    hits: list = field(default_factory=list)
    degraded: bool = False
    model: str = ""
    notify: bool = False
    fail_closed_hold: bool = False

    @property
    def visible(self) -> bool:
        return self.action in (Action.ALLOW, Action.NOTIFY, Action.FLAG, Action.CENSOR)

    @property
    def queued(self) -> bool:
        """Does a reviewer need to see it (held, flagged, or shown masked)?"""
        return self.action in (Action.FLAG, Action.CENSOR, Action.HOLD) or (self.notify and self.action != "block")

    def public_reason(self) -> str:
        if self.action == Action.BLOCK:
            return "This message was not sent: it breaks this room's rules."
        if self.action == Action.HOLD:
            return "Your message is waiting for a moderator's review."
        return ""


# --- the classifier stage -----------------------------------------------------------------------------------

class ClassifierUnavailable(Exception):
    """Not loaded yet, timed out, or raised: the stage is skipped for this message."""


_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="classifier")
_loading = threading.Lock()
_model = None


def _health_key() -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:mod:clf"


def _redis():
    from config.realtime.transport import _redis as client

    return client()


def health_note(**counts: int) -> None:
    """Count classifier outcomes in Redis (shared by every process): skipped, timeouts, errors."""
    try:
        pipe = _redis().pipeline(transaction=False)
        for name, n in counts.items():
            pipe.hincrby(_health_key(), name, n)
        pipe.execute()
    except Exception:  # noqa: BLE001 - a health counter never fails a message
        log.warning("classifier health counter not written", exc_info=True)


class _AuditListener(pybreaker.CircuitBreakerListener):
    """An opening or closing breaker is a moderation event: audited (platform ledger) and shown on the queue page."""

    def state_change(self, cb, old_state, new_state):
        state = getattr(new_state, "name", str(new_state))
        if getattr(old_state, "name", old_state) == state:
            return  # close() on a closed breaker (a reset): nothing changed
        try:
            client = _redis()
            client.hset(_health_key(), mapping={"state": state, "since": time.time()})
            from moderation.audit import PLATFORM, audit_record

            audit_record(ledger=PLATFORM, stage="classifier", action=f"breaker.{state}", target_type="classifier",
                         target_id=model_version(), reason=f"{getattr(old_state, 'name', old_state)} -> {state}")
        except Exception:  # noqa: BLE001
            log.warning("classifier breaker change not recorded", exc_info=True)


breaker = pybreaker.CircuitBreaker(fail_max=settings.AULA_MODERATION_BREAKER_FAILURES,
                                   reset_timeout=settings.AULA_MODERATION_BREAKER_RESET_SECONDS,
                                   listeners=[_AuditListener()], name="classifier")


_load_failed_at = 0.0
LOAD_RETRY_SECONDS = 60


def _load():
    global _model, _load_failed_at
    with _loading:
        if _model is None:
            try:
                _model = import_string(settings.AULA_MODERATION_CLASSIFIER)()
            except Exception:
                _load_failed_at = time.monotonic()
                raise
    return _model


def _load_in_background() -> None:
    """At most one load at a time, and after a failure not again for LOAD_RETRY_SECONDS (a broken model must
    not start a retraining per message)."""
    if _loading.locked() or time.monotonic() - _load_failed_at < LOAD_RETRY_SECONDS:
        return
    _pool.submit(_load)


def warm() -> None:
    """Load (or train) the model now, in a background thread: a server starts answering at once and
    screens with patterns only until the model is ready (a few seconds)."""
    if not settings.AULA_MODERATION_CLASSIFIER:
        return  # a deployment without the ML stage (pattern lists only)

    def run():
        try:
            _load()
        except Exception:  # noqa: BLE001
            log.exception("classifier failed to load; moderation runs on pattern lists only")
    threading.Thread(target=run, name="classifier-warm", daemon=True).start()


def reset() -> None:
    """Forget the loaded model and close the breaker (tests, or after changing AULA_MODERATION_CLASSIFIER)."""
    global _model
    with _loading:
        _model = None
    breaker.close()


def model_version() -> str:
    return getattr(_model, "version", "") or "not-loaded"


def _classify_call(text: str) -> dict:
    model = _model
    if model is None:
        _load_in_background()  # first use in this process: load in the background, skip this message
        raise ClassifierUnavailable("not loaded")
    future = _pool.submit(model.scores, text)
    try:
        return future.result(timeout=settings.AULA_MODERATION_CLASSIFIER_TIMEOUT_MS / 1000)
    except concurrent.futures.TimeoutError:
        future.cancel()
        health_note(timeouts=1)
        raise ClassifierUnavailable("timed out") from None


def classify(text: str) -> dict | None:
    """Scores, or None when the stage is skipped (breaker open, timeout, error, not loaded)."""
    if _model is None:  # not a failure of the model: no breaker count
        try:
            _classify_call(text)
        except ClassifierUnavailable:
            pass
        health_note(skipped=1)
        return None
    try:
        return breaker.call(_classify_call, text)
    except pybreaker.CircuitBreakerError:
        health_note(skipped=1)
    except ClassifierUnavailable:
        health_note(skipped=1)
    except Exception:  # noqa: BLE001 - any failure of the model is a skip, counted by the breaker
        log.warning("classifier raised; message screened by patterns only", exc_info=True)
        health_note(skipped=1, errors=1)
    return None


def classifier_health() -> dict:
    """For the queue page and /metrics: breaker state (as last changed by any process) and counters."""
    try:
        raw = _redis().hgetall(_health_key())
    except Exception:  # noqa: BLE001
        return {"state": "unknown"}
    data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}
    out = {"state": data.get("state", "closed"), "since": float(data["since"]) if data.get("since") else None}
    for name in ("skipped", "timeouts", "errors"):
        out[name] = int(data.get(name, 0))
    return out


# --- the decision -------------------------------------------------------------------------------------------

def _stronger(a: str, b: str) -> bool:
    return ACTION_STRENGTH[a] > ACTION_STRENGTH[b]


def decide_scores(scores: dict, thresholds: dict) -> tuple[str, str, int, bool]:
    """(action, category, severity, notify) from the classifier's scores and a policy's thresholds: per
    category the strongest level its score reaches; across categories the strongest action (ties: the higher
    score) drives the verdict. Reaching a "notify" level anywhere notifies."""
    action, category, best, notify = Action.ALLOW, "", -1.0, False
    for cat, levels in thresholds.items():
        score = scores.get(cat)
        if score is None:
            continue
        reached = [lvl for lvl in SEVERITY_LEVELS if levels.get(lvl) is not None and score >= float(levels[lvl])]
        if not reached:
            continue
        notify = notify or "notify" in reached
        top = max(reached, key=ACTION_STRENGTH.__getitem__)
        if (ACTION_STRENGTH[top], score) > (ACTION_STRENGTH[action], best):
            action, category, best = top, cat, score
    return action, category, int(round(max(best, 0) * 100)), notify


def screen(text: str, ctx: Context, *, policy: ModerationPolicy | None = None) -> Verdict:
    """The verdict on `text` (already cleaned of control characters by the caller) for a room."""
    policy = policy or policy_for(institution_id=ctx.institution_id, course_id=ctx.course_id,
                                  channel_id=ctx.channel_id)
    verdict = Verdict(text=text)
    enabled = policy.classifier_enabled and bool(settings.AULA_MODERATION_CLASSIFIER)
    scores = classify(text) if enabled else None
    if scores is None:
        verdict.degraded = enabled
        verdict.model = "skipped" if enabled else "disabled"
        verdict.sentiment = vader.score(text)
    else:
        verdict.scores = {k: round(float(v), 4) for k, v in scores.items() if k != "sentiment"}
        verdict.sentiment = float(scores.get("sentiment", 0.0))
        verdict.model = model_version()
        action, category, severity, notify = decide_scores(verdict.scores, policy.thresholds)
        verdict.action, verdict.category, verdict.severity, verdict.notify = action, category, severity, notify

    lists = patterns.load_lists(institution_id=ctx.institution_id, course_id=ctx.course_id,
                                channel_id=ctx.channel_id)
    hits = patterns.match(text, lists)
    verdict.hits = [h.as_dict() for h in hits]
    for hit in hits:
        if hit.action == Action.NOTIFY:
            verdict.notify = True
        if _stronger(hit.action, verdict.action):
            verdict.action, verdict.category = hit.action, Category.PATTERN
            verdict.severity = max(verdict.severity, 40 + 15 * ACTION_STRENGTH[hit.action])
        elif verdict.action == Action.ALLOW and hit.action == Action.NOTIFY:
            verdict.category, verdict.severity = Category.PATTERN, max(verdict.severity, 40)

    if verdict.action == Action.CENSOR:
        masked_text, masked = patterns.censor(text, lists)
        if masked:
            verdict.text = masked_text
        else:  # the hit spans words (or was a regex): cannot be masked word by word, so a person looks at it
            verdict.action = Action.HOLD

    if verdict.degraded and policy.fail_mode == ModerationPolicy.FailMode.CLOSED and verdict.visible:
        verdict.action, verdict.fail_closed_hold = Action.HOLD, True
        if not verdict.category:
            verdict.category = Category.DEGRADED
    if ctx.minors and verdict.action != Action.ALLOW:
        verdict.severity = min(100, verdict.severity + 10)
    return verdict
