"""The form user text is matched in: look-alikes, hidden characters and leetspeak folded away.

Pattern lists (a school's banned terms, a channel's) must catch "ｆ𝐮ｃｋ", "fսck" (Armenian), "f\u200buck",
"fü©k" or "f*u*c*k" as well as the plain word, and never be fooled by right-to-left overrides. `skeleton()`
turns text into a lower-case Latin form for matching only (what is stored and shown is the text as sent,
rendered inert by the templates):

1. NFKC: compatibility forms to their plain letters (full-width, mathematical alphanumerics, ligatures,
   superscripts);
2. hidden characters removed: every format character (Unicode category Cf: zero-width space and joiners,
   BOM, bidirectional overrides and isolates), variation selectors and combining marks (so diacritics on
   a base letter are dropped after NFD);
3. case folding;
4. look-alikes: a character that Unicode's confusables table (UTS #39, through `confusable_homoglyphs`)
   lists as confusable with one ASCII letter or digit becomes that letter (Cyrillic "а", Greek "ο",
   Armenian "ս", ...);
5. leetspeak, inside words only (a token with a letter in it; not a number, not a sentence's final "!"):
   digits and symbols commonly written for letters (0→o, 1→i, 3→e, 4→a, 5→s, 7→t, @→a, $→s, €→e, !→i,
   |→l, +→t);
6. `squeeze=True` (for term matching): runs of one letter collapse to one ("fuuuuck" → "fuck"), and
   separators placed inside a word are dropped ("f.u.c.k", "f u c k" between single letters).

Bounded work: texts longer than MAX_CHARS are cut before folding (the chat limit is far below it).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from importlib import resources

MAX_CHARS = 4000

LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                      "€": "e", "!": "i", "|": "l", "+": "t"})
_ASCII_ALNUM = set("abcdefghijklmnopqrstuvwxyz0123456789")
# A letter, then (one separator, a letter) at least twice more: "f.u.c.k", "f u c k", "f-u-c-k".
_SPACED = re.compile(r"\b[a-z](?:[\s._\-*~'`^]+[a-z]\b){2,}")
_SEPARATORS = re.compile(r"[\s._\-*~'`^]+")
_RUNS = re.compile(r"([a-z])\1+")
_TOKEN = re.compile(r"[\w@$€!|+]+")
_TRAILING = re.compile(r"[!+]+$")


def _unleet(match: re.Match) -> str:
    """Leet only inside words: a token with a letter in it ("sh1t", "p@$$w0rd", "h3ll0"), not a number
    ("route 66") and not the "!" that ends a sentence."""
    token = match.group(0)
    if not any(ch.isalpha() for ch in token):
        return token
    tail = _TRAILING.search(token)
    body, end = (token[:tail.start()], tail.group(0)) if tail else (token, "")
    return body.translate(LEET) + end


@functools.cache
def _confusables() -> dict[str, str]:
    """{character: the ASCII letter or digit it is confusable with}, from Unicode's confusables data."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    table: dict[str, str] = {}
    for char, targets in data.items():
        if len(char) != 1 or char.isascii():
            continue
        for target in targets:
            c = target.get("c", "").casefold()
            if len(c) == 1 and c in _ASCII_ALNUM:
                table[char] = c
                break
    return table


def _visible(ch: str) -> bool:
    category = unicodedata.category(ch)
    if category in ("Cf", "Mn", "Me", "Cc") and ch not in "\n\t":
        return False
    return not (0xFE00 <= ord(ch) <= 0xFE0F or 0xE0100 <= ord(ch) <= 0xE01EF)  # variation selectors


def skeleton(text: str, *, squeeze: bool = False) -> str:
    """The matching form of `text` (see the module docstring)."""
    text = unicodedata.normalize("NFKC", (text or "")[:MAX_CHARS])
    text = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in text if _visible(ch)).casefold()
    table = _confusables()
    text = "".join(table.get(ch, ch) for ch in text)
    text = _TOKEN.sub(_unleet, unicodedata.normalize("NFC", text))
    if squeeze:
        text = _RUNS.sub(r"\1", join_spaced(text))
    return text


def join_spaced(folded: str) -> str:
    """Single letters spelled out with separators ("f u c k", "f.u.c.k") joined into one word."""
    return _SPACED.sub(lambda m: _SEPARATORS.sub("", m.group(0)), folded)
