"""Pattern lists compiled for matching: terms and wildcards as whole words of the folded text, regular
expressions with a time limit, and the censoring of matched words in the text as sent.

Everything matches the folded form of the text (moderation/textnorm.py: look-alikes, hidden characters,
leetspeak and spaced-out letters folded), so a list needs "idiot" once, not every spelling. A letter of a
term matches a run of itself ("idiot" catches "idiooooot") without collapsing the term's own doubled letters
("ass" needs two s, so "as" never matches). Regular expressions run in the `regex` module with a timeout, so
a pattern with catastrophic backtracking costs at most that long per message; a timeout counts as a hit that
holds the message for review, never as a pass.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import regex
from django.conf import settings
from django.core.exceptions import ValidationError

from moderation.models import Action, PatternList, PatternRule
from moderation.selectors import room_scopes
from moderation.textnorm import join_spaced, skeleton

MAX_PATTERN = 300
_EDGE_BEFORE, _EDGE_AFTER = r"(?<![a-z0-9])", r"(?![a-z0-9])"
_WORD = regex.compile(r"\S+")
_cache: dict[tuple, tuple[float, list[CompiledList]]] = {}


@dataclass(frozen=True)
class Hit:
    list_id: int
    list_name: str
    action: str
    rule_id: int
    kind: str
    pattern: str
    timed_out: bool = False

    def as_dict(self) -> dict:
        return {"list": self.list_id, "name": self.list_name, "action": self.action, "rule": self.rule_id,
                "kind": self.kind, "pattern": self.pattern, **({"timeout": True} if self.timed_out else {})}


@dataclass
class CompiledList:
    id: int
    name: str
    action: str
    words: regex.Pattern | None  # every term and wildcard of the list in one alternation
    rules: list[tuple[PatternRule, regex.Pattern]] = field(default_factory=list)


def _letters(folded: str) -> str:
    parts = []
    for char, run in itertools.groupby(folded):
        n = len(list(run))
        if char.isspace():
            parts.append(r"[\W_]+")  # "kill yourself" also matches "kill   yourself", "kill-yourself"
        elif char.isalnum():
            parts.append(regex.escape(char) + ("+" if n == 1 else f"{{{n},}}"))
        else:
            parts.append(regex.escape(char * n))
    return "".join(parts)


def rule_regex(kind: str, pattern: str) -> str:
    """The regular expression (over folded text) that one rule stands for."""
    if kind == PatternRule.Kind.REGEX:
        return pattern
    if kind == PatternRule.Kind.WILDCARD:
        body = []
        for piece in regex.split(r"([*?])", pattern):
            if piece == "*":
                body.append("[a-z0-9]*")
            elif piece == "?":
                body.append("[a-z0-9]")
            elif piece:
                body.append(_letters(skeleton(piece).strip()))
        return _EDGE_BEFORE + "".join(body) + _EDGE_AFTER
    return _EDGE_BEFORE + _letters(skeleton(pattern).strip()) + _EDGE_AFTER


def validate_rule(kind: str, pattern: str) -> str:
    """The pattern cleaned, or ValidationError saying what is wrong with it."""
    pattern = (pattern or "").strip()
    if not pattern:
        raise ValidationError("A pattern cannot be empty.")
    if len(pattern) > MAX_PATTERN:
        raise ValidationError(f"A pattern is at most {MAX_PATTERN} characters.")
    if kind not in PatternRule.Kind.values:
        raise ValidationError(f"Unknown kind {kind!r}: use term, wildcard or regex.")
    if kind == PatternRule.Kind.WILDCARD and not regex.sub(r"[*?\s]", "", pattern):
        raise ValidationError("A wildcard needs at least one letter (a lone * would match everything).")
    if kind != PatternRule.Kind.REGEX and not any(ch.isalnum() for ch in skeleton(regex.sub(r"[*?]", "", pattern))):
        raise ValidationError("This term has no letters or digits left after folding.")
    try:
        compiled = regex.compile(rule_regex(kind, pattern))
    except regex.error as exc:
        raise ValidationError(f"Not a valid regular expression: {exc}.") from None
    if compiled.search(""):
        raise ValidationError("This pattern matches empty text, so it would match every message.")
    return pattern


def compile_list(plist: PatternList, rules: list[PatternRule]) -> CompiledList:
    compiled, words = [], []
    for rule in rules:
        try:
            pattern = regex.compile(rule_regex(rule.kind, rule.pattern))
        except regex.error:
            continue  # validated on save; a rule saved before a stricter check is skipped, never fatal
        compiled.append((rule, pattern))
        if rule.kind != PatternRule.Kind.REGEX:
            words.append(f"(?:{pattern.pattern})")
    return CompiledList(plist.id, plist.name, plist.action, regex.compile("|".join(words)) if words else None,
                        compiled)


def load_lists(*, institution_id: int | None, course_id: int | None, channel_id: int | None,
               fresh: bool = False) -> list[CompiledList]:
    """The active lists that apply to a room: the platform's, its school's (or channel's) and its course's.
    Cached per process for AULA_MODERATION_CACHE_SECONDS (a change applies everywhere within that time)."""
    key = (institution_id, course_id, channel_id)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and cached[0] > now and not fresh:
        return cached[1]
    scope = room_scopes(institution_id=institution_id, course_id=course_id, channel_id=channel_id)
    lists = list(PatternList.objects.filter(scope, is_active=True).order_by("id"))
    rules: dict[int, list[PatternRule]] = {pl.id: [] for pl in lists}
    for rule in PatternRule.objects.filter(pattern_list_id__in=list(rules)).order_by("id"):
        rules[rule.pattern_list_id].append(rule)
    compiled = [compile_list(pl, rules[pl.id]) for pl in lists]
    _cache[key] = (now + settings.AULA_MODERATION_CACHE_SECONDS, compiled)
    return compiled


def forget_cache() -> None:
    _cache.clear()


def _timeout() -> float:
    return settings.AULA_MODERATION_REGEX_TIMEOUT_MS / 1000


def match(text: str, lists: list[CompiledList]) -> list[Hit]:
    """Every rule of `lists` that `text` hits (in its folded form)."""
    if not lists:
        return []
    folded = join_spaced(skeleton(text))
    hits: list[Hit] = []
    for cl in lists:
        try:
            word_hit = cl.words is not None and cl.words.search(folded, timeout=_timeout()) is not None
        except TimeoutError:
            word_hit = True  # each word rule is then tried on its own, with its own time limit
        for rule, pattern in cl.rules:
            if rule.kind != PatternRule.Kind.REGEX and not word_hit:
                continue
            try:
                found = pattern.search(folded, timeout=_timeout()) is not None
                timed_out = False
            except TimeoutError:
                found, timed_out = True, True
            if found:
                action = Action.HOLD if timed_out and cl.action in (Action.FLAG, Action.NOTIFY, Action.CENSOR) \
                    else cl.action
                hits.append(Hit(cl.id, cl.name, action, rule.id, rule.kind, rule.pattern, timed_out))
    return hits


def censor(text: str, lists: list[CompiledList]) -> tuple[str, int]:
    """`text` with every word that a censoring list's term or wildcard hits masked (letters and digits become
    "*", the rest stays), and how many words were masked. A hit that spans words ("kill yourself", or a word
    spelled out letter by letter) is not maskable word by word: the caller holds such a message instead."""
    patterns = [cl.words for cl in lists if cl.action == Action.CENSOR and cl.words is not None]
    if not patterns:
        return text, 0
    masked = 0

    def mask(m: regex.Match) -> str:
        nonlocal masked
        word = m.group(0)
        folded = skeleton(word)
        spans = [hit.span() for p in patterns for hit in p.finditer(folded, timeout=_timeout())]
        if not spans:
            return word
        masked += 1
        if len(folded) != len(word):  # folding changed the length (a ligature, a hidden character): mask it all
            return "".join("*" if ch.isalnum() else ch for ch in word)
        chars = list(word)
        for start, end in spans:  # only what matched: "<b>darn</b>" keeps its tags
            for i in range(start, end):
                chars[i] = "*" if chars[i].isalnum() else chars[i]
        return "".join(chars)

    try:
        return _WORD.sub(mask, text), masked
    except TimeoutError:
        return text, 0


def try_text(text: str, lists: list[CompiledList]) -> dict:
    """The "test this text" tool: the folded form, every hit, and the censored text."""
    hits = match(text, lists)
    censored, masked = censor(text, lists)
    return {"folded": join_spaced(skeleton(text)), "hits": [h.as_dict() for h in hits],
            "censored": censored if masked else "", "masked_words": masked}
