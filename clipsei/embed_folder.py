"""``clipsei embed``: embed a folder or manifest of images and write the arrays to a folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ._front import check_outputs, load_images, load_model
from ._paths import check_output_dir, mark_output_dir, mark_output_for_cache


def embed_to_folder(source, *, manifest=None, model="ViT-B-32",
                    pretrained="laion2b_s34b_b79k", device="auto", cache_dir=None,
                    out="clipsei_embeddings", batch_size=64, num_workers=None,
                    progress=True, intensity="none", engine="local",
                    ray_address=None, decode="cpu") -> dict:
    """Embed the images of ``source`` and write them to folder ``out``; return the counts.

    Writes embeddings.npy (M, D) float32, labels.npy (M,) int64, samples.csv (index, path,
    label, class_name[, group][, split]), class_names.json, failures.csv (index, path, reason) and
    embed.json. ``out`` and ``cache_dir`` are checked before any work. ``engine="ray"``
    embeds on a Ray cluster (see :func:`clipsei.images.embed.embed_images`).
    """
    from .images.embed import embed_images

    check_outputs(out, cache_dir)
    table = load_images(source, manifest=manifest)
    clip = load_model(model, pretrained, device=device)
    mark_output_for_cache(out, cache_dir, kind="embed")
    result = embed_images(table, clip, cache_dir=cache_dir, batch_size=batch_size,
                          num_workers=num_workers, progress=progress, intensity=intensity,
                          engine=engine, ray_address=ray_address, decode=decode)
    out = mark_output_dir(check_output_dir(out, option="out"), kind="embed")
    np.save(out / "embeddings.npy", result.embeddings)
    np.save(out / "labels.npy", result.labels)
    samples = pd.DataFrame({"index": result.indices,
                            "path": [table.describe(i) for i in result.indices],
                            "label": result.labels,
                            "class_name": [table.class_names[k] for k in result.labels]})
    for column, values in (("group", table.groups), ("split", table.splits)):
        if values is not None:  # kept: a manifest's patients and splits
            samples[column] = np.asarray(values)[result.indices]
    samples.to_csv(out / "samples.csv", index=False)
    result.failures.to_csv(out / "failures.csv", index=False)
    (out / "class_names.json").write_text(json.dumps(table.class_names, indent=1))
    written = {"model": clip.name, "pretrained": clip.pretrained, "weights_id": clip.weights_id,
               "embed_dim": clip.embed_dim, "n_images": len(table),
               "n_embedded": int(result.indices.size), "n_failed": len(result.failures),
               "intensity": intensity}
    (out / "embed.json").write_text(json.dumps(written, indent=1))
    return {**written, "n_cached": result.n_cached, "n_encoded": result.n_encoded,
            "shape": result.embeddings.shape, "out": str(out)}
