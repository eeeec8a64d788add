"""Shared by the front door (:mod:`clipsei.pipeline`, :mod:`clipsei.embed_folder`,
:mod:`clipsei.relabeling`, :mod:`clipsei.captions_pipeline`): loading images and models,
checking output folders, reading a saved issues table."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ._paths import check_output_dir

# the front door's one logger name, as it was before these helpers left clipsei.pipeline
logger = logging.getLogger("clipsei.pipeline")

RANDOM_WEIGHTS_WARNING = ("the CLIP model has RANDOM weights (pretrained 'none'): its embeddings "
                          "carry no learned features, so these flags are not findings; scan "
                          "again with pretrained weights")


def load_images(source, *, labels=None, manifest=None):
    """The :class:`clipsei.ImageTable` of ``source`` (see :func:`clipsei.scan`); reads no pixels."""
    from .images.data import load_image_table

    return load_image_table(source, labels=labels, manifest=manifest)


def load_model(model="ViT-B-32", pretrained="laion2b_s34b_b79k", *, device="auto"):
    """Load an open_clip model (see :func:`clipsei.scan`); weights that cannot be loaded raise a
    ``ValueError`` with one line saying why, instead of open_clip's own error."""
    from .images.embed import load_clip_model

    try:
        return load_clip_model(model, pretrained, device=device)
    except RuntimeError as err:
        raise ValueError(str(err)) from err


def check_outputs(out, cache_dir) -> None:
    """Fail on an unusable ``out`` or ``cache_dir`` before any work is done."""
    if out is not None:
        check_output_dir(out, option="out")
    if cache_dir is not None:
        check_output_dir(cache_dir, option="cache_dir", require_ours=False)


def is_random_weights(clip) -> bool:
    return (str(clip.weights_id).startswith("random:")
            or str(clip.pretrained).lower() == "none")


def read_issues(directory: Path) -> pd.DataFrame:
    """The issues table saved in ``directory``: issues.parquet where pyarrow reads it, else
    issues.csv. Paths, splits and class names stay text in both ("NA", "None" or "null" is
    a class name, not a missing value); only an empty CSV cell is missing."""
    if (directory / "issues.parquet").is_file():
        try:
            return pd.read_parquet(directory / "issues.parquet")  # typed: text stays text
        except ImportError:
            logger.info("pyarrow not installed; reading issues.csv")
    path = directory / "issues.csv"
    text = {column: str for column in _text_columns(pd.read_csv(path, nrows=0).columns)}
    return pd.read_csv(path, dtype=text, keep_default_na=False, na_values=[""])


def _text_columns(columns) -> list:
    return [c for c in columns if c in ("path", "split") or str(c).endswith("_class")]

