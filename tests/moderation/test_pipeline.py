"""The pipeline's decisions: thresholds per policy, patterns, censoring, fail-open/closed, the circuit breaker."""

from __future__ import annotations

import time

import pytest

from moderation import pipeline, selectors
from moderation.audit import PLATFORM
from moderation.models import AuditEntry, ModerationPolicy, PatternList, PatternRule
from tests import factories

pytestmark = pytest.mark.django_db


def ctx(world=None, **kw):
    if world is not None:
        kw.setdefault("institution_id", world.school_a.pk)
        kw.setdefault("course_id", world.course_a.pk)
    return pipeline.Context(source="class_chat", **kw)


class Broken:
    """A classifier that raises, or hangs past the time limit, on every call."""

    version = "broken"

    def __init__(self, mode="raise"):
        self.mode, self.calls = mode, 0

    def scores(self, text):
        self.calls += 1
        if self.mode == "slow":
            time.sleep(0.5)
        raise RuntimeError("model server down")


@pytest.fixture
def swap_model():
    saved = pipeline._model
    saved_reset = pipeline.breaker.reset_timeout

    def swap(model):
        pipeline._model = model
        return model

    yield swap
    pipeline._model = saved
    pipeline.breaker.reset_timeout = saved_reset
    pipeline.breaker.close()


def test_benign_text_is_allowed_with_scores_and_sentiment():
    verdict = pipeline.screen("Thanks, that explanation of photosynthesis really helped!", ctx())
    assert verdict.action == "allow" and not verdict.degraded
    assert set(verdict.scores) == {"offensive", "harassment", "sexual", "self_harm", "spam"}
    assert verdict.sentiment > 0.3 and verdict.model.startswith("aula-clf")


def test_harassment_is_held_and_self_harm_notifies_without_blocking():
    held = pipeline.screen("you are worthless, nobody in this class likes you, just leave", ctx())
    assert held.action == "hold" and held.category == "harassment" and not held.visible
    risk = pipeline.screen("i want to kill myself, i can't do this anymore", ctx())
    assert risk.notify and risk.visible and risk.category == "self_harm"


def test_a_stricter_course_policy_overrides_the_school_and_platform():
    world = factories.World()
    text = "this is so damn stupid"
    default = pipeline.screen(text, ctx(world))
    ModerationPolicy.objects.create(institution=world.school_a, course=world.course_a,
                                    thresholds={"offensive": {"hold": 0.2}})
    selectors.forget_policies()
    strict = pipeline.screen(text, ctx(world))
    assert default.action != "hold" and strict.action == "hold" and strict.category == "offensive"
    other = pipeline.screen(text, ctx(institution_id=world.school_b.pk, course_id=world.course_b.pk))
    assert other.action == default.action  # another school's course is not affected


def test_patterns_outrank_a_clean_classifier_and_censor_masks():
    pl = PatternList.objects.create(name="words", action="censor")
    PatternRule.objects.create(pattern_list=pl, kind="term", pattern="fudge")
    verdict = pipeline.screen("oh FUDGE, I forgot my homework", ctx())
    assert verdict.action == "censor" and verdict.text == "oh *****, I forgot my homework"
    assert verdict.hits[0]["pattern"] == "fudge" and verdict.queued


def test_a_censor_hit_that_spans_words_is_held():
    pl = PatternList.objects.create(name="words", action="censor")
    PatternRule.objects.create(pattern_list=pl, kind="term", pattern="fudge")
    assert pipeline.screen("f u d g e", ctx()).action == "hold"


def test_classifier_down_for_a_while_patterns_keep_working_fail_closed_holds_then_recovers(swap_model):
    """The fault the issue names: the classifier raises or times out on every call. Chat keeps flowing on
    patterns; a fail-closed room lets nothing unscreened through; the breaker opens (audited, visible),
    then closes by itself once the model answers again. (The minute is scaled down to seconds.)"""
    world = factories.World()
    ModerationPolicy.objects.create(institution=world.school_b, fail_mode="closed")
    pl = PatternList.objects.create(name="words", action="block")
    PatternRule.objects.create(pattern_list=pl, kind="term", pattern="badword")
    good = pipeline._model
    broken = swap_model(Broken("slow"))
    pipeline.breaker.reset_timeout = 1
    open_room, closed_room = ctx(world), ctx(institution_id=world.school_b.pk, course_id=world.course_b.pk)
    started = time.monotonic()
    verdicts = []
    while time.monotonic() - started < 2.5:
        verdicts.append((pipeline.screen("see you tomorrow", open_room), pipeline.screen("hi all", closed_room),
                         pipeline.screen("you b4dword", open_room)))
    assert all(v.action == "allow" and v.degraded for v, _, _ in verdicts)  # fail-open: flowing on patterns
    assert all(v.action == "hold" and v.fail_closed_hold for _, v, _ in verdicts)  # nothing unscreened shown
    assert all(v.action == "block" for _, _, v in verdicts)  # the pattern stage never stopped
    # The breaker opened after a few slow calls: most messages never waited for the dead model.
    assert broken.calls < len(verdicts) and broken.calls <= 3 * 5
    health = pipeline.classifier_health()
    assert health["state"] == "open" and health["skipped"] >= len(verdicts) and health["timeouts"] >= 1
    assert AuditEntry.objects.filter(ledger=PLATFORM, stage="classifier", action="breaker.open").exists()

    swap_model(good)
    time.sleep(1.1)
    recovered = pipeline.screen("see you tomorrow", open_room)
    assert not recovered.degraded and recovered.scores
    assert pipeline.classifier_health()["state"] == "closed"
    assert AuditEntry.objects.filter(ledger=PLATFORM, action="breaker.closed").exists()


def test_a_raising_classifier_is_skipped_not_fatal(swap_model):
    swap_model(Broken("raise"))
    verdict = pipeline.screen("hello", ctx())
    assert verdict.degraded and verdict.action == "allow" and verdict.model == "skipped"
    assert pipeline.classifier_health()["errors"] >= 1


def test_a_policy_can_switch_the_classifier_off():
    world = factories.World()
    ModerationPolicy.objects.create(institution=world.school_a, classifier_enabled=False)
    verdict = pipeline.screen("you are worthless, nobody likes you", ctx(world))
    assert verdict.model == "disabled" and not verdict.degraded and verdict.action == "allow"


@pytest.mark.parametrize("text", [
    "y\u043eu \u0430r\u0435 w\u043erthl\u0435ss, n\u043eb\u043edy l\u0456k\u0435s y\u043eu",  # Cyrillic look-alikes
    "you are worth\u200bless, no\u200bbody likes you, just le\u200dave",
    "y0u 4r3 w0rthl3ss, n0b0dy l1k3s y0u, ju5t l34v3",
])
def test_adversarial_spellings_are_still_classified(text):
    assert pipeline.screen(text, ctx()).action == "hold"


def test_very_long_text_is_screened_in_bounded_time():
    started = time.monotonic()
    verdict = pipeline.screen("lorem ipsum " * 20000, ctx())
    assert time.monotonic() - started < 2 and verdict.action in ("allow", "flag", "hold")
