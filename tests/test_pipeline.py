"""scan / scan_embeddings / ScanResult / relabel, end to end with the real engine."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from clipsei.pipeline import ScanResult, relabel, scan, scan_embeddings

FAST = {"n_epochs": 10}


@pytest.fixture(scope="module")
def blobs():
    from clipsei.evaluation.synthetic import make_noisy_blobs

    return make_noisy_blobs(200, n_classes=4, n_features=32, noise_rate=0.1, random_state=0)


@pytest.fixture(scope="module")
def blob_scan(blobs, tmp_path_factory):
    """A scan of the planted-flip blobs, with fake file paths, saved once for the module."""
    tmp_path = tmp_path_factory.mktemp("blob_scan")
    paths = [f"/data/{'a' if i % 2 else 'b'}/img_{i:03d}.png" for i in range(len(blobs.labels))]
    result = scan_embeddings(blobs.embeddings, blobs.labels, paths=paths,
                             class_names=["w", "x", "y", "z"], random_state=0, **FAST)
    return result, result.save(tmp_path / "scan")


@pytest.fixture
def tiny_folder(tmp_path, write_images):
    write_images(tmp_path / "images", n_per_class=6, classes=("cat", "dog", "eel"))
    (tmp_path / "images" / "dog" / "broken.png").write_bytes(b"not an image")
    return tmp_path / "images"


def test_scan_embeddings_finds_planted_flips(blob_scan, blobs):
    result, _ = blob_scan
    issues = result.issues
    n = len(blobs.labels)
    assert len(issues) == n and issues["is_label_issue"].dtype == bool
    assert issues["label_score"].between(0, 1).all()
    top = issues.nsmallest(int(blobs.is_flipped.sum()), "label_score").index
    assert blobs.is_flipped[top].mean() >= 0.8
    assert (issues["given_class"] == np.array(["w", "x", "y", "z"])[blobs.labels]).all()
    assert result.entropy_history.shape[1] == n and result.neighbor_ids.shape[0] == n
    assert result.summary["n_flagged"] == int(issues["is_label_issue"].sum())
    assert np.asarray(result.summary["confusion"]["counts"]).sum() == n


def test_save_and_load_round_trip(blob_scan):
    result, directory = blob_scan
    for name in ("issues.csv", "issues.parquet", "summary.json", "failures.csv", "report.html",
                 "entropy_history.npy", "agreement_history.npy", "neighbor_ids.npy",
                 "neighbor_sims.npy"):
        assert (directory / name).is_file(), name
    summary = json.loads((directory / "summary.json").read_text())
    assert {"cutoff", "per_class", "confusion", "settings", "versions", "timings_s"} <= set(summary)
    loaded = ScanResult.load(directory)
    pd.testing.assert_frame_equal(loaded.issues, result.issues, check_dtype=False)
    np.testing.assert_array_equal(loaded.entropy_history, result.entropy_history)
    np.testing.assert_array_equal(loaded.neighbor_ids, result.neighbor_ids)
    assert loaded.issues.attrs["cutoff"] is None  # the default cuts each class on its own
    assert loaded.issues.attrs["class_cutoffs"] == pytest.approx(
        result.issues.attrs["class_cutoffs"])
    assert summary["class_cutoffs"] == pytest.approx(result.issues.attrs["class_cutoffs"])
    assert loaded.class_names == ["w", "x", "y", "z"]


def test_result_plots(blob_scan):
    import matplotlib.pyplot as plt

    result, _ = blob_scan
    for figure in (result.plot_trajectories([0, 1]), result.plot_label_score_histogram(),
                   result.plot_class_error_rates()):
        assert figure.axes
    plt.close("all")


def test_scan_folder_with_tiny_clip(tiny_folder, tiny_clip, tmp_path):
    result = scan(tiny_folder, model=tiny_clip, prompts="generic", out=tmp_path / "out",
                  cache_dir=tmp_path / "cache", progress=False, **FAST)
    assert len(result.issues) == 18 and result.failures["path"].str.endswith("broken.png").all()
    assert result.summary["n_images"] == 19 and result.summary["n_failed"] == 1
    assert result.summary["settings"]["model"] == "clipsei-tiny"
    assert result.summary["settings"]["detector"]["device"] == "cpu"  # the model's device
    assert {"load_images", "embed", "encode_prompts", "detect"} <= set(result.summary["timings_s"])
    assert set(result.issues["given_class"]) == {"cat", "dog", "eel"}
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Unreadable files (1)" in page and "broken.png" in page  # listed, not only counted


def test_scan_from_array_keeps_pixels_for_thumbnails(tiny_clip, rng):
    images = rng.integers(0, 255, (12, 16, 16), dtype=np.uint8)
    result = scan(images, labels=np.arange(12) % 2, model=tiny_clip, progress=False, **FAST)
    assert "path" not in result.issues and result.images[3].shape == (16, 16)


def test_scan_errors(tmp_path, write_images, tiny_clip):
    with pytest.raises(FileNotFoundError, match="source not found"):
        scan(tmp_path / "nope", model=tiny_clip)
    write_images(tmp_path / "one", classes=("cat",))
    with pytest.raises(ValueError, match="at least 2 classes"):
        scan(tmp_path / "one", model=tiny_clip)
    (tmp_path / "one.csv").write_text("path,label\none/cat/img00.jpg,cat\none/cat/img01.jpg,cat\n")
    with pytest.raises(ValueError, match="at least 2 classes"):
        scan(tmp_path / "one.csv", model=tiny_clip)
    with pytest.raises(ValueError, match="paths must have one entry per label"):
        scan_embeddings(np.eye(3), [0, 1, 0], paths=["a"])


def test_relabel(blob_scan, tmp_path):
    result, directory = blob_scan
    issues = result.issues
    manifest = relabel(directory, accept_above=0.0)
    moved = issues["is_label_issue"] & (issues["suggested_label"] != issues["given_label"])
    assert (manifest["action"] == "relabelled").sum() == moved.sum()
    assert (manifest.loc[moved.to_numpy(), "label"] == issues.loc[moved, "suggested_class"]).all()
    assert (directory / "corrected_manifest.csv").is_file()
    strict = relabel(directory, accept_above=1.0, drop_flagged=True, out=tmp_path / "m.csv")
    assert len(strict) == len(issues) - int(issues["is_label_issue"].sum()) + int(
        (moved & (issues["suggested_confidence"] >= 1.0)).sum())
    assert list(pd.read_csv(tmp_path / "m.csv").columns) == ["path", "label", "given_label",
                                                              "action"]


def test_relabel_refuses_a_cut_or_older_issues_table(blob_scan, tmp_path):
    import shutil

    result, directory = blob_scan
    copy = shutil.copytree(directory, tmp_path / "scan",
                           ignore=shutil.ignore_patterns("*_manifest.csv"))
    (copy / "issues.parquet").unlink(missing_ok=True)
    result.issues.head(10).to_csv(copy / "issues.csv", index=False)  # a cut-short write
    with pytest.raises(ValueError, match=f"in {copy} has 10 rows but the scan scored "
                                         f"{len(result.issues)} images .* incomplete"):
        relabel(copy, accept_above=0.5)
    result.issues.drop(columns="suggested_label").to_csv(copy / "issues.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks columns \['suggested_label'\]"):
        relabel(copy, accept_above=0.5)
    assert not (copy / "corrected_manifest.csv").exists()
    data_issue_columns = [c for c in result.issues if "duplicate" in c or "outlier" in c]
    result.issues.drop(columns=data_issue_columns).to_csv(copy / "issues.csv", index=False)
    with pytest.raises(ValueError, match="no duplicate or outlier columns .* use --drop-flagged"):
        relabel(copy, accept_above=0.5, clean=True)
    assert not (copy / "clean_manifest.csv").exists()
    assert len(relabel(copy, accept_above=0.5)) == len(result.issues)  # the rest still works


def test_relabel_errors(tmp_path, blobs):
    with pytest.raises(ValueError, match=r"accept_above must be in \[0, 1\]; got 2"):
        relabel(tmp_path, accept_above=2)
    with pytest.raises(FileNotFoundError, match="no saved scan"):
        relabel(tmp_path, accept_above=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan_embeddings(blobs.embeddings, blobs.labels, out=tmp_path / "e", **FAST)
    with pytest.raises(ValueError, match="has no image paths"):
        relabel(tmp_path / "e", accept_above=0.5)
    with pytest.raises(FileNotFoundError, match="no saved scan"):
        ScanResult.load(tmp_path)


def test_plot_sei_histogram_is_a_deprecated_alias(blob_scan):
    import matplotlib.pyplot as plt

    result, _ = blob_scan
    with pytest.warns(DeprecationWarning, match="plot_label_score_histogram"):
        assert result.plot_sei_histogram().axes
    plt.close("all")


def test_summary_names_each_quantity_once(blob_scan):
    result, directory = blob_scan
    summary = json.loads((directory / "summary.json").read_text())
    assert {"estimated_error_rate", "flagged_share_per_class", "estimated_errors_per_class",
            "warnings"} <= set(summary)
    assert "estimated_noise_rate" not in summary and "noise_rate_per_class" not in summary
    counts = np.bincount(result.issues["given_label"], minlength=4)
    flagged = np.bincount(result.issues["given_label"][result.issues["is_label_issue"]],
                          minlength=4)
    assert summary["flagged_share_per_class"] == pytest.approx(flagged / counts)
    assert [row["flagged_share"] for row in summary["per_class"]] == pytest.approx(
        flagged / counts)
    assert summary["warnings"] == []  # real class signal, no random weights


def test_random_weights_scan_warns_in_summary_and_report(tiny_folder, tiny_clip, tmp_path):
    """Issue 13.4: a scan with random CLIP weights says so in summary.json and the report."""
    scan(tiny_folder, model=tiny_clip, out=tmp_path / "out", progress=False, **FAST)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert any("RANDOM weights" in text for text in summary["warnings"])
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'class="banner"' in page and page.index("RANDOM weights") < page.index("<header>")


def test_scan_checks_out_before_any_work(tmp_path, tiny_folder):
    """Issue 13.2: an unusable out fails first (no model named 'no-such-model' is looked up)."""
    (tmp_path / "file").write_text("mine")
    for out, match in ((tmp_path / "file", "is an existing file"),
                       (tmp_path / "file" / "sub", "which is a file")):
        with pytest.raises(ValueError, match=f"^out .*{match}"):
            scan(tiny_folder, model="no-such-model", out=out)
        with pytest.raises(ValueError, match=f"^cache_dir .*{match}"):
            scan(tiny_folder, model="no-such-model", cache_dir=out)
    with pytest.raises(ValueError, match="^out .*is an existing file"):
        scan_embeddings(np.eye(3), [0, 1, 0], out=tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"


def test_save_refuses_a_foreign_folder(blob_scan, tmp_path):
    result, _ = blob_scan
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "issues.csv").write_text("my own table")
    with pytest.raises(ValueError, match="clipsei did not create"):
        result.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "issues.csv").read_text() == "my own table"
    assert result.save(tmp_path / "new") == tmp_path / "new"
    assert result.save(tmp_path / "new") == tmp_path / "new"  # its own folder: replaced


def test_manifest_parameter_and_deprecated_labels_path(tiny_folder, tiny_clip, tmp_path):
    rows = [p.relative_to(tiny_folder) for p in sorted(tiny_folder.rglob("img*"))]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{p.parent}\n" for p in rows))
    result = scan(tiny_folder, manifest=manifest, model=tiny_clip, progress=False, **FAST)
    assert len(result.issues) == len(rows)
    with pytest.warns(DeprecationWarning, match="use manifest="):
        old = scan(tiny_folder, labels=str(manifest), model=tiny_clip, progress=False, **FAST)
    pd.testing.assert_frame_equal(old.issues, result.issues)


def test_relabel_reports_dropped_rows(blob_scan, tmp_path):
    result, directory = blob_scan
    manifest = relabel(directory, accept_above=1.0, drop_flagged=True, out=tmp_path / "m.csv")
    assert manifest.attrs["n_dropped"] == len(result.issues) - len(manifest) > 0


def test_unreadable_images_that_leave_one_class_name_a_file(tmp_path, write_images, tiny_clip):
    write_images(tmp_path / "images", n_per_class=3, classes=("cat",))
    (tmp_path / "images" / "dog").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "images" / "dog" / name).write_bytes(b"")
    with pytest.raises(ValueError, match=r"2 of the 5 images in .* could not be read \(e.g. "
                                         r".*dog.a.png: empty file.*all of class 'cat'"):
        scan(tmp_path / "images", model=tiny_clip, progress=False)
    for name in ("c.png", "d.png", "e.png"):
        (tmp_path / "images" / "cat" / name).write_bytes(b"")
    for path in (tmp_path / "images" / "cat").glob("img*"):
        path.unlink()
    with pytest.raises(ValueError, match=r"none of the 5 images .* \(e.g. .*cat.c.png: empty"):
        scan(tmp_path / "images", model=tiny_clip, progress=False)


def test_scan_embeddings_needs_a_name_per_label(blobs):
    with pytest.raises(ValueError, match="class_names must name every label: labels go up to 3, "
                                         "but 2 names were given"):
        scan_embeddings(blobs.embeddings, blobs.labels, class_names=["w", "x"])


def test_relabel_keeps_split_and_group_and_warns_on_random_weights(tmp_path, write_images,
                                                                   tiny_clip):
    paths = write_images(tmp_path / "images", n_per_class=4, classes=("cat", "dog"))
    manifest = tmp_path / "labels.csv"
    pd.DataFrame({"path": paths, "label": ["cat"] * 4 + ["dog"] * 4,
                  "group": [f"p{i // 2}" for i in range(8)],
                  "split": ["train", "test"] * 4}).to_csv(manifest, index=False)
    scan(manifest, model=tiny_clip, out=tmp_path / "out", progress=False, **FAST)
    with pytest.warns(UserWarning, match="used a CLIP model with RANDOM weights"):
        fixed = relabel(tmp_path / "out", accept_above=0.0)
    written = pd.read_csv(tmp_path / "out" / "corrected_manifest.csv")
    assert list(written.columns) == ["path", "label", "group", "split", "given_label", "action"]
    assert written["split"].tolist() == ["train", "test"] * 4 == fixed["split"].tolist()
    assert written["group"].tolist() == [f"p{i // 2}" for i in range(8)]


def test_audit_sheet_goes_into_a_new_folder(blob_scan, tmp_path):
    result, _ = blob_scan
    path = result.write_audit_sheet(tmp_path / "review" / "round1", 20)
    assert path == tmp_path / "review" / "round1" / "audit.csv"
    assert len(pd.read_csv(path)) == 20


def test_audit_sheet_size_is_any_positive_integer(blob_scan, tmp_path):
    result, _ = blob_scan
    # above the images, every one is listed; n=0 said "n must be in [1, N]", which n > N
    # contradicted
    assert len(pd.read_csv(result.write_audit_sheet(tmp_path, 10**6))) == len(result.issues)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"^n must be a positive integer \(all \d+ images"):
            result.write_audit_sheet(tmp_path / "more", bad)


def test_audit_sheet_given_a_csv_name_says_out_is_a_folder(blob_scan, tmp_path):
    result, _ = blob_scan
    with pytest.raises(ValueError, match="out is the folder the sheet goes into .* got a file "
                                         "name .*sheet.csv"):
        result.write_audit_sheet(tmp_path / "sheet.csv", 20)
    assert not (tmp_path / "sheet.csv").exists()  # not a folder named sheet.csv


def test_file_names_that_are_not_utf8_are_skipped_and_reported(tmp_path, write_images,
                                                               tiny_clip):
    import os

    root = tmp_path / "images"
    write_images(root, n_per_class=4, classes=("cat", "dog"))
    latin1 = os.fsencode(root) + b"/R\xf6ntgen"  # names written by a latin-1 system
    try:
        os.mkdir(latin1)
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    image = (root / "dog" / "img02.png").read_bytes()
    for name in (latin1 + b"/a.png", latin1 + b"/b.png", os.fsencode(root) + b"/dog/\xe9t\xe9.png"):
        with open(name, "wb") as handle:
            handle.write(image)
    with pytest.warns(UserWarning, match=r"classes \[0\] have no samples"):  # R\xf6ntgen's
        result = scan(root, model=tiny_clip, out=tmp_path / "out", progress=False, **FAST)
    assert result.class_names == ["R\\xf6ntgen", "cat", "dog"]
    assert len(result.issues) == 8 and result.summary["n_failed"] == 3
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert failures["path"].str.endswith("/dog/\\xe9t\\xe9.png").any()
    assert (failures["reason"] == "file name is not valid UTF-8; rename the file").all()
