"""Benchmark instrument: how well does each detector find the label errors we know about?

``run_bench(features, labels, ...)`` scores every method on the same features and reports,
per method, AUROC and AUPRC of its score against the true error mask, precision/recall/F1 of
its own automatic flags, precision at k = the true number of errors, and wall seconds.

Methods: ``clipsei``, ``sei_paper``, ``aum`` and ``entropy_integral`` come from the scoring
engine (:func:`clipsei.find_label_issues`), which gets the ``text_features`` (K, D) as class
embeddings where given; ``zero_shot`` (the engine's image-text softmax alone) needs them and
joins the default list where they are given; ``sei_prompt`` (the prompt-tuned head) needs a
CLIP text encoder (``text_model``, :mod:`clipsei.evaluation.bench_text`) and is reported as not
run without one; ``cleanlab`` (confident learning on 5-fold
out-of-sample logistic-regression probabilities) and ``knn`` (SimiFeat-style neighbour vote,
Zhu et al. 2022) are independent baselines implemented here with scikit-learn/cleanlab/numpy.
Scores follow the package convention: lower = more likely mislabeled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import check_embeddings, check_labels, check_option
from .bench_text import NO_TEXT_MODEL, PROMPT_METHODS, fit_engine_method, resolve_bench_text
from .noise import NOISE_KINDS, compute_cv_probs, inject_label_noise

logger = logging.getLogger(__name__)

ENGINE_METHODS = ("clipsei", "sei_paper", "aum", "entropy_integral")
BASELINE_METHODS = ("cleanlab", "knn")
METHODS = ENGINE_METHODS + BASELINE_METHODS
TEXT_METHODS = ("zero_shot",)  # engine methods that need text_features
_EXTRA = "pip install 'clipsei[bench]'"
PRECISION_AT = (10, 50, 100)


@dataclass(frozen=True)
class BenchData:
    """The arrays of one bench ``.npz`` file (see :func:`load_bench_npz`)."""

    features: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray | None = None
    class_names: np.ndarray | None = None
    text_features: np.ndarray | None = None


def load_bench_npz(path) -> BenchData:
    """Load a bench file: ``features`` (N, D), ``labels`` (N,) and optionally ``true_labels``
    (N,), ``class_names`` (K,) and ``text_features`` (K, D). Errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bench file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable .npz file: {err}") from err
    with archive:
        missing = [key for key in ("features", "labels") if key not in archive.files]
        if missing:
            raise ValueError(f"{path} lacks required key(s) {missing}; it has {archive.files}")
        arrays = {key: archive[key] for key in archive.files}
    try:
        features = check_embeddings(arrays["features"], name=f"{path}:features")
        n_samples = features.shape[0]
        labels = check_labels(arrays["labels"], n_samples=n_samples, name=f"{path}:labels")
        true_labels = arrays.get("true_labels")
        if true_labels is not None:
            true_labels = check_labels(true_labels, n_samples=n_samples, name=f"{path}:true_labels")
        text = arrays.get("text_features")
        if text is not None:
            text = check_embeddings(text, name=f"{path}:text_features")
            _check_text_features(text, features, labels, name=f"{path}:text_features")
    except TypeError as err:
        raise ValueError(str(err)) from err
    names = arrays.get("class_names")
    if names is not None and names.ndim != 1:
        raise ValueError(f"{path}:class_names must be 1-D (K,); got shape {names.shape}")
    n_classes = 1 + int(max(labels.max(), -1 if true_labels is None else true_labels.max()))
    if names is not None and names.size < n_classes:
        raise ValueError(f"{path}:class_names must name every class ({n_classes}, as the labels "
                         f"use 0..{n_classes - 1}); got {names.size} names")
    return BenchData(features, labels, true_labels, names, text)


def _check_text_features(text, features, labels, *, name):
    if text.shape[1] != features.shape[1] or labels.max() >= text.shape[0]:
        raise ValueError(f"{name} must have shape (K, {features.shape[1]}) with K > max label "
                         f"{labels.max()}; got {text.shape}")


def run_bench(features, labels, *, true_labels=None, noise: str | None = None,
              rate: float = 0.2, seed: int = 0, methods=None, text_features=None,
              mapping=None, confusion=None, text_model=None, class_names=None,
              prompt_set: str = "generic") -> dict:
    """Score each method on ``features`` and return the issue's JSON-ready result dict.

    With ``true_labels`` the given ``labels`` are evaluated against them (real noise).
    Without, ``labels`` are taken as clean and ``noise`` (default ``"symmetric"``) is injected
    at ``rate`` with ``seed`` (``mapping``/``confusion`` as in
    :func:`clipsei.evaluation.noise.inject_label_noise`). ``methods`` defaults to :data:`METHODS`,
    plus ``zero_shot`` and ``sei_prompt`` where there is a text side. ``text_model`` (a ClipModel),
    ``class_names`` and ``prompt_set``: the text encoder of ``sei_prompt``, which also encodes
    the class prompts where ``text_features`` is None
    (:func:`clipsei.evaluation.bench_text.resolve_bench_text`).
    Returns ``{"n", "k", "noise", "noise_rate", "n_errors", "seed", "text", "methods": {name:
    {"auroc", "auprc", "precision", "recall", "f1", "p_at_noise", "best_f1", "p_at_10",
    "p_at_50", "p_at_100", "seconds", "n_flagged"}}, "not_run": {name: reason}}``.
    """
    features = check_embeddings(features, name="features")
    labels = check_labels(labels, n_samples=features.shape[0])
    has_text = text_features is not None or text_model is not None
    methods = _check_methods(methods, has_text=has_text)
    if text_features is not None:
        text_features = check_embeddings(text_features, name="text_features")
        _check_text_features(text_features, features, labels, name="text_features")
    text = resolve_bench_text(features, labels, text_features=text_features,
                              text_model=text_model, class_names=class_names,
                              prompt_set=prompt_set)
    text_features = text.text_features
    n_classes = int(labels.max()) + 1 if text_features is None else text_features.shape[0]
    if true_labels is not None:
        if noise is not None:
            raise ValueError("noise must be None when true_labels is given (real noise is "
                             f"evaluated as is); got noise={noise!r}")
        true_labels = check_labels(true_labels, n_samples=labels.size, name="true_labels")
        given, noise = labels, "real"
    else:
        noise = check_option("symmetric" if noise is None else noise, NOISE_KINDS, name="noise")
        true_labels, given = labels, inject_label_noise(
            labels, noise=noise, rate=rate, random_state=seed, n_classes=n_classes,
            features=features, mapping=mapping, confusion=confusion)
    is_error = given != true_labels
    result = {"n": int(labels.size), "k": n_classes, "noise": noise,
              "noise_rate": float(is_error.mean()), "n_errors": int(is_error.sum()),
              "seed": int(seed), "text": text.source, "methods": {}, "not_run": {}}
    for name in methods:
        if name in PROMPT_METHODS and text.text_model is None:
            result["not_run"][name] = NO_TEXT_MODEL
            continue
        start = time.perf_counter()
        scores, flags, error_probs = _score_with_probabilities(
            name, features, given, seed=seed, text_features=text_features, text=text)
        metrics = compute_detection_metrics(scores, flags, is_error)
        if error_probs is not None:
            metrics.update(compute_calibration_metrics(error_probs, is_error))
        metrics["seconds"] = round(time.perf_counter() - start, 4)
        logger.info("%s: %s", name, metrics)
        result["methods"][name] = metrics
    return result


def _check_methods(methods, *, has_text: bool = False) -> tuple:
    if methods is None:
        return METHODS + TEXT_METHODS + PROMPT_METHODS if has_text else METHODS
    if isinstance(methods, str):
        methods = [name.strip() for name in methods.split(",") if name.strip()]
    methods = tuple(methods)
    if not methods:
        raise ValueError("methods must name at least one of "
                         f"{list(METHODS + TEXT_METHODS + PROMPT_METHODS)}; got none")
    for name in methods:
        check_option(name, METHODS + TEXT_METHODS + PROMPT_METHODS, name="methods")
        if name in TEXT_METHODS and not has_text:
            raise ValueError(f"method {name!r} needs text_features (K, D), the class text "
                             "embeddings (an .npz key); got none")
    return methods


def score_method(name: str, features, labels, *, seed: int = 0, text_features=None):
    """Return ``(scores, flags)``: (N,) floats, lower = more likely mislabeled, and (N,) bools,
    the method's own automatic flags. Trusts validated input."""
    return _score_with_probabilities(name, features, labels, seed=seed,
                                     text_features=text_features)[:2]


def _score_with_probabilities(name, features, labels, *, seed, text_features, text=None):
    """``(scores, flags, error_probs)``: as :func:`score_method`, plus the (N,) error
    probabilities of an engine method that gives them (else None). ``text``: the full text
    side (:class:`clipsei.evaluation.bench_text.BenchText`), else ``text_features`` alone."""
    check_option(name, METHODS + TEXT_METHODS + PROMPT_METHODS, name="method")
    if name == "cleanlab":
        return (*score_cleanlab(features, labels, random_state=seed), None)
    if name == "knn":
        return (*score_knn(features, labels), None)
    if text is None:
        text = resolve_bench_text(features, labels, text_features=text_features)
    table = fit_engine_method(name, features, labels, seed=seed, text=text)
    error_probs = (np.asarray(table["error_probability"], dtype=float)
                   if "error_probability" in table else None)
    return (np.asarray(table["label_score"], dtype=float),
            np.asarray(table["is_label_issue"], dtype=bool), error_probs)


def compute_calibration_metrics(error_probs, is_error, *, n_bins: int = 10) -> dict:
    """How well (N,) ``error_probs`` match the (N,) bool ``is_error`` mask.

    Returns ``ece`` (expected calibration error: the count-weighted mean gap between each
    bin's mean probability and its share of errors, over ``n_bins`` equal-width bins),
    ``expected_errors`` (the probabilities' sum, to compare with the true count) and
    ``reliability``: per non-empty bin ``[mean probability, share wrong, count]``.
    """
    error_probs = np.asarray(error_probs, dtype=float)
    is_error = np.asarray(is_error, dtype=bool)
    bins = np.minimum((error_probs * n_bins).astype(int), n_bins - 1)
    reliability, gap = [], 0.0
    for b in np.unique(bins):
        rows = bins == b
        mean_p, share = float(error_probs[rows].mean()), float(is_error[rows].mean())
        reliability.append([mean_p, share, int(rows.sum())])
        gap += rows.sum() * abs(mean_p - share)
    return {"ece": float(gap / error_probs.size), "expected_errors": float(error_probs.sum()),
            "reliability": reliability}


def score_cleanlab(features, labels, *, random_state=0, C="auto"):
    """Confident learning (Northcutt et al. 2021) on 5-fold stratified out-of-sample
    probabilities of ``StandardScaler`` + ``LogisticRegression`` (lbfgs, multinomial, C chosen
    by out-of-fold log-loss on the given labels; see
    :func:`clipsei.evaluation.noise.compute_cv_probs`).

    Flags: ``cleanlab.filter.find_label_issues`` (``prune_by_noise_rate``); scores:
    ``cleanlab.rank.get_label_quality_scores`` (self-confidence).
    """
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError as err:
        raise ImportError(f"the cleanlab baseline needs cleanlab: {_EXTRA}") from err
    features = check_embeddings(features, name="features")
    labels = check_labels(labels, n_samples=features.shape[0])
    n_classes = int(labels.max()) + 1
    probs = compute_cv_probs(features, labels, n_classes=n_classes, random_state=random_state,
                             C=C)
    flags = find_label_issues(labels, probs, n_jobs=1)
    scores = get_label_quality_scores(labels, probs)
    return np.asarray(scores, dtype=float), np.asarray(flags, dtype=bool)


def score_knn(features, labels, *, k: int = 10, block: int = 2048):
    """SimiFeat-style neighbour vote (Zhu et al. 2022, "Detecting Corrupted Labels Without
    Training a Model to Predict"): cosine k nearest neighbours on centred, L2-normalised
    features, the query itself excluded by id.

    Score = share of the k neighbours carrying the given label, ties broken by the
    similarity-weighted share (which moves the score by less than one vote). Flag = the
    neighbours' majority label (same tie-break) differs from the given label.
    """
    features = check_embeddings(features, name="features")
    labels = check_labels(labels, n_samples=features.shape[0])
    if not 0 < k < labels.size:
        raise ValueError(f"k must be in [1, {labels.size}) for {labels.size} samples; got {k}")
    unit = features - features.mean(axis=0)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    n_classes = int(labels.max()) + 1
    votes = np.empty((labels.size, n_classes))
    for start in range(0, labels.size, block):
        rows = np.arange(start, min(start + block, labels.size))
        votes[rows] = _knn_votes(unit, labels, rows, k=k, n_classes=n_classes)
    given = votes[np.arange(labels.size), labels]
    return given, votes.argmax(axis=1) != labels


def _knn_votes(unit, labels, rows, *, k, n_classes):
    """Per-class votes (len(rows), K): counts/k plus weighted share/(k+1) as a tie-break."""
    sims = unit[rows] @ unit.T
    sims[np.arange(rows.size), rows] = -np.inf  # drop the query by id, not by position
    ids = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    neighbour_sims = np.take_along_axis(sims, ids, axis=1)
    weights = (1.0 + neighbour_sims) / 2.0  # cosine in [-1, 1] -> [0, 1]
    onehot = np.eye(n_classes)[labels[ids]]  # (b, k, K)
    counts = onehot.sum(axis=1) / k
    weighted = (onehot * weights[..., None]).sum(axis=1)
    weighted /= np.maximum(weighted.sum(axis=1, keepdims=True), 1e-12)
    return counts + weighted / (k + 1)


def compute_detection_metrics(scores, flags, is_error) -> dict:
    """Metrics of one method against the true error mask.

    ``scores``: lower = more likely mislabeled (so ``-scores`` is the positive-class score).
    AUROC/AUPRC are ``None`` when the mask holds a single class; precision of an empty flag
    set is 0. ``p_at_noise`` = precision among the ``is_error.sum()`` lowest scores,
    ``p_at_<k>`` among the k lowest (k in :data:`PRECISION_AT`: a reviewer's fixed budget) and
    ``best_f1`` the F1 of the best cutoff on the ranking (None without errors).
    """
    try:
        from sklearn.metrics import average_precision_score, roc_auc_score
    except ImportError as err:  # pragma: no cover - scikit-learn is a core dependency
        raise ImportError(f"bench metrics need scikit-learn: {_EXTRA}") from err
    scores = np.asarray(scores, dtype=float)
    flags = np.asarray(flags, dtype=bool)
    is_error = np.asarray(is_error, dtype=bool)
    if not (scores.shape == flags.shape == is_error.shape) or scores.ndim != 1:
        raise ValueError(f"scores, flags and is_error must be 1-D of one length; got "
                         f"{scores.shape}, {flags.shape}, {is_error.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite; got NaN or inf")
    n_errors, n_flagged, hits = int(is_error.sum()), int(flags.sum()), int((flags & is_error).sum())
    both = 0 < n_errors < is_error.size
    precision = hits / n_flagged if n_flagged else 0.0
    recall = hits / n_errors if n_errors else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    order = np.argsort(scores, kind="stable")
    metrics = {
        "auroc": float(roc_auc_score(is_error, -scores)) if both else None,
        "auprc": float(average_precision_score(is_error, -scores)) if both else None,
        "precision": precision, "recall": recall, "f1": f1,
        "p_at_noise": float(is_error[order[:n_errors]].mean()) if n_errors else None,
        "n_flagged": n_flagged,
        "best_f1": compute_best_cutoff_f1(scores, is_error) if n_errors else None,
    }
    for k in PRECISION_AT:
        metrics[f"p_at_{k}"] = float(is_error[order[:k]].mean()) if n_errors else None
    return metrics


def compute_best_cutoff_f1(scores, is_error) -> float:
    """The F1 of the best single cutoff on ``scores`` (N,) (flag the m lowest, best m >= 1)
    against the (N,) bool ``is_error``: what the ranking allows any count rule to reach."""
    is_error = np.asarray(is_error, dtype=bool)
    hits = np.cumsum(is_error[np.argsort(np.asarray(scores, dtype=float), kind="stable")])
    f1 = 2 * hits / (np.arange(1, hits.size + 1) + is_error.sum())
    return float(f1.max())


def format_bench_table(result: dict) -> str:
    """A fixed-width text table of a :func:`run_bench` result, one row per method."""
    head = (f"n={result['n']} k={result['k']} noise={result['noise']} "
            f"noise_rate={result['noise_rate']:.4f} errors={result['n_errors']}"
            + (f" text={result['text']}" if "text" in result else ""))
    columns = ("auroc", "auprc", "precision", "recall", "f1", "p_at_noise", "seconds")
    lines = [head, f"{'method':<18}" + "".join(f"{c:>11}" for c in columns)]
    for name, metrics in result["methods"].items():
        cells = ["nan" if metrics[c] is None else f"{metrics[c]:.4f}" for c in columns]
        lines.append(f"{name:<18}" + "".join(f"{cell:>11}" for cell in cells))
    for name, reason in result.get("not_run", {}).items():
        lines.append(f"{name:<18} not run: {reason}")
    return "\n".join(lines)
