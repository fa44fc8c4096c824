"""Chat sentiment: VADER scores, with emoji described in one linear pass (VADER's own pass is quadratic)."""

from analytics import sentiment


def test_positive_negative_and_neutral_text():
    assert sentiment.score("I love this, what a great stream!") > 0.5
    assert sentiment.score("this is terrible, I hate it") < -0.5
    assert sentiment.score("the lecture starts at nine") == 0.0


def test_emoji_count_by_their_descriptions_and_runs_count_once_per_three():
    party = "\N{PARTY POPPER}"
    assert sentiment.score(party) > 0
    assert sentiment.score(party * 2000) == sentiment.score(party * 3)
    # Alternating emoji are not a run: the scored text is capped instead.
    assert -1.0 <= sentiment.score((party + "\N{FIRE}") * 1000) <= 1.0
