"""The front door's shared helpers: reading a saved issues table back."""

from __future__ import annotations

import pytest

from clipsei._front import read_issues
from clipsei.pipeline import ScanResult, scan_embeddings

NAMES = ["NA", "None", "null", "n/a"]  # pandas' default NA strings, used as class names


@pytest.mark.parametrize("table", ["issues.parquet", "issues.csv"])
def test_class_names_that_read_as_missing_stay_text(blobs, tmp_path, table):
    paths = [f"/data/{NAMES[label]}/NA_{i}.png" for i, label in enumerate(blobs.labels)]
    saved = scan_embeddings(blobs.embeddings, blobs.labels, paths=paths, class_names=NAMES,
                            groups=["NA"] * len(paths), random_state=0, n_epochs=2)
    directory = saved.save(tmp_path / "scan")
    if table == "issues.csv":  # a scan saved without pyarrow holds issues.csv only
        (directory / "issues.parquet").unlink()
    for issues in (read_issues(directory), ScanResult.load(directory).issues):
        assert issues["given_class"].notna().all() and issues["suggested_class"].notna().all()
        assert list(issues["given_class"]) == list(saved.issues["given_class"])
        assert list(issues["suggested_class"]) == list(saved.issues["suggested_class"])
        assert list(issues["path"]) == paths and (issues["group"] == "NA").all()
        assert issues["label_score"].dtype.kind == "f" and issues["is_label_issue"].dtype == bool
