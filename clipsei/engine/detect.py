"""Find label issues: the orchestrator of the engine's stages and its one method registry.

``"clipsei"`` (default) fuses held-out heads, a pruned held-out round, in-sample AUM, the
neighbour vote and Bayes error probabilities (with class text, also the zero-shot prior at a
share learned from the data). ``"zero_shot"`` scores with the image-text softmax alone. The
reference methods use in-sample
threshold-sample runs only: ``"sei_paper"`` (Li et al. 2026), ``"aum"`` (Pleiss et al. 2020)
and ``"entropy_integral"``; ``"sei_prompt"`` is the paper's SEI with prompt-tuned heads
(:mod:`clipsei.engine.prompt_head`) and the threshold samples relabelled to the "other" prompt.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .._device import resolve_device
from .._validation import NotFittedError, check_random_state
from . import options as _options
from .class_signal import compute_class_signal
from .features import prepare_features
from .calibration import calibrate_error_probabilities
from .flagging import (COUNT_RULE, FlagChoice, as_trusted_mask, compute_flagged_share_per_class,
                       decision_attrs, flag_issues)
from .fusion import FUSED, Signals, compute_label_scores
from .heads import SCALE_SELECTION_MAX_SAMPLES, select_logit_scale
from .heldout import run_heldout_rounds
from .inputs import check_fit_inputs
from .neighbors import (compute_neighbor_votes, find_conflicting_duplicates, search_neighbors,
                        warn_exact_duplicates)
from .noise_model import count_errors_per_class, estimate_label_transitions
from .prior import compute_zero_shot_prior
from .prompt_head import prepare_prompt_task
from .progress import StageProgress
from .table import build_issues_table, issues_attrs
from .threshold import draw_threshold_slices, run_threshold_samples
from .zero_shot import compute_zero_shot, flag_zero_shot

ZERO_SHOT = "zero_shot"


@dataclass(frozen=True)
class _MethodSpec:
    score: str                  # FUSED or the dynamics score behind the label score
    cutoff_rule: str
    heldout: bool = False       # held-out rounds, standardised features, repeats by default
    logit_scale: float = 10.0   # the in-sample heads' temperature
    percentile: float = 99.0
    prompt: bool = False        # in-sample heads are prompt-tuned (needs a CLIP text model)


METHODS = {
    "clipsei": _MethodSpec(FUSED, COUNT_RULE, heldout=True),
    "sei_paper": _MethodSpec("sei", "mean"),
    "aum": _MethodSpec("aum", "percentile"),
    "entropy_integral": _MethodSpec("entropy_integral", "mean"),
    "sei_prompt": _MethodSpec("sei", "mean", prompt=True),
    "zero_shot": _MethodSpec(ZERO_SHOT, COUNT_RULE),
}
_FITTED = ("issues_", "entropy_history_", "agreement_history_", "given_prob_history_",
           "neighbor_ids_", "neighbor_sims_", "cutoff_", "class_cutoffs_", "threshold_scores_",
           "flagged_share_per_class_", "estimated_errors_per_class_", "estimated_error_rate_",
           "class_signal_", "duplicate_pairs_", "pred_probs_", "heldout_logit_scale_",
           "n_repeats_", "zero_shot_prior_", "neighbor_search_")


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
    target_precision : flag as many as keep the expected precision at least this (the
        default method's calibrated error probabilities); max_flags : flag at most this many,
        the most likely first (alone: exactly this many); None: the expected-F1 count.
    n_neighbors : k of the neighbour vote (at most N - 1 is used); duplicate_similarity :
        cosine from which differently labelled samples are conflicting duplicates.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``; random_state : None, int or Generator.
    text_prior : with class_embeddings, let the default learn the zero-shot prior's share
        (:mod:`clipsei.engine.prior`); False leaves it out.

    Fitted attributes: the names in ``_FITTED``; ``issues_`` as :func:`find_label_issues`
    returns it, the others as in ``issues_.attrs`` or (N, ...) arrays: pred_probs (N, K),
    histories (E, N), neighbours (N, k), per-class values (K,).
    """

    def __init__(self, *, method: str = "clipsei", n_epochs: int = 10,
                 batch_size: int | None = None, lr: float = 0.1, logit_scale: float | None = None,
                 threshold_fraction: float | None = None, n_threshold_runs: int = 2,
                 cutoff: str | None = None, cutoff_percentile: float | None = None,
                 n_folds: int = 5, n_repeats: int | None = None, n_neighbors: int = 10,
                 duplicate_similarity: float = 0.98, device="auto", random_state=0,
                 text_prior: bool = True, target_precision: float | None = None,
                 max_flags: int | None = None):
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
        self.text_prior = text_prior
        self.target_precision = target_precision
        self.max_flags = max_flags

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
            groups=None, trusted=None, text_model=None, class_names=None,
            prompt_set="generic", progress=None) -> "LabelIssueDetector":
        """Score every sample of ``embeddings`` (N, D) against its given ``labels`` (N,).

        class_embeddings : (K, D) class-prompt text embeddings or None (the in-sample heads
        start from them); other_embedding : (D,) text of the threshold samples' extra class;
        groups : (N,) or None, e.g. patient ids; neighbours from one's own group are ignored.
        trusted : (N,) bool mask or row indices of labels a person verified: never flagged.
        text_model, class_names, prompt_set : a ClipModel, the K class names and the prompt
        set whose ``other_class`` is the extra prompt; used by ``"sei_prompt"`` only.
        progress : None or a callback ``(stage, done, total)`` for the neighbour search and the
        heads (see :mod:`clipsei.engine.progress`).
        """
        params = self.get_params()
        _options.check_params(params, METHODS)
        resolve_device(self.device)
        spec = METHODS[self.method]
        if spec.score == ZERO_SHOT:
            _check_zero_shot_options(class_embeddings, self.cutoff)
        inputs = check_fit_inputs(embeddings, labels, class_embeddings, other_embedding)
        trusted = as_trusted_mask(trusted, inputs.labels.size)
        y, n_classes = inputs.labels, inputs.classes.present.size
        features = prepare_features(inputs.embeddings, inputs.head_init, n_classes=n_classes,
                                    standardize=spec.heldout)
        self.n_repeats_ = _options.n_repeats_for(self.n_repeats, repeats_by_default=spec.heldout,
                                                 n_samples=y.size)
        prompt_task = None if not spec.prompt else prepare_prompt_task(
            inputs.embeddings, text_model=text_model, class_names=class_names,
            prompt_set=prompt_set, present=inputs.classes.present)
        rng = check_random_state(self.random_state)
        search = search_neighbors(
            features.heldout, n_neighbors=min(self.n_neighbors, y.size - 1), groups=groups,
            random_state=int(rng.integers(2**31)), progress=progress)
        self.neighbor_ids_, self.neighbor_sims_ = search.neighbor_ids, search.neighbor_sims
        self.neighbor_search_ = search.as_dict()
        warn_exact_duplicates(self.neighbor_sims_)
        votes = compute_neighbor_votes(self.neighbor_ids_, self.neighbor_sims_, y,
                                       n_classes=n_classes)
        self.heldout_logit_scale_, self.zero_shot_prior_ = None, None
        if spec.score == ZERO_SHOT:
            self._fit_zero_shot(inputs, votes, trusted)
            return self
        batches = spec.heldout + self.n_repeats_ * (1 + 2 * spec.heldout)  # train_heads calls
        on_epoch = StageProgress(progress, "heads", batches * self.n_epochs).advance
        if spec.heldout:
            self.heldout_logit_scale_ = select_logit_scale(
                features.heldout, y, n_classes=n_classes, class_embeddings=features.heldout_init,
                random_state=rng, n_folds=self.n_folds, on_epoch=on_epoch,
                **_options.head_options(params, min(y.size, SCALE_SELECTION_MAX_SAMPLES)))
        repeats = [self._fit_signals(spec, features, y, votes, rng, on_epoch, prompt_task)
                   for _ in range(self.n_repeats_)]
        signals = Signals.mean_of(repeats)
        if spec.heldout and self.text_prior and inputs.head_init is not None:
            prior = compute_zero_shot_prior(
                inputs.embeddings, y, inputs.head_init[:n_classes], signals.heldout.probs,
                random_state=int(rng.integers(2**31)))
            signals, self.zero_shot_prior_ = replace(signals, prior=prior), prior.as_dict()
        self._finish(spec, signals, inputs, rng, trusted)
        return self

    def _fit_signals(self, spec, features, y, votes, rng, on_epoch,
                     prompt_task=None) -> Signals:
        """One repeat of the stochastic stages: threshold runs, then the held-out rounds."""
        n_classes = votes.shape[1]
        head_options = dict(_options.head_options(self.get_params(), y.size),
                            on_epoch=on_epoch)
        fraction = _options.threshold_fraction_for(self.threshold_fraction, n_classes)
        slices = draw_threshold_slices(y.size, fraction, self.n_threshold_runs, rng)
        if prompt_task is not None:
            runs = prompt_task.run_threshold_samples(
                y, slices=slices, rng=rng, n_epochs=self.n_epochs, batch_size=self.batch_size,
                lr=self.lr, logit_scale=self.logit_scale)
        else:
            runs = run_threshold_samples(
                features.in_sample, y, n_classes=n_classes, slices=slices,
                head_init=features.head_init, rng=rng,
                logit_scale=self.logit_scale or spec.logit_scale, **head_options)
        knn = votes[np.arange(y.size), y]
        heldout = None
        if spec.heldout:
            heldout = run_heldout_rounds(
                features.heldout, y, n_classes=n_classes, votes=votes, in_sample_aum=runs.real.aum,
                knn=knn, rng=rng, class_embeddings=features.heldout_init, n_folds=self.n_folds,
                logit_scale=self.heldout_logit_scale_, **head_options)
        return Signals(threshold_runs=runs, heldout=heldout, votes=votes, knn=knn)

    def _finish(self, spec, signals: Signals, inputs, rng, trusted) -> None:
        """Label scores -> class signal -> flags -> the issues table and fitted attributes."""
        y, classes = inputs.labels, inputs.classes
        n_classes = classes.present.size
        scores = compute_label_scores(signals, score=spec.score, n_classes=n_classes)
        pred_probs = signals.pred_probs
        class_errors = count_errors_per_class(pred_probs, y)
        calibration = (None if signals.heldout is None else calibrate_error_probabilities(
            signals.heldout.probs, y, rng=rng,
            transitions=estimate_label_transitions(pred_probs, y)))
        flags = flag_issues(
            scores.label_scores, y, n_classes=n_classes, rule=self.cutoff or spec.cutoff_rule,
            percentile=(spec.percentile if self.cutoff_percentile is None
                        else self.cutoff_percentile),
            threshold_reference=scores.threshold_reference,
            threshold_scores=scores.threshold_scores, class_error_counts=class_errors,
            error_probs=None if calibration is None else calibration.error_probs,
            choice=FlagChoice(self.target_precision, self.max_flags, trusted))
        signal = compute_class_signal(signals.out_of_sample_probs, y)
        warning_lines = [signal.warning] if signal.warning else []
        if not signal.informative:
            warnings.warn(signal.warning, UserWarning, stacklevel=3)
            flags = flags.without_flags(scores.label_scores, y)
        decision = decision_attrs(flags, None if calibration is None else calibration.error_rate,
                                  informative=signal.informative)
        warning_lines += decision.pop("notes")
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
        self.issues_.attrs.update(decision)
        self.issues_.attrs["zero_shot_prior"] = self.zero_shot_prior_
        self.issues_.attrs["neighbors"] = self.neighbor_search_  # index, n_probe, recall@k

    def _fit_zero_shot(self, inputs, votes, trusted) -> None:
        """``method="zero_shot"``: scores, flags and the table from the image-text softmax
        alone; the histories are its one "epoch" (1, N)."""
        y, classes = inputs.labels, inputs.classes
        n_classes = classes.present.size
        zero_shot = compute_zero_shot(inputs.embeddings, y, inputs.head_init[:n_classes])
        label_scores, flags, calibration = flag_zero_shot(
            zero_shot, n_classes=n_classes, rng=check_random_state(self.random_state),
            choice=FlagChoice(self.target_precision, self.max_flags, trusted))
        signal = compute_class_signal([zero_shot.probs], y)
        if not signal.informative:
            warnings.warn(signal.warning, UserWarning, stacklevel=3)
            flags = flags.without_flags(label_scores, y)
        decision = decision_attrs(flags, calibration.error_rate, informative=signal.informative)
        notes = decision.pop("notes")
        probs, knn = zero_shot.probs, votes[np.arange(y.size), y]
        self.n_repeats_, self.threshold_scores_ = 1, np.empty(0)
        self.entropy_history_ = np.abs(zero_shot.signed_entropy)[None].astype(np.float16)
        self.agreement_history_ = (probs.argmax(axis=1) == y)[None]
        self.given_prob_history_ = zero_shot.given_prob[None].astype(np.float16)
        self.pred_probs_ = classes.expand_columns(probs)
        self.cutoff_, self.class_cutoffs_ = flags.cutoff, classes.expand(flags.class_cutoffs,
                                                                         np.nan)
        class_errors = count_errors_per_class(probs, y)
        self.estimated_errors_per_class_ = classes.expand(class_errors, 0)
        self.estimated_error_rate_ = flags.counts.confident_learning / y.size
        self.flagged_share_per_class_ = classes.expand(compute_flagged_share_per_class(
            flags.is_label_issue, y, n_classes=n_classes), np.nan)
        self.class_signal_ = signal.as_dict()
        self.duplicate_pairs_ = find_conflicting_duplicates(
            self.neighbor_ids_, self.neighbor_sims_, y, min_similarity=self.duplicate_similarity)
        predicted = classes.original(probs.argmax(axis=1))
        self.issues_ = build_issues_table(
            labels=inputs.original_labels, label_scores=label_scores,
            is_label_issue=flags.is_label_issue, predicted_label=predicted,
            suggested_label=predicted, pred_probs=probs, knn_agreement=knn,
            scores={"zero_shot_prob": zero_shot.given_prob, "zero_shot_margin": zero_shot.margin,
                    "zero_shot_signed_entropy": zero_shot.signed_entropy},
            duplicate_pairs=self.duplicate_pairs_, error_probs=flags.error_probability)
        self.issues_.attrs.update(issues_attrs(
            self, flags.counts, ([signal.warning] if signal.warning else []) + notes))
        self.issues_.attrs.update(decision)
        self.issues_.attrs["zero_shot_temperature"] = zero_shot.temperature


class SEIDetector(LabelIssueDetector):
    """Deprecated alias of :class:`LabelIssueDetector` (the default uses no SEI)."""

    def __init__(self, **params):
        warnings.warn("SEIDetector is deprecated; use LabelIssueDetector", DeprecationWarning,
                      stacklevel=2)
        super().__init__(**params)


def _check_zero_shot_options(class_embeddings, cutoff) -> None:
    if class_embeddings is None:
        raise ValueError("method='zero_shot' needs class_embeddings (K, D), the class text "
                         "embeddings (e.g. a scan's prompt set); got None")
    if cutoff not in (None, COUNT_RULE):
        raise ValueError(f"method='zero_shot' has no threshold samples: cutoff must be None or "
                         f"{COUNT_RULE!r}; got {cutoff!r}")


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
    (default and ``"zero_shot"``), ``rank`` (1 = most suspicious), ``knn_agreement``,
    per-method scores and ``conflicting_duplicate`` (-1 or a row); ``attrs`` as
    :func:`clipsei.engine.table.issues_attrs` plus ``zero_shot_prior`` (dict or None).
    """
    detector = LabelIssueDetector(**options)
    detector.fit(embeddings, labels, class_embeddings=class_embeddings,
                 other_embedding=other_embedding, groups=groups)
    return detector.issues_

