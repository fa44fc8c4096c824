"""Measures the moderation classifier: trains on the training set, scores the independent held-out set.

    python -m moderation.evaluate [--markdown] [--thresholds 0.5 0.7] [--latency-passes 3]

Prints per-category precision, recall, F1 and support at each threshold, the comparisons behind the design
choices (how the offensive score is made, the text folding, the feature sets), recall on the held-out rows
written with evasive spellings, and the per-message latency of `Classifier.scores`. Nothing is cached or
written: the model is trained here from `moderation/data/train.csv` every time.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np

from moderation import classifier as clf
from moderation.classifier import CATEGORIES


def prf(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> list[tuple[float, float, float, int]]:
    """(precision, recall, F1, support) per column."""
    from sklearn.metrics import precision_recall_fscore_support

    return [precision_recall_fscore_support(labels[:, i], probabilities[:, i] >= threshold, average="binary",
                                            zero_division=0)[:3] + (int(labels[:, i].sum()),)
            for i in range(labels.shape[1])]


def macro(rows) -> tuple[float, float, float]:
    return tuple(float(np.mean([row[k] for row in rows])) for k in range(3))


def table(headers: list[str], rows: list[list], markdown: bool) -> str:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers)] + [fmt.format(*row) for row in cells])


def raw_fold(text: str | None) -> str:
    """The ablation without `textnorm.skeleton`: only bounded and lower-cased."""
    return (text or "")[: clf.MAX_CHARS].lower()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print markdown tables (for docs/moderation.md)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7])
    parser.add_argument("--latency-passes", type=int, default=3, help="passes over the held-out set for latency")
    args = parser.parse_args(argv)
    md = args.markdown
    out: list[str] = []

    def section(title: str) -> None:
        out.append(f"\n{'####' if md else '==='} {title}\n")

    train_set = clf.load_dataset(clf.TRAIN_CSV)
    heldout = clf.load_dataset(clf.HELDOUT_CSV)
    started = time.perf_counter()
    model = clf.train(train_set)
    train_seconds = time.perf_counter() - started
    classifier = clf.Classifier(model, data_sha256=train_set.sha256)
    folded = [clf.prepare(t) for t in heldout.texts]
    final = classifier.category_probabilities(folded)
    y = heldout.labels

    out.append(f"classifier {classifier.version}, {datetime.date.today().isoformat()}, "
               f"Python {platform.python_version()} on {platform.machine()}")
    out.append(f"training set {len(train_set.texts)} rows (trained in {train_seconds:.2f} s), held-out set "
               f"{len(heldout.texts)} rows ({int((y.sum(axis=1) == 0).sum())} with no label)")

    for threshold in args.thresholds:
        section(f"Held-out set, threshold {threshold}")
        rows = prf(y, final, threshold)
        body = [[c, *row] for c, row in zip(CATEGORIES, rows, strict=True)]
        body.append(["macro", *macro(rows), int(y.sum())])
        out.append(table(["category", "precision", "recall", "F1", "support"], body, md))

    section("Offensive score: alt-profanity-check, ours, blends (held-out, threshold 0.5)")
    own = classifier.own_probabilities(folded)
    apc_folded = classifier.apc_probabilities(folded)
    apc_raw = classifier.apc_probabilities([raw_fold(t) for t in heldout.texts])
    variants = {"alt-profanity-check on raw text": apc_raw, "alt-profanity-check on skeleton": apc_folded,
                "ours only": own[:, 0], "max(apc, ours)": np.maximum(apc_folded, own[:, 0])}
    for w in (0.2, 0.3, 0.4, 0.5, 0.7):
        variants[f"{w} apc + {1 - w:.1f} ours"] = w * apc_folded + (1 - w) * own[:, 0]
    out.append(table(["offensive from", "precision", "recall", "F1"],
                     [[name, *prf(y[:, :1], p[:, None], 0.5)[0][:3]] for name, p in variants.items()], md))

    section("Design comparisons (held-out macro over the five categories, threshold 0.5)")
    raw_model = clf.train(train_set, fold=raw_fold)
    raw_texts = [raw_fold(t) for t in heldout.texts]
    raw_final = np.array(raw_model.predict_proba(raw_texts), dtype=float)
    raw_final[:, 0] = clf.OFFENSIVE_WEIGHT * apc_raw + (1 - clf.OFFENSIVE_WEIGHT) * raw_final[:, 0]
    comparisons = {"as shipped (skeleton, word + char n-grams)": final, "without skeleton (lower-case only)": raw_final}
    for name, options in (("word n-grams only", {"char": False}), ("char n-grams only", {"word": False})):
        variant = clf.Classifier(clf.train(train_set, **options), data_sha256=train_set.sha256)
        comparisons[name] = variant.category_probabilities(folded)
    out.append(table(["variant", "macro precision", "macro recall", "macro F1"],
                     [[name, *macro(prf(y, p, 0.5))] for name, p in comparisons.items()], md))

    # Rows whose folded form differs from their lower-cased form were written with evasive spellings.
    evasive = np.array([f != r for f, r in zip(folded, raw_texts, strict=True)]) & (y.sum(axis=1) > 0)
    section(f"Evasive spellings: {int(evasive.sum())} held-out rows with a label, written with look-alikes, "
            "leet, hidden characters or spacing (recall at 0.5 over their labels)")
    recall = []
    for name, p in (("with skeleton", final), ("without skeleton", raw_final)):
        hits = (p[evasive] >= 0.5) & (y[evasive] == 1)
        recall.append([name, float(hits.sum() / y[evasive].sum())])
    out.append(table(["variant", "recall"], recall, md))

    section("Latency of Classifier.scores (one message at a time, after warm-up, incl. VADER sentiment)")
    for text in heldout.texts[:20]:
        classifier.scores(text)
    samples = []
    for _ in range(args.latency_passes):
        for text in heldout.texts:
            t0 = time.perf_counter()
            classifier.scores(text)
            samples.append((time.perf_counter() - t0) * 1000)
    long_text = "you are an idiot " * 6000  # about 100 kB
    t0 = time.perf_counter()
    classifier.scores(long_text)
    long_ms = (time.perf_counter() - t0) * 1000
    q = np.percentile(samples, [50, 95, 99])
    out.append(table(["messages", "p50 ms", "p95 ms", "p99 ms", "max ms", "100 kB text ms"],
                     [[len(samples), float(q[0]), float(q[1]), float(q[2]), float(max(samples)), long_ms]], md))
    print("\n".join(out))


if __name__ == "__main__":
    main()
