"""Find label issues: the orchestrator of the engine's stages and its one method registry.

``"clipsei"`` (default) fuses held-out heads, a pruned held-out round, in-sample AUM, the
neighbour vote and Bayes error probabilities. The reference methods use in-sample
threshold-sample runs only: ``"sei_paper"`` (Li et al. 2026), ``"aum"`` (Pleiss et al. 2020)
and ``"entropy_integral"``.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._device import resolve_device
from .._validation import NotFittedError, check_random_state
from . import options as _options
from .class_signal import compute_class_signal
from .features import prepare_features
from .flagging import COUNT_RULE, compute_flagged_share_per_class, flag_issues
from .fusion import FUSED, Signals, compute_label_scores
from .heads import SCALE_SELECTION_MAX_SAMPLES, select_logit_scale
from .heldout import run_heldout_rounds
from .inputs import check_fit_inputs
from .neighbors import (compute_neighbor_votes, find_conflicting_duplicates, search_neighbors,
                        warn_exact_duplicates)
from .noise_model import count_errors_per_class
from .progress import StageProgress
from .table import build_issues_table, issues_attrs
from .threshold import draw_threshold_slices, run_threshold_samples


@dataclass(frozen=True)
class _MethodSpec:
    score: str                  # FUSED or the dynamics score behind the label score
    cutoff_rule: str
    heldout: bool = False       # held-out rounds, standardised features, repeats by default
    logit_scale: float = 10.0   # the in-sample heads' temperature
    percentile: float = 99.0


METHODS = {
    "clipsei": _MethodSpec(FUSED, COUNT_RULE, heldout=True),
    "sei_paper": _MethodSpec("sei", "mean"),
    "aum": _MethodSpec("aum", "percentile"),
    "entropy_integral": _MethodSpec("entropy_integral", "mean"),
}
_FITTED = ("issues_", "entropy_history_", "agreement_history_", "given_prob_history_",
           "neighbor_ids_", "neighbor_sims_", "cutoff_", "class_cutoffs_", "threshold_scores_",
           "flagged_share_per_class_", "estimated_errors_per_class_", "estimated_error_rate_",
           "class_signal_", "duplicate_pairs_", "pred_probs_", "heldout_logit_scale_",
           "n_repeats_", "neighbor_search_")


class LabelIssueDetector:
    """Flag mislabeled samples from frozen embeddings (scikit-learn estimator contract).

    Parameters
    ----------
    method : one of :data:`METHODS`. n_epochs, batch_size (None: from N), lr : head training.
    logit_scale : override the in-sample heads' temperature.
    threshold_fraction : share of samples in each of the ``n_threshold_runs`` disjoint
        threshold slices; None -> ``1 / (K + 1)``.
    cutoff : None (the method's rule), ``"mean"``, ``"percentile"`` (``cutoff_percentile``)
        or ``"count"``. n_folds : folds of the held-out heads.
    n_repeats : runs of the stochastic stages averaged; None: up to 3 on small sets for the
        default, 1 for reference methods.
    n_neighbors : k of the neighbour vote (at most N - 1 is used); duplicate_similarity :
        cosine from which differently labelled samples are conflicting duplicates.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``; random_state : None, int or Generator.

    Fitted attributes: the names in ``_FITTED``; ``issues_`` as :func:`find_label_issues`
    returns it, the others as in ``issues_.attrs`` or (N, ...) arrays: pred_probs (N, K),
    histories (E, N), neighbours (N, k), per-class values (K,).
    """

    def __init__(self, *, method: str = "clipsei", n_epochs: int = 10,
                 batch_size: int | None = None, lr: float = 0.1, logit_scale: float | None = None,
                 threshold_fraction: float | None = None, n_threshold_runs: int = 2,
                 cutoff: str | None = None, cutoff_percentile: float | None = None,
                 n_folds: int = 5, n_repeats: int | None = None, n_neighbors: int = 10,
                 duplicate_similarity: float = 0.98, device="auto", random_state=0):
        self.method = method
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.logit_scale = logit_scale
        self.threshold_fraction = threshold_fraction
        self.n_threshold_runs = n_threshold_runs
        self.cutoff = cutoff
        self.cutoff_percentile = cutoff_percentile
        self.n_folds = n_folds
        self.n_repeats = n_repeats
        self.n_neighbors = n_neighbors
        self.duplicate_similarity = duplicate_similarity
        self.device = device
        self.random_state = random_state

    def __getattr__(self, name):
        if name in _FITTED:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() "
                                 f"before {name}")
        raise AttributeError(name)

    def get_params(self) -> dict:
        """The constructor's parameters, as scikit-learn estimators report them."""
        keys = list(inspect.signature(LabelIssueDetector.__init__).parameters)[1:]
        return {key: getattr(self, key) for key in keys}

    def fit(self, embeddings, labels, *, class_embeddings=None, other_embedding=None,
            groups=None, progress=None) -> "LabelIssueDetector":
        """Score every sample of ``embeddings`` (N, D) against its given ``labels`` (N,).

        class_embeddings : (K, D) class-prompt text embeddings or None (the in-sample heads
        start from them); other_embedding : (D,) text of the threshold samples' extra class;
        groups : (N,) or None, e.g. patient ids; neighbours from one's own group are ignored.
        progress : None or a callback ``(stage, done, total)`` for the neighbour search and the
        heads (see :mod:`clipsei.engine.progress`).
        """
        params = self.get_params()
        _options.check_params(params, METHODS)
        resolve_device(self.device)
        spec = METHODS[self.method]
        inputs = check_fit_inputs(embeddings, labels, class_embeddings, other_embedding)
        y, n_classes = inputs.labels, inputs.classes.present.size
        features = prepare_features(inputs.embeddings, inputs.head_init, n_classes=n_classes,
                                    standardize=spec.heldout)
        self.n_repeats_ = _options.n_repeats_for(self.n_repeats, repeats_by_default=spec.heldout,
                                                 n_samples=y.size)
        rng = check_random_state(self.random_state)
        search = search_neighbors(
            features.heldout, n_neighbors=min(self.n_neighbors, y.size - 1), groups=groups,
            random_state=int(rng.integers(2**31)), progress=progress)
        self.neighbor_ids_, self.neighbor_sims_ = search.neighbor_ids, search.neighbor_sims
        self.neighbor_search_ = search.as_dict()
        warn_exact_duplicates(self.neighbor_sims_)
        votes = compute_neighbor_votes(self.neighbor_ids_, self.neighbor_sims_, y,
                                       n_classes=n_classes)
        self.heldout_logit_scale_ = None
        batches = spec.heldout + self.n_repeats_ * (1 + 2 * spec.heldout)  # train_heads calls
        on_epoch = StageProgress(progress, "heads", batches * self.n_epochs).advance
        if spec.heldout:
            self.heldout_logit_scale_ = select_logit_scale(
                features.heldout, y, n_classes=n_classes, class_embeddings=features.heldout_init,
                random_state=rng, n_folds=self.n_folds, on_epoch=on_epoch,
                **_options.head_options(params, min(y.size, SCALE_SELECTION_MAX_SAMPLES)))
        repeats = [self._fit_signals(spec, features, y, votes, rng, on_epoch)
                   for _ in range(self.n_repeats_)]
        self._finish(spec, Signals.mean_of(repeats), inputs)
        return self

    def _fit_signals(self, spec, features, y, votes, rng, on_epoch) -> Signals:
        """One repeat of the stochastic stages: threshold runs, then the held-out rounds."""
        n_classes = votes.shape[1]
        head_options = dict(_options.head_options(self.get_params(), y.size),
                            on_epoch=on_epoch)
        fraction = _options.threshold_fraction_for(self.threshold_fraction, n_classes)
        slices = draw_threshold_slices(y.size, fraction, self.n_threshold_runs, rng)
        runs = run_threshold_samples(
            features.in_sample, y, n_classes=n_classes, slices=slices, head_init=features.head_init,
            rng=rng, logit_scale=self.logit_scale or spec.logit_scale, **head_options)
        knn = votes[np.arange(y.size), y]
        heldout = None
        if spec.heldout:
            heldout = run_heldout_rounds(
                features.heldout, y, n_classes=n_classes, votes=votes, in_sample_aum=runs.real.aum,
                knn=knn, rng=rng, class_embeddings=features.heldout_init, n_folds=self.n_folds,
                logit_scale=self.heldout_logit_scale_, **head_options)
        return Signals(threshold_runs=runs, heldout=heldout, votes=votes, knn=knn)

    def _finish(self, spec, signals: Signals, inputs) -> None:
        """Label scores -> class signal -> flags -> the issues table and fitted attributes."""
        y, classes = inputs.labels, inputs.classes
        n_classes = classes.present.size
        scores = compute_label_scores(signals, score=spec.score, n_classes=n_classes)
        pred_probs = signals.pred_probs
        class_errors = count_errors_per_class(pred_probs, y)
        flags = flag_issues(
            scores.label_scores, y, n_classes=n_classes, rule=self.cutoff or spec.cutoff_rule,
            percentile=(spec.percentile if self.cutoff_percentile is None
                        else self.cutoff_percentile),
            threshold_reference=scores.threshold_reference,
            threshold_scores=scores.threshold_scores, class_error_counts=class_errors,
            error_probs=signals.error_probs)
        signal = compute_class_signal(signals.out_of_sample_probs, y)
        warning_lines = [signal.warning] if signal.warning else []
        if not signal.informative:
            warnings.warn(signal.warning, UserWarning, stacklevel=3)
            flags = flags.without_flags(scores.label_scores, y)
        self.pred_probs_ = classes.expand_columns(pred_probs)
        self.threshold_scores_ = scores.threshold_scores
        self.cutoff_ = flags.cutoff
        self.class_cutoffs_ = classes.expand(flags.class_cutoffs, np.nan)
        self.estimated_errors_per_class_ = classes.expand(class_errors, 0)
        self.estimated_error_rate_ = flags.counts.confident_learning / y.size
        self.flagged_share_per_class_ = classes.expand(compute_flagged_share_per_class(
            flags.is_label_issue, y, n_classes=n_classes), np.nan)
        self.class_signal_ = signal.as_dict()
        self.duplicate_pairs_ = find_conflicting_duplicates(
            self.neighbor_ids_, self.neighbor_sims_, y, min_similarity=self.duplicate_similarity)
        for name in ("entropy_history", "agreement_history", "given_prob_history"):
            setattr(self, f"{name}_", getattr(signals.threshold_runs, name))
        self.issues_ = build_issues_table(
            labels=inputs.original_labels, label_scores=scores.label_scores,
            is_label_issue=flags.is_label_issue,
            predicted_label=classes.original(signals.class_probs.argmax(axis=1)),
            suggested_label=classes.original(pred_probs.argmax(axis=1)), pred_probs=pred_probs,
            knn_agreement=signals.knn, scores=signals.score_columns(y),
            duplicate_pairs=self.duplicate_pairs_, error_probs=flags.error_probability)
        self.issues_.attrs.update(issues_attrs(self, flags.counts, warning_lines))
        self.issues_.attrs["neighbors"] = self.neighbor_search_  # index, n_probe, recall@k


class SEIDetector(LabelIssueDetector):
    """Deprecated alias of :class:`LabelIssueDetector` (the default uses no SEI)."""

    def __init__(self, **params):
        warnings.warn("SEIDetector is deprecated; use LabelIssueDetector", DeprecationWarning,
                      stacklevel=2)
        super().__init__(**params)


def check_detector_options(**options) -> None:
    """Validate :class:`LabelIssueDetector` options without fitting (no torch import).

    Raises ``TypeError`` for an unknown option and a one-line ``ValueError`` naming the
    first invalid one.
    """
    _options.check_params(LabelIssueDetector(**options).get_params(), METHODS)


def find_label_issues(embeddings, labels, *, class_embeddings=None, other_embedding=None,
                      groups=None, **options) -> pd.DataFrame:
    """Rank every sample of ``embeddings`` (N, D) by how likely its ``labels`` (N,) entry is
    wrong; ``**options`` are :class:`LabelIssueDetector`'s (``random_state`` defaults to 0).

    Returns a DataFrame, one row per sample in input order: ``given_label``,
    ``predicted_label``, ``suggested_label``, ``suggested_confidence``, ``label_score`` in
    [0, 1] (lower = more likely mislabeled), ``is_label_issue``, ``error_probability``
    (default method), ``rank`` (1 = most suspicious), ``knn_agreement``, per-method scores and
    ``conflicting_duplicate`` (-1 or a row); ``attrs`` as :func:`clipsei.engine.table.issues_attrs`.
    """
    detector = LabelIssueDetector(**options)
    detector.fit(embeddings, labels, class_embeddings=class_embeddings,
                 other_embedding=other_embedding, groups=groups)
    return detector.issues_

