"""clipsei: find mislabeled images with frozen CLIP embeddings.

The public API is imported lazily (PEP 562), so ``import clipsei`` stays fast and does not
pull in torch, open_clip or faiss until a name that needs them is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    # scoring engine (numpy in, numpy/pandas out)
    "find_label_issues": "engine.detect",
    "LabelIssueDetector": "engine.detect",
    "SEIDetector": "engine.detect",
    "check_detector_options": "engine.detect",
    "SEIRecorder": "engine.dynamics",
    "compute_entropy": "engine.dynamics",
    "compute_sei_scores": "engine.dynamics",
    "compute_aum_scores": "engine.dynamics",
    "compute_forgetting_scores": "engine.dynamics",
    "find_neighbors": "engine.neighbors",
    "find_caption_issues": "engine.captions",
    "NotFittedError": "_validation",
    # images -> embeddings
    "ImageTable": "images.data",
    "load_image_table": "images.data",
    "load_clip_model": "images.embed",
    "embed_images": "images.embed",
    "list_prompt_sets": "images.prompts",
    "load_prompt_set": "images.prompts",
    "add_prompt_dir": "images.prompts",
    "encode_class_prompts": "images.prompts",
    "encode_other_prompt": "images.prompts",
    # front door
    "scan": "pipeline",
    "scan_embeddings": "pipeline",
    "ScanResult": "pipeline",
    "relabel": "relabeling",
    "scan_captions": "captions_pipeline",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    try:
        module_name = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'clipsei' has no attribute {name!r}") from None
    module = importlib.import_module(f"clipsei.{module_name}")
    return getattr(module, name)


def __dir__():
    return __all__
