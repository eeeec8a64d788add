"""The tensor decode path (``decode="device"``) against the PIL path, on the CPU device.

CUDA runs the same code with ``device="cuda"`` (nvJPEG); those tests are marked ``gpu`` (see
``conftest.py``). Tolerances are the ones stated in ``docs/design.md`` ("Decoding on the
model's device").
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from clipsei.images.data import decode_image_bytes, load_image_table
from clipsei.images.decode import split_preprocess
from clipsei.images.decode_device import (
    TensorPreprocess,
    check_decode,
    compute_properties_tensor,
    decode_jpeg_list,
    device_decodable,
    resize_crop,
    tensor_preprocess,
    use_device_decode,
    window_tensor,
)
from clipsei.images.embed import embed_images
from clipsei.images.intensity import window_intensity
from clipsei.images.properties import compute_image_properties

MIN_COSINE = 0.99999  # per image, tensor vs PIL path, same model and device (full-size decode)
MAX_PIXEL_DIFF = 2  # grey levels of 255, model input after resize and crop (mean < 0.5)
MIN_COSINE_DRAFT = 0.999  # per image, tensor path vs PIL path with its default JPEG draft


def _photo(rng, size, mode="RGB") -> Image.Image:
    """A smooth random image (JPEG-like content) of (width, height) ``size``."""
    low = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(low).resize(size, Image.BICUBIC)
    noise = rng.integers(-12, 13, (size[1], size[0], 3))
    image = Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))
    return image.convert(mode) if mode != "RGB" else image


def _jpeg_bytes(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=save.pop("quality", 90), **save)
    return buffer.getvalue()


def _write_jpegs(folder, rng, sizes=((40, 40), (120, 90), (75, 210), (500, 333), (31, 17))):
    """Colour and grey JPEGs of ``sizes`` (smaller and larger than a 32-px model input)."""
    for i, size in enumerate(sizes):
        for mode in ("RGB", "L"):
            target = folder / ("rgb" if mode == "RGB" else "grey") / f"{i}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_jpeg_bytes(_photo(rng, size, mode)))
    return folder


def _tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def test_options_and_preprocess_form(tiny_clip):
    assert check_decode("auto") == "auto"
    with pytest.raises(ValueError, match=r"decode must be one of \['auto', 'cpu', 'device'\]"):
        check_decode("gpu")
    plan = tensor_preprocess(tiny_clip.preprocess)
    assert plan.size == 32 and plan.crop == (32, 32) and plan.antialias
    assert plan.interpolation.value == "bicubic"
    cpu = torch.device("cpu")
    assert not use_device_decode("auto", cpu, tiny_clip.preprocess)  # CPU stays on PIL
    assert use_device_decode("device", cpu, tiny_clip.preprocess)
    assert not use_device_decode("cpu", torch.device("cuda"), tiny_clip.preprocess)
    assert use_device_decode("auto", torch.device("cuda"), tiny_clip.preprocess)


def test_an_unusual_preprocess_is_refused_or_left_to_pil(tiny_clip, image_folder):
    from torchvision import transforms

    odd = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    assert tensor_preprocess(odd) is None
    assert not use_device_decode("auto", torch.device("cuda"), odd)
    with pytest.raises(ValueError, match="decode='device' needs a preprocess"):
        use_device_decode("device", torch.device("cpu"), odd)
    with pytest.raises(ValueError, match="decode must be one of"):
        embed_images(image_folder, tiny_clip, decode="nvjpeg")


@pytest.mark.parametrize("size", [(40, 40), (500, 333), (75, 210), (17, 31)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_model_input_matches_the_pil_preprocess(size, mode, tiny_clip):
    data = _jpeg_bytes(_photo(np.random.default_rng(1), size, mode))
    image = decode_jpeg_list([_tensor(data)], "cpu")[0]
    pil_input = split_preprocess(tiny_clip.preprocess).on_worker(decode_image_bytes(data))
    np.testing.assert_array_equal(image.numpy(), np.asarray(decode_image_bytes(data))
                                  .transpose(2, 0, 1))  # same libjpeg-turbo decode on CPU
    tensor_input = resize_crop(image, tensor_preprocess(tiny_clip.preprocess))
    assert tensor_input.dtype == torch.uint8 and tensor_input.shape == pil_input.shape
    difference = (tensor_input.int() - pil_input.int()).abs()
    assert difference.max() <= MAX_PIXEL_DIFF and difference.float().mean() < 0.5, difference


def test_upsampling_and_non_square_crops_match_at_vit_size():
    from torchvision import transforms

    preprocess = transforms.Compose([
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    plan = tensor_preprocess(preprocess)
    assert plan == TensorPreprocess(224, (224, 224), transforms.InterpolationMode.BICUBIC, True)
    for size in [(32, 32), (300, 200), (1024, 768)]:
        data = _jpeg_bytes(_photo(np.random.default_rng(2), size))
        pil_input = split_preprocess(preprocess).on_worker(decode_image_bytes(data))
        tensor_input = resize_crop(decode_jpeg_list([_tensor(data)], "cpu")[0], plan)
        assert (tensor_input.int() - pil_input.int()).abs().max() <= MAX_PIXEL_DIFF


def test_embeddings_match_the_pil_path(tmp_path, tiny_clip):
    folder = _write_jpegs(tmp_path / "jpegs", np.random.default_rng(3))
    pil = embed_images(folder, tiny_clip, num_workers=0, progress=False, decode="cpu",
                       jpeg_draft=False)
    tensor = embed_images(folder, tiny_clip, num_workers=0, progress=False, decode="device")
    assert tensor.failures.empty and tensor.indices.tolist() == pil.indices.tolist()
    cosine = np.sum(pil.embeddings * tensor.embeddings, axis=1)
    assert cosine.min() >= MIN_COSINE, cosine
    drafted = embed_images(folder, tiny_clip, num_workers=0, progress=False, decode="cpu")
    assert np.sum(drafted.embeddings * tensor.embeddings, axis=1).min() >= MIN_COSINE_DRAFT
    np.testing.assert_allclose(tensor.properties.to_numpy(), pil.properties.to_numpy(),
                               rtol=1e-4, atol=1e-6)
    assert tensor.content_hashes == pil.content_hashes


def test_workers_and_batches_give_the_same_result(tmp_path, tiny_clip):
    folder = _write_jpegs(tmp_path / "jpegs", np.random.default_rng(5))
    one = embed_images(folder, tiny_clip, num_workers=0, progress=False, decode="device",
                       batch_size=64)
    split = embed_images(folder, tiny_clip, num_workers=2, progress=False, decode="device",
                         batch_size=3)
    np.testing.assert_allclose(split.embeddings, one.embeddings, atol=1e-6)
    np.testing.assert_array_equal(split.properties.to_numpy(), one.properties.to_numpy())


def test_the_cache_keys_the_device_path_as_full_size_decoding(tmp_path, tiny_clip):
    folder = _write_jpegs(tmp_path / "jpegs", np.random.default_rng(18))
    cache = tmp_path / "cache"
    kwargs = dict(num_workers=0, progress=False, cache_dir=cache)
    first = embed_images(folder, tiny_clip, decode="device", **kwargs)
    assert first.n_encoded == 10
    full = embed_images(folder, tiny_clip, decode="cpu", jpeg_draft=False, **kwargs)
    assert full.n_cached == 10  # the same key: jpeg_draft=False
    drafted = embed_images(folder, tiny_clip, decode="cpu", **kwargs)
    assert drafted.n_cached == 0 and drafted.n_encoded == 10  # draft decoding is keyed apart


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_a_cached_rescan_on_the_device_path_does_not_load_the_model(tmp_path):
    from clipsei.pipeline import scan

    folder = _write_jpegs(tmp_path / "jpegs", np.random.default_rng(19))
    runs = [scan(folder, model="clipsei-tiny", pretrained="none", device="cpu",
                 decode="device", cache_dir=tmp_path / "cache", n_epochs=3, progress=False)
            for _ in range(2)]
    assert [run.summary["settings"]["model_loaded"] for run in runs] == [True, False]
    assert runs[1].issues["label_score"].tolist() == runs[0].issues["label_score"].tolist()


def _without_quantisation_tables(data: bytes) -> bytes:
    """The JPEG ``data`` without its DQT segments: the header reads, decoding fails."""
    out, at = bytearray(data[:2]), 2
    while data[at:at + 2] != b"\xff\xda":  # up to the start of scan
        length = int.from_bytes(data[at + 2:at + 4], "big")
        if data[at:at + 2] != b"\xff\xdb":
            out += data[at:at + 2 + length]
        at += 2 + length
    return bytes(out + data[at:])


def _odd_files(folder, rng):
    """Files the tensor path must hand to PIL (or report as PIL does), in classes a and b."""
    good = _photo(rng, (64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: PIL turns it, the device decoder would not
    files = {
        "plain.jpg": _jpeg_bytes(good),
        "grey.jpg": _jpeg_bytes(good.convert("L")),
        "cmyk.jpg": _jpeg_bytes(good.convert("CMYK")),
        "rotated.jpg": _jpeg_bytes(good, exif=exif.tobytes()),
        "progressive.jpg": _jpeg_bytes(good, progressive=True),
        "truncated.jpg": _jpeg_bytes(good)[:300],
        "no_tables.jpg": _without_quantisation_tables(_jpeg_bytes(good)),  # header looks fine
        "empty.jpg": b"",
        "text.jpg": b"not an image at all",
        "png.png": None,
    }
    for i, (name, data) in enumerate(files.items()):
        target = folder / "ab"[i % 2] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            good.save(target)
        else:
            target.write_bytes(data)
    return folder


def test_odd_files_fall_back_to_pil_with_the_same_failures(tmp_path, tiny_clip):
    folder = _odd_files(tmp_path / "odd", np.random.default_rng(6))
    pil = embed_images(folder, tiny_clip, num_workers=0, progress=False, decode="cpu",
                       jpeg_draft=False)
    tensor = embed_images(folder, tiny_clip, num_workers=0, progress=False, decode="device")
    assert tensor.indices.tolist() == pil.indices.tolist() and len(pil.indices) == 6
    assert tensor.failures.to_dict("records") == pil.failures.to_dict("records")
    assert set(pil.failures["path"].map(lambda p: p.rsplit("/", 1)[-1])) == {
        "truncated.jpg", "empty.jpg", "text.jpg", "no_tables.jpg"}
    cosine = np.sum(pil.embeddings * tensor.embeddings, axis=1)
    assert cosine.min() >= MIN_COSINE, cosine
    rotated = tensor.table.paths.index(str(folder / "b" / "rotated.jpg"))
    assert device_decodable((folder / "a" / "no_tables.jpg").read_bytes())
    at = tensor.indices.tolist().index(rotated)
    assert tensor.properties.loc[at, ["width", "height"]].tolist() == [48, 64]


def test_header_screen():
    rng = np.random.default_rng(7)
    image = _photo(rng, (40, 30))
    assert device_decodable(_jpeg_bytes(image))
    assert device_decodable(_jpeg_bytes(image.convert("L")))
    assert not device_decodable(_jpeg_bytes(image.convert("CMYK")))
    assert not device_decodable(_jpeg_bytes(image)[:-10])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    assert not device_decodable(buffer.getvalue())


def test_a_rejected_file_does_not_sink_its_batch():
    rng = np.random.default_rng(8)
    good = [_tensor(_jpeg_bytes(_photo(rng, (30, 20)))) for _ in range(2)]
    bad = _tensor(b"\xff\xd8" + b"\x00" * 64 + b"\xff\xd9")
    images = decode_jpeg_list([good[0], bad, good[1]], "cpu")
    assert images[1] is None and [tuple(images[i].shape) for i in (0, 2)] == [(3, 20, 30)] * 2


@pytest.mark.parametrize("size", [(20, 30), (128, 128), (300, 257), (1000, 700)])
def test_properties_match_pil(size):
    rng = np.random.default_rng(9)
    for image in (_photo(rng, size), _photo(rng, size).convert("L").convert("RGB")):
        pixels = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())
        np.testing.assert_allclose(compute_properties_tensor(pixels).numpy(),
                                   compute_image_properties(image), rtol=1e-4, atol=1e-6)
    flat = torch.full((3, 10, 12), 7, dtype=torch.uint8)
    assert np.isnan(compute_properties_tensor(flat).numpy()[5])  # sharpness of a flat image


@pytest.mark.parametrize("levels", [3, 256])
def test_window_matches_pil(levels):
    rng = np.random.default_rng(10)
    pixels = rng.integers(0, levels, (37, 53, 3), dtype=np.uint8)
    expected = np.asarray(window_intensity(Image.fromarray(pixels))).transpose(2, 0, 1)
    got = window_tensor(torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
    np.testing.assert_array_equal(got.numpy(), expected)
    constant = torch.full((3, 4, 4), 9, dtype=torch.uint8)
    assert torch.equal(window_tensor(constant), constant)


def test_window_and_properties_through_embed_images(tmp_path, tiny_clip):
    rng = np.random.default_rng(11)
    for i in range(4):  # a dark export with three grey levels, as the shared brain MRIs
        pixels = rng.integers(0, 3, (60 + 10 * i, 80, 3), dtype=np.uint8)
        (tmp_path / "dark" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "dark" / "ab"[i % 2] / f"{i}.jpg", quality=95)
    kwargs = dict(num_workers=0, progress=False, intensity="window")
    pil = embed_images(tmp_path / "dark", tiny_clip, decode="cpu", jpeg_draft=False, **kwargs)
    tensor = embed_images(tmp_path / "dark", tiny_clip, decode="device", **kwargs)
    assert np.sum(pil.embeddings * tensor.embeddings, axis=1).min() >= MIN_COSINE
    np.testing.assert_allclose(tensor.properties.to_numpy(), pil.properties.to_numpy(),
                               rtol=1e-4, atol=1e-6)


def test_stored_size_of_a_near_square_draft(tmp_path, tiny_clip):
    """A 728x725 JPEG drafts to a square 91x91; its stored size must not come out swapped."""
    path = tmp_path / "near_square.jpg"
    path.write_bytes(_jpeg_bytes(_photo(np.random.default_rng(12), (728, 725))))
    table = load_image_table([str(path), str(path)], labels=[0, 1])
    for decode in ("cpu", "device"):
        result = embed_images(table, tiny_clip, num_workers=0, progress=False, decode=decode)
        assert result.properties.loc[0, ["width", "height"]].tolist() == [728, 725], decode


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_cli_decode_option(tmp_path, capsys):
    from clipsei.cli import main

    folder = _write_jpegs(tmp_path / "jpegs", np.random.default_rng(16))
    tiny = ["--model", "clipsei-tiny", "--pretrained", "none", "--num-workers", "0"]
    outputs = {}
    for decode in ("cpu", "device"):
        out = tmp_path / decode
        assert main(["embed", str(folder), *tiny, "--decode", decode, "--out", str(out)]) == 0
        outputs[decode] = np.load(out / "embeddings.npy")
    assert "embedded 10 of 10 images" in capsys.readouterr().out
    assert np.sum(outputs["cpu"] * outputs["device"], axis=1).min() >= MIN_COSINE_DRAFT
    assert main(["embed", str(folder), *tiny, "--decode", "gpu", "--out",
                 str(tmp_path / "x")]) == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_scan_takes_the_decode_option(tmp_path, tiny_clip):
    from clipsei.pipeline import scan

    folder = _write_jpegs(tmp_path / "jpegs", np.random.default_rng(17))
    result = scan(folder, model=tiny_clip, decode="device", n_epochs=3, progress=False)
    assert len(result.issues) == 10 and result.failures.empty
    assert result.summary["settings"]["decode"] == "device"
    with pytest.raises(ValueError, match="decode must be one of"):
        scan(folder, model=tiny_clip, decode="fast", n_epochs=3, progress=False)


@pytest.mark.shared_data
def test_brain_mri_matches_the_pil_path(shared_data, tiny_clip):
    folder = shared_data / "brain_mri"
    for intensity in ("none", "window"):
        kwargs = dict(num_workers=0, progress=False, intensity=intensity)
        pil = embed_images(folder, tiny_clip, decode="cpu", jpeg_draft=False, **kwargs)
        tensor = embed_images(folder, tiny_clip, decode="device", **kwargs)
        assert tensor.indices.tolist() == pil.indices.tolist() and len(pil.indices) == 254
        cosine = np.sum(pil.embeddings * tensor.embeddings, axis=1)
        assert cosine.min() >= MIN_COSINE, (intensity, cosine.min())
        np.testing.assert_allclose(tensor.properties.to_numpy(), pil.properties.to_numpy(),
                                   rtol=1e-4, atol=1e-6)


# --- CUDA: the same path with device="cuda" (nvJPEG); run with CLIPSEI_TEST_GPU=1 -m gpu ---
# Not run in the session that wrote them (no GPU): the bounds are targets, not measurements.


def _gpu(test):
    for mark in (pytest.mark.gpu, pytest.mark.filterwarnings("ignore:.*RANDOM weights"),
                 pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")):
        test = mark(test)
    return test


@_gpu
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_nvjpeg_input_matches_the_cpu_decoder(mode):
    from torchvision.transforms import InterpolationMode

    rng = np.random.default_rng(13)
    datas = [_tensor(_jpeg_bytes(_photo(rng, size, mode))) for size in [(256, 256), (640, 480)]]
    plan = TensorPreprocess(224, (224, 224), InterpolationMode.BICUBIC, True)
    for on_cpu, on_gpu in zip(decode_jpeg_list(datas, "cpu"), decode_jpeg_list(datas, "cuda")):
        assert on_gpu.device.type == "cuda" and on_gpu.shape == on_cpu.shape
        difference = (resize_crop(on_gpu, plan).cpu().int() - resize_crop(on_cpu, plan).int())
        assert difference.abs().float().mean() < 1.0 and difference.abs().max() <= 12
        np.testing.assert_allclose(compute_properties_tensor(on_gpu).cpu().numpy(),
                                   compute_properties_tensor(on_cpu).numpy(), rtol=0.05)


@_gpu
def test_auto_decodes_on_cuda_and_matches_the_pil_path(tmp_path):
    from clipsei.images.embed import load_clip_model

    model = load_clip_model("clipsei-tiny", "none", device="cuda")
    folder = _odd_files(_write_jpegs(tmp_path / "jpegs", np.random.default_rng(14)) / "more",
                        np.random.default_rng(15)).parent
    assert use_device_decode("auto", model.device, model.preprocess)
    pil = embed_images(folder, model, num_workers=2, progress=False, decode="cpu",
                       jpeg_draft=False, batch_size=4)
    tensor = embed_images(folder, model, num_workers=2, progress=False, batch_size=4)
    assert tensor.indices.tolist() == pil.indices.tolist()
    assert tensor.failures.to_dict("records") == pil.failures.to_dict("records")
    cosine = np.sum(pil.embeddings * tensor.embeddings, axis=1)
    assert cosine.min() >= MIN_COSINE_DRAFT, cosine
