"""Duplicates, leakage, outliers and image properties as columns of a scan's issues table."""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from clipsei.cli import main
from clipsei.data_issues import ISSUE_TYPES, find_clean_rows
from clipsei.engine.duplicates import search_duplicate_neighbors
from clipsei.engine.detect import LabelIssueDetector
from clipsei.pipeline import ScanResult, scan, scan_embeddings


def _texture(rng, colour, size=48):
    pixels = rng.normal(0.5, 0.15, (size, size, 3))
    pixels[..., colour] += 0.3
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


@pytest.fixture
def planted_manifest(tmp_path):
    """A manifest of 32 images in two classes and three splits, with an exact duplicate file
    copied across splits, a black image and a blurred image."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for i in range(32):
        label = i % 2
        _texture(rng, colour=label).save(folder / f"img{i:02d}.png")
        rows.append((f"img{i:02d}.png", ["cat", "dog"][label], "train" if i < 24 else "test"))
    shutil.copyfile(folder / "img03.png", folder / "copy_of_03.png")
    rows.append(("copy_of_03.png", "dog", "test"))
    Image.new("RGB", (48, 48)).save(folder / "black.png")
    rows.append(("black.png", "cat", "train"))
    _texture(rng, colour=0).filter(ImageFilter.GaussianBlur(3)).save(folder / "blurred.png")
    rows.append(("blurred.png", "cat", "train"))
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(manifest, index=False)
    return manifest


def _row(issues, name):
    return issues.index[issues["path"].str.endswith("/" + name)][0]


def test_scan_reports_every_issue_type(planted_manifest, tiny_clip, tmp_path):
    result = scan(planted_manifest, model=tiny_clip, out=tmp_path / "scan", progress=False,
                  n_epochs=2, duplicate_similarity=0.9999)
    issues = result.issues
    for name in ISSUE_TYPES:
        assert f"is_{name}" in issues
    original, copy = _row(issues, "img03.png"), _row(issues, "copy_of_03.png")
    assert issues.loc[[original, copy], "is_exact_duplicate"].all()
    assert issues.loc[original, "duplicate_group"] == issues.loc[copy, "duplicate_group"] >= 0
    assert issues.loc[[original, copy], "is_leakage"].all()  # train and test
    assert issues["is_leakage"].sum() == 2
    assert issues.loc[_row(issues, "black.png"), "is_dark"]
    assert issues.loc[_row(issues, "blurred.png"), "is_blurry"]
    assert issues["split"].isin(["train", "test"]).all()
    counts = result.summary["data_issues"]
    assert counts["leakage"] == 2 and counts["dark"] >= 1 and counts["n_duplicate_groups"] >= 1
    assert counts == {k: int(issues[f"is_{k}"].sum()) for k in ISSUE_TYPES} | {
        "n_duplicate_groups": counts["n_duplicate_groups"]}
    assert "data_issues" in result.summary["timings_s"]
    loaded = ScanResult.load(tmp_path / "scan")
    assert loaded.issues["is_leakage"].sum() == 2
    html = (tmp_path / "scan" / "report.html").read_text()
    assert 'id="f-issue"' in html and "leakage" in html


def test_clean_manifest_drops_copies_and_image_issues(planted_manifest, tiny_clip, tmp_path):
    scan(planted_manifest, model=tiny_clip, out=tmp_path / "scan", progress=False, n_epochs=2,
         duplicate_similarity=0.9999)
    assert main(["relabel", str(tmp_path / "scan"), "--accept-above", "1", "--clean", "-q"]) == 0
    clean = pd.read_csv(tmp_path / "scan" / "clean_manifest.csv")
    names = clean["path"].str.rsplit("/", n=1).str[1].tolist()
    assert "black.png" not in names and "blurred.png" not in names
    assert ("img03.png" in names) != ("copy_of_03.png" in names) or not (
        "img03.png" in names or "copy_of_03.png" in names)  # at most one copy is kept
    assert "group" not in clean and list(clean.columns[:2]) == ["path", "label"]
    issues = pd.read_csv(tmp_path / "scan" / "issues.csv")
    assert len(clean) <= find_clean_rows(issues).sum()


def test_clean_rows_keep_one_of_an_agreeing_set_and_none_of_a_conflicting_one():
    issues = pd.DataFrame({"given_label": [0, 0, 1, 0, 1, 1],
                           "duplicate_group": [0, 0, -1, 1, 1, -1],
                           "is_outlier": [False, False, False, False, False, True],
                           "is_label_issue": [True, False, False, False, False, False]})
    assert find_clean_rows(issues).tolist() == [True, False, True, False, False, False]


def test_near_duplicates_and_an_outlier_from_embeddings():
    rng = np.random.default_rng(1)
    centres = 3 * rng.normal(size=(2, 16))
    labels = np.arange(60) % 2
    x = centres[labels] + 2 * rng.normal(size=(60, 16))
    x[[10, 20]] = x[5] + 0.01 * rng.normal(size=(2, 16))  # a near-duplicate set of three
    x[33] = 12 * rng.normal(size=16)  # far from both blobs
    result = scan_embeddings(x, labels, n_epochs=2, splits=np.where(np.arange(60) < 50,
                                                                     "train", "val"))
    issues = result.issues
    assert issues.loc[[5, 10, 20], "is_near_duplicate"].all()
    assert issues.loc[5, "duplicate_group"] == issues.loc[10, "duplicate_group"] == issues.loc[
        20, "duplicate_group"]
    assert issues["is_duplicate"].sum() == 3 and not issues["is_leakage"].any()
    assert issues["outlier_score"].idxmin() == 33 and issues.loc[33, "is_outlier"]


@pytest.fixture(scope="module")
def shared_direction():
    """Blobs shifted along one shared direction, as CLIP embeddings are (every raw cosine is
    high), with ten planted near-duplicate pairs; and the default method's scan of them."""
    from clipsei.evaluation.synthetic import make_noisy_blobs

    blobs = make_noisy_blobs(120, n_classes=4, n_features=32, noise_rate=0.1, random_state=0)
    rng = np.random.default_rng(0)
    offset = 3 * rng.normal(size=32) / np.sqrt(32)
    x = blobs.embeddings.copy()
    copies = np.arange(0, 40, 4)
    x[copies + 1] = x[copies] + 1e-3 * rng.normal(size=(copies.size, 32))
    planted = np.isin(np.arange(120), np.r_[copies, copies + 1])
    data = ((x + offset).astype(np.float32), blobs.labels, blobs.class_embeddings + offset)
    default = scan_embeddings(*data[:2], class_embeddings=data[2], n_epochs=2).issues
    return data, planted, default


@pytest.mark.parametrize("method", ["sei_paper", "aum", "entropy_integral", "zero_shot"])
def test_data_issues_do_not_depend_on_the_detection_method(shared_direction, method):
    (x, labels, class_embeddings), planted, default = shared_direction
    issues = scan_embeddings(x, labels, class_embeddings=class_embeddings, method=method,
                             n_epochs=2).issues
    assert (default["is_near_duplicate"].to_numpy() == planted).all()
    assert (issues["is_near_duplicate"].to_numpy() == planted).all()
    columns = ["duplicate_group", "is_duplicate", "is_outlier", "outlier_score"]
    pd.testing.assert_frame_equal(issues[columns], default[columns])


def test_issue_neighbors_are_the_default_detectors(shared_direction):
    (x, labels, _), _, _ = shared_direction
    groups = np.arange(labels.size) // 3
    detector = LabelIssueDetector(n_epochs=1).fit(x, labels, groups=groups)
    search = search_duplicate_neighbors(x, groups=groups)
    np.testing.assert_array_equal(search.neighbor_ids, detector.neighbor_ids_)
    np.testing.assert_allclose(search.neighbor_sims, detector.neighbor_sims_, atol=1e-6)


def test_cli_scan_prints_the_other_issues(planted_manifest, tmp_path, capsys):
    out = tmp_path / "cli-scan"
    assert main(["scan", str(planted_manifest), "--model", "clipsei-tiny", "--pretrained",
                 "none", "--n-epochs", "2", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "other issues: " in printed and "exact duplicate 2" in printed


def test_a_scan_finds_a_foreign_group_its_neighbour_lists_hide():
    """Twelve rows from elsewhere (more than k = 10) list each other as neighbours; the
    scan's outlier columns still find them, through the class centroids."""
    rng = np.random.default_rng(2)
    centres = 3 * rng.normal(size=(2, 16))
    labels = np.arange(132) % 2
    x = centres[labels] + 0.7 * rng.normal(size=(132, 16))
    x[120:] = 5 * rng.normal(size=16) + 0.3 * rng.normal(size=(12, 16))
    issues = scan_embeddings(x, labels, n_epochs=2).issues
    assert issues.loc[120:, "is_outlier"].all() and issues.loc[:119, "is_outlier"].sum() <= 1
    assert issues.loc[120:, "outlier_score"].max() < issues.loc[:119, "outlier_score"].median()
