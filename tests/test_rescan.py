import json

import pytest

from clipsei.cli import main
from clipsei.images.rescan import find_cached_model, weights_loaded
from clipsei.pipeline import load_images, scan

TINY = ["--model", "clipsei-tiny", "--pretrained", "none", "--n-epochs", "3"]


def _scan(tmp_path, model, name):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return scan(tmp_path / "images", model=model, pretrained="none", device="cpu",
                    cache_dir=tmp_path / "cache", out=tmp_path / name, n_epochs=3,
                    progress=False)


def test_cached_rescan_does_not_load_the_model(tmp_path, write_images):
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    first = _scan(tmp_path, "clipsei-tiny", "first")
    again = _scan(tmp_path, "clipsei-tiny", "again")
    assert first.summary["settings"]["model_loaded"] is True
    assert again.summary["settings"]["model_loaded"] is False
    assert again.issues["label_score"].tolist() == first.issues["label_score"].tolist()
    assert again.summary["settings"]["weights_id"] == first.summary["settings"]["weights_id"]


def test_new_image_or_class_loads_the_model(tmp_path, write_images):
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    _scan(tmp_path, "clipsei-tiny", "first")
    write_images(tmp_path / "images", n_per_class=6, classes=("cat", "dog"), seed=1)
    assert _scan(tmp_path, "clipsei-tiny", "grown").summary["settings"]["model_loaded"]
    with pytest.warns(UserWarning, match="RANDOM weights"):
        table = load_images(tmp_path / "images")
        found = find_cached_model("clipsei-tiny", "none", cache_dir=tmp_path / "cache",
                                  table=table, class_names=["cat", "cow"])
    assert found is None  # no prompt embeddings cached for "cow"


def test_stand_in_refuses_to_encode(tmp_path, write_images):
    write_images(tmp_path / "images", n_per_class=3, classes=("cat", "dog"))
    _scan(tmp_path, "clipsei-tiny", "first")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        table = load_images(tmp_path / "images")
        model = find_cached_model("clipsei-tiny", "none", cache_dir=tmp_path / "cache",
                                  table=table, class_names=table.class_names, device="cpu")
    assert not weights_loaded(model) and model.embed_dim > 0
    with pytest.raises(RuntimeError, match="weights were not loaded"):
        model.model.encode_image(None)


def test_cli_cached_rescan(tmp_path, write_images):
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    args = ["scan", str(tmp_path / "images"), *TINY, "--cache", str(tmp_path / "cache")]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    assert main([*args, "--out", str(tmp_path / "again")]) == 0
    loaded = [json.loads((tmp_path / name / "summary.json").read_text())["settings"][
        "model_loaded"] for name in ("first", "again")]
    assert loaded == [True, False]
    first = (tmp_path / "first" / "issues.csv").read_text()
    assert (tmp_path / "again" / "issues.csv").read_text() == first
