"""clipsei scan / relabel / demo, in-process through ``main([...])``."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from clipsei.cli import main

TINY = ["--model", "clipsei-tiny", "--pretrained", "none", "--n-epochs", "10"]


@pytest.fixture(autouse=True)
def _quiet_random_weights(recwarn):
    """The tiny model's RANDOM-weights warning is expected here."""


def test_scan_then_relabel(tmp_path, write_images, capsys):
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scored 10 of 10 images" in printed and "report.html" in printed
    assert {"issues.csv", "summary.json", "report.html"} <= {p.name for p in out.iterdir()}
    assert main(["relabel", str(out), "--accept-above", "0.5", "--out",
                 str(tmp_path / "fixed.csv")]) == 0
    assert "rows in" in capsys.readouterr().out
    fixed = pd.read_csv(tmp_path / "fixed.csv")
    assert len(fixed) == 10 and set(fixed["label"]) <= {"cat", "dog"}


def test_demo_finds_planted_errors(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "features: the images' own pixels" in printed and "precision" in printed
    found = int(re.search(r"; (\d+) of them are planted errors", printed).group(1))
    assert found >= 90  # of 180 planted errors
    assert (tmp_path / "demo" / "report.html").is_file()
    assert (tmp_path / "demo" / "truth.csv").is_file()


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"clipsei {command}: error: ")
    return err[0]


def test_scan_bad_path(tmp_path, capsys):
    assert main(["scan", str(tmp_path / "missing"), *TINY, "--out", str(tmp_path / "o")]) == 2
    assert "not found" in _one_line_error(capsys, "scan")


def test_scan_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["scan", str(tmp_path / "empty"), *TINY, "--out", str(tmp_path / "o")]) == 2
    assert "empty" in _one_line_error(capsys, "scan")


def test_scan_manifest_naming_missing_files(tmp_path, write_images, capsys):
    write_images(tmp_path / "images")
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nimages/cat/img00.jpg,cat\nimages/dog/gone.png,dog\n")
    assert main(["scan", str(manifest), *TINY, "--out", str(tmp_path / "o")]) == 2
    assert "gone.png" in _one_line_error(capsys, "scan")


def test_scan_single_class_folder(tmp_path, write_images, capsys):
    write_images(tmp_path / "images", classes=("cat",))
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(tmp_path / "o")]) == 2
    assert "at least 2 classes" in _one_line_error(capsys, "scan")


def test_relabel_and_demo_errors(tmp_path, capsys):
    assert main(["relabel", str(tmp_path), "--accept-above", "0.9"]) == 2
    assert "no saved scan" in _one_line_error(capsys, "relabel")
    assert main(["relabel", str(tmp_path), "--accept-above", "7"]) == 2
    assert "accept_above must be in [0, 1]" in _one_line_error(capsys, "relabel")
    (tmp_path / "images").mkdir()
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "not from clipsei demo" in _one_line_error(capsys, "demo")
