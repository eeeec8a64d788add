"""scan_captions and ``clipsei scan --captions``: the text path end to end with the tiny model."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from clipsei.captions_pipeline import load_caption_manifest, scan_captions
from clipsei.cli import main

TINY = ["--model", "clipsei-tiny", "--pretrained", "none"]
CAPTIONS = ["a red cat on a sofa", "a dog in the park", "two birds on a wire",
            "a ship at sea", "a red truck", "a frog on a leaf"]


@pytest.fixture(autouse=True)
def _quiet_random_weights(recwarn):
    """The tiny model's RANDOM-weights warning is expected here."""


def _manifest(tmp_path, write_images, n_per_class=4, extra_rows=()):
    """A caption manifest over tiny images (paths relative to it); returns its path."""
    paths = write_images(tmp_path / "images", n_per_class=n_per_class, classes=("cat", "dog"))
    rows = [{"path": os.path.relpath(p, tmp_path),
             "caption": CAPTIONS[i % len(CAPTIONS)]} for i, p in enumerate(paths)]
    frame = pd.DataFrame(rows + list(extra_rows))
    frame.to_csv(tmp_path / "captions.csv", index=False)
    return tmp_path / "captions.csv"


def test_cli_scan_captions_writes_issues_summary_and_report(tmp_path, write_images, capsys):
    manifest = _manifest(tmp_path, write_images,
                         extra_rows=[{"path": "images/missing.png", "caption": "gone"}])
    out = tmp_path / "out"
    assert main(["scan", "--captions", str(manifest), *TINY, "--n-neighbors", "3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scored 8 of 9 image-caption pairs (1 unreadable" in printed
    issues = pd.read_csv(out / "issues.csv")
    assert len(issues) == 8 and issues["rank"].tolist() == list(range(1, 9))
    assert {"path", "caption", "suggested_caption", "suggested_row", "caption_score",
            "pair_similarity", "is_caption_issue"} <= set(issues.columns)
    assert issues["caption_score"].between(0, 1).all()
    captions = pd.read_csv(manifest)["caption"]
    known = issues["suggested_row"] >= 0
    assert (issues.loc[known, "suggested_caption"].to_numpy()
            == captions[issues.loc[known, "suggested_row"]].to_numpy()).all()
    assert (issues["suggested_row"] != issues["index"]).all()
    failures = pd.read_csv(out / "failures.csv")
    assert failures["path"].str.endswith("missing.png").tolist() == [True]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_pairs"] == 9 and summary["n_failed"] == 1 and summary["n_neighbors"] == 3
    assert "RANDOM" in summary["warnings"][0] and "WARNING: " in printed
    page = (out / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 8 and "a dog in the park" in page


def test_scan_captions_is_deterministic_and_uses_the_text_encoder(tmp_path, write_images,
                                                                   tiny_clip):
    manifest = _manifest(tmp_path, write_images)
    first = scan_captions(manifest, model=tiny_clip, n_neighbors=3, progress=False)
    again = scan_captions(manifest, model=tiny_clip, n_neighbors=3, progress=False)
    pd.testing.assert_frame_equal(first.issues, again.issues)
    from clipsei.images.embed import encode_texts

    texts = encode_texts(first.issues["caption"].tolist(), tiny_clip)
    assert np.isfinite(texts).all() and texts.shape == (8, tiny_clip.embed_dim)


def test_empty_caption_is_one_line_error_naming_the_row(tmp_path, write_images, capsys):
    manifest = _manifest(tmp_path, write_images,
                         extra_rows=[{"path": "images/cat/img00.jpg", "caption": " "}])
    assert main(["scan", "--captions", str(manifest), *TINY, "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert "row 8 (line 10) has an empty caption" in error and "\n" not in error
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content, match", [
    ("path,label\na.png,cat\n", "must have columns path,caption; missing \\['caption'\\]"),
    ("path,caption\n,a cat\n", "row 0 \\(line 2\\) has an empty path"),
])
def test_bad_manifest_errors(tmp_path, content, match):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(ValueError, match=match):
        load_caption_manifest(tmp_path / "m.csv")


def test_missing_manifest_and_unreadable_images(tmp_path, write_images, tiny_clip, capsys):
    with pytest.raises(FileNotFoundError, match="caption manifest not found"):
        load_caption_manifest(tmp_path / "nope.csv")
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "caption": ["x", "y", "z"]}).to_csv(
        tmp_path / "gone.csv", index=False)
    with pytest.raises(ValueError, match="only 0 of the 3 images .* could be read"):
        scan_captions(tmp_path / "gone.csv", model=tiny_clip, progress=False)


def test_captions_refuses_label_options(tmp_path, write_images, capsys):
    manifest = _manifest(tmp_path, write_images)
    assert main(["scan", "--captions", str(manifest), *TINY, "--n-epochs", "3",
                 "--out", str(tmp_path / "o")]) == 2
    assert "do not apply" in capsys.readouterr().err


def test_too_few_pairs_fail_before_the_model_loads(tmp_path, capsys):
    pd.DataFrame({"path": ["a.png", "b.png"], "caption": ["x", "y"]}).to_csv(
        tmp_path / "two.csv", index=False)  # no images: the check must come first
    assert main(["scan", "--captions", str(tmp_path / "two.csv"), *TINY,
                 "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"clipsei scan: error: caption manifest {tmp_path / 'two.csv'} has 2 "
                     "pairs; at least 3 are needed")


def test_captions_longer_than_the_context_are_reported(tmp_path, write_images, tiny_clip):
    manifest = _manifest(tmp_path, write_images)
    frame = pd.read_csv(manifest)
    frame.loc[5, "caption"] = "a dog " * 40  # far beyond any CLIP text context
    frame.to_csv(manifest, index=False)
    warnings = scan_captions(manifest, model=tiny_clip, progress=False).summary["warnings"]
    context = tiny_clip.tokenizer(["x"]).shape[1]
    assert (f"1 captions are longer than the model's {context}-token context and were cut to "
            "it (only their start is compared with the image), first in manifest row 5"
            ) in warnings


def test_relabel_of_a_caption_scan_is_one_line_error(tmp_path, write_images, capsys):
    manifest = _manifest(tmp_path, write_images)
    assert main(["scan", "--captions", str(manifest), *TINY, "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert main(["relabel", str(tmp_path / "o"), "--accept-above", "0.5"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"clipsei relabel: error: scan {tmp_path / 'o'} is a caption scan "
                     "(--captions); relabel takes a scan of labelled images")
