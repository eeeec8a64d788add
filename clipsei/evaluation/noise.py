"""Label noise with a known mask, for benchmarks: symmetric, asymmetric (pair) and confusion.

Every injector flips exactly ``round(rate * N)`` labels where that many samples can be flipped
(fewer, with a ``UserWarning``, where a mapping or confusion matrix leaves too few candidates),
always to a *different* class, and draws from a local ``numpy.random.Generator`` only.
Flips are spread over the flippable classes (those with a non-zero transition row) in
proportion to class size (confusion noise: to the classifier's mistakes per class), so under
symmetric/asymmetric noise every flippable class gets the same noise rate up to one sample, as
in the class-conditional noise models of the label-noise literature. No class has half or more
of its labels flipped (the given label must stay each class's majority, the identifiability
condition of class-conditional noise); the excess goes to the other classes.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np

from .._validation import check_embeddings, check_labels, check_option, check_random_state

logger = logging.getLogger(__name__)

NOISE_KINDS = ("symmetric", "asymmetric", "confusion")
_EXTRA = "pip install 'clipsei[bench]'"


def inject_label_noise(labels, *, noise: str = "symmetric", rate: float = 0.2,
                       random_state=None, n_classes: int | None = None, features=None,
                       mapping=None, confusion=None) -> np.ndarray:
    """Return a noisy copy of the clean ``labels`` (N,); the input is left unchanged.

    noise : ``"symmetric"`` (a uniformly chosen other class), ``"asymmetric"`` (class c goes
        to ``mapping[c]``; default c -> c+1 mod K) or ``"confusion"`` (flips drawn from the
        off-diagonal of ``confusion``, computed from ``features`` with
        :func:`compute_confusion_matrix` when not given).
    rate : fraction of samples to flip, in [0, 1).
    mapping : dict {class: new class} (or a (K,) int array) for ``"asymmetric"``; classes not
        in it are never flipped.
    confusion : (K, K) non-negative counts, rows = true class, columns = predicted class.
        Class c receives a share of the flips proportional to its off-diagonal row sum (its
        number of classifier mistakes) and its flips go to j with probability proportional to
        ``confusion[c, j]``, j != c (the row-normalised off-diagonal). On two classes this is
        what tells confusion noise from symmetric noise.
    """
    check_option(noise, NOISE_KINDS, name="noise")
    labels = check_labels(labels, n_classes=n_classes)
    if not 0 <= float(rate) < 1:
        raise ValueError(f"rate must be in [0, 1); got {rate}")
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    if n_classes < 2:
        raise ValueError(f"labels must span at least 2 classes to be flipped; got {n_classes}")
    rng = check_random_state(random_state)
    sizes = np.bincount(labels, minlength=n_classes).astype(float)
    if noise == "symmetric":
        transitions = (1.0 - np.eye(n_classes)) / (n_classes - 1)
    elif noise == "asymmetric":
        transitions = _mapping_transitions(mapping, n_classes)
    else:
        if confusion is None and features is None:
            raise ValueError("noise='confusion' needs features (or a precomputed confusion)")
        if confusion is None:
            confusion = compute_confusion_matrix(features, labels, n_classes=n_classes)
        transitions = _check_confusion(confusion, n_classes)
        sizes = transitions.sum(axis=1)  # weights: the classifier's mistakes per class
    weights = np.where(transitions.sum(axis=1) > 0, sizes, 0.0)
    return _flip_by_class(labels, transitions, weights, int(round(float(rate) * labels.size)),
                          rng)


def keep_label_errors(clean_labels, noisy_labels, *, rate: float,
                      random_state=None) -> np.ndarray:
    """(N,) ``noisy_labels`` with all but ``round(rate * N)`` of their errors (rows where they
    differ from ``clean_labels``) set back to the clean label, the kept ones drawn at random:
    real (e.g. human) noise at a lower rate. A one-line ``ValueError`` where the labels hold
    fewer errors than that."""
    clean_labels, noisy_labels = np.asarray(clean_labels), np.asarray(noisy_labels)
    if clean_labels.shape != noisy_labels.shape:
        raise ValueError(f"clean_labels and noisy_labels differ in shape: {clean_labels.shape} "
                         f"and {noisy_labels.shape}")
    errors = np.flatnonzero(clean_labels != noisy_labels)
    n_kept = int(round(float(rate) * clean_labels.size))
    if not 0 <= n_kept <= errors.size:
        raise ValueError(f"rate {rate} asks for {n_kept} errors; the labels hold {errors.size}")
    kept = check_random_state(random_state).choice(errors, n_kept, replace=False)
    labels = clean_labels.copy()
    labels[kept] = noisy_labels[kept]
    return labels


def compute_confusion_matrix(features, labels, *, n_classes: int | None = None,
                             random_state=0) -> np.ndarray:
    """Confusion counts (K, K) (rows = clean label, columns = predicted) of a 5-fold
    cross-validated logistic regression (:func:`compute_cv_probs`) on the clean ``labels``.

    A class the classifier never gets wrong has a zero off-diagonal row (warned about): it has
    no realistic confusion, so :func:`inject_label_noise` leaves it unflipped.
    """
    features = check_embeddings(features, name="features")
    labels = check_labels(labels, n_samples=features.shape[0], n_classes=n_classes)
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    probs = compute_cv_probs(features, labels, n_classes=n_classes, random_state=random_state)
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (labels, probs.argmax(axis=1)), 1.0)
    mistakes = counts.sum(axis=1) - np.diag(counts)
    perfect = np.flatnonzero((mistakes == 0) & (counts.sum(axis=1) > 0))
    if perfect.size:
        warnings.warn(f"classes {perfect.tolist()} are never misclassified; confusion noise "
                      "leaves them unflipped", UserWarning, stacklevel=2)
    return counts


def compute_cv_probs(features, labels, *, n_classes: int, random_state=0, n_splits: int = 5,
                     C="auto", max_iter: int = 1000) -> np.ndarray:
    """Out-of-sample class probabilities (N, K) from stratified ``n_splits``-fold
    cross-validation of ``StandardScaler`` + multinomial L2 ``LogisticRegression`` (lbfgs).

    ``C="auto"`` picks the inverse regularisation strength on a factor-3 grid by the
    out-of-fold log-loss *on the given labels* (no true labels involved): a local search from
    1e-3 that stops once the loss rises. Trusts its input.
    """
    folds = _stratified_folds(labels, n_classes, n_splits, random_state)
    if C != "auto":
        return _fit_predict_folds(features, labels, folds, n_classes, float(C), max_iter)
    cache = {}

    def loss(exponent: int) -> float:  # C = 1e-3 * 3**exponent
        if exponent not in cache:
            probs = _fit_predict_folds(features, labels, folds, n_classes,
                                       1e-3 * 3.0 ** exponent, max_iter)
            given = np.clip(probs[np.arange(labels.size), labels], 1e-12, 1.0)
            cache[exponent] = (-np.log(given).mean(), probs)
        return cache[exponent][0]

    best = 0
    step = -1 if loss(-1) < loss(0) else 1
    while -4 <= best + step <= 6 and loss(best + step) < loss(best):
        best += step
    logger.debug("logistic regression C=%.2g chosen by out-of-fold log-loss", 1e-3 * 3.0 ** best)
    return cache[best][1]


def _stratified_folds(labels, n_classes, n_splits, random_state) -> list:
    try:
        from sklearn.model_selection import StratifiedKFold
    except ImportError as err:  # pragma: no cover - scikit-learn is a core dependency
        raise ImportError(f"cross-validated probabilities need scikit-learn: {_EXTRA}") from err
    seed = random_state if isinstance(random_state, (int, np.integer)) else 0
    counts = np.bincount(labels, minlength=n_classes)
    splits = int(max(2, min(n_splits, counts[counts > 0].min())))
    folds = StratifiedKFold(n_splits=splits, shuffle=True, random_state=int(seed))
    return list(folds.split(np.zeros((labels.size, 1)), labels))


def _fit_predict_folds(features, labels, folds, n_classes, C, max_iter) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    probs = np.zeros((labels.size, n_classes))
    for train, test in folds:
        scaler = StandardScaler().fit(features[train])
        model = LogisticRegression(C=C, max_iter=max_iter)
        model.fit(scaler.transform(features[train]), labels[train])
        probs[np.ix_(test, model.classes_)] = model.predict_proba(scaler.transform(features[test]))
    return probs


def load_noise_mapping(path, *, n_classes: int, class_names=None) -> dict:
    """Read an asymmetric-noise mapping from a JSON object ``{"from": "to", ...}``.

    Keys and values are class indices (ints or digit strings) or, when ``class_names`` is
    given, class names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mapping file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"mapping file {path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"mapping file {path} must hold a JSON object; got {type(raw).__name__}")
    names = [str(name) for name in class_names] if class_names is not None else []
    return {_class_index(key, names, n_classes, path): _class_index(value, names, n_classes, path)
            for key, value in raw.items()}


def _class_index(value, names: list, n_classes: int, path) -> int:
    if isinstance(value, str) and value in names:
        return names.index(value)
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"mapping file {path}: {value!r} is neither a class index nor one of "
                         f"the class names {names}") from None
    if not 0 <= index < n_classes:
        raise ValueError(f"mapping file {path}: class {index} is outside [0, {n_classes})")
    return index


def _mapping_transitions(mapping, n_classes: int) -> np.ndarray:
    if mapping is None:
        mapping = {c: (c + 1) % n_classes for c in range(n_classes)}
    elif not isinstance(mapping, dict):
        targets = check_labels(mapping, n_samples=n_classes, n_classes=n_classes, name="mapping")
        mapping = dict(enumerate(targets.tolist()))
    transitions = np.zeros((n_classes, n_classes))
    for source, target in mapping.items():
        if not (0 <= int(source) < n_classes and 0 <= int(target) < n_classes):
            raise ValueError(
                f"mapping must map classes in [0, {n_classes}); got {source}->{target}")
        if int(source) != int(target):
            transitions[int(source), int(target)] = 1.0
    if not transitions.any():
        raise ValueError("mapping must move at least one class to a different class")
    return transitions


def _check_confusion(confusion, n_classes: int) -> np.ndarray:
    """The off-diagonal of a (K, K) confusion matrix, validated."""
    matrix = np.array(confusion, dtype=float)
    if (matrix.shape != (n_classes, n_classes) or not np.isfinite(matrix).all()
            or (matrix < 0).any()):
        raise ValueError(f"confusion must be a finite non-negative ({n_classes}, {n_classes}) "
                         f"matrix; got shape {matrix.shape}")
    np.fill_diagonal(matrix, 0.0)
    return matrix


def _flip_by_class(labels: np.ndarray, transitions: np.ndarray, weights: np.ndarray,
                   n_flips: int, rng: np.random.Generator) -> np.ndarray:
    """Flip ``n_flips`` labels, spread over classes by ``weights``; targets from the rows."""
    n_classes = transitions.shape[0]
    rows = transitions.sum(axis=1)
    transitions = transitions / np.where(rows > 0, rows, 1.0)[:, None]
    # fewer than half of any class: its given label stays the majority (identifiability)
    capacity = (np.bincount(labels, minlength=n_classes) - 1) // 2
    per_class = _allocate(weights, capacity, n_flips)
    if per_class.sum() < n_flips:
        warnings.warn(f"only {per_class.sum()} of the {n_flips} requested flips are possible: "
                      "classes without a transition are never flipped and no class loses half "
                      "its labels", UserWarning, stacklevel=3)
    noisy = labels.copy()
    for cls in np.flatnonzero(per_class):
        chosen = rng.choice(np.flatnonzero(labels == cls), size=per_class[cls], replace=False)
        noisy[chosen] = rng.choice(n_classes, size=chosen.size, p=transitions[cls])
    logger.debug("flipped %d labels (per class %s)", per_class.sum(), per_class.tolist())
    return noisy


def _allocate(weights: np.ndarray, capacity: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``weights``, at most ``capacity`` each:
    floors of the proportional shares first, then the largest remainders, re-spreading what a
    full class cannot take."""
    weights = np.where(capacity > 0, np.asarray(weights, dtype=float), 0.0)
    total = min(int(total), int(capacity[weights > 0].sum()))
    counts = np.zeros(capacity.size, dtype=np.int64)
    while counts.sum() < total:
        active = (weights > 0) & (counts < capacity)
        left = total - counts.sum()
        exact = np.where(active, weights, 0.0) / weights[active].sum() * left
        step = np.minimum(np.floor(exact).astype(np.int64), capacity - counts)
        if step.sum() == 0:  # every share is below one: the largest remainders get one each
            order = np.argsort(-exact, kind="stable")
            step[order[:left]] = 1
        counts += step
    return counts
