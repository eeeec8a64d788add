"""From a fit's signals to flags: label scores, calibrated error probabilities, the flag rule."""

from __future__ import annotations

from .calibration import Calibration, calibrate_error_probabilities
from .flagging import FlagChoice, Flags, flag_issues
from .fusion import LabelScores, Signals, compute_label_scores
from .noise_model import count_errors_per_class, estimate_label_transitions


def flag_signals(signals: Signals, labels, *, score: str, n_classes: int, rule: str,
                 percentile: float, rng, choice: FlagChoice
                 ) -> tuple[LabelScores, Flags, Calibration | None]:
    """Label scores of ``score`` (:func:`clipsei.engine.fusion.compute_label_scores`), the
    held-out heads' calibrated error probabilities (None without held-out rounds) and the
    flags under ``rule`` for ``labels`` (N,). Returns ``(scores, flags, calibration)``."""
    scores = compute_label_scores(signals, score=score, n_classes=n_classes)
    pred_probs = signals.pred_probs
    class_errors = count_errors_per_class(pred_probs, labels)
    calibration = (None if signals.heldout is None else calibrate_error_probabilities(
        signals.heldout.probs, labels, rng=rng,
        transitions=estimate_label_transitions(pred_probs, labels)))
    flags = flag_issues(
        scores.label_scores, labels, n_classes=n_classes, rule=rule, percentile=percentile,
        threshold_reference=scores.threshold_reference,
        threshold_scores=scores.threshold_scores, class_error_counts=class_errors,
        error_probs=None if calibration is None else calibration.error_probs, choice=choice)
    return scores, flags, calibration
