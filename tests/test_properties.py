"""Image properties taken while decoding, and the dataset-relative flags they give."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from clipsei.images.data import load_image_table
from clipsei.images.embed import embed_images
from clipsei.images.properties import (PROPERTY_NAMES, compute_image_properties,
                                       find_property_issues, properties_frame)


def _texture(rng, size=(64, 64), grey=False, level=0.5):
    """A sharp random texture, mean grey level about ``level``."""
    h, w = size
    pixels = rng.normal(level, 0.15, (h, w, 1 if grey else 3))
    pixels = np.repeat(pixels, 3, axis=2) if grey else pixels
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def _planted_set(folder, rng, *, grey=False, level=0.5):
    """30 ordinary images + black, blurred, bright, odd-sized; returns {issue: file name}."""
    folder.mkdir(parents=True)
    for i in range(30):
        _texture(rng, grey=grey, level=level).save(folder / f"ok{i:02d}.png")
    Image.new("RGB", (64, 64)).save(folder / "black.png")
    _texture(rng, grey=grey, level=level).filter(ImageFilter.GaussianBlur(3)).save(
        folder / "blurred.png")
    _texture(rng, grey=grey, level=0.97).save(folder / "bright.png")
    _texture(rng, size=(40, 400), grey=grey, level=level).save(folder / "wide.png")
    return {"is_dark": "black.png", "is_blurry": "blurred.png", "is_bright": "bright.png",
            "is_odd_aspect": "wide.png"}


def _flags(folder, tiny_clip, **options):
    paths = sorted(str(p) for p in folder.glob("*.png"))
    table = load_image_table(paths, labels=np.arange(len(paths)) % 2)
    result = embed_images(table, tiny_clip, num_workers=0, progress=False, **options)
    names = [p.rsplit("/", 1)[1] for p in paths]
    return result, find_property_issues(result.properties).set_index(np.asarray(names))


def test_planted_image_issues_are_found_through_embed_images(tmp_path, tiny_clip):
    planted = _planted_set(tmp_path / "set", np.random.default_rng(0))
    result, flags = _flags(tmp_path / "set", tiny_clip)
    assert list(result.properties.columns) == list(PROPERTY_NAMES)
    for column, name in planted.items():
        assert flags.loc[name, column], (column, name)
    ok = flags.index.str.startswith("ok")
    assert flags[ok].to_numpy().sum() <= 2  # nothing ordinary flagged, bar a rare tail
    assert flags.loc["black.png", "is_low_information"]
    assert flags.index[flags["is_grayscale"]].tolist() == ["black.png"]  # colourless too


def test_thresholds_are_relative_to_the_dataset(tmp_path, tiny_clip):
    """A set of dark grey images (like X-rays) flags only what is darker than its own kind,
    and a grey set flags nothing as grayscale."""
    _planted_set(tmp_path / "dark", np.random.default_rng(1), grey=True, level=0.2)
    _, flags = _flags(tmp_path / "dark", tiny_clip)
    ok = flags.index.str.startswith("ok")
    assert not flags.loc[ok, "is_dark"].any() and flags.loc["black.png", "is_dark"]
    assert not flags["is_grayscale"].any()


def test_grey_image_in_a_colour_set(tmp_path):
    rng = np.random.default_rng(2)
    values = [compute_image_properties(_texture(rng)) for _ in range(20)]
    values.append(compute_image_properties(_texture(rng, grey=True)))
    flags = find_property_issues(properties_frame(values))
    assert flags["is_grayscale"].tolist() == [False] * 20 + [True]


def test_properties_come_back_from_the_cache(tmp_path, tiny_clip):
    _planted_set(tmp_path / "set", np.random.default_rng(3))
    first, _ = _flags(tmp_path / "set", tiny_clip, cache_dir=tmp_path / "cache")
    again, _ = _flags(tmp_path / "set", tiny_clip, cache_dir=tmp_path / "cache")
    assert again.n_cached == len(again.indices) and again.n_encoded == 0
    np.testing.assert_array_equal(again.properties.to_numpy(), first.properties.to_numpy())
    assert again.content_hashes == first.content_hashes and all(again.content_hashes)


def test_stored_size_not_the_jpeg_draft(tmp_path, tiny_clip):
    path = tmp_path / "big.jpg"
    _texture(np.random.default_rng(4), size=(300, 500)).save(path)
    table = load_image_table([str(path), str(path)], labels=[0, 1])
    result = embed_images(table, tiny_clip, num_workers=0, progress=False)
    assert result.properties.loc[0, ["width", "height"]].tolist() == [500, 300]


def test_errors():
    with pytest.raises(ValueError, match="missing columns"):
        find_property_issues(properties_frame(np.zeros((3, len(PROPERTY_NAMES))))[["width"]])
    with pytest.raises(ValueError, match="z_cutoff"):
        find_property_issues(properties_frame(np.zeros((3, len(PROPERTY_NAMES)))), z_cutoff=-1)


def test_cache_rows_without_properties_read_as_nan(tmp_path):
    from clipsei.images.cache import EmbeddingCache

    with EmbeddingCache(tmp_path, {"name": "m"}) as cache:  # as a cache written before
        cache.add(["k1"], ["a.png"], ["hash1"], np.ones((1, 4), np.float32))
    hashes, values = EmbeddingCache(tmp_path, {"name": "m"}).lookup_extras(["k1", "k2"], 7)
    assert hashes == ["hash1", ""] and values.shape == (2, 7) and np.isnan(values).all()
    with EmbeddingCache(tmp_path, {"name": "m"}) as cache:
        cache.add(["k3"], ["b.png"], ["hash3"], np.ones((1, 4), np.float32),
                  np.arange(7, dtype=np.float32)[None])
    hashes, values = EmbeddingCache(tmp_path, {"name": "m"}).lookup_extras(["k3"], 7)
    assert hashes == ["hash3"] and values[0].tolist() == list(range(7))
