"""Find label issues: the orchestrator of the engine's stages and its one method registry.

``"clipsei"`` (default) fuses held-out heads, a pruned held-out round, in-sample AUM, the
neighbour vote and Bayes error probabilities (with class text, also the zero-shot prior at a
share learned from the data). ``"zero_shot"`` scores with the image-text softmax alone. The
reference methods use in-sample threshold-sample runs only: ``"sei_paper"`` (Li et al. 2026),
``"aum"`` (Pleiss et al. 2020) and ``"entropy_integral"``; ``"sei_prompt"`` is the paper's SEI
with prompt-tuned heads (:mod:`clipsei.engine.prompt_head`) and the threshold samples
relabelled to the "other" prompt.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import replace

import pandas as pd

from .._device import resolve_device
from .._validation import NotFittedError, check_random_state
from . import options as _options
from .options import MethodSpec
from .decide import decide_from_signals, decide_zero_shot
from .duplicates import search_duplicate_neighbors
from .features import prepare_features
from .flag_choice import FlagChoice, split_inclusion, split_trusted
from .flagging import COUNT_RULE
from .fusion import FUSED, Signals
from .inputs import check_fit_inputs
from .neighbors import find_conflicting_duplicates, search_neighbor_votes
from .prior import compute_zero_shot_prior
from .prompt_head import prepare_prompt_task
from .repeats import run_repeats
from .table import FittedValues, issues_attrs

ZERO_SHOT = "zero_shot"


METHODS = {
    "clipsei": MethodSpec(FUSED, COUNT_RULE, heldout=True),
    "sei_paper": MethodSpec("sei", "mean"),
    "aum": MethodSpec("aum", "percentile"),
    "entropy_integral": MethodSpec("entropy_integral", "mean"),
    "sei_prompt": MethodSpec("sei", "mean", prompt=True),
    "zero_shot": MethodSpec(ZERO_SHOT, COUNT_RULE),
}
_FITTED = tuple(f"{name}_" for name in FittedValues.ATTRIBUTES) + (
    "neighbor_ids_", "neighbor_sims_", "heldout_logit_scale_", "n_repeats_", "zero_shot_prior_",
    "neighbor_search_", "issue_neighbor_ids_", "issue_neighbor_sims_")


class LabelIssueDetector:
    """Flag mislabeled samples from frozen embeddings (scikit-learn estimator contract).

    Parameters
    ----------
    method : one of :data:`METHODS`. n_epochs, batch_size (None: from N), lr : head training.
    logit_scale : override the in-sample heads' temperature.
    threshold_fraction : share of samples in each of the ``n_threshold_runs`` disjoint
        threshold slices; None -> ``1 / (K + 1)``.
    cutoff : None (the method's rule), ``"mean"``, ``"percentile"`` (``cutoff_percentile``),
        ``"count"`` (the default's) or ``"calibrated"`` (the expected-F1 count of calibrated
        error probabilities, without confident learning's floor: fewer flags at low error
        rates, too few under real, ambiguous-image noise; see docs/design.md).
        n_folds : folds of the held-out heads.
    n_repeats : runs of the stochastic stages averaged; None: up to 3 on small sets for the
        default, 1 for reference methods.
    target_precision : flag as many as keep the expected precision at least this (under the
        ``error_probability`` column); max_flags : flag at most this many, the most likely
        first (alone: exactly this many); None: the cutoff rule's count.
    n_neighbors : k of the neighbour vote (at most N - 1 is used); duplicate_similarity :
        cosine from which differently labelled samples are conflicting duplicates.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``; random_state : None, int or Generator.
    text_prior : with class_embeddings, let the default learn the zero-shot prior's share
        (:mod:`clipsei.engine.prior`); False leaves it out.

    Fitted attributes: the names in ``_FITTED``; ``issues_`` as :func:`find_label_issues`
    returns it, the others as in ``issues_.attrs`` or (N, ...) arrays: pred_probs (N, K),
    histories (E, N), neighbours (N, k), per-class values (K,). ``neighbor_ids_``/``_sims_``
    are the method's vote neighbours; ``issue_neighbor_ids_``/``_sims_`` (N, k) those of
    :func:`~clipsei.engine.duplicates.search_duplicate_neighbors`, the same for every method
    (the default's own lists), from which ``duplicate_pairs_`` (conflicting duplicates) come.
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

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters, as scikit-learn estimators report them (``deep`` is
        accepted for ``sklearn.base.clone``; no parameter is itself an estimator)."""
        keys = list(inspect.signature(LabelIssueDetector.__init__).parameters)[1:]
        return {key: getattr(self, key) for key in keys}

    def set_params(self, **params) -> "LabelIssueDetector":
        """Set constructor parameters by name and return ``self``; an unknown name raises
        ``ValueError`` naming the valid ones, as scikit-learn does."""
        valid = self.get_params()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"invalid parameters {unknown} for {type(self).__name__}; "
                             f"valid: {sorted(valid)}")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, embeddings, labels, *, class_embeddings=None, other_embedding=None,
            groups=None, trusted=None, text_model=None, class_names=None,
            prompt_set="generic", progress=None) -> "LabelIssueDetector":
        """Score every sample of ``embeddings`` (N, D) against its given ``labels`` (N,).

        class_embeddings : (K, D) class-prompt text embeddings or None (the in-sample heads
        start from them); other_embedding : (D,) text of the threshold samples' extra class;
        groups : (N,) or None, e.g. patient ids; neighbours from one's own group are ignored.
        trusted : (N,) bool mask or row indices of labels a person verified, or a mapping
        ``{row: verified label}``: never flagged; with enough of them (10 verified as given)
        they choose the flag count (:mod:`clipsei.engine.verified`); ``{row: (verified label,
        inclusion probability)}`` for an audit sample (:mod:`clipsei.engine.audit`).
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
            _options.check_zero_shot_options(class_embeddings, self.cutoff)
        inputs = check_fit_inputs(embeddings, labels, class_embeddings, other_embedding)
        trusted = (*split_trusted(trusted, inputs.original_labels),  # (verified, known wrong,
                   split_inclusion(trusted, inputs.original_labels.size))  # audit probability)
        y, n_classes = inputs.labels, inputs.classes.present.size
        features = prepare_features(inputs.embeddings, inputs.head_init, n_classes=n_classes,
                                    standardize=spec.heldout)
        self.n_repeats_ = _options.n_repeats_for(self.n_repeats, repeats_by_default=spec.heldout,
                                                 n_samples=y.size)
        prompt_task = None if not spec.prompt else prepare_prompt_task(
            inputs.embeddings, text_model=text_model, class_names=class_names,
            prompt_set=prompt_set, present=inputs.classes.present)
        rng = check_random_state(self.random_state)
        seed = int(rng.integers(2**31))
        search, votes = search_neighbor_votes(
            features.heldout, y, n_classes=n_classes, n_neighbors=self.n_neighbors,
            groups=groups, random_state=seed, progress=progress)
        self.neighbor_ids_, self.neighbor_sims_ = search.neighbor_ids, search.neighbor_sims
        self.neighbor_search_ = search.as_dict()
        if not spec.heldout:  # the vote searched another space: duplicates need their own
            search = search_duplicate_neighbors(inputs.embeddings, n_neighbors=self.n_neighbors,
                                                groups=groups, random_state=seed,
                                                progress=progress)
        self.issue_neighbor_ids_, self.issue_neighbor_sims_ = (search.neighbor_ids,
                                                               search.neighbor_sims)
        self.heldout_logit_scale_, self.zero_shot_prior_ = None, None
        if spec.score == ZERO_SHOT:
            self._fit_zero_shot(inputs, votes, trusted)
            return self
        signals, self.heldout_logit_scale_ = run_repeats(
            features, y, votes, params=params, heldout=spec.heldout,
            default_logit_scale=spec.logit_scale, n_repeats=self.n_repeats_, rng=rng,
            progress=progress, prompt_task=prompt_task)
        if spec.heldout and self.text_prior and inputs.head_init is not None:
            prior = compute_zero_shot_prior(
                inputs.embeddings, y, inputs.head_init[:n_classes], signals.heldout.probs,
                random_state=int(rng.integers(2**31)))
            signals, self.zero_shot_prior_ = replace(signals, prior=prior), prior.as_dict()
        self._finish(spec, signals, inputs, rng, trusted)
        return self

    def _finish(self, spec, signals: Signals, inputs, rng, trusted) -> None:
        """Label scores -> flags -> class signal -> the issues table and fitted attributes."""
        percentile = (spec.percentile if self.cutoff_percentile is None
                      else self.cutoff_percentile)
        self._store(decide_from_signals(
            signals, inputs, score=spec.score, rule=self.cutoff or spec.cutoff_rule,
            percentile=percentile, rng=rng, choice=self._choice(trusted),
            duplicate_pairs=self._duplicates(inputs.labels)),
            zero_shot_prior=self.zero_shot_prior_,
            neighbors=self.neighbor_search_)  # index, n_probe, recall@k

    def _fit_zero_shot(self, inputs, votes, trusted) -> None:
        """``method="zero_shot"``: the image-text softmax alone, in one repeat."""
        self.n_repeats_ = 1
        fitted, temperature = decide_zero_shot(
            inputs, votes, rng=check_random_state(self.random_state),
            rule=self.cutoff or COUNT_RULE, choice=self._choice(trusted),
            duplicate_pairs=self._duplicates(inputs.labels))
        self._store(fitted, zero_shot_temperature=temperature)

    def _choice(self, trusted) -> FlagChoice:
        return FlagChoice(self.target_precision, self.max_flags, *trusted)

    def _duplicates(self, labels) -> pd.DataFrame:
        return find_conflicting_duplicates(self.issue_neighbor_ids_, self.issue_neighbor_sims_,
                                           labels, min_similarity=self.duplicate_similarity)

    def _store(self, fitted: FittedValues, **extra_attrs) -> None:
        """Copy ``fitted`` onto the estimator, complete the table's attrs and warn (at the
        caller of :meth:`fit`) when the embeddings carry no class information."""
        for name in FittedValues.ATTRIBUTES:
            setattr(self, f"{name}_", getattr(fitted, name))
        self.issues_.attrs.update(issues_attrs(self, fitted.counts, fitted.warnings))
        self.issues_.attrs.update(fitted.decision)
        self.issues_.attrs.update(extra_attrs)
        if not fitted.signal.informative:
            warnings.warn(fitted.signal.warning, UserWarning, stacklevel=4)


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
                      groups=None, trusted=None, **options) -> pd.DataFrame:
    """Rank every sample of ``embeddings`` (N, D) by how likely its ``labels`` (N,) entry is
    wrong; ``class_embeddings``, ``other_embedding``, ``groups`` and ``trusted`` (verified
    labels) as in :meth:`LabelIssueDetector.fit`; ``**options`` are
    :class:`LabelIssueDetector`'s (``random_state`` defaults to 0).

    Returns a DataFrame, one row per sample in input order: ``given_label``,
    ``predicted_label``, ``suggested_label``, ``suggested_confidence``, ``label_score`` in
    [0, 1] (lower = more likely mislabeled), ``is_label_issue``, ``error_probability``
    (default and ``"zero_shot"``), ``rank`` (1 = most suspicious), ``knn_agreement``,
    per-method scores and ``conflicting_duplicate`` (-1 or a row); ``attrs`` as
    :func:`clipsei.engine.table.issues_attrs` plus ``zero_shot_prior`` (dict or None).
    """
    detector = LabelIssueDetector(**options)
    detector.fit(embeddings, labels, class_embeddings=class_embeddings,
                 other_embedding=other_embedding, groups=groups, trusted=trusted)
    return detector.issues_

