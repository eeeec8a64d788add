"""Flagging: how many samples to flag, and the cutoffs on the label score that flag them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .._validation import check_option
from .audit import calibrate_on_audit
from .flag_choice import FlagChoice
from .verified import estimate_from_verified

CUTOFF_RULES = ("mean", "percentile")
# an error rate below the lowest audited in a curated set (MNIST, 0.15%): "consistent with zero"
CLEAN_RATE = 0.001
# flags at least this many times the calibrated expected errors: the two estimates disagree
OVERFLAGGED = 4.0
# what the calibrated estimate misses (docs/design.md, issue 15): said wherever it is quoted
UNDERCOUNTED = ("systematic (one class often given another's label) or fall on ambiguous "
                "images, which that estimate under-counts")
COUNT_RULE = "count"  # per-class cutoffs: the larger of confident learning's count and the
# expected-F1 count of its Bayes error probabilities (without them, confident learning's count)
CALIBRATED_RULE = "calibrated"  # the expected-F1 count of calibrated error probabilities, no floor


@dataclass(frozen=True)
class FlagCounts:
    """How many samples look mislabeled: ``threshold`` (below the threshold samples' mean),
    ``confident_learning`` (the sum of its per-class counts) and, with Bayes error
    probabilities, ``expected_f1`` (see :func:`compute_expected_f1_count`). ``threshold`` is
    None for a method without threshold samples (``"zero_shot"``)."""

    threshold: int | None
    confident_learning: int
    expected_f1: int | None = None

    def as_dict(self) -> dict:
        counts = {"confident_learning": self.confident_learning}
        if self.threshold is not None:
            counts = {"threshold": self.threshold, **counts}
        if self.expected_f1 is not None:
            counts["expected_f1"] = self.expected_f1
        return counts


@dataclass(frozen=True)
class Flags:
    """is_label_issue : (N,) bool; cutoff : float on the label score (NaN where each class has
    its own); class_cutoffs : (K,) float (NaN for a class without rows); error_probability :
    (N,) aligned error probabilities or None; counts : :class:`FlagCounts`."""

    is_label_issue: np.ndarray
    cutoff: float
    class_cutoffs: np.ndarray
    error_probability: np.ndarray | None
    counts: FlagCounts
    verified: object = None  # a VerifiedEstimate where verified rows chose the count

    def without_flags(self, label_scores, labels) -> "Flags":
        """The same scores with nothing flagged (each class's cutoff at its lowest score) and
        no verified estimate (it described the flags that are dropped)."""
        none = np.zeros(self.is_label_issue.shape, dtype=bool)
        return replace(self, is_label_issue=none, cutoff=float("nan"), class_cutoffs=(
            compute_class_cutoffs(label_scores, labels, none, n_classes=self.class_cutoffs.size)),
            verified=None)


def flag_issues(label_scores, labels, *, n_classes: int, rule: str, percentile: float,
                threshold_reference, threshold_scores, class_error_counts,
                error_probs=None, choice: "FlagChoice | None" = None, rng=None) -> Flags:
    """:func:`_flag_by_rule`'s flags, then, with enough verified rows in ``choice``, their
    estimated precision, or the count they choose where they show that most of the rule's
    flags are not errors (:mod:`clipsei.engine.verified`, bootstrapped with ``rng``)."""
    choice = choice or FlagChoice()
    flags = _flag_by_rule(label_scores, labels, n_classes=n_classes, rule=rule,
                          percentile=percentile, threshold_reference=threshold_reference,
                          threshold_scores=threshold_scores,
                          class_error_counts=class_error_counts, error_probs=error_probs,
                          choice=choice)
    return _apply_verified(flags, label_scores, labels, choice, rng=rng, n_classes=n_classes)


def _flag_by_rule(label_scores, labels, *, n_classes: int, rule: str, percentile: float,
                  threshold_reference, threshold_scores, class_error_counts,
                  error_probs=None, choice: "FlagChoice | None" = None) -> Flags:
    """Flags on (N,) ``label_scores`` under ``rule`` (:data:`CUTOFF_RULES`,
    :data:`COUNT_RULE` or :data:`CALIBRATED_RULE`).

    threshold_reference : (N,) real samples on the threshold samples' scale; threshold_scores
    : (T,) the threshold samples' (None for a method without them); class_error_counts : (K,)
    confident learning's per-class counts; error_probs : (N,) error probabilities or None
    (Bayes for :data:`COUNT_RULE`, calibrated for :data:`CALIBRATED_RULE`). With either rule
    and ``error_probs`` each class gets its own cutoff: the largest aligned error
    probabilities are flagged, as many as :func:`choose_flag_count` says, starting from the
    larger of the confident-learning and expected-F1 counts (:data:`COUNT_RULE`, whose
    alignment also caps each class at confident learning's count) or the expected-F1 count
    alone (:data:`CALIBRATED_RULE`).
    ``choice`` (:class:`FlagChoice`): the user's target precision, review budget and
    verified (never flagged) rows.
    """
    choice = choice or FlagChoice()
    trusted = choice.trusted_mask(labels.size)
    counts = FlagCounts(
        threshold=None if threshold_scores is None else
        int((threshold_reference < compute_cutoff(threshold_scores)).sum()),
        confident_learning=int(np.sum(class_error_counts)))
    by_count = rule == COUNT_RULE
    if error_probs is not None:
        aligned = np.zeros(labels.size)
        aligned[~trusted] = align_error_probabilities(
            error_probs[~trusted], label_scores[~trusted], labels[~trusted],
            class_error_counts=class_error_counts if by_count else None)
        flag_order = np.lexsort((label_scores, -aligned, trusted))  # ties: lower score first
        counts = replace(counts, expected_f1=compute_expected_f1_count(
            aligned, np.argsort(flag_order)))
    if rule in (COUNT_RULE, CALIBRATED_RULE) and error_probs is not None:
        is_issue = np.zeros(labels.size, dtype=bool)
        default_count = (max(counts.confident_learning, counts.expected_f1) if by_count
                         else counts.expected_f1)
        n_flagged = choose_flag_count(aligned[flag_order], default_count, choice,
                                      n_candidates=int((~trusted).sum()))
        is_issue[flag_order[:n_flagged]] = True
        class_cutoffs = compute_class_cutoffs(label_scores, labels, is_issue, n_classes=n_classes)
        return Flags(is_issue, float("nan"), class_cutoffs, aligned, counts)
    if rule == COUNT_RULE or choice.max_flags is not None:
        n_flagged = (counts.confident_learning if choice.max_flags is None
                     else min(choice.max_flags, int((~trusted).sum())))
        is_issue = np.zeros(labels.size, dtype=bool)
        is_issue[_unverified_first(np.asarray(label_scores), trusted)[:n_flagged]] = True
        cutoff = compute_cutoff_for_count(label_scores, n_flagged)
    else:
        cutoff = compute_cutoff(threshold_scores, rule=rule, percentile=percentile)
        is_issue = (label_scores < cutoff) & ~trusted
    return Flags(is_issue, cutoff, np.full(n_classes, cutoff), None, counts)


def _apply_verified(flags: Flags, label_scores, labels, choice, *, rng,
                    n_classes: int) -> Flags:
    """``flags`` with the verified rows' estimate: an audit sample refits the error
    probabilities and flags by them (:func:`_flag_by_audit`); other verified rows estimate
    the rule's precision, or choose the count on the label score's order (one cutoff: it
    ranked errors better than the per-class order at low rates, see docs/design.md) where
    they show most flags are wrong; unchanged with too few verified rows."""
    trusted = choice.trusted_mask(labels.size)
    if trusted.sum() == 0:
        return flags
    label_scores = np.asarray(label_scores, dtype=np.float64)
    rng = rng if rng is not None else np.random.default_rng(0)
    if choice.inclusion_probability is not None:  # an audit sample (engine/audit.py)
        return _flag_by_audit(flags, label_scores, labels, choice, rng=rng,
                              n_classes=n_classes)
    would_flag = label_scores < flags.class_cutoffs[labels]  # the rule's cutoffs, every row
    estimate = estimate_from_verified(
        -label_scores, trusted, choice.known_error_mask(labels.size), rng=rng,
        target_precision=choice.target_precision, max_flags=choice.max_flags,
        rule_flags=(would_flag & trusted) | flags.is_label_issue)
    if estimate is None or not estimate.chose_count:
        return replace(flags, verified=estimate)
    return _flag_lowest(flags, label_scores, trusted, estimate.n_flagged,
                        n_classes=n_classes, verified=estimate)


def _flag_by_audit(flags: Flags, label_scores, labels, choice, *, rng,
                   n_classes: int) -> Flags:
    """Flags, error probabilities and estimate from error probabilities refitted on an audit
    sample (:func:`clipsei.engine.audit.calibrate_on_audit`): the lowest label scores, as
    many as the expected F1 of the refitted probabilities, ``choice``'s target precision or
    review budget say; ``flags`` unchanged with too few verified rows."""
    trusted = choice.trusted_mask(labels.size)
    audited = flag_by_audit(label_scores, choice, rng=rng)
    if audited is None:
        return replace(flags, verified=None)
    n_flagged, calibration = audited
    flagged = _flag_lowest(flags, label_scores, trusted, n_flagged, n_classes=n_classes,
                           verified=None)
    return replace(flagged, error_probability=calibration.error_probs,
                   verified=calibration.estimate(flagged.is_label_issue))


def flag_by_audit(label_scores, choice: FlagChoice, *, rng):
    """(how many of the lowest unverified ``label_scores`` (N,) to flag, the
    :class:`~clipsei.engine.audit.AuditCalibration`) from ``choice``'s audit sample: the
    expected-F1 count of the refitted error probabilities, or ``choice``'s target precision
    or review budget; None with too few verified rows."""
    label_scores = np.asarray(label_scores, dtype=np.float64)
    trusted = choice.trusted_mask(label_scores.size)
    calibration = calibrate_on_audit(label_scores, trusted,
                                     choice.known_error_mask(label_scores.size),
                                     choice.inclusion_probability, rng=rng)
    if calibration is None:
        return None
    probs = calibration.error_probs
    default_count = compute_expected_f1_count(probs[~trusted], label_scores[~trusted])
    return choose_flag_count(probs[_unverified_first(label_scores, trusted)], default_count,
                             choice, n_candidates=int((~trusted).sum())), calibration


def _unverified_first(label_scores, trusted) -> np.ndarray:
    """(N,) row order: the unverified rows by label score, lowest first (ties: row order),
    then the verified ones."""
    return np.lexsort((np.arange(label_scores.size), label_scores, trusted))


def _flag_lowest(flags: Flags, label_scores, trusted, n_flagged: int, *, n_classes: int,
                 verified) -> Flags:
    """``flags`` re-flagged: the ``n_flagged`` lowest label scores of the unverified rows
    (ties: row order), one cutoff, and the ``verified`` estimate."""
    is_issue = np.zeros(label_scores.size, dtype=bool)
    is_issue[_unverified_first(label_scores, trusted)[:n_flagged]] = True
    cutoff = compute_cutoff_for_count(label_scores[~trusted], n_flagged)
    return replace(flags, is_label_issue=is_issue, cutoff=cutoff,
                   class_cutoffs=np.full(n_classes, cutoff), verified=verified)


def choose_flag_count(ordered_probs, default_count: int, choice: FlagChoice, *,
                      n_candidates: int) -> int:
    """How many of the (N,) ``ordered_probs`` (most likely first) to flag.

    By default ``default_count``; with ``choice.target_precision`` the largest count
    whose expected precision (the mean of the flagged probabilities) reaches it; with
    ``choice.max_flags`` at most that many (alone: that many). Never more than
    ``n_candidates`` (the rows not verified)."""
    count = default_count
    if choice.target_precision is not None:
        precision = np.cumsum(ordered_probs) / np.arange(1, ordered_probs.size + 1)
        reaching = np.flatnonzero(precision >= choice.target_precision)
        count = int(reaching[-1]) + 1 if reaching.size else 0
    elif choice.max_flags is not None:
        count = choice.max_flags
    if choice.max_flags is not None:
        count = min(count, choice.max_flags)
    return int(min(count, n_candidates))


def compute_expected_errors(error_probs, is_label_issue) -> tuple:
    """(expected real errors among the flagged rows, expected errors left unflagged): the
    sums of the (N,) calibrated ``error_probs`` over each side of the (N,) bool flags."""
    error_probs = np.asarray(error_probs, dtype=np.float64)
    is_label_issue = np.asarray(is_label_issue, dtype=bool)
    return float(error_probs[is_label_issue].sum()), float(error_probs[~is_label_issue].sum())


def compute_cutoff(threshold_scores, *, rule: str = "mean", percentile: float = 99.0) -> float:
    """A score cutoff from the scores of threshold samples.

    ``"mean"``: their mean (the SEI paper's rule). ``"percentile"``: their ``percentile``-th
    percentile (AUM's rule, 99 by default: flag anything scoring like almost any threshold
    sample). Samples scoring strictly below the cutoff are flagged.
    """
    check_option(rule, CUTOFF_RULES, name="cutoff rule")
    threshold_scores = np.asarray(threshold_scores, dtype=np.float64)
    if threshold_scores.size == 0:
        raise ValueError("threshold_scores must not be empty")
    if rule == "mean":
        return float(threshold_scores.mean())
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100]; got {percentile}")
    return float(np.percentile(threshold_scores, percentile))


def compute_expected_f1_count(error_probs, label_scores) -> int:
    """How many of the lowest ``label_scores`` to flag so that the expected F1 is highest.

    With ``q`` the (N,) error probabilities, flagging the ``m`` lowest scores has expected
    true positives ``sum of their q`` against ``sum(q)`` expected errors, so its plug-in
    expected F1 is ``2 * sum_{i <= m} q_(i) / (m + sum(q))``; the count maximising it, but
    never more than the number of samples whose ``q`` exceeds the mean ``q``. Past that, a
    flag lands on a sample no likelier to be wrong than one drawn at random, which only
    F1's reward for recall pays for: where ``q`` is nearly flat (embeddings that cannot
    tell the classes apart) the uncapped count is every sample. Flagging nothing is right
    (F1 1) when there is no error, with probability ``prod(1 - q)``; 0 where that beats
    every count's expected F1 (a set with well under one expected error).
    """
    error_probs = np.asarray(error_probs, dtype=np.float64)
    if error_probs.sum() <= 0:
        return 0
    order = np.argsort(np.asarray(label_scores), kind="stable")
    expected_f1 = 2 * np.cumsum(error_probs[order]) / (np.arange(1, order.size + 1)
                                                      + error_probs.sum())
    with np.errstate(divide="ignore"):
        no_error = float(np.exp(np.log1p(-np.clip(error_probs, 0.0, 1.0)).sum()))
    if no_error >= expected_f1.max():
        return 0
    n_above_mean = int((error_probs > error_probs.mean()).sum())
    return min(int(np.argmax(expected_f1)) + 1, n_above_mean)


def align_error_probabilities(error_probs, label_scores, labels, *,
                              class_error_counts=None) -> np.ndarray:
    """(N,) error probabilities re-dealt within each given class in ``label_scores`` order.

    With ``class_error_counts`` (K,) each class's probabilities are first scaled down, never
    up, to sum to at most its count. Within given class ``j`` the class's largest
    probability goes to its lowest score, the
    second largest to its second lowest, and so on. Each class keeps the *levels* (and the
    sum: the expected number of errors) of its probabilities (a minority label that is often
    wrong keeps its higher ones) while the order inside the class is the score's, which ranks
    errors better than the probabilities alone. Flagging the largest aligned probabilities
    therefore flags, in each class, that class's lowest scores: a per-class cutoff on
    ``label_scores``.
    """
    error_probs = np.asarray(error_probs, dtype=np.float64)
    label_scores = np.asarray(label_scores)
    labels = np.asarray(labels)
    aligned = np.empty_like(error_probs)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        total = error_probs[rows].sum()
        scale = (min(1.0, class_error_counts[label] / total)
                 if class_error_counts is not None and total > 0 else 1.0)
        by_score = rows[np.argsort(label_scores[rows], kind="stable")]
        aligned[by_score] = np.sort(error_probs[rows])[::-1] * scale
    return aligned


def compute_class_cutoffs(label_scores, labels, is_label_issue, *, n_classes: int
                          ) -> np.ndarray:
    """(K,) cutoffs on ``label_scores``, one per given class, that separate each class's
    flagged rows (below) from its other rows; NaN for a class without rows. Exact where
    the flags are each class's lowest scores (ties may move the count)."""
    label_scores = np.asarray(label_scores, dtype=np.float64)
    is_label_issue = np.asarray(is_label_issue, dtype=bool)
    cutoffs = np.full(n_classes, np.nan)
    for label in range(n_classes):
        rows = labels == label
        if rows.any():
            cutoffs[label] = compute_cutoff_for_count(label_scores[rows],
                                                      int(is_label_issue[rows].sum()))
    return cutoffs


def compute_cutoff_for_count(label_scores, n_flagged: int) -> float:
    """A cutoff with ``n_flagged`` scores strictly below it (ties may move the count)."""
    ordered = np.sort(np.asarray(label_scores, dtype=np.float64))
    if n_flagged <= 0:
        return float(ordered[0])
    if n_flagged >= ordered.size:
        return float(np.nextafter(ordered[-1], np.inf))
    return float((ordered[n_flagged - 1] + ordered[n_flagged]) / 2)


def compute_flagged_share_per_class(is_label_issue, labels, *, n_classes: int) -> np.ndarray:
    """(K,) float64 share of each given class that is flagged (NaN for an empty class)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    flagged = np.bincount(labels[np.asarray(is_label_issue, dtype=bool)], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, flagged / counts, np.nan)


def decision_attrs(flags: Flags, error_rate, *, informative: bool = True) -> dict:
    """``issues.attrs`` of the decision: ``calibrated_error_rate`` (float or None),
    ``expected_errors_flagged`` / ``expected_errors_unflagged`` (sums of the flags'
    error probabilities, the ``error_probability`` column; None without them) and ``notes``
    (user-facing lines: the clean-set note when the rate is below :data:`CLEAN_RATE`, or
    when the flags outnumber the calibrated expected errors :data:`OVERFLAGGED` times) and
    ``verified`` (:meth:`clipsei.engine.verified.VerifiedEstimate.as_dict` where verified
    rows chose the count, else None). Error probabilities refitted on an audit sample give
    the rate (their mean) and the sums."""
    verified = None if flags.verified is None else flags.verified.as_dict()
    if flags.verified is not None and flags.verified.refitted:  # refitted on an audit
        error_rate = float(flags.error_probability.mean())
    if flags.error_probability is None or error_rate is None:
        return {"calibrated_error_rate": None, "expected_errors_flagged": None,
                "expected_errors_unflagged": None, "notes": [], "verified": verified}
    flagged, unflagged = compute_expected_errors(flags.error_probability, flags.is_label_issue)
    n_flagged, n_samples = int(flags.is_label_issue.sum()), flags.is_label_issue.size
    notes, expected = [], error_rate * n_samples
    if informative and error_rate < CLEAN_RATE:
        shown = ("nothing is flagged" if n_flagged == 0 else
                 f"the {n_flagged} flagged images are the likeliest candidates, not findings")
        refitted = flags.verified is not None and flags.verified.refitted
        caveat = "" if refitted else f", unless its errors are {UNDERCOUNTED}"  # audits see them
        source = "refitted on the audit sample" if refitted else "from simulated errors"
        notes.append(f"The calibrated estimate of the error rate (calibrated_error_rate, "
                     f"{source}) is consistent with zero "
                     f"({error_rate:.2%}, about {expected:.0f} of {n_samples} labels): this "
                     f"looks like a clean dataset, and {shown}{caveat}.")
    if (informative and error_rate >= CLEAN_RATE and flags.verified is None
            and n_flagged >= OVERFLAGGED * max(expected, 1.0)):
        notes.append(f"The calibrated estimate (calibrated_error_rate, from simulated errors, "
                     f"not the error_probability sums) is about {expected:.0f} label errors in "
                     f"{n_samples} ({error_rate:.2%}), far fewer than the {n_flagged} flagged. "
                     "Either the set is nearly clean and most flags are hard but correct "
                     f"images, or its errors are {UNDERCOUNTED}; the scores alone cannot tell "
                     "these apart. To know which, check an audit sample (clipsei scan "
                     "--audit-sample 160, then --trusted audit.csv); for fewer, likelier "
                     "flags use a target precision or cutoff='calibrated'.")
    return {"calibrated_error_rate": float(error_rate), "expected_errors_flagged": flagged,
            "expected_errors_unflagged": unflagged, "notes": notes, "verified": verified}
