"""The first stage of chat moderation: per-category probabilities for a piece of user text, from local models.

`get_classifier().scores(text)` returns a probability in [0, 1] for each of CATEGORIES and the VADER
sentiment in [-1, 1]. Two models stand behind it:

- alt-profanity-check (MIT), a linear model its authors trained on about 200,000 labelled comments, scores
  profanity and insults; it is blended with our own model's "offensive" score (see OFFENSIVE_WEIGHT);
- our own model, TF-IDF word (1-2) and character (2-5, inside word boundaries) n-grams with one logistic
  regression per category, trained on `moderation/data/train.csv` (written for this project, CC0-1.0;
  see `moderation/data/README.md`), scores harassment, sexual, self_harm and spam.

Both see `textnorm.skeleton(text)`, so look-alike letters, hidden characters and leetspeak are folded away
first, and only the first MAX_CHARS characters: a 100 kB paste costs what a long message costs.

Our model is trained on first use (about a second) and cached as a joblib file keyed by the revision below,
the training data's hash and the scikit-learn version, in AULA_MODEL_CACHE_DIR (a setting or environment
variable; default `<system temp>/aula-model-cache`). A missing, corrupt or stale cache file is retrained.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from moderation.textnorm import skeleton

CATEGORIES: tuple[str, ...] = ("offensive", "harassment", "sexual", "self_harm", "spam")
MODEL_REVISION = "aula-clf-1"  # bump when the features or the estimator change: it is part of the cache key
MAX_CHARS = 2000  # the chat limit is far below; the rest of a longer text would only cost time
DATA_DIR = Path(__file__).resolve().parent / "data"
TRAIN_CSV = DATA_DIR / "train.csv"
HELDOUT_CSV = DATA_DIR / "heldout.csv"
# The offensive score is w * alt-profanity-check + (1 - w) * ours. alt-profanity-check knows far more
# vocabulary (slurs, insults we never wrote down) but flags school hard negatives ("I could die laughing",
# "sex education chapter 3", "that play was sick") and insults without profanity, which we count as harassment;
# ours knows those. On the held-out set 0.4 scored best (F1 0.93 against 0.71 for alt-profanity-check alone and
# 0.91 for ours alone; `python -m moderation.evaluate`). Below 0.5, alt-profanity-check alone never crosses the
# 0.5 threshold: it needs ours to agree at least a little (>= 0.17).
OFFENSIVE_WEIGHT = 0.4

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    texts: list[str]
    labels: np.ndarray  # (rows, len(CATEGORIES)) of 0/1
    sha256: str


def load_dataset(path: Path = TRAIN_CSV) -> Dataset:
    raw = path.read_bytes()
    rows = list(csv.DictReader(raw.decode("utf-8").splitlines()))
    texts = [row["text"] for row in rows]
    labels = np.array([[int(row[c]) for c in CATEGORIES] for row in rows], dtype=np.int8)
    return Dataset(texts=texts, labels=labels, sha256=hashlib.sha256(raw).hexdigest())


def prepare(text: str | None) -> str:
    """What the models read: the bounded, folded form of the text."""
    return skeleton((text or "")[:MAX_CHARS])


def build_model(*, word: bool = True, char: bool = True, c: float = 4.0):
    """An untrained pipeline; the keyword arguments exist for the evaluation's comparisons."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import FeatureUnion, Pipeline

    parts = []
    if word:
        # token_pattern keeps one-letter tokens ("u", "r") and words with apostrophes ("you're").
        parts.append(("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"[\w']+")))
    if char:
        # Characters inside word boundaries catch spellings the word features never saw ("fuuck", "nudez").
        parts.append(("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)))
    # liblinear fits these small sparse problems 3x faster than lbfgs; a fixed seed makes training repeatable.
    estimator = LogisticRegression(C=c, class_weight="balanced", solver="liblinear", random_state=0)
    return Pipeline([("features", FeatureUnion(parts)), ("clf", OneVsRestClassifier(estimator))])


def train(dataset: Dataset, *, fold=prepare, **options):
    model = build_model(**options)
    model.fit([fold(t) for t in dataset.texts], dataset.labels)
    return model


def _apc_version() -> str:
    try:
        return metadata.version("alt-profanity-check")
    except metadata.PackageNotFoundError:
        return "unknown"


class Classifier:
    """Scores text with alt-profanity-check and our trained model; safe to share between threads."""

    def __init__(self, model, *, data_sha256: str, offensive_weight: float = OFFENSIVE_WEIGHT):
        from profanity_check import predict_prob  # loads its model (about 2 s) on first import

        self._model = model
        self._apc = predict_prob
        self._offensive_weight = offensive_weight
        self.version = f"{MODEL_REVISION}/apc-{_apc_version()}/{data_sha256[:8]}"

    def own_probabilities(self, folded: list[str]) -> np.ndarray:
        """Our model's (rows, CATEGORIES) probabilities for already prepared texts."""
        return self._model.predict_proba(folded)

    def apc_probabilities(self, folded: list[str]) -> np.ndarray:
        return np.asarray(self._apc(folded), dtype=float)

    def category_probabilities(self, folded: list[str]) -> np.ndarray:
        """(rows, CATEGORIES) final probabilities for already prepared texts (one row per text)."""
        probabilities = np.array(self.own_probabilities(folded), dtype=float)
        w = self._offensive_weight
        probabilities[:, 0] = w * self.apc_probabilities(folded) + (1 - w) * probabilities[:, 0]
        return np.clip(probabilities, 0.0, 1.0)

    def scores(self, text: str) -> dict[str, float]:
        """{category: probability in [0, 1] for every CATEGORIES entry, "sentiment": VADER compound in [-1, 1]}"""
        from analytics import sentiment

        row = self.category_probabilities([prepare(text)])[0]
        result = {category: float(row[i]) for i, category in enumerate(CATEGORIES)}
        result["sentiment"] = sentiment.score((text or "")[:MAX_CHARS])
        return result


# --- the cache of our trained model ---------------------------------------------------------------------------


def cache_dir() -> Path:
    value = None
    try:
        from django.conf import settings

        value = getattr(settings, "AULA_MODEL_CACHE_DIR", None)
    except Exception:  # noqa: BLE001 - no Django settings here (a script, the evaluation): the environment decides
        value = None
    value = value or os.environ.get("AULA_MODEL_CACHE_DIR")
    return Path(value) if value else Path(tempfile.gettempdir()) / "aula-model-cache"


def cache_path(data_sha256: str) -> Path:
    import sklearn

    return cache_dir() / f"{MODEL_REVISION}-{data_sha256[:16]}-sklearn-{sklearn.__version__}.joblib"


def _private_dir(path: Path) -> bool:
    """A joblib file is a pickle, and loading a pickle runs code: only read one from a directory that no
    other user can write to (the default lives in the shared system temp directory)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _load_cached(path: Path, key: str):
    try:
        import joblib

        payload = joblib.load(path)
        if isinstance(payload, dict) and payload.get("key") == key and hasattr(payload.get("model"), "predict_proba"):
            return payload["model"]
        log.warning("moderation classifier: stale model cache %s, retraining", path)
    except FileNotFoundError:
        pass
    except Exception:  # noqa: BLE001 - truncated, corrupt or from another library version: retrain
        log.warning("moderation classifier: unreadable model cache %s, retraining", path, exc_info=True)
    return None


def _store(path: Path, key: str, model) -> None:
    import joblib

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        joblib.dump({"key": key, "model": model}, tmp)
        os.replace(tmp, path)  # atomic: another process reads the old file or the new one, never half of one
    except OSError:
        log.warning("moderation classifier: could not write model cache %s", path, exc_info=True)
        tmp.unlink(missing_ok=True)


def load_model(dataset: Dataset):
    """Our trained model for `dataset`, from the cache when it holds the right one, else trained and cached."""
    path = cache_path(dataset.sha256)
    key = path.name
    usable = _private_dir(path.parent)
    if not usable:
        log.warning("moderation classifier: %s is not a private directory, the model is not cached", path.parent)
    model = _load_cached(path, key) if usable else None
    if model is None:
        started = time.perf_counter()
        model = train(dataset)
        log.info("moderation classifier: trained on %d rows in %.2f s", len(dataset.texts),
                 time.perf_counter() - started)
        if usable:
            _store(path, key, model)
    return model


_instance: Classifier | None = None
_lock = threading.Lock()


def get_classifier() -> Classifier:
    """The process-wide classifier, loaded (or trained) on first use; concurrent first callers wait for one load."""
    global _instance
    if _instance is None:
        with _lock:
            if _instance is None:
                dataset = load_dataset()
                _instance = Classifier(load_model(dataset), data_sha256=dataset.sha256)
    return _instance


def warm() -> None:
    """Load everything now (the models, the confusables table, VADER) so the first message pays nothing."""
    get_classifier().scores("warming up")
