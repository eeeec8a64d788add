"""Verified labels: find_trusted_rows and the scan CLI's --trusted, --precision, --review-budget."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clipsei.cli import main
from clipsei.images.trusted import find_trusted_rows

TINY = ["--model", "clipsei-tiny", "--pretrained", "none", "--n-epochs", "3"]


def test_find_trusted_rows(tmp_path):
    paths = [str(tmp_path / "images" / f"{k}.png") for k in range(4)]
    manifest = tmp_path / "checked.csv"
    pd.DataFrame({"path": ["images/2.png", paths[0]]}).to_csv(manifest, index=False)
    np.testing.assert_array_equal(find_trusted_rows(manifest, paths), [1, 0, 1, 0])
    pd.DataFrame({"path": ["images/9.png"]}).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match=r"checked.csv, row 2: images/9.png is not one of"):
        find_trusted_rows(manifest, paths)
    pd.DataFrame({"file": ["x"]}).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match="needs a 'path' column"):
        find_trusted_rows(manifest, paths)
    with pytest.raises(FileNotFoundError, match="trusted manifest not found"):
        find_trusted_rows(tmp_path / "missing.csv", paths)


@pytest.mark.filterwarnings("ignore")
def test_scan_cli_flag_controls(tmp_path, write_images, capsys):
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    checked = sorted((tmp_path / "images" / "cat").iterdir())[:2]
    manifest = tmp_path / "checked.csv"
    pd.DataFrame({"path": [str(p) for p in checked]}).to_csv(manifest, index=False)
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(out), "--precision",
                 "0.8", "--review-budget", "3", "--trusted", str(manifest)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["detector"]["target_precision"] == 0.8
    assert summary["settings"]["detector"]["max_flags"] == 3
    assert summary["n_flagged"] <= 3
    assert {"expected_errors_flagged", "expected_errors_unflagged"} <= set(summary)
    issues = pd.read_csv(out / "issues.csv")
    assert not issues.loc[issues["path"].isin([str(p) for p in checked]), "is_label_issue"].any()
    capsys.readouterr()
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(tmp_path / "o2"),
                 "--precision", "1.5"]) == 2
    assert "target_precision must be a number in (0, 1]" in capsys.readouterr().err


def test_read_trusted_manifest_takes_verified_labels(tmp_path):
    from clipsei.images.data import ImageTable
    from clipsei.images.trusted import read_trusted_manifest

    paths = [str(tmp_path / f"{k}.png") for k in range(4)]
    table = ImageTable(paths=paths, labels=np.array([0, 1, 0, 1]), class_names=["cat", "dog"])
    manifest = tmp_path / "checked.csv"
    pd.DataFrame({"path": ["0.png", "1.png", "2.png"], "label": ["dog", "", "cat"]}).to_csv(
        manifest, index=False)
    assert read_trusted_manifest(manifest, table) == {0: 1, 1: 1, 2: 0}
    pd.DataFrame({"path": ["3.png"]}).to_csv(manifest, index=False)
    assert read_trusted_manifest(manifest, table) == {3: 1}  # no label column: as given
    pd.DataFrame({"path": ["3.png"], "label": ["bird"]}).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match=r"checked.csv, row 2: label 'bird' is not one of"):
        read_trusted_manifest(manifest, table)


@pytest.mark.filterwarnings("ignore")
def test_scan_cli_verified_labels_calibrate_the_count(tmp_path, write_images, capsys):
    write_images(tmp_path / "images", n_per_class=30, classes=("cat", "dog"))
    cats = sorted((tmp_path / "images" / "cat").iterdir())
    dogs = sorted((tmp_path / "images" / "dog").iterdir())
    manifest = tmp_path / "checked.csv"
    rows = [(str(p), "") for p in cats[:6] + dogs[:6]] + [(str(cats[6]), "dog")]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(manifest, index=False)
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(out), "--trusted",
                 str(manifest)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    verified = summary["verified"]
    assert verified["n_verified_clean"] == 12 and verified["n_known_errors"] == 1
    assert summary["estimate_used"] == "verified"
    printed = capsys.readouterr().out
    # one precision for the flags, the verified one; the label-free sums are named as such
    assert "from 13 verified images (1 corrected): precision of the flags" in printed
    assert "expected real errors:" not in printed
    if summary["expected_errors_flagged"] is not None:
        assert "label-free estimate, not used" in printed
    issues = pd.read_csv(out / "issues.csv")
    assert not issues.loc[issues["path"].isin([p for p, _ in rows]), "is_label_issue"].any()


def test_find_label_issues_takes_verified_labels(blobs):
    # the functional API passes trusted= on to the detector: verified rows are never flagged
    from clipsei import LabelIssueDetector, find_label_issues

    plain = find_label_issues(blobs.embeddings, blobs.labels, n_epochs=5)
    flagged = np.flatnonzero(plain["is_label_issue"].to_numpy())[:3]
    verified = {int(row): int(blobs.labels[row]) for row in flagged}
    issues = find_label_issues(blobs.embeddings, blobs.labels, n_epochs=5, trusted=verified)
    assert not issues["is_label_issue"].to_numpy()[flagged].any()
    fitted = LabelIssueDetector(n_epochs=5).fit(blobs.embeddings, blobs.labels,
                                               trusted=verified).issues_
    assert issues.equals(fitted)


def test_trusted_paths_relative_to_a_scanned_manifests_folder(tmp_path):
    paths = [str(tmp_path / "data" / "cat" / f"{k}.png") for k in range(3)]
    checked = tmp_path / "review" / "checked.csv"
    checked.parent.mkdir()
    pd.DataFrame({"path": ["cat/1.png"]}).to_csv(checked, index=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.csv").write_text("path,label\n")  # what was scanned
    rows = find_trusted_rows(checked, paths, source=tmp_path / "data" / "labels.csv")
    np.testing.assert_array_equal(rows, [0, 1, 0])
