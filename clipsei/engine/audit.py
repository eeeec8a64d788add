"""An audit sample: where to spend a verification budget, and the flag count it gives.

A uniform sample of verified rows puts about ``n / N`` of them among the top ranks, where the
flag count is decided. :func:`draw_audit_sample` instead stratifies the label-score order
(lowest score first: likeliest wrong) into strata that double in size, ``[0, m)``,
``[m, 2m)``, ``[2m, 4m)``, ... up to N, with about the same number of rows drawn from each
(the top stratum, no larger than its share, is verified in full). Every cutoff in the top
few percent then has rows verified just above and below it, and each stratum, the last
(half the set) included, is still sampled. :func:`estimate_from_audit` turns the verified
rows into Horvitz-Thompson-weighted (ratio) estimates of the errors above every cutoff and
of all errors (each verified row stands for ``1 / pi - 1`` unverified ones near it: the error
share of the weighted verified rows above a cutoff, times its flags), hence the precision,
recall and F1 of every count, and flags the count with the highest estimated F1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .verified import (INTERVAL, KEEP_RULE_PRECISION, MIN_VERIFIED_CLEAN, N_BOOTSTRAP,
                       VerifiedEstimate, _positions)


def compute_audit_strata(n_samples: int, n_audit: int) -> np.ndarray:
    """(S + 1,) rank bounds of the strata: ``[0, m, 2m, 4m, ..., N]`` with the fewest strata
    whose top one (``m`` rows) fits in an equal share ``n_audit / S`` of the budget."""
    n_strata = 1
    while np.ceil(n_samples / 2 ** (n_strata - 1)) > n_audit / n_strata:
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
    ranked = np.argsort(np.argsort(order)[rows], kind="stable")
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


def _error_curve(positions, is_error, weights, n_unverified: int) -> np.ndarray:
    """(N_u + 1,) estimated errors among the first m unverified rows, m = 0..N_u: ``m`` times
    the weighted error share of the verified rows above m (a ratio estimate; each verified
    row's weight is spread evenly between the midpoints to its neighbours)."""
    order = np.argsort(positions, kind="stable")
    positions, mass = positions[order].astype(np.float64), (is_error * weights)[order]
    knots = np.r_[0.0, (positions[:-1] + positions[1:]) / 2 + 0.5, float(n_unverified)]
    knots = np.maximum.accumulate(knots) + np.arange(knots.size) * 1e-9
    counts = np.arange(n_unverified + 1)
    errors = np.interp(counts, knots, np.r_[0.0, np.cumsum(mass)])
    rows = np.interp(counts, knots, np.r_[0.0, np.cumsum(weights[order])])
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rows > 0, errors / rows, 0.0)
    return share * counts


def _choose_count(curve, target_precision) -> int:
    """The count with the highest estimated F1, or the largest reaching ``target_precision``."""
    counts = np.arange(curve.size, dtype=np.float64)
    if target_precision is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            reaching = np.flatnonzero(curve[1:] / counts[1:] >= target_precision)
        return int(reaching[-1]) + 1 if reaching.size else 0
    total = curve[-1]
    return int(np.argmax(2 * curve / (counts + total))) if total > 0 else 0


def estimate_from_audit(flag_keys, is_audited, is_known_error, inclusion_probability, *,
                        rng, target_precision=None, max_flags=None,
                        rule_flags=None) -> VerifiedEstimate | None:
    """The flag count and its estimated precision from an audit sample (module docstring).

    flag_keys : (N,) higher = flagged first; is_audited : (N,) bool verified rows;
    is_known_error : (N,) bool verified rows whose label is wrong; inclusion_probability :
    (N,) float, each verified row's chance of having been drawn (other rows ignored).
    The 80% intervals resample the verified rows within each stratum (rows sharing an
    inclusion probability). Returns None with fewer than :data:`MIN_VERIFIED_CLEAN` verified
    rows or no unverified row. rule_flags : (N,) bool or None, what a cutoff rule flags
    (verified rows included, as its cutoffs would): without a target precision or review
    budget those flags stand (``chose_count`` False) unless the upper end of their estimated
    precision's interval is below :data:`KEEP_RULE_PRECISION`, as with a uniform sample."""
    flag_keys = np.asarray(flag_keys, dtype=np.float64)
    is_audited = np.asarray(is_audited, dtype=bool)
    unverified = -np.sort(-flag_keys[~is_audited])
    if is_audited.sum() < MIN_VERIFIED_CLEAN or unverified.size == 0:
        return None
    positions = _positions(unverified, flag_keys[is_audited])
    is_error = np.asarray(is_known_error, dtype=bool)[is_audited].astype(np.float64)
    probability = np.asarray(inclusion_probability, dtype=np.float64)[is_audited]
    weights = 1.0 / probability - 1.0
    curve = _error_curve(positions, is_error, weights, unverified.size)
    if rule_flags is not None and target_precision is None and max_flags is None:
        kept = _rule_estimate(np.asarray(rule_flags, dtype=bool), is_audited, is_error,
                              weights, np.round(probability, 9), rng)
        if kept is not None and kept[1][1] >= KEEP_RULE_PRECISION:
            totals = [total for _, total in _bootstrap(
                positions, is_error, weights, np.round(probability, 9), unverified.size, 0,
                rng)]
            low, high = np.percentile(totals, INTERVAL)
            return VerifiedEstimate(
                n_flagged=kept[2], precision=kept[0], precision_interval=kept[1],
                n_errors=float(curve[-1]), n_errors_interval=(
                    float(min(low, curve[-1])), float(max(high, curve[-1]))),
                n_verified_clean=int((is_error == 0).sum()),
                n_known_errors=int(is_error.sum()), n_unverified=int(unverified.size),
                chose_count=False)
    n_flagged = _choose_count(curve, target_precision)
    if max_flags is not None:
        n_flagged = min(n_flagged, int(max_flags))
    boot = _bootstrap(positions, is_error, weights, np.round(probability, 9), unverified.size,
                      n_flagged, rng)
    precision = float(curve[n_flagged] / max(n_flagged, 1))
    n_errors = float(curve[-1])
    low, high = np.percentile(boot, INTERVAL, axis=0) if len(boot) else ([0.0, 0.0],) * 2
    return VerifiedEstimate(
        n_flagged=n_flagged, precision=min(precision, 1.0),
        precision_interval=(float(min(low[0], precision)), float(min(max(high[0], precision),
                                                                     1.0))),
        n_errors=n_errors, n_errors_interval=(float(min(low[1], n_errors)),
                                              float(max(high[1], n_errors))),
        n_verified_clean=int((is_error == 0).sum()), n_known_errors=int(is_error.sum()),
        n_unverified=int(unverified.size), chose_count=True)


def _rule_estimate(rule_flags, is_audited, is_error, weights, strata, rng):
    """(precision, 80% interval, count) of a rule's flags on the unverified rows: the
    weighted error share of the verified rows its cutoffs would flag; None if it flags none
    of them."""
    flagged = rule_flags[is_audited]
    n_flagged = int((rule_flags & ~is_audited).sum())
    if n_flagged == 0 or not flagged.any():
        return None
    groups = [np.flatnonzero(strata == value) for value in np.unique(strata)]

    def share(rows):
        mass = (weights[rows] * flagged[rows]).sum()
        return float((weights[rows] * flagged[rows] * is_error[rows]).sum() / mass) if mass \
            else 0.0

    precision = share(np.arange(flagged.size))
    draws = [share(np.concatenate([rng.choice(g, g.size) for g in groups]))
             for _ in range(N_BOOTSTRAP)]
    low, high = np.percentile(draws, INTERVAL)
    return precision, (float(min(low, precision)), float(max(high, precision))), n_flagged


def _bootstrap(positions, is_error, weights, strata, n_unverified: int, n_flagged: int,
               rng) -> list:
    """(precision of the first ``n_flagged``, all errors) per stratified resample."""
    groups = [np.flatnonzero(strata == value) for value in np.unique(strata)]
    found = []
    for _ in range(N_BOOTSTRAP):
        drawn = np.concatenate([rng.choice(group, group.size) for group in groups])
        curve = _error_curve(positions[drawn], is_error[drawn], weights[drawn], n_unverified)
        found.append((min(curve[n_flagged] / max(n_flagged, 1), 1.0), curve[-1]))
    return found
