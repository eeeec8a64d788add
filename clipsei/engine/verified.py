"""Verified labels calibrate the flag count: the false-flag rate of any cutoff, from them.

A person checked some images (``trusted``): those whose verified label equals the given
one are a random sample of clean rows, those whose verified label differs are known errors.
Put on the flag order of the other (unverified) rows, the clean ones give the false-flag
rate ``FPR(m)`` of flagging the ``m`` likeliest: at the position of the j-th of the ``n0``
clean rows it is ``j / (n0 + 1)`` (linear in between). Among the ``N_u`` unverified rows
with ``E`` errors, flagging ``m`` gives ``FP(m) = (N_u - E) FPR(m)`` false flags and
``TP(m) = m - FP(m)`` real ones. ``E`` is bounded from below by the flags in excess of the
clean expectation at the clean rows' positions, less two standard deviations (the largest
excess over all of them, so the bound must hold at every one). The count
maximises the expected F1 ``2 TP / (m + E)`` but is at least the number of rows ranked above
every verified-as-given one (where ``E`` cannot be told from zero, a few verified rows
cannot resolve a low rate: this keeps about ``N_u / (n0 + 1)`` false flags); with a target
precision it is the largest count whose ``TP(m) / m`` reaches it. The reported ``E`` is
also at least the known errors' share of the verified rows (less one standard deviation)
times ``N_u``; both are lower bounds, and it is at least the flags' expected real errors.
The precision's 80% interval is binomial: a cutoff that would flag ``j`` of the ``n0`` clean
rows flags a share of the clean rows whose Clopper-Pearson interval bounds its false flags (a
bootstrap of the few positions involved held the truth in under half the draws: with ``j``
near 0 it cannot move). A bootstrap over the verified rows gives the 80% interval on ``E``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# fewer verified-as-given rows than this leave the flag count to the cutoff rule
MIN_VERIFIED_CLEAN = 10
N_BOOTSTRAP = 200  # resamples for the error count's interval
INTERVAL = (10.0, 90.0)  # percentiles of the bootstrap: an 80% interval
# the rule's own flags stand unless even the upper end of their estimated precision is below
KEEP_RULE_PRECISION = 0.5
BOUND_SDS = 2.0  # E's lower bound: the largest excess over every clean row, less 2 sd


@dataclass(frozen=True)
class VerifiedEstimate:
    """n_flagged : the chosen count; precision, n_errors : estimated precision of those flags
    and errors among the ``n_unverified`` rows (at least the flags' expected real errors,
    ``precision * n_flagged``), each with an 80% ``*_interval`` (lo, hi);
    n_verified_clean, n_known_errors : verified rows whose label was confirmed / corrected;
    chose_count : whether the verified rows chose the count (else the rule's flags stand);
    refitted : whether the error probabilities were refitted on the verified rows (an audit
    sample, :mod:`clipsei.engine.audit`), so that the estimates are their sums."""

    n_flagged: int
    precision: float
    precision_interval: tuple
    n_errors: float
    n_errors_interval: tuple
    n_verified_clean: int
    n_known_errors: int
    n_unverified: int
    chose_count: bool = True
    refitted: bool = False

    def as_dict(self) -> dict:
        return {"n_flagged": self.n_flagged, "chose_count": self.chose_count,
                "precision": self.precision,
                "precision_interval": list(self.precision_interval),
                "errors_flagged": self.precision * self.n_flagged,
                "n_unverified": self.n_unverified,
                "n_errors": self.n_errors, "n_errors_interval": list(self.n_errors_interval),
                "n_verified_clean": self.n_verified_clean,
                "n_known_errors": self.n_known_errors,
                "error_probability_refitted": self.refitted}


def _positions(unverified_keys, keys) -> np.ndarray:
    """How many of the (sorted, descending) unverified keys rank strictly above each key."""
    return np.searchsorted(-unverified_keys, -np.asarray(keys), side="left")


def _false_flag_rate(clean_positions, n_unverified: int) -> np.ndarray:
    """(N_u + 1,) FPR(m) for m = 0..N_u from the clean rows' positions (plotting positions
    ``j / (n0 + 1)``, linear in between, 0 at m = 0 and 1 past the last unverified row)."""
    ordered = np.sort(clean_positions).astype(np.float64)
    n_clean = ordered.size
    xs = np.r_[0.0, ordered, n_unverified + 1.0]
    ys = np.r_[0.0, np.arange(1, n_clean + 1) / (n_clean + 1), 1.0]
    xs = xs + np.arange(xs.size) * 1e-9  # ties: strictly increasing for np.interp
    return np.interp(np.arange(n_unverified + 1), xs, ys)


def _estimate(fpr, clean_positions, n_unverified: int) -> tuple[float, np.ndarray]:
    """(E, TP(m) for m = 0..N_u) from the false-flag rates and the verified-as-given rows'
    positions. E is read where the false-flag rate is known without
    interpolation, at the j-th clean row (``j / (n0 + 1)``), less two standard deviations
    of that row's position (a bound that holds over every j at once, not only at one)."""
    counts = np.arange(n_unverified + 1, dtype=np.float64)
    ordered = np.sort(clean_positions).astype(np.float64)
    n_clean = ordered.size
    hits = np.arange(1, n_clean + 1)
    spread = n_unverified * np.sqrt(hits * (n_clean + 1 - hits) / (n_clean + 2)) / (n_clean + 1)
    excess = ordered - n_unverified * hits / (n_clean + 1) - BOUND_SDS * spread
    n_errors = float(np.clip(excess.max(), 0.0, n_unverified))
    return n_errors, np.clip(counts - (n_unverified - n_errors) * fpr, 0.0, None)


def _bound_by_known_errors(n_errors: float, n_known: int, n_clean: int,
                           n_unverified: int) -> float:
    """E, or the known errors' share of the verified rows less one standard deviation (times
    N_u) where that is larger: another lower bound, for the reported error count only."""
    sampled = n_unverified * (n_known - np.sqrt(n_known)) / max(n_known + n_clean, 1)
    return float(min(max(n_errors, sampled), n_unverified))


def _choose(true_flags, n_errors: float, target_precision, first_clean: int) -> int:
    """The count: expected F1 at its highest but at least ``first_clean`` (the rows ranked
    above every verified-as-given one), or the largest reaching ``target_precision``."""
    counts = np.arange(true_flags.size, dtype=np.float64)
    if target_precision is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            reaching = np.flatnonzero(true_flags[1:] / counts[1:] >= target_precision)
        return int(reaching[-1]) + 1 if reaching.size else 0
    best = (int(np.argmax(2 * np.minimum(true_flags, n_errors) / (counts + n_errors)))
            if n_errors > 0 else 0)
    return max(best, first_clean)


def estimate_from_verified(flag_keys, is_trusted, is_known_error, *, rng,
                           target_precision=None, max_flags=None,
                           rule_flags=None) -> VerifiedEstimate | None:
    """The flag count and its estimated precision from verified rows (module docstring).

    flag_keys : (N,) higher = flagged first (on every row, verified ones included);
    is_trusted : (N,) bool verified rows; is_known_error : (N,) bool verified rows whose
    verified label differs from the given one; rule_flags : (N,) bool or None, what a cutoff
    rule flags, verified rows included (as its cutoffs would): without a target precision or
    review budget, those flags stand (``chose_count`` False, their precision estimated)
    unless the upper end of their precision's interval is below :data:`KEEP_RULE_PRECISION`.
    Returns None with fewer than :data:`MIN_VERIFIED_CLEAN` verified-as-given rows or no
    unverified row."""
    flag_keys = np.asarray(flag_keys, dtype=np.float64)
    is_trusted = np.asarray(is_trusted, dtype=bool)
    is_known_error = np.asarray(is_known_error, dtype=bool) & is_trusted
    unverified = -np.sort(-flag_keys[~is_trusted])
    clean = _positions(unverified, flag_keys[is_trusted & ~is_known_error])
    errors = _positions(unverified, flag_keys[is_known_error])
    if clean.size < MIN_VERIFIED_CLEAN or unverified.size == 0:
        return None
    n_unverified = unverified.size
    n_errors, true_flags = _estimate(_false_flag_rate(clean, n_unverified), clean, n_unverified)
    rule = None
    if rule_flags is not None and target_precision is None and max_flags is None:
        rule_flags = np.asarray(rule_flags, dtype=bool)
        rule = _rule_precision(rule_flags[is_trusted & ~is_known_error],
                               int((rule_flags & ~is_trusted).sum()), n_unverified - n_errors)
    errors_found = _bootstrap_errors(clean, errors, n_unverified, rng)
    common = dict(n_errors=_bound_by_known_errors(n_errors, errors.size, clean.size,
                                                  n_unverified),
                  n_errors_interval=errors_found, n_verified_clean=int(clean.size),
                  n_known_errors=int(errors.size), n_unverified=int(n_unverified))
    if rule is not None and rule[1][1] >= KEEP_RULE_PRECISION:
        return _coherent(VerifiedEstimate(
            n_flagged=int((rule_flags & ~is_trusted).sum()), precision=rule[0],
            precision_interval=rule[1], chose_count=False, **common))
    n_flagged = _choose(true_flags, n_errors, target_precision, int(clean.min()))
    if max_flags is not None:
        n_flagged = min(n_flagged, int(max_flags))
    precision = float(min(true_flags[n_flagged], n_flagged) / max(n_flagged, 1))
    low, high = _precision_interval(int((clean < n_flagged).sum()), clean.size, n_flagged,
                                    n_unverified - n_errors)
    return _coherent(VerifiedEstimate(
        n_flagged=n_flagged, precision=precision,
        precision_interval=(min(low, precision), max(high, precision)), **common))


def _coherent(estimate: VerifiedEstimate) -> VerifiedEstimate:
    """``estimate`` with its error count at least the flags' expected real errors (both are
    about the same unverified rows: the flags cannot hold more errors than there are)."""
    n_errors = max(estimate.n_errors, estimate.precision * estimate.n_flagged)
    low, high = estimate.n_errors_interval
    return replace(estimate, n_errors=n_errors,
                   n_errors_interval=(min(low, n_errors), max(high, n_errors)))


def _rule_precision(clean_flagged, n_flagged: int, n_clean_unverified: float) -> tuple:
    """(precision, 80% interval) of a rule's ``n_flagged`` flags from which verified-as-given
    rows (``clean_flagged``, (n0,) bool) its cutoffs would flag."""
    if n_flagged == 0:
        return 0.0, (0.0, 0.0)
    share = float(clean_flagged.mean())
    return (float(np.clip(1 - n_clean_unverified * share / n_flagged, 0.0, 1.0)),
            _precision_interval(int(clean_flagged.sum()), clean_flagged.size, n_flagged,
                                n_clean_unverified))


def _precision_interval(n_hits: int, n_clean: int, n_flagged: int,
                        n_clean_unverified: float) -> tuple:
    """80% interval of the precision of ``n_flagged`` flags that would also flag ``n_hits``
    of ``n_clean`` verified-as-given rows: the share of clean rows the cutoff flags has
    ``n_hits ~ Binomial(n_clean, share)``, so its Clopper-Pearson interval (each end at
    10%), times the clean unverified rows, bounds the false flags. Where the count sits just
    above the (n_hits + 1)-th clean row, as a chosen count does, the share is that order
    statistic, ``Beta(n_hits + 1, n_clean - n_hits)``: the upper end is its 90th percentile."""
    from scipy.stats import beta

    low_share = beta.ppf(0.1, n_hits, n_clean - n_hits + 1) if n_hits > 0 else 0.0
    high_share = beta.ppf(0.9, n_hits + 1, n_clean - n_hits) if n_hits < n_clean else 1.0
    false_flags = n_clean_unverified * np.array([high_share, low_share])
    return tuple(float(v) for v in np.clip(1 - false_flags / max(n_flagged, 1), 0.0, 1.0))


def _bootstrap_errors(clean, errors, n_unverified: int, rng) -> tuple:
    """80% interval of the reported error count, resampling the verified rows."""
    positions, found = np.r_[clean, errors], []
    for _ in range(N_BOOTSTRAP):
        drawn = rng.choice(positions.size, positions.size)
        boot_clean = positions[drawn[drawn < clean.size]]
        if boot_clean.size:
            boot_n = _estimate(_false_flag_rate(boot_clean, n_unverified), boot_clean,
                               n_unverified)[0]
            found.append(_bound_by_known_errors(boot_n, int((drawn >= clean.size).sum()),
                                                boot_clean.size, n_unverified))
    return tuple(float(v) for v in np.percentile(found, INTERVAL))


