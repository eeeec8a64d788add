"""From a fit's signals to its flags and fitted values: label scores, calibrated error
probabilities, the flag rule, then :func:`clipsei.engine.table.assemble_fitted`."""

from __future__ import annotations

import numpy as np

from .calibration import calibrate_error_probabilities
from .flag_choice import FlagChoice
from .flagging import CALIBRATED_RULE, flag_issues
from .fusion import Signals, compute_label_scores
from .noise_model import count_errors_per_class, estimate_label_transitions
from .table import FittedValues, assemble_fitted
from .zero_shot import compute_zero_shot, flag_zero_shot


def decide_from_signals(signals: Signals, inputs, *, score: str, rule: str, percentile: float,
                        rng, choice: FlagChoice, duplicate_pairs) -> FittedValues:
    """Label scores of ``score`` (:func:`clipsei.engine.fusion.compute_label_scores`), the
    held-out heads' calibrated error probabilities (none without held-out rounds), flags
    under ``rule`` (on the Bayes error probabilities, or on the calibrated ones with
    ``"calibrated"``) and the fitted values for ``inputs`` (a FitInputs)."""
    labels, n_classes = inputs.labels, inputs.classes.present.size
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
        error_probs=(calibration.error_probs if rule == CALIBRATED_RULE and calibration
                     else signals.error_probs), choice=choice, rng=rng)
    runs = signals.threshold_runs
    return assemble_fitted(
        inputs, flags, label_scores=scores.label_scores,
        signal_probs=signals.out_of_sample_probs,
        error_rate=None if calibration is None else calibration.error_rate,
        class_probs=signals.class_probs, pred_probs=pred_probs, knn=signals.knn,
        scores=signals.score_columns(labels), threshold_scores=scores.threshold_scores,
        histories=(runs.entropy_history, runs.agreement_history, runs.given_prob_history),
        duplicate_pairs=duplicate_pairs)


def decide_zero_shot(inputs, votes, *, rng, rule: str, choice: FlagChoice,
                     duplicate_pairs) -> tuple[FittedValues, float]:
    """``method="zero_shot"``: scores, flags and fitted values from the image-text softmax
    alone (its histories are one "epoch", (1, N)). Returns ``(fitted, temperature)``."""
    labels, n_classes = inputs.labels, inputs.classes.present.size
    zero_shot = compute_zero_shot(inputs.embeddings, labels, inputs.head_init[:n_classes])
    label_scores, flags, calibration = flag_zero_shot(zero_shot, n_classes=n_classes, rng=rng,
                                                      rule=rule, choice=choice)
    fitted = assemble_fitted(
        inputs, flags, label_scores=label_scores, signal_probs=[zero_shot.probs],
        error_rate=calibration.error_rate, class_probs=zero_shot.probs,
        pred_probs=zero_shot.probs, knn=votes[np.arange(labels.size), labels],
        scores=zero_shot.score_columns, threshold_scores=np.empty(0),
        histories=zero_shot.histories, duplicate_pairs=duplicate_pairs)
    return fitted, zero_shot.temperature
