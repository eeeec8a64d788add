"""The estimator's options: validation before any work, and the settings derived from them."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from .._validation import check_option, check_random_state
from .flagging import CALIBRATED_RULE, COUNT_RULE, CUTOFF_RULES

# the default method averages min(MAX_REPEATS, ceil(REPEAT_BUDGET / N)) repeats
REPEAT_BUDGET = 4000
MAX_REPEATS = 3
# reference batch size of ``lr``; default batches: N // MIN_STEPS within [32, 256], at most
# MAX_STEPS steps an epoch above
REFERENCE_BATCH = 256
MIN_STEPS, MAX_STEPS = 16, 100


@dataclass(frozen=True)
class MethodSpec:
    """One entry of the method registry (:data:`clipsei.engine.detect.METHODS`)."""

    score: str                  # FUSED or the dynamics score behind the label score
    cutoff_rule: str
    heldout: bool = False       # held-out rounds, standardised features, repeats by default
    logit_scale: float = 10.0   # the in-sample heads' temperature
    percentile: float = 99.0
    prompt: bool = False        # in-sample heads are prompt-tuned (needs a CLIP text model)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_at_least(params, name, low, *, optional=False):
    value = params[name]
    if optional and value is None:
        return
    if not _is_int(value) or value < low:
        extra = " or None" if optional else ""
        raise ValueError(f"{name} must be an int >= {low}{extra}; got {value!r}")


def _real_in(params, name, low, high, *, optional=False, open_low=False):
    value = params[name]
    if optional and value is None:
        return
    if not _is_real(value) or not (low < value if open_low else low <= value) or value > high:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}]"
                         f"{' or None' if optional else ''}; got {value!r}")


def check_params(params: dict, methods) -> None:
    """Raise a one-line ``ValueError``/``TypeError`` naming the first invalid option."""
    check_option(params["method"], methods, name="method")
    for name, low in (("n_epochs", 1), ("n_threshold_runs", 2), ("n_folds", 2),
                      ("n_neighbors", 1)):
        _int_at_least(params, name, low)
    for name in ("batch_size", "n_repeats"):
        _int_at_least(params, name, 1, optional=True)
    _real_in(params, "lr", 0, np.inf, open_low=True)
    _real_in(params, "logit_scale", 0, np.inf, optional=True, open_low=True)
    _real_in(params, "threshold_fraction", 0, 1, optional=True, open_low=True)
    _real_in(params, "cutoff_percentile", 0, 100, optional=True)
    _real_in(params, "duplicate_similarity", -1, 1)
    _real_in(params, "target_precision", 0, 1, optional=True, open_low=True)
    _int_at_least(params, "max_flags", 0, optional=True)
    if params["target_precision"] is not None and not methods[params["method"]].heldout:
        raise ValueError(f"target_precision needs error probabilities, which method "
                         f"{params['method']!r} does not give; use method='clipsei' or max_flags")
    if params["cutoff"] is not None:
        check_option(params["cutoff"], CUTOFF_RULES + (COUNT_RULE, CALIBRATED_RULE),
                     name="cutoff")
    if params["cutoff"] == CALIBRATED_RULE and params["method"] not in ("clipsei", "zero_shot"):
        raise ValueError(f"cutoff={CALIBRATED_RULE!r} needs calibrated error probabilities, "
                         f"which method {params['method']!r} does not give; use "
                         "method='clipsei'")
    fraction = params["threshold_fraction"]
    if fraction is not None and fraction * params["n_threshold_runs"] > 1:
        raise ValueError("threshold_fraction * n_threshold_runs must be in (0, 1]; got "
                         f"{fraction} * {params['n_threshold_runs']}")
    check_random_state(params["random_state"])
    if not isinstance(params.get("text_prior", True), bool):
        raise TypeError(f"text_prior must be a bool; got {params['text_prior']!r}")


def n_repeats_for(n_repeats, *, repeats_by_default: bool, n_samples: int) -> int:
    """The ``n_repeats`` option, or by default ``min(MAX_REPEATS, ceil(REPEAT_BUDGET / N))``
    where the method repeats its stochastic stages, else 1."""
    if n_repeats is not None:
        return int(n_repeats)
    if not repeats_by_default:
        return 1
    return int(min(MAX_REPEATS, -(-REPEAT_BUDGET // n_samples)))


def threshold_fraction_for(fraction, n_classes: int) -> float:
    """Share of samples in each threshold slice: ``fraction`` or ``1 / (K + 1)``."""
    return 1.0 / (n_classes + 1) if fraction is None else float(fraction)


def head_options(params: dict, n_samples: int) -> dict:
    """n_epochs, batch_size, lr (scaled with the default batch) and device for N samples."""
    batch_size = params["batch_size"] or max(
        n_samples // MAX_STEPS, min(REFERENCE_BATCH, max(32, n_samples // MIN_STEPS)))
    lr = params["lr"] if params["batch_size"] else params["lr"] * batch_size / REFERENCE_BATCH
    return dict(n_epochs=params["n_epochs"], batch_size=batch_size, lr=lr,
                device=params["device"])


def check_zero_shot_options(class_embeddings, cutoff) -> None:
    """``method="zero_shot"`` needs class text embeddings and has no threshold samples."""
    if class_embeddings is None:
        raise ValueError("method='zero_shot' needs class_embeddings (K, D), the class text "
                         "embeddings (e.g. a scan's prompt set); got None")
    if cutoff not in (None, COUNT_RULE, CALIBRATED_RULE):
        raise ValueError(f"method='zero_shot' has no threshold samples: cutoff must be None, "
                         f"{COUNT_RULE!r} or {CALIBRATED_RULE!r}; got {cutoff!r}")
