"""notebooks/explore_flagged.ipynb runs top to bottom on a freshly saved scan."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_flagged.ipynb"


def _small_scan(directory: Path) -> None:
    """A saved scan of 200 planted-flip blobs, each with a tiny PNG whose colour is its class."""
    from PIL import Image

    from clipsei.pipeline import scan_embeddings
    from clipsei.evaluation.synthetic import make_noisy_blobs

    blobs = make_noisy_blobs(200, n_classes=4, n_features=32, noise_rate=0.1, random_state=0)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    paths = []
    for i, label in enumerate(blobs.true_labels):
        paths.append(directory.parent / "images" / f"{i:03d}.png")  # out holds only the scan
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 12), colours[label]).save(paths[-1])
    scan_embeddings(blobs.embeddings, blobs.labels, paths=paths, out=directory,
                    class_names=["red", "green", "blue", "yellow"], n_epochs=10)


def test_explore_flagged_notebook_executes(tmp_path, monkeypatch):
    _small_scan(tmp_path / "scan")
    monkeypatch.setenv("CLIPSEI_SCAN_DIR", str(tmp_path / "scan"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a cell without an id, an error in later nbformat
        notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert errors == []
    images = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in cell.outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 4  # histogram, class rates, the grid, trajectories
    sheet = pd.read_csv(tmp_path / "scan" / "audit.csv")
    assert len(sheet) == 160 and {"path", "given_class", "label",
                                  "inclusion_probability"} <= set(sheet.columns)
    manifest = pd.read_csv(tmp_path / "scan" / "corrected_manifest.csv")
    assert {"path", "label", "action"} <= set(manifest.columns)
