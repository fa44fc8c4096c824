"""The matching form of user text: look-alikes, hidden characters, compatibility forms and leetspeak."""

from __future__ import annotations

import pytest

from moderation.textnorm import MAX_CHARS, skeleton


@pytest.mark.parametrize("text", [
    "fuck",
    "FUCK",
    "ｆｕｃｋ",  # full-width
    "𝐟𝐮𝐜𝐤",  # mathematical bold
    "Ⓕⓤⓒⓚ",  # circled
    "fսck",  # Armenian small letter seh
    "fυсk",  # Greek upsilon, Cyrillic es
    "f\u200buck",  # zero-width space
    "f\u200d\u200cu\ufeffck",  # joiners and a BOM
    "fu\u0301ck",  # combining acute accent
    "fück",  # precomposed diaeresis
    "fu\ufe0fck",  # variation selector
])
def test_look_alikes_and_hidden_characters_fold_to_the_plain_word(text):
    assert skeleton(text) == "fuck"


@pytest.mark.parametrize(("text", "folded"), [
    ("sh1t", "shit"),
    ("p@$$w0rd", "password"),
    ("h3ll0 th3r3!!", "hello there!!"),  # a sentence's final "!" is not a letter
    ("b!tch", "bitch"),
    ("route 66", "route 66"),  # numbers stay numbers
    ("Hello, world!", "hello, world!"),
])
def test_leetspeak_is_folded_inside_words_only(text, folded):
    assert skeleton(text) == folded


@pytest.mark.parametrize(("text", "squeezed"), [
    ("fuuuuuck", "fuck"),
    ("f.u.c.k", "fuck"),
    ("f u c k you", "fuck you"),
    ("F*U*C*K", "fuck"),
    ("Ｓ Ｈ Ｉ Ｔ", "shit"),
    ("a good day", "a god day"),  # runs collapse; two single letters apart are not a spaced-out word
])
def test_squeeze_joins_spaced_out_letters_and_collapses_runs(text, squeezed):
    assert skeleton(text, squeeze=True) == squeezed


def test_bidi_overrides_are_removed_and_markup_is_left_as_text():
    assert skeleton("\u202ekcuf\u202c") == "kcuf"  # the override only changes display order
    assert skeleton("\u2066hi\u2069") == "hi"
    assert skeleton("<script>alert(1)</script>") == "<script>alert(1)</script>"  # rendering makes it inert


def test_very_long_text_is_cut_before_folding():
    assert skeleton("ａ" * (MAX_CHARS * 50), squeeze=True) == "a"
    assert len(skeleton("x" * (MAX_CHARS * 3))) == MAX_CHARS
