"""Input checks at the public boundary, seen through the public functions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import clipsei


def test_many_tiny_classes_warn_in_one_short_line(rng):
    labels = np.concatenate([np.zeros(40, int), np.ones(40, int), np.arange(2, 32)])
    embeddings = rng.normal(size=(labels.size, 8)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clipsei.find_label_issues(embeddings, labels, n_epochs=2)
    tiny = [str(w.message) for w in caught if "fewer than 3 samples" in str(w.message)]
    assert tiny == ["classes [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, "
                    "21, ...] have fewer than 3 samples (30 classes); their scores are unreliable"]


def test_negative_random_state_in_python_names_the_parameter(rng):
    with pytest.raises(ValueError, match="random_state must be an int >= 0; got -1"):
        clipsei.find_label_issues(rng.normal(size=(20, 4)), np.arange(20) % 2, random_state=-1)
