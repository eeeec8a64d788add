"""The ``summary.json`` of a scan: what was found, how, with what, and what to be wary of."""

from __future__ import annotations

import datetime
import platform
from importlib import metadata

import numpy as np
import pandas as pd

from .. import __version__

def _per_class(values, n_classes: int, cast) -> list:
    values = list(values) if values is not None else [None] * n_classes
    return [cast(v) if v is not None and np.isfinite(v) else None for v in values]


def build_summary(issues: pd.DataFrame, failures: pd.DataFrame, class_names: list, *,
                  n_duplicate_pairs: int, n_images: int, settings: dict, timings: dict,
                  notes: list) -> dict:
    """The JSON-ready summary of a scan: counts, cutoffs, per-class figures, confusion,
    failures, ``warnings`` (``notes`` first, then the engine's), settings, versions, timings."""
    names = class_names
    attrs = issues.attrs
    given = issues["given_label"].to_numpy()
    flagged = issues["is_label_issue"].to_numpy(bool)
    counts = np.bincount(given, minlength=len(names))
    n_flagged = np.bincount(given[flagged], minlength=len(names))
    shares = _per_class(attrs.get("flagged_share_per_class"), len(names), float)
    errors = _per_class(attrs.get("estimated_errors_per_class"), len(names), int)
    error_rate = attrs.get("estimated_error_rate")
    class_cutoffs = attrs.get("class_cutoffs") or [None] * len(names)
    confusion = pd.crosstab(issues["given_label"], issues["suggested_label"]).reindex(
        index=range(len(names)), columns=range(len(names)), fill_value=0)
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_images": int(n_images), "n_scored": len(issues), "n_failed": len(failures),
        "n_flagged": int(flagged.sum()), "flagged_fraction": float(flagged.mean()),
        "n_conflicting_duplicates": int(n_duplicate_pairs),
        "method": issues.attrs.get("method"), "cutoff": issues.attrs.get("cutoff"),
        "class_cutoffs": issues.attrs.get("class_cutoffs"),
        "estimated_error_rate": None if error_rate is None else float(error_rate),
        "calibrated_error_rate": attrs.get("calibrated_error_rate"),
        "expected_errors_flagged": attrs.get("expected_errors_flagged"),
        "expected_errors_unflagged": attrs.get("expected_errors_unflagged"),
        "stated_error_rate": stated_error_rate(attrs, len(issues)),
        "verified": _jsonable(attrs.get("verified")),
        **describe_estimate(attrs),
        "estimated_errors_per_class": errors, "flagged_share_per_class": shares,
        "class_names": names,
        "per_class": [{"class": name, "n_images": int(counts[k]), "n_flagged": int(n_flagged[k]),
                       "flagged_share": shares[k], "estimated_errors": errors[k],
                       "cutoff": class_cutoffs[k]} for k, name in enumerate(names)],
        "warnings": [*notes, *(attrs.get("warnings") or [])],
        "class_signal": _jsonable(attrs.get("class_signal")),
        "zero_shot_prior": _jsonable(attrs.get("zero_shot_prior")),
        "confusion": {"rows": "given", "columns": "suggested", "classes": names,
                      "counts": confusion.to_numpy().tolist()},
        "failures": failures.to_dict(orient="records"),
        "settings": {**settings, "detector": _jsonable(issues.attrs.get("settings", {}))},
        "versions": _versions(), "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def stated_error_rate(attrs: dict, n_rows: int) -> float | None:
    """The label-error rate a scan states beside its flags: the mean of ``error_probability``
    where its sums (``expected_errors_flagged`` + ``_unflagged``) are stated, so that the two
    agree; else ``calibrated_error_rate``, else confident learning's ``estimated_error_rate``;
    None without any."""
    flagged = attrs.get("expected_errors_flagged")
    unflagged = attrs.get("expected_errors_unflagged")
    if flagged is not None and unflagged is not None and n_rows:
        return float(flagged + unflagged) / n_rows
    for key in ("calibrated_error_rate", "estimated_error_rate"):
        if attrs.get(key) is not None:
            return float(attrs[key])
    return None


def describe_estimate(attrs: dict) -> dict:
    """Which estimate of the flags' precision and of the error count a scan states, and why:
    ``{"estimate_used": "verified" | "error_probability" | None, "estimate_note": str}``.
    With a verified estimate (``attrs["verified"]``) that one: it rests on labels a person
    checked, while the label-free ``error_probability`` sums (``expected_errors_*``,
    ``calibrated_error_rate``) cannot tell a hard but correct image from an error; those stay
    in the summary for comparison only. An audit sample refits ``error_probability`` itself
    (``verified["error_probability_refitted"]``): then every figure comes from the refit."""
    verified = attrs.get("verified")
    if verified and verified.get("error_probability_refitted"):
        low, high = verified["precision_interval"]
        note = (f"error_probability was refitted on the "
                f"{verified['n_verified_clean'] + verified['n_known_errors']} audited images "
                f"({verified['n_known_errors']} corrected); the flags' precision "
                f"({verified['precision']:.0%}, 80% interval {low:.0%}-{high:.0%}), the error "
                f"count (about {verified['n_errors']:.0f} of the {verified['n_unverified']} "
                "unverified images), calibrated_error_rate and expected_errors_* are all its "
                "sums.")
        return {"estimate_used": "verified", "estimate_note": note}
    if verified:
        low, high = verified["precision_interval"]
        note = (f"The flags' precision ({verified['precision']:.0%}, 80% interval {low:.0%}-"
                f"{high:.0%}) and the error count (about {verified['n_errors']:.0f} of the "
                f"{verified['n_unverified']} unverified images) are estimated from the "
                f"{verified['n_verified_clean'] + verified['n_known_errors']} verified images, "
                "where they rank among the others. The label-free figures "
                "(calibrated_error_rate, expected_errors_flagged, expected_errors_unflagged: "
                "sums of the model's error probabilities) are shown for comparison, not used: "
                "without checked labels the model cannot tell a hard but correct image from "
                "an error.")
        return {"estimate_used": "verified", "estimate_note": note}
    if attrs.get("expected_errors_flagged") is not None:
        return {"estimate_used": "error_probability",
                "estimate_note": "The expected real errors are sums of the model's error "
                                 "probabilities (label-free; no verified images were used)."}
    return {"estimate_used": None, "estimate_note": None}


def _jsonable(value):
    """Settings as plain JSON types (numpy scalars and arrays included; others as text)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _versions() -> dict:
    versions = {"clipsei": __version__, "python": platform.python_version()}
    for package in ("numpy", "pandas", "torch", "open_clip_torch", "faiss-cpu"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
