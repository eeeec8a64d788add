"""open_clip loading (tags, files, random weights) and image embedding with the tiny model."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from clipsei.images.cache import from_stored, to_stored
from clipsei.images.data import load_image_table
from clipsei.images.embed import ClipModel, embed_images, encode_texts, load_clip_model


def test_tiny_model_is_a_real_open_clip_model(tiny_clip):
    assert "clipsei-tiny" in open_clip.list_models()
    assert isinstance(tiny_clip, ClipModel) and tiny_clip.embed_dim == 16
    n_params = sum(p.numel() for p in tiny_clip.model.parameters())
    assert 1_000_000 < n_params < 2_000_000
    assert tiny_clip.weights_id.startswith("random:") and tiny_clip.device.type == "cpu"
    assert tiny_clip.preprocess_cfg["size"] == (32, 32)


def test_random_weights_are_the_same_on_every_load(tiny_clip):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        again = load_clip_model("clipsei-tiny", "none", device="cpu")
    assert again.weights_id == tiny_clip.weights_id


def test_embed_folder_with_failures(image_folder, tiny_clip):
    (image_folder / "cat" / "zero.png").write_bytes(b"")
    (image_folder / "dog" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    good = (image_folder / "cat" / "img00.jpg").read_bytes()
    (image_folder / "dog" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    table = load_image_table(image_folder)
    result = embed_images(table, tiny_clip, batch_size=4, num_workers=0, progress=False)
    assert len(table) == 11 and result.embeddings.shape == (8, 16)
    assert result.embeddings.dtype == np.float32 and np.isfinite(result.embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, rtol=1e-5)
    names = result.failures["path"].str.rsplit("/", n=1).str[1]
    failed = dict(zip(names, result.failures["reason"]))
    assert failed.keys() == {"zero.png", "corrupt.jpg", "truncated.jpg"}
    assert "empty file" in failed["zero.png"] and "truncated" in failed["truncated.jpg"]
    assert set(result.indices) | set(result.failures["index"]) == set(range(11))
    assert result.labels.tolist() == table.labels[result.indices].tolist()
    assert result.n_encoded == 8 and result.n_cached == 0


def test_workers_give_the_same_embeddings(image_folder, tiny_clip):
    serial = embed_images(image_folder, tiny_clip, batch_size=3, num_workers=0, progress=False)
    parallel = embed_images(image_folder, tiny_clip, batch_size=3, num_workers=2, progress=False)
    np.testing.assert_allclose(parallel.embeddings, serial.embeddings, atol=1e-6)
    assert parallel.indices.tolist() == serial.indices.tolist()


def test_embed_arrays_matches_files(tmp_path, tiny_clip, rng):
    from PIL import Image

    images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    paths = []
    for i, pixels in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    labels = [0, 1, 0, 1]
    from_arrays = embed_images(load_image_table(images, labels=labels), tiny_clip, progress=False)
    from_files = embed_images(load_image_table(paths, labels=labels), tiny_clip, progress=False)
    np.testing.assert_allclose(from_arrays.embeddings, from_files.embeddings, atol=1e-6)
    assert from_arrays.failures.empty


def test_embeddings_are_open_clips_own_preprocess_and_encoder(image_folder, tiny_clip):
    """Workers ship resized uint8 pixels and ToTensor/Normalize run beside the model; the
    result must be what open_clip's whole preprocess followed by encode_image gives."""
    from clipsei.images.data import load_image

    table = load_image_table(image_folder)
    result = embed_images(table, tiny_clip, batch_size=3, num_workers=0, progress=False,
                          jpeg_draft=False)
    with torch.inference_mode():
        batch = torch.stack([tiny_clip.preprocess(load_image(p)) for p in table.paths])
        expected = torch.nn.functional.normalize(tiny_clip.model.encode_image(batch), dim=-1)
    stored = from_stored(to_stored(expected.numpy()[result.indices]))  # rows go through float16
    np.testing.assert_allclose(result.embeddings, stored, atol=1e-3)  # one float16 step at most


def test_large_jpegs_decode_in_draft_mode_and_the_cache_keeps_both_apart(tmp_path, tiny_clip):
    from PIL import Image

    from clipsei.images.decode import split_preprocess

    assert split_preprocess(tiny_clip.preprocess).draft_size == (32, 32)
    rng = np.random.default_rng(0)
    for i in range(4):  # 4x the tiny model's 32-px input: decoded at 1/4 scale
        pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        (tmp_path / "images" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).resize((128, 128), Image.BICUBIC).save(
            tmp_path / "images" / f"c{i % 2}" / f"{i}.jpg", quality=95)
    cache = tmp_path / "cache"
    draft = embed_images(tmp_path / "images", tiny_clip, cache_dir=cache, progress=False)
    full = embed_images(tmp_path / "images", tiny_clip, cache_dir=cache, progress=False,
                        jpeg_draft=False)
    assert draft.n_encoded == 4 and full.n_encoded == 4  # not served from the other's cache
    assert not np.array_equal(draft.embeddings, full.embeddings)
    cosine = np.sum(draft.embeddings * full.embeddings, axis=1)
    assert cosine.min() > 0.95, cosine
    again = embed_images(tmp_path / "images", tiny_clip, cache_dir=cache, progress=False)
    assert again.n_cached == 4 and np.array_equal(again.embeddings, draft.embeddings)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_round_trip(tmp_path, tiny_clip, image_folder, suffix):
    state = {k: v.clone() for k, v in tiny_clip.model.state_dict().items()}
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = load_clip_model("clipsei-tiny", str(path), device="cpu")
    assert loaded.weights_id.startswith("sha256:") and len(loaded.weights_id) == 7 + 64
    table = load_image_table(image_folder)
    expected = embed_images(table, tiny_clip, progress=False).embeddings
    np.testing.assert_array_equal(embed_images(table, loaded, progress=False).embeddings, expected)


def test_encode_texts(tiny_clip):
    texts = encode_texts(["a photo of a cat.", "a photo of a dog.", "a photo of a cat."], tiny_clip)
    assert texts.shape == (3, 16) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(texts[0], texts[2])
    assert not np.allclose(texts[0], texts[1])


def test_model_errors(tmp_path, tiny_clip):
    with pytest.raises(ValueError, match=r"unknown model name 'ViT-B-23'.*ViT-B-32"):
        load_clip_model("ViT-B-23", "none")
    with pytest.raises(ValueError, match=r"one of clipsei-tiny's tags \[\]; got 'laion2b'"):
        load_clip_model("clipsei-tiny", "laion2b")
    with pytest.raises(FileNotFoundError, match="checkpoint file not found: .*missing.pt"):
        load_clip_model("clipsei-tiny", str(tmp_path / "missing.pt"))
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, wrong)
    with pytest.raises(ValueError, match="does not fit model clipsei-tiny"):
        load_clip_model("clipsei-tiny", str(wrong))
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_clip_model("clipsei-tiny", "none", device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        load_clip_model("clipsei-tiny", "none", device="gpu0")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_clip_model(f"local-dir:{tmp_path / 'nope'}")
    with pytest.raises(RuntimeError, match="could not load model 'hf-hub:org/absent' with its "
                                           "weights: they are not in the local cache") as info:
        load_clip_model("hf-hub:org/absent")  # the default tag does not apply to hf-hub
    assert "laion2b" not in str(info.value)


def test_embed_errors(image_folder, tiny_clip):
    with pytest.raises(TypeError, match="model must be a ClipModel"):
        embed_images(image_folder, tiny_clip.model)
    with pytest.raises(ValueError, match="batch_size must be >= 1; got 0"):
        embed_images(image_folder, tiny_clip, batch_size=0)
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        embed_images(image_folder, tiny_clip, num_workers=-1)


def test_cli_embed_writes_outputs_and_reports_failures(image_folder, tmp_path, capsys):
    import json

    import pandas as pd

    from clipsei.cli import main

    (image_folder / "dog" / "zero.png").write_bytes(b"")
    argv = [str(image_folder), "--model", "clipsei-tiny", "--pretrained", "none",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
            "--num-workers", "0"]
    with pytest.warns(UserWarning, match="RANDOM"):
        assert main(["embed", *argv]) == 0
    printed = capsys.readouterr().out
    assert "embedded 8 of 9 images" in printed and "1 failed" in printed
    embeddings = np.load(tmp_path / "out" / "embeddings.npy")
    assert embeddings.shape == (8, 16) and embeddings.dtype == np.float32
    assert np.load(tmp_path / "out" / "labels.npy").tolist() == [0] * 4 + [1] * 4
    samples = pd.read_csv(tmp_path / "out" / "samples.csv")
    assert samples["class_name"].tolist() == ["cat"] * 4 + ["dog"] * 4
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert failures["path"].str.endswith("zero.png").tolist() == [True]
    assert json.loads((tmp_path / "out" / "class_names.json").read_text()) == ["cat", "dog"]
    with pytest.warns(UserWarning, match="RANDOM"):
        assert main(["embed", *argv]) == 0
    assert "8 from cache, 0 encoded" in capsys.readouterr().out


def test_cli_embed_errors_are_one_line(image_folder, tmp_path, capsys):
    from clipsei.cli import main

    manifest = image_folder / "m.csv"
    manifest.write_text("path,label\ncat/img00.jpg,cat\ndog/missing.jpg,dog\n")
    assert main(["embed", str(manifest), "--model", "clipsei-tiny", "--pretrained", "none",
                 "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("clipsei embed: error: manifest") and "missing.jpg" in error
    assert error.count("\n") == 1
    assert main(["embed", str(image_folder), "--model", "hf-hub:org/absent",
                 "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("clipsei embed: error: could not load model")
    assert main(["embed", str(tmp_path / "absent")]) == 2
    assert "source not found" in capsys.readouterr().err


def test_hugging_face_dataset_embeds_like_arrays(tmp_path, tiny_clip, rng):
    """A real ``datasets.Dataset`` (Image and ClassLabel features) goes through the same
    decoding and embedding as the numpy images it was built from, and caches by fingerprint."""
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = [0, 1, 1, 0, 1]
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["benign", "malignant"])})
    dataset = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(pixels) for pixels in images], "label": labels},
        features=features)
    table = load_image_table(dataset)
    assert table.class_names == ["benign", "malignant"] and table.labels.tolist() == labels
    from_dataset = embed_images(table, tiny_clip, progress=False)
    from_arrays = embed_images(load_image_table(images, labels=labels), tiny_clip,
                               progress=False)
    np.testing.assert_allclose(from_dataset.embeddings, from_arrays.embeddings, atol=1e-6)
    first, again = (embed_images(load_image_table(dataset), tiny_clip,
                                 cache_dir=tmp_path / "cache", progress=False) for _ in range(2))
    assert (first.n_cached, again.n_cached) == (0, len(labels))
    np.testing.assert_array_equal(again.embeddings, first.embeddings)


def test_the_cache_does_not_change_the_numbers(image_folder, tiny_clip, tmp_path):
    plain = embed_images(image_folder, tiny_clip, num_workers=0, progress=False)
    first = embed_images(image_folder, tiny_clip, cache_dir=tmp_path, num_workers=0,
                         progress=False)
    again = embed_images(image_folder, tiny_clip, cache_dir=tmp_path, num_workers=0,
                         progress=False)
    assert (first.n_encoded, again.n_cached) == (8, 8)
    np.testing.assert_array_equal(first.embeddings, plain.embeddings)
    np.testing.assert_array_equal(again.embeddings, plain.embeddings)


def test_intensity_window_stretches_few_grey_levels(tmp_path, tiny_clip, rng):
    from PIL import Image

    from clipsei.images.intensity import window_intensity

    levels = rng.integers(0, 3, (2, 40, 48), dtype=np.uint8)  # a medical export: grey 0-2
    dark, bright = [], []
    for i, pixels in enumerate(levels):
        dark.append(tmp_path / f"dark{i}.png")
        Image.fromarray(pixels).save(dark[-1])
        bright.append(tmp_path / f"bright{i}.png")  # the same image drawn with 0, 128, 255
        Image.fromarray(np.array([0, 128, 255], np.uint8)[pixels]).save(bright[-1])
    decoded = np.asarray(window_intensity(Image.open(dark[0]).convert("RGB")))
    assert decoded.shape == (40, 48, 3) and sorted(np.unique(decoded)) == [0, 128, 255]

    def embed(paths, **options):
        return embed_images(load_image_table(paths, labels=[0, 1]), tiny_clip, num_workers=0,
                            progress=False, **options)

    windowed = embed(dark, intensity="window", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(windowed.embeddings, embed(bright).embeddings)
    plain = embed(dark, cache_dir=tmp_path / "cache")
    assert plain.n_cached == 0 and not np.allclose(plain.embeddings, windowed.embeddings)
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 2  # a cache per intensity
    with pytest.raises(ValueError, match=r"intensity must be one of \['none', 'window'\]"):
        embed(dark, intensity="stretch")


def test_window_on_constant_sparse_and_full_range_images():
    from PIL import Image

    from clipsei.images.intensity import window_intensity

    flat = Image.new("RGB", (8, 8), (7, 7, 7))
    assert np.array_equal(np.asarray(window_intensity(flat)), np.asarray(flat))
    sparse = np.zeros((20, 20), np.uint8)
    sparse[0, :2] = 2  # 0.5% of the pixels: the 1st and 99th percentiles are both 0
    stretched = np.asarray(window_intensity(Image.fromarray(sparse).convert("RGB")))
    assert stretched[0, 0].tolist() == [255] * 3 and stretched[1:].max() == 0
    ramp = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (4, 1))).convert("RGB")
    stretched = np.asarray(window_intensity(ramp)).astype(int)
    assert stretched.min() == 0 and stretched.max() == 255
    assert np.abs(stretched - np.asarray(ramp)).max() <= 4  # 1st-99th percentile of 0-255


@pytest.mark.parametrize("content, suffix", [
    (b"not a pickle at all", ".pt"),
    (b"PK\x03\x04 a truncated zip", ".bin"),
    (b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage", ".safetensors"),
])
def test_corrupt_checkpoint_is_one_line_naming_the_file(tmp_path, content, suffix):
    bad = tmp_path / f"weights{suffix}"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot read checkpoint file .*weights{suffix}") as info:
        load_clip_model("clipsei-tiny", str(bad), device="cpu")
    assert "\n" not in str(info.value)


def test_checkpoint_of_another_shape_says_it_does_not_fit(tmp_path, tiny_clip):
    import torch

    state = dict(tiny_clip.model.state_dict())
    width = state["positional_embedding"].shape[1]
    state["positional_embedding"] = torch.zeros(16, 2 * width)  # a wider text tower's
    wide = tmp_path / "wide.pt"
    torch.save(state, wide)
    with pytest.raises(ValueError) as info:
        load_clip_model("clipsei-tiny", str(wide), device="cpu")
    assert str(info.value) == (f"checkpoint {wide} does not fit model clipsei-tiny (text "
                               "pos_embed width changed!); pass the model it was saved from "
                               "with --model")
    del state["visual.proj"]
    state["positional_embedding"] = torch.zeros(16, width)
    torch.save(state, wide)
    with pytest.raises(ValueError, match=r'does not fit .*\(Missing key\(s\) in state_dict: '
                                         r'"visual.proj"\.\)'):
        load_clip_model("clipsei-tiny", str(wide), device="cpu")


def test_offline_default_weights_fail_at_once_with_what_to_do(caplog, tmp_path):
    import logging
    import time

    caplog.set_level(logging.INFO)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="not in the local cache and HF_HUB_OFFLINE") as info:
        load_clip_model(device="cpu", cache_dir=tmp_path)  # ViT-B-32 / laion2b_s34b_b79k
    assert time.monotonic() - start < 10  # no download retries (they took ~50 s)
    message = str(info.value)
    assert "\n" not in message
    for advice in ("--pretrained /path/to/weights.bin", "hf-hub:", "--pretrained none",
                   "clipsei demo"):
        assert advice in message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_unreachable_hub_is_tried_once(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(RuntimeError, match=r"127.0.0.1:9 cannot be reached .*--pretrained none"):
        load_clip_model("ViT-B-32", "laion2b_s34b_b79k", device="cpu", cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match="not in the local cache"):
        load_clip_model("hf-hub:org/absent", device="cpu", cache_dir=tmp_path)


def test_cached_weights_need_no_network(tmp_path):
    from clipsei.images.weights import check_weights_available

    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"weights")
    check_weights_available("ViT-B-32", "laion2b_s34b_b79k", cache_dir=tmp_path)  # no raise
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        check_weights_available("ViT-B-32", "laion2b_s34b_b79k", cache_dir=tmp_path / "empty")


def test_cli_intensity_window_reaches_the_embedding(tmp_path, tiny_clip, rng):
    from PIL import Image

    from clipsei.cli import main
    from clipsei.pipeline import scan

    folder = tmp_path / "mri"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            levels = rng.integers(0, 3, (24, 24), dtype=np.uint8)
            Image.fromarray(levels).save(folder / label / f"{i}.png")
    argv = [str(folder), "--model", "clipsei-tiny", "--pretrained", "none", "--num-workers", "0"]
    with pytest.warns(UserWarning, match="RANDOM"):
        assert main(["embed", *argv, "--intensity-window", "--out", str(tmp_path / "w")]) == 0
    expected = embed_images(folder, tiny_clip, num_workers=0, progress=False, intensity="window")
    np.testing.assert_array_equal(np.load(tmp_path / "w" / "embeddings.npy"), expected.embeddings)
    result = scan(folder, model=tiny_clip, progress=False, intensity="window", n_epochs=5,
                  cache_dir=tmp_path / "cache")
    assert result.summary["settings"]["intensity"] == "window"
    metas = [meta.read_text() for meta in (tmp_path / "cache").glob("*/meta.json")]
    assert ['"intensity": "window"' in meta for meta in metas].count(True) == 1  # the images


def test_embed_to_folder_keeps_the_manifests_group_and_split(image_folder, tmp_path):
    import pandas as pd

    from clipsei.embed_folder import embed_to_folder

    manifest = image_folder / "labels.csv"
    pd.DataFrame({"path": ["cat/img00.jpg", "cat/img01.jpg", "dog/img00.jpg", "dog/img01.jpg"],
                  "label": ["cat", "cat", "dog", "dog"], "group": ["p1", "p2", "p1", "p3"],
                  "split": ["train", "test", "train", "val"]}).to_csv(manifest, index=False)
    with pytest.warns(UserWarning, match="RANDOM"):
        embed_to_folder(manifest, model="clipsei-tiny", pretrained="none", device="cpu",
                        out=tmp_path / "out", progress=False, num_workers=0)
    samples = pd.read_csv(tmp_path / "out" / "samples.csv")
    assert samples["split"].tolist() == ["train", "test", "train", "val"]
    assert samples["group"].tolist() == ["p1", "p2", "p1", "p3"]
