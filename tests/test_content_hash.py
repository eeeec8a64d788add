"""Exact duplicates are images with the same pixels, whatever the file bytes."""

import hashlib
import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from clipsei.images.content_hash import hash_image_file, hash_jpeg
from clipsei.images.data import load_image_table
from clipsei.images.embed import embed_images
from clipsei.pipeline import scan


def _pixels(seed, size=(40, 48)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture
def same_pixels_other_bytes(tmp_path):
    """Pairs with equal pixels and different bytes (PNG compression and text chunks; a JPEG
    with and without EXIF and a comment), a one-pixel change and a turned JPEG, and fillers."""
    folder = tmp_path / "images"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
    png = _pixels(0)
    png.save(folder / "a" / "png_fast.png", compress_level=1)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "re-saved")
    png.save(folder / "a" / "png_small.png", compress_level=9, pnginfo=info)
    changed = np.asarray(png).copy()
    changed[0, 0] ^= 1
    Image.fromarray(changed).save(folder / "b" / "png_one_pixel.png")
    jpeg = _pixels(1)
    jpeg.save(folder / "a" / "jpeg_plain.jpg", quality=90)
    exif = Image.Exif()
    exif[0x010F] = "camera"
    jpeg.save(folder / "b" / "jpeg_exif.jpg", quality=90, exif=exif, comment=b"copied")
    exif[0x0112] = 6  # the decoder turns this one: other pixels
    jpeg.save(folder / "b" / "jpeg_turned.jpg", quality=90, exif=exif)
    for i in range(6):
        _pixels(10 + i).save(folder / "ab"[i % 2] / f"filler{i}.png")
    return folder


def _groups(issues):
    names = issues["path"].str.rsplit("/", n=1).str[-1]
    exact = issues["is_exact_duplicate"].to_numpy()
    return {frozenset(names[exact & (issues["duplicate_group"] == group)])
            for group in np.unique(issues["duplicate_group"][exact])}


def test_scan_finds_the_same_pixels_in_other_bytes(same_pixels_other_bytes, tiny_clip):
    issues = scan(same_pixels_other_bytes, model=tiny_clip, progress=False, n_epochs=1).issues
    assert _groups(issues) == {frozenset({"png_fast.png", "png_small.png"}),
                               frozenset({"jpeg_plain.jpg", "jpeg_exif.jpg"})}


def test_content_hash_is_the_same_on_every_path(same_pixels_other_bytes, tiny_clip):
    table = load_image_table(same_pixels_other_bytes)
    embedded = embed_images(table, tiny_clip, progress=False, jpeg_draft=False)
    assert embedded.content_hashes == [hash_image_file(path) for path in table.paths]
    jpeg = (same_pixels_other_bytes / "a" / "jpeg_plain.jpg").read_bytes()
    assert hash_jpeg(jpeg) == hash_jpeg(jpeg[:2] + b"\xff\xfe\x00\x04hi" + jpeg[2:])  # COM
    assert hash_jpeg(jpeg) != hash_jpeg(jpeg[:-40] + bytes(38) + jpeg[-2:])  # other data


def test_a_cache_of_byte_hashes_is_hashed_again(same_pixels_other_bytes, tiny_clip, tmp_path):
    """Entries of a cache written when the content hash was SHA-256 of the file bytes keep
    their embeddings and get the content hash a fresh run gives."""
    table = load_image_table(same_pixels_other_bytes)
    cache = tmp_path / "cache"
    first = embed_images(table, tiny_clip, cache_dir=cache, progress=False)
    for chunk in cache.rglob("chunk-*.npz"):
        with np.load(chunk, allow_pickle=False) as data:
            arrays = dict(data)
        arrays["content_hashes"] = np.asarray(
            [hashlib.sha256(open(source, "rb").read()).hexdigest()
             for source in arrays["sources"]])
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        chunk.write_bytes(buffer.getvalue())
    again = embed_images(table, tiny_clip, cache_dir=cache, progress=False)
    assert again.n_cached == len(table) and again.n_encoded == 0
    assert again.content_hashes == first.content_hashes
    assert all(digest.startswith(("jpeg:", "rgb:")) for digest in again.content_hashes)
