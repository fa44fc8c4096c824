"""The moderation classifier: per-category scores, evasive spellings, bounded cost, held-out quality, the model cache."""

from __future__ import annotations

import re
import threading
import time

import joblib
import numpy as np
import pytest

from moderation import classifier as clf
from moderation.classifier import CATEGORIES


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("model-cache")
        path.chmod(0o700)
        mp.setenv("AULA_MODEL_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def classifier(model_cache):
    dataset = clf.load_dataset()
    return clf.Classifier(clf.load_model(dataset), data_sha256=dataset.sha256)


def test_every_category_and_sentiment_are_present_and_in_range(classifier):
    for text in ["hello class", "", "you are a fucking idiot", "🎉" * 500]:
        scores = classifier.scores(text)
        assert set(scores) == {*CATEGORIES, "sentiment"}
        assert all(0.0 <= scores[c] <= 1.0 for c in CATEGORIES)
        assert -1.0 <= scores["sentiment"] <= 1.0
    assert classifier.scores(None)["spam"] < 0.5  # a missing body is empty text, not an error


def test_version_names_the_models_and_the_training_data(classifier):
    assert re.fullmatch(r"aula-clf-1/apc-[\w.]+/[0-9a-f]{8}", classifier.version)
    assert classifier.version.endswith(clf.load_dataset().sha256[:8])


@pytest.mark.parametrize(("text", "category"), [
    ("this fucking printer never works", "offensive"),
    ("what the shit is this lesson", "offensive"),
    ("nobody likes you, just leave the class", "harassment"),
    ("i'll beat you up at lunch", "harassment"),
    ("kill yourself loser", "harassment"),
    ("send nudes tonight", "sexual"),
    ("show me your boobs on cam", "sexual"),
    ("i want to kill myself", "self_harm"),
    ("i've been cutting myself again", "self_harm"),
    ("nobody would care if i died", "self_harm"),
    ("FREE ROBUX click bit.ly/getrobux", "spam"),
    ("earn $500 a day from home, dm me", "spam"),
])
def test_clear_cases_score_high_in_their_category(classifier, text, category):
    assert classifier.scores(text)[category] >= 0.5


@pytest.mark.parametrize("text", [
    "this homework is killing me",
    "I could die laughing",
    "sex education chapter 3 is on friday's quiz",
    "click the link in the syllabus",
    "that play was sick",
    "world war one killed millions of soldiers",
    "the counselor talked about suicide prevention today",
    "you got this, good luck on the test!",
    "thanks for the notes",
])
def test_benign_hard_negatives_score_low(classifier, text):
    scores = classifier.scores(text)
    assert max(scores[c] for c in CATEGORIES) < 0.5, scores


# The platform's default thresholds (config/settings.py AULA_MODERATION_THRESHOLDS).
DEFAULT_FLAG = {"offensive": 0.7, "harassment": 0.5, "sexual": 0.5, "self_harm": 0.5, "spam": 0.6}
DEFAULT_HOLD = {"offensive": 0.92, "harassment": 0.75, "sexual": 0.75, "spam": 0.85}

# Ordinary class chat, written for this test (none of it is in train.csv): meeting times and places, mild
# complaints, games and sports, logistics, greetings and emoji. "see you after school" used to be held.
ORDINARY_CLASS_CHAT = [
    "see you in homeroom tomorrow",
    "can we meet by the gym doors after fourth period",
    "I'll wait for you outside the art room",
    "ugh I hate tuesdays, double math",
    "lol that quiz was so dumb",
    "good match today everyone, well played",
    "she shot a three pointer at the buzzer!!",
    "we totally crushed the robotics competition",
    "is the bus leaving at 3:30 or 3:45?",
    "don't forget your lab goggles tomorrow",
    "hi everyone 👋 good morning",
    "happy friday!! 🎉",
    "bye, have a good weekend 😊",
    "my laptop is so slow today, ugh",
    "who has a charger? mine died",
    "meet at the front office to pick up your hall passes",
    "can someone save me a seat at lunch",
    "practice got moved to the small gym",
    "that movie in english was kinda boring lol",
    "nice try, you'll get it next time",
    "omg I'm so tired, see you after lunch",
    "we need to sign up for the field trip by thursday",
]


def test_ordinary_class_chat_is_never_held_and_rarely_flagged(classifier):
    scores = {text: classifier.scores(text) for text in ORDINARY_CLASS_CHAT}
    held = {text: s for text, s in scores.items() if any(s[c] >= t for c, t in DEFAULT_HOLD.items())}
    assert not held, held
    flagged = {text: s for text, s in scores.items() if any(s[c] >= t for c, t in DEFAULT_FLAG.items())}
    assert len(flagged) <= 0.1 * len(ORDINARY_CLASS_CHAT), flagged


@pytest.mark.parametrize("text", [
    "see you after school, you're dead",
    "meet me behind the gym after fourth period, you're going to get hurt",
    "wait for me by the buses, i'm going to beat you up",
    "after practice you're getting jumped, watch your back",
])
def test_threats_set_at_a_meeting_place_are_still_harassment(classifier, text):
    assert classifier.scores(text)["harassment"] >= DEFAULT_FLAG["harassment"]


@pytest.mark.parametrize(("text", "category"), [
    ("send nudеs", "sexual"),  # Cyrillic е
    ("yоu аrе а fuсking idiоt", "offensive"),  # Cyrillic о, а, е, с
    ("fu\u200bck this wi\u200bfi", "offensive"),  # zero-width spaces
    ("k\u200by\u200bs loser", "harassment"),
    ("i w4nt t0 k1ll mys3lf", "self_harm"),  # leet
    ("s3nd n00dz", "sexual"),
    ("FR33 R0BUX at free-robux.gg", "spam"),
    ("ｓｅｎｄ ｎｕｄｅｓ", "sexual"),  # full-width
])
def test_evasive_spellings_still_score_high(classifier, text, category):
    assert classifier.scores(text)[category] >= 0.5


def test_a_huge_text_costs_little(classifier):
    classifier.scores("warm up")
    started = time.perf_counter()
    scores = classifier.scores("you are an idiot " * 6000 + "x" * 2000)  # over 100,000 characters
    assert time.perf_counter() - started < 0.25
    assert set(scores) == {*CATEGORIES, "sentiment"}


def test_held_out_quality_stays_above_the_measured_floor(classifier):
    """Floors a little under what the shipped model measured (macro precision 0.86, recall 0.81 at 0.5) on
    the hand-written held-out set: a change to the data or the model that loses quality fails here."""
    heldout = clf.load_dataset(clf.HELDOUT_CSV)
    probabilities = classifier.category_probabilities([clf.prepare(t) for t in heldout.texts])
    predicted = probabilities >= 0.5
    truth = heldout.labels == 1
    precision = np.mean([(predicted[:, i] & truth[:, i]).sum() / max(predicted[:, i].sum(), 1)
                         for i in range(len(CATEGORIES))])
    recall = np.mean([(predicted[:, i] & truth[:, i]).sum() / truth[:, i].sum() for i in range(len(CATEGORIES))])
    assert precision >= 0.80
    assert recall >= 0.75
    assert min((predicted[:, i] & truth[:, i]).sum() / truth[:, i].sum() for i in range(len(CATEGORIES))) >= 0.6


def test_the_cache_is_reused_by_the_next_load(model_cache, classifier, monkeypatch):
    dataset = clf.load_dataset()
    path = clf.cache_path(dataset.sha256)
    assert path.parent == model_cache and path.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the cache holds the model")

    monkeypatch.setattr(clf, "train", no_training)
    model = clf.load_model(dataset)
    reloaded = clf.Classifier(model, data_sha256=dataset.sha256)
    assert reloaded.scores("send nudes") == classifier.scores("send nudes")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "stale"])
def test_a_corrupt_or_stale_cache_file_is_retrained(model_cache, monkeypatch, damage):
    dataset = clf.load_dataset()
    path = clf.cache_path(dataset.sha256)
    clf.load_model(dataset)
    if damage == "garbage":
        path.write_bytes(b"not a joblib file \x00\xff")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    else:
        joblib.dump({"key": "another-revision", "model": object()}, path)
    calls = []
    real_train = clf.train
    monkeypatch.setattr(clf, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))

    model = clf.load_model(dataset)

    assert calls == [1]
    assert clf.Classifier(model, data_sha256=dataset.sha256).scores("i want to kill myself")["self_harm"] >= 0.5
    assert joblib.load(path)["key"] == path.name  # rewritten whole


def test_a_cache_directory_others_can_write_is_not_trusted(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("AULA_MODEL_CACHE_DIR", str(shared))
    dataset = clf.load_dataset()
    joblib.dump({"key": clf.cache_path(dataset.sha256).name, "model": "planted"}, clf.cache_path(dataset.sha256))

    model = clf.load_model(dataset)

    assert hasattr(model, "predict_proba")  # trained, the planted file was never loaded


def test_get_classifier_loads_once_for_concurrent_first_callers(model_cache, monkeypatch):
    monkeypatch.setattr(clf, "_instance", None)
    loads = []
    real_load = clf.load_model
    monkeypatch.setattr(clf, "load_model", lambda dataset: loads.append(1) or real_load(dataset))
    results = []
    threads = [threading.Thread(target=lambda: results.append(clf.get_classifier())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [1]
    assert len({id(r) for r in results}) == 1 and len(results) == 8
    clf.warm()
    assert clf.get_classifier() is results[0]
