"""Image tables from every source, and decoding of every PIL mode into RGB."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipsei.images.data import (
    ImageDecodeError,
    ImageTable,
    decode_image_bytes,
    load_image,
    load_image_table,
)


def test_folder_layout(image_folder):
    table = load_image_table(image_folder)
    assert isinstance(table, ImageTable)
    assert table.class_names == ["cat", "dog"]
    assert len(table) == 8 and table.labels.dtype == np.int64
    assert table.labels.tolist() == [0] * 4 + [1] * 4
    assert all(p.startswith(str(image_folder)) for p in table.paths)


def test_folder_skips_empty_class_folders_with_a_warning(image_folder):
    (image_folder / "cat" / "notes.txt").write_text("not an image")
    (image_folder / "empty").mkdir()
    (image_folder / "empty" / "readme.txt").write_text("no images here")
    with pytest.warns(UserWarning, match="class folder .*empty holds no image files; skipping"), \
            pytest.warns(UserWarning, match=r"skipped 1 files .* \(1 .txt; e.g. .*cat.notes.txt"):
        table = load_image_table(image_folder)
    assert table.class_names == ["cat", "dog"] and len(table) == 8
    assert table.labels.tolist() == [0] * 4 + [1] * 4


def test_folder_skips_output_and_hidden_folders(image_folder):
    from clipsei._paths import mark_output_dir

    out = mark_output_dir(image_folder / "scan_out", kind="scan")
    (out / "thumbs").mkdir()
    Image.new("RGB", (8, 8)).save(out / "thumbs" / "t.png")  # an output that holds images
    (image_folder / ".cache").mkdir()
    Image.new("RGB", (8, 8)).save(image_folder / ".cache" / "x.png")
    (image_folder / "cat" / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(image_folder / "cat" / ".hidden" / "y.png")
    nested = mark_output_dir(image_folder / "dog" / "run1", kind="scan")
    Image.new("RGB", (8, 8)).save(nested / "z.png")
    table = load_image_table(image_folder)
    assert table.class_names == ["cat", "dog"] and len(table) == 8


def test_symlink_loops_are_followed_once(image_folder):
    import os

    (image_folder / "cat" / "loop").symlink_to(image_folder / "cat")  # points to itself
    (image_folder / "dog" / "up").symlink_to(image_folder)  # to the root: would pull in cat
    (image_folder / "dog" / "sub").mkdir()
    (image_folder / "dog" / "sub" / "back").symlink_to(image_folder / "dog")
    Image.new("RGB", (8, 8)).save(image_folder / "dog" / "sub" / "extra.png")
    table = load_image_table(image_folder)
    assert len(table) == 9 and len(set(map(os.path.realpath, table.paths))) == 9
    assert table.labels.tolist() == [0] * 4 + [1] * 5


def test_linked_folder_outside_the_root_is_read(image_folder, tmp_path, write_images):
    write_images(tmp_path / "elsewhere", n_per_class=2, classes=("bird",))
    (image_folder / "bird").symlink_to(tmp_path / "elsewhere" / "bird")
    table = load_image_table(image_folder)
    assert table.class_names == ["bird", "cat", "dog"] and len(table) == 10
    (image_folder / "kitten").symlink_to(image_folder / "cat")  # one folder, two class names
    with pytest.warns(UserWarning, match="class folder .*kitten is the same folder as .*cat"):
        table = load_image_table(image_folder)
    assert table.class_names == ["bird", "cat", "dog"] and len(table) == 10


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_paths_relative_to_manifest(image_folder, suffix):
    rows = pd.DataFrame({"path": ["cat/img00.jpg", "dog/img01.jpg", "dog/img02.png"],
                         "label": ["cat", "dog", "dog"], "group": ["p1", "p1", "p2"]})
    manifest = image_folder / f"manifest{suffix}"
    rows.to_csv(manifest, index=False) if suffix == ".csv" else rows.to_parquet(manifest)
    table = load_image_table(manifest)
    assert table.class_names == ["cat", "dog"] and table.labels.tolist() == [0, 1, 1]
    assert table.groups.tolist() == ["p1", "p1", "p2"]
    assert table.paths[1] == str(image_folder / "dog" / "img01.jpg")


def test_folder_with_manifest(image_folder, tmp_path):
    manifest = tmp_path / "labels.csv"
    pd.DataFrame({"path": ["cat/img00.jpg", "dog/img00.jpg"], "label": [1, 0]}).to_csv(
        manifest, index=False)
    table = load_image_table(image_folder, manifest=manifest, class_names=["a", "b"])
    assert table.labels.tolist() == [1, 0] and table.class_names == ["a", "b"]
    with pytest.raises(TypeError, match="labels must be an .N,. array.*manifest="):
        load_image_table(image_folder, labels=manifest)
    with pytest.raises(TypeError, match="labels must be an .N,. array.*manifest="):
        load_image_table(image_folder, labels=str(manifest))
    with pytest.raises(ValueError, match="manifest= needs source to be a folder"):
        load_image_table(manifest, manifest=manifest)
    with pytest.raises(ValueError, match="labels= cannot be used with source"):
        load_image_table(image_folder, labels=np.zeros(8, int))


def test_path_list_and_array(image_folder, rng):
    paths = sorted(str(p) for p in image_folder.glob("*/*"))
    table = load_image_table(paths, labels=["x"] * 4 + ["y"] * 4)
    assert table.class_names == ["x", "y"] and len(table) == 8
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    table = load_image_table(images, labels=[0, 1, 2, 0, 1, 2], groups=np.arange(6))
    assert table.paths is None and table.images is images and table.class_names == ["0", "1", "2"]
    assert table.describe(3) == "<images>[3]"


def test_hf_style_dataset(rng):
    class ClassLabel:
        names = ["benign", "malignant"]

    class Dataset:  # the part of datasets.Dataset that clipsei reads
        column_names = ["image", "label"]
        features = {"image": None, "label": ClassLabel()}
        _fingerprint = "abc123"

        def __init__(self):
            self.rows = [{"image": Image.new("L", (8, 8), i * 40), "label": i % 2}
                         for i in range(4)]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, key):
            return [r["label"] for r in self.rows] if key == "label" else self.rows[key]

    table = load_image_table(Dataset())
    assert table.class_names == ["benign", "malignant"] and table.labels.tolist() == [0, 1, 0, 1]
    assert len(table.images) == 4 and table.images[2].size == (8, 8)
    assert table.images.fingerprint == "abc123"


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("make, fmt", [
    (lambda: Image.new("L", (10, 6), 128), "PNG"),
    (lambda: Image.new("1", (10, 6), 1), "PNG"),
    (lambda: Image.new("RGB", (10, 6), (255, 0, 0)).convert("P"), "PNG"),
    (lambda: Image.new("RGBA", (10, 6), (255, 0, 0, 128)), "PNG"),
    (lambda: Image.new("LA", (10, 6), (90, 0)), "PNG"),
    (lambda: Image.new("CMYK", (10, 6), (0, 255, 255, 0)), "JPEG"),
    (lambda: Image.fromarray(np.arange(60, dtype=np.uint16).reshape(6, 10) * 1000), "PNG"),
    (lambda: Image.fromarray(np.linspace(-1, 1, 60, dtype=np.float32).reshape(6, 10)), "TIFF"),
])
def test_every_mode_decodes_to_rgb(make, fmt):
    image = decode_image_bytes(_encoded(make(), fmt))
    assert image.mode == "RGB" and image.size == (10, 6)


def test_alpha_is_composited_over_white_and_16bit_is_stretched():
    transparent = decode_image_bytes(_encoded(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"))
    assert np.asarray(transparent).min() == 255
    wide = np.array([[0, 4095]], dtype=np.uint16)  # 12-bit data in a 16-bit file
    stretched = np.asarray(decode_image_bytes(_encoded(Image.fromarray(wide), "PNG")))
    assert stretched[0, 0].tolist() == [0, 0, 0] and stretched[0, 1].tolist() == [255] * 3


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = decode_image_bytes(_encoded(Image.new("RGB", (10, 6)), "JPEG", exif=exif))
    assert image.size == (6, 10)


def test_min_size_decodes_large_jpegs_at_reduced_scale():
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).resize((960, 640))
    jpeg, png = _encoded(smooth, "JPEG"), _encoded(smooth, "PNG")
    assert decode_image_bytes(jpeg).size == (960, 640)
    reduced = decode_image_bytes(jpeg, min_size=(224, 224))
    assert reduced.size == (480, 320)  # 1/2: 1/4 would leave the short side at 160 < 224
    assert decode_image_bytes(jpeg, min_size=(100, 100)).size == (240, 160)  # 6x: 1/4
    assert decode_image_bytes(png, min_size=(224, 224)).size == (960, 640)  # JPEG only
    assert decode_image_bytes(jpeg, min_size=(600, 600)).size == (960, 640)  # not 2x larger
    full = np.asarray(decode_image_bytes(jpeg).resize((480, 320), Image.BICUBIC), np.float32)
    assert np.abs(np.asarray(reduced, np.float32) - full).mean() < 2.0  # of 255


def test_decode_errors(tmp_path, monkeypatch):
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_image_bytes(b"")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image_bytes(b"certainly not a png")
    truncated = _encoded(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:200]
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image_bytes(truncated)
    monkeypatch.setattr("clipsei.images.data.MAX_PIXELS", 50)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image_bytes(_encoded(Image.new("L", (10, 6)), "PNG"))
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_source_errors(tmp_path, image_folder, rng):
    with pytest.raises(FileNotFoundError, match="source not found: .*nowhere"):
        load_image_table(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no class subfolders"):
        load_image_table(tmp_path / "empty")
    for path in (image_folder / "dog").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="at least 2 classes; found 1"), \
            pytest.warns(UserWarning, match="holds no image files"):
        load_image_table(image_folder)
    with pytest.raises(TypeError, match="source must be"):
        load_image_table(42)
    with pytest.raises(ValueError, match="labels are required"):
        load_image_table(rng.integers(0, 256, (2, 4, 4), dtype=np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        load_image_table(np.zeros((2, 4, 4)), labels=[0, 1])
    with pytest.raises(ValueError, match="shape"):
        load_image_table(np.zeros((2, 4, 4, 2), np.uint8), labels=[0, 1])
    with pytest.raises(ValueError, match="one entry per image"):
        load_image_table(np.zeros((3, 4, 4), np.uint8), labels=[0, 1])
    with pytest.raises(ValueError, match="not in class_names"):
        load_image_table(np.zeros((2, 4, 4), np.uint8), labels=["a", "b"], class_names=["a"])
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_table([tmp_path / "gone.png"], labels=[0])


def test_manifest_errors(tmp_path, image_folder):
    manifest = image_folder / "m.csv"
    manifest.write_text("file,label\ncat/img00.jpg,cat\n")
    with pytest.raises(ValueError, match=r"m.csv must have columns path,label.*missing \['path'\]"):
        load_image_table(manifest)
    manifest.write_text("path,label\ncat/img00.jpg,cat\ndog/img00.jpg,\n")
    with pytest.raises(ValueError, match=r"m.csv row 1 \(line 3\) has an empty path or label"):
        load_image_table(manifest)
    manifest.write_text("path,label\ncat/img00.jpg,cat\ndog/nope.jpg,dog\ncat/gone.png,cat\n")
    expected = r"names 2 missing file\(s\): row 1 \(line 3\): .*nope.jpg"
    with pytest.raises(ValueError, match=expected):
        load_image_table(manifest)
    manifest.write_text('path,label\n"cat/img00.jpg,cat\n')
    with pytest.raises(ValueError, match="malformed manifest"):
        load_image_table(manifest)
    other = tmp_path / "labels.txt"
    other.write_text("x")
    with pytest.raises(ValueError, match=r"must be one of \['.csv'"):
        load_image_table(other)
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        load_image_table(image_folder, manifest=tmp_path / "absent.csv")


def test_manifest_split_column(image_folder):
    manifest = image_folder / "split.csv"
    pd.DataFrame({"path": ["cat/img00.jpg", "dog/img00.jpg", "dog/img01.jpg"],
                  "label": ["cat", "dog", "dog"], "split": ["train", "test", "val"]}).to_csv(
        manifest, index=False)
    table = load_image_table(manifest)
    assert table.splits.tolist() == ["train", "test", "val"] and table.groups is None
    assert load_image_table(image_folder).splits is None
    frame = pd.read_csv(manifest)
    frame.loc[1, "split"] = None
    frame.to_csv(manifest, index=False)
    with pytest.raises(ValueError, match=r"split.csv row 1 \(line 3\) has an empty split"):
        load_image_table(manifest)


def test_manifest_labels_named_like_missing_values_are_classes(image_folder):
    manifest = image_folder / "na.csv"
    manifest.write_text("path,label\ncat/img00.jpg,NA\ncat/img01.jpg,None\ndog/img00.jpg,null\n"
                        "dog/img01.jpg,NA\n")
    table = load_image_table(manifest)
    assert table.class_names == ["NA", "None", "null"] and table.labels.tolist() == [0, 1, 2, 0]
    manifest.write_text("path,label\ncat/img00.jpg,NA\ndog/img00.jpg,  \n")
    with pytest.raises(ValueError, match=r"row 1 \(line 3\) has an empty path or label"):
        load_image_table(manifest)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_integer_labels_name_only_the_classes_present(image_folder, suffix):
    rows = pd.DataFrame({"path": ["cat/img00.jpg", "cat/img01.jpg", "dog/img00.jpg",
                                  "dog/img01.jpg"], "label": [10, 2, 2, 7]})
    manifest = image_folder / f"ints{suffix}"
    rows.to_csv(manifest, index=False) if suffix == ".csv" else rows.to_parquet(manifest)
    table = load_image_table(manifest)
    assert table.class_names == ["2", "7", "10"] and table.labels.tolist() == [2, 0, 0, 1]
    names = [str(k) for k in range(11)]
    named = load_image_table(image_folder, manifest=manifest, class_names=names)
    assert named.labels.tolist() == [10, 2, 2, 7] and len(named.class_names) == 11


def test_manifest_label_spaces_and_repeated_paths(image_folder):
    manifest = image_folder / "spaces.csv"
    manifest.write_text("path,label\ncat/img00.jpg, cat\ncat/img01.jpg,cat \ndog/img00.jpg,dog\n")
    table = load_image_table(manifest)
    assert table.class_names == ["cat", "dog"] and table.labels.tolist() == [0, 0, 1]
    manifest.write_text("path,label\ncat/img00.jpg,cat\ndog/img00.jpg,dog\n./cat/img00.jpg,dog\n")
    with pytest.warns(UserWarning, match=r"lists 1 image\(s\) more than once \(e.g. .*img00.jpg "
                                         r"on row 0 \(line 2\) and row 2 \(line 4\)\)"):
        assert len(load_image_table(manifest)) == 3


def test_folder_counts_files_that_are_not_images_by_suffix(image_folder):
    for name in ("ct1.dcm", "ct2.dcm"):
        (image_folder / "cat" / name).write_bytes(b"DICM")
    (image_folder / "dog" / "notes.txt").write_text("x")
    (image_folder / "dog" / ".DS_Store").write_bytes(b"x")  # hidden files are not counted
    (image_folder / "dog" / "._img00.jpg").write_bytes(b"x")
    (image_folder / "mri").mkdir()
    (image_folder / "mri" / "scan.nii").write_bytes(b"x")  # a class of unsupported files only
    with pytest.warns(UserWarning) as caught:
        table = load_image_table(image_folder)
    assert len(table) == 8 and table.class_names == ["cat", "dog"]
    messages = [str(w.message) for w in caught]
    assert any(re.match(r"skipped 3 files in the class folders that are not images by their "
                        r"suffix \(2 .dcm, 1 .txt; e.g. .*ct1.dcm\); clipsei reads .bmp", m)
               for m in messages), messages
    assert any(re.match(r"class folder .*mri holds no image files; skipping it \(it is not a "
                        r"class; its 1 files are not images by their suffix, e.g. scan.nii\)", m)
               for m in messages), messages


def test_manifest_true_false_and_fractional_labels_are_names(image_folder):
    manifest = image_folder / "flags.csv"
    manifest.write_text("path,label\ncat/img00.jpg,True\ncat/img01.jpg,False\ndog/img00.jpg,True\n")
    table = load_image_table(manifest)
    assert table.class_names == ["False", "True"] and table.labels.tolist() == [1, 0, 1]
    manifest.write_text("path,label\ncat/img00.jpg,0.5\ncat/img01.jpg,1\ndog/img00.jpg,1.5\n")
    assert load_image_table(manifest).class_names == ["0.5", "1.0", "1.5"]


def test_split_layout_one_level_too_high_warns(tmp_path, write_images):
    for split in ("train", "test"):
        write_images(tmp_path / "data" / split, n_per_class=2, classes=("cat", "dog"))
    with pytest.warns(UserWarning, match=r"class folders of .*data \(test, train\) hold subfolders "
                                         r"with the same names \(cat, dog\): if those are the "
                                         r"classes, scan each split's folder"):
        table = load_image_table(tmp_path / "data")
    assert table.class_names == ["test", "train"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain class layout does not warn
        load_image_table(tmp_path / "data" / "train")


def test_manifest_from_a_spreadsheet_export(image_folder):
    manifest = image_folder / "excel.csv"
    rows = "path, label\ncat/img00.jpg, Röntgen\ndog/img00.jpg, dog\n"
    manifest.write_bytes(rows.encode("latin-1"))
    with pytest.raises(ValueError, match=r"excel.csv is not UTF-8 text \(byte 0xf6 is not UTF-8\); "
                                         "save it as UTF-8 CSV"):
        load_image_table(manifest)
    manifest.write_text(rows, encoding="utf-8")
    assert load_image_table(manifest).class_names == ["Röntgen", "dog"]  # spaces after commas
    manifest.write_text("path;label\ncat/img00.jpg;cat\ndog/img00.jpg;dog\n")
    with pytest.raises(ValueError, match=r"found \['path;label'\] \(is it separated by ';'\? "
                                         r"commas are read\)"):
        load_image_table(manifest)


def test_a_cache_inside_the_scanned_folder_is_not_a_class(image_folder, tiny_clip):
    from clipsei.images.embed import embed_images

    embed_images(load_image_table(image_folder), tiny_clip, cache_dir=image_folder / "cache",
                 progress=False, num_workers=0)
    assert any((image_folder / "cache").rglob("chunk-*.npz"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "class folder .../cache holds no image files"
        table = load_image_table(image_folder)
    assert table.class_names == ["cat", "dog"]
