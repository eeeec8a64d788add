"""An audit sample: where to spend a verification budget, and the error probabilities
refitted on it.

A uniform sample of verified rows puts about ``n / N`` of them among the top ranks, where the
flag count is decided. :func:`draw_audit_sample` instead stratifies the label-score order
(lowest score first: likeliest wrong) into strata that double in size, ``[0, m)``,
``[m, 2m)``, ``[2m, 4m)``, ... up to N, with about the same number of rows drawn from each
(the top stratum, no larger than its share, is verified in full). Every cutoff in the top
few percent then has rows verified just above and below it, and each stratum, the last
(half the set) included, is still sampled. :func:`calibrate_on_audit` refits the error
probability on the verified rows: ``logit P(wrong) = slope * z + intercept`` with ``z`` the
log of the label-score rank (``log((rank + 0.5) / N)``, centred and halved: it is ``-log`` of
a uniform, so unit scale), a logistic fit weighted by ``1 / inclusion probability``. Every
row then has a probability fitted on labels a person checked; the flag count, the flags'
expected precision and the number of errors all follow from it, and a bootstrap of the
verified rows within their strata gives their 80% intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .ranks import rank_by_score
from .verified import INTERVAL, MIN_VERIFIED_CLEAN, N_BOOTSTRAP, VerifiedEstimate

# weak ridge of the refit (sklearn's C): finite slopes where the verified rows separate
FIT_C = 1e4


def compute_audit_strata(n_samples: int, n_audit: int) -> np.ndarray:
    """(S + 1,) rank bounds of the strata: ``[0, m, 2m, 4m, ..., N]`` with the fewest strata
    whose top one (``m`` rows) fits in an equal share ``n_audit / S`` of the budget, but no
    more strata than rows to audit (a small budget: one row from each)."""
    n_strata = 1
    while (n_strata < n_audit
           and np.ceil(n_samples / 2 ** (n_strata - 1)) > n_audit / n_strata):
        n_strata += 1
    top = int(np.ceil(n_samples / 2 ** (n_strata - 1)))
    bounds = [0] + [min(top * 2 ** j, n_samples) for j in range(n_strata)]
    return np.unique(np.asarray(bounds, dtype=np.int64))


def draw_audit_sample(label_scores, n: int, *, random_state=0) -> tuple[np.ndarray, np.ndarray]:
    """Rows to verify, drawn by stratum of the label-score rank (see the module docstring).

    label_scores : (N,) lower = more likely mislabeled; n : the verification budget.
    Returns (rows (n,) int, sorted by score, likeliest wrong first; inclusion_probability (n,)
    float in (0, 1], each row's chance of being drawn; they sum to n over the strata).
    Deterministic given ``random_state`` (None, int or Generator)."""
    scores = np.asarray(label_scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0 or not np.isfinite(scores).all():
        raise ValueError(f"label_scores must be a non-empty 1-D array of finite floats; got "
                         f"shape {scores.shape}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= scores.size:
        raise ValueError(f"n must be an int in [1, {scores.size}]; got {n!r}")
    rng = np.random.default_rng(random_state)
    order = np.argsort(scores, kind="stable")
    bounds = compute_audit_strata(scores.size, int(n))
    rows, probabilities, left = [], [], int(n)
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        # equal shares; what a small stratum cannot take passes on to the next
        take = min(stop - start, int(round(left / (bounds.size - 1 - index))))
        rows.append(order[start + rng.choice(stop - start, take, replace=False)])
        probabilities.append(np.full(take, take / (stop - start)))
        left -= take
    rows, probabilities = np.concatenate(rows), np.concatenate(probabilities)
    ranked = np.argsort(rank_by_score(scores)[rows], kind="stable")
    return rows[ranked], probabilities[ranked]


def rank_audit_sample(issues: pd.DataFrame, n: int, *, random_state=0) -> pd.DataFrame:
    """The audit sheet for a scan's ``issues`` table (with ``label_score``, ``given_label``
    and, where known, ``path`` and ``given_class``): :func:`draw_audit_sample`'s ``n`` rows,
    likeliest wrong first, with the given label (and class name: the reviewer writes names),
    an empty ``label`` for the reviewer (empty = as given) and
    ``inclusion_probability``, indexed by the issues' row. Filled in, it is read back by
    ``--trusted`` (or pass ``{row: (label, inclusion_probability)}`` as ``trusted=``)."""
    rows, probability = draw_audit_sample(issues["label_score"].to_numpy(float), n,
                                          random_state=random_state)
    columns = [c for c in ("path", "given_label", "given_class") if c in issues.columns]
    sheet = issues.iloc[rows][columns].copy()
    sheet["label"] = ""
    sheet["inclusion_probability"] = probability
    return sheet


def compute_rank_feature(label_scores) -> np.ndarray:
    """(N,) ``(log((rank + 0.5) / N) + 1) / 2`` of the label scores' rank (0 = lowest score):
    the log of a uniform's rank, centred to mean 0 and scaled to standard deviation 0.5."""
    ranks = rank_by_score(label_scores)  # 1-based
    return (np.log((ranks - 0.5) / ranks.size) + 1.0) / 2.0


def fit_error_model(feature, is_error, weights) -> np.ndarray:
    """(2,) ``(slope, intercept)`` of a weighted logistic fit of ``is_error`` on ``feature``
    (each (n,)); where the rows hold one class, slope 0 and an intercept of -inf or +inf."""
    from sklearn.linear_model import LogisticRegression

    is_error = np.asarray(is_error, dtype=bool)
    if is_error.all() or not is_error.any():
        return np.array([0.0, np.inf if is_error.all() else -np.inf])
    model = LogisticRegression(C=FIT_C).fit(np.asarray(feature)[:, None], is_error,
                                            sample_weight=weights)
    return np.array([model.coef_[0, 0], model.intercept_[0]])


@dataclass(frozen=True)
class AuditCalibration:
    """error_probs : (N,) P(given label wrong) refitted on the audit (its rows 1 where the
    label was corrected, 0 where confirmed); feature : (N,) the rank feature; label_scores :
    (N,); rows, weights, is_wrong : (n,) the audited rows, ``1 / inclusion probability`` and
    whether each was wrong; resamples : (B, n) the stratified bootstrap's indices into them
    and replicates : (B, 2) each resample's slope and intercept; error_draws : (B,) the
    errors among the unverified rows drawn stratum by stratum (:func:`draw_stratum_errors`)."""

    error_probs: np.ndarray
    feature: np.ndarray
    label_scores: np.ndarray
    rows: np.ndarray
    weights: np.ndarray
    is_wrong: np.ndarray
    resamples: np.ndarray
    replicates: np.ndarray
    error_draws: np.ndarray

    def estimate(self, is_flagged) -> VerifiedEstimate:
        """The expected precision of the (N,) bool flags (never audited rows) and the
        expected errors among the unverified rows: the refit's sums, each with an 80%
        interval spanning both the refit's bootstrap and a design-based one (a form-free check
        on the refit's two-parameter shape): for the precision, the weighted error share of
        the audited rows scoring within the flags' range, over the same resamples; for the
        errors, :attr:`error_draws`."""
        from scipy.special import expit

        unverified = np.ones(self.feature.size, dtype=bool)
        unverified[self.rows] = False
        is_flagged = np.asarray(is_flagged, dtype=bool) & unverified
        n_flagged = int(is_flagged.sum())
        precision = float(self.error_probs[is_flagged].mean()) if n_flagged else 0.0
        n_errors = float(self.error_probs[unverified].sum())
        in_range = self.label_scores[self.rows] <= (
            self.label_scores[is_flagged].max() if n_flagged else -np.inf)
        replicated = np.empty((len(self.replicates), 3))
        for index, ((slope, intercept), drawn) in enumerate(zip(self.replicates,
                                                                 self.resamples)):
            probs = expit(slope * self.feature + intercept)
            weights, wrong, flagged = (self.weights[drawn], self.is_wrong[drawn],
                                       in_range[drawn])
            mass = (weights * flagged).sum()
            replicated[index] = (probs[is_flagged].mean() if n_flagged else 0.0,
                                 probs[unverified].sum(),
                                 (weights * flagged * wrong).sum() / mass if mass else
                                 precision)
        low, high = np.percentile(np.c_[replicated, self.error_draws], INTERVAL, axis=0)
        return VerifiedEstimate(
            n_flagged=n_flagged, precision=precision,
            precision_interval=(float(min(low[0], low[2], precision)),
                                float(max(high[0], high[2], precision))),
            n_errors=n_errors,
            n_errors_interval=(float(min(low[1], low[3], n_errors)),
                               float(max(high[1], high[3], n_errors))),
            n_verified_clean=int((~self.is_wrong).sum()), n_known_errors=int(self.is_wrong.sum()),
            n_unverified=int(unverified.sum()), refitted=True)


def draw_stratum_errors(is_wrong, inclusion_probability, rng, *,
                        n_draws: int = N_BOOTSTRAP) -> np.ndarray:
    """(n_draws,) draws of the errors among the rows not audited: per stratum (rows sharing
    an inclusion probability ``p``: ``n`` audited, ``e`` wrong, of about ``n / p`` rows) its
    ``n / p - n`` other rows times an error share from Jeffreys' ``Beta(e + 1/2, n - e + 1/2)``.
    A stratum whose audited rows were all right still may hold errors (a bootstrap of its
    rows would say none); a fully audited one (``p = 1``) adds none."""
    probability = np.round(np.asarray(inclusion_probability, dtype=np.float64), 9)
    is_wrong = np.asarray(is_wrong, dtype=bool)
    total = np.zeros(n_draws)
    for value in np.unique(probability):
        members = probability == value
        n_audited, n_wrong = int(members.sum()), int(is_wrong[members].sum())
        others = n_audited / value - n_audited
        total += others * rng.beta(n_wrong + 0.5, n_audited - n_wrong + 0.5, n_draws)
    return total


def calibrate_on_audit(label_scores, is_audited, is_known_error, inclusion_probability, *,
                       rng) -> AuditCalibration | None:
    """Error probabilities refitted on an audit sample (module docstring).

    label_scores : (N,) lower = likelier wrong; is_audited : (N,) bool verified rows;
    is_known_error : (N,) bool verified rows whose label is wrong; inclusion_probability :
    (N,) each verified row's chance of being drawn (other rows ignored); ``rng`` draws the
    :data:`N_BOOTSTRAP` resamples, within strata (rows sharing an inclusion probability).
    None with fewer than :data:`MIN_VERIFIED_CLEAN` verified rows or no unverified row."""
    from scipy.special import expit

    is_audited = np.asarray(is_audited, dtype=bool)
    if is_audited.sum() < MIN_VERIFIED_CLEAN or is_audited.all():
        return None
    label_scores = np.asarray(label_scores, dtype=np.float64)
    feature = compute_rank_feature(label_scores)
    rows = np.flatnonzero(is_audited)
    probability = np.asarray(inclusion_probability, dtype=np.float64)[rows]
    weights, wrong = 1.0 / probability, np.asarray(is_known_error, dtype=bool)[rows]
    coefficients = fit_error_model(feature[rows], wrong, weights)
    strata = np.round(probability, 9)
    groups = [np.flatnonzero(strata == value) for value in np.unique(strata)]
    resamples = np.stack([np.concatenate([rng.choice(group, group.size) for group in groups])
                          for _ in range(N_BOOTSTRAP)])
    replicates = np.stack([fit_error_model(feature[rows[drawn]], wrong[drawn], weights[drawn])
                           for drawn in resamples])
    error_probs = expit(coefficients[0] * feature + coefficients[1])
    error_probs[rows] = wrong
    return AuditCalibration(error_probs, feature, label_scores, rows, weights, wrong,
                            resamples, replicates, draw_stratum_errors(wrong, probability, rng))
