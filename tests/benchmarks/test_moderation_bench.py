"""The moderation benchmark's pure helpers: its lists are valid rules, its texts hit them as documented, and the
outcome arithmetic (held messages apart, delivered share of the shown ones)."""

from __future__ import annotations

import collections

from benchmarks.moderation import chat_text, outcome_figures, pattern_lists
from moderation import patterns
from moderation.models import PatternList, PatternRule


def _compiled():
    lists = []
    for spec in pattern_lists():
        rules = [PatternRule(kind=kind, pattern=patterns.validate_rule(kind, pattern)) for kind, pattern in spec["rules"]]
        lists.append(patterns.compile_list(PatternList(name=spec["name"], action=spec["action"]), rules))
    return lists


def test_the_lists_have_the_documented_size_and_every_rule_is_valid():
    kinds = collections.Counter(kind for spec in pattern_lists() for kind, _ in spec["rules"])
    assert kinds == {"term": 300, "wildcard": 20, "regex": 5}
    assert {spec["scope"] for spec in pattern_lists()} == {"platform", "channel"}
    assert len(_compiled()) == 4  # validate_rule raised for none


def test_a_few_percent_of_the_texts_hit_a_list_and_the_timing_mark_never_does():
    lists = _compiled()
    hit_actions = collections.Counter()
    for n in range(1, 2001):
        text = f"B|1764567890.123456|{n}| {chat_text(n)}"
        assert len(text) <= 300 and '"' not in text
        hits = patterns.match(text, lists)
        expected = n % 100 in (13, 63, 37, 47, 88, 29) or n % 200 == 151
        assert bool(hits) == expected, (n, text, hits)
        hit_actions.update({h.action for h in hits})
    assert hit_actions == {"censor": 60, "flag": 20, "notify": 20, "hold": 30}
    assert chat_text(7) == chat_text(7)


def test_held_messages_are_counted_apart_and_left_out_of_the_delivered_share():
    outcomes = [{"t_send": 0.0, "t_ack": 0.010, "error": None, "held": False},
                {"t_send": 0.0, "t_ack": 0.020, "error": None, "held": False},
                {"t_send": 0.0, "t_ack": 0.030, "error": None, "held": True},
                {"t_send": 0.0, "t_ack": 0.005, "error": "rate_limited", "held": False},
                {"t_send": 0.0, "t_ack": None, "error": None, "held": False}]
    got = outcome_figures(outcomes, deliveries=19, receivers=10)
    assert (got["messages"], got["shown"], got["held"], got["unanswered"]) == (5, 2, 1, 1)
    assert got["refused"] == {"rate_limited": 1}
    assert got["expected_deliveries"] == 20 and got["delivered_pct_of_shown"] == 95.0
    assert got["ack_shown"]["max_ms"] == 20.0 and got["ack_held"]["n"] == 1
