import numpy as np
import pandas as pd
import pytest

from clipsei.engine.table import build_issues_table


def test_issues_table_partners_and_suggestions():
    labels = np.array([0, 1, 1])
    pred = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    pairs = pd.DataFrame({"i": [0], "j": [1], "similarity": [0.99]})
    table = build_issues_table(labels=labels, label_scores=np.array([0.9, 0.8, 0.2]),
                               is_label_issue=np.array([False, False, True]),
                               predicted_label=pred.argmax(axis=1),
                               suggested_label=pred.argmax(axis=1),
                               pred_probs=pred, knn_agreement=np.array([1.0, 0.5, 0.0]),
                               scores={"sei": np.zeros(3), "entropy_integral": np.ones(3)},
                               duplicate_pairs=pairs)
    assert table["suggested_label"].tolist() == [0, 1, 0]
    assert table["suggested_confidence"].iloc[2] == pytest.approx(0.7)
    assert table["conflicting_duplicate"].tolist() == [1, 0, -1]
    assert table["rank"].tolist() == [3, 2, 1]
    assert {"sei_score", "entropy_integral"} <= set(table.columns)
