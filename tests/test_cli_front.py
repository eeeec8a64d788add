"""clipsei scan / relabel / demo, in-process through ``main([...])``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from clipsei.cli import main

TINY = ["--model", "clipsei-tiny", "--pretrained", "none", "--n-epochs", "10"]


@pytest.fixture(autouse=True)
def _quiet_random_weights(recwarn):
    """The tiny model's RANDOM-weights warning is expected here."""


def test_scan_then_relabel(tmp_path, write_images, capsys):
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scored 10 of 10 images" in printed and "report.html" in printed
    assert {"issues.csv", "summary.json", "report.html"} <= {p.name for p in out.iterdir()}
    assert main(["relabel", str(out), "--accept-above", "0.5", "--out",
                 str(tmp_path / "fixed.csv")]) == 0
    assert "rows in" in capsys.readouterr().out
    fixed = pd.read_csv(tmp_path / "fixed.csv")
    assert len(fixed) == 10 and set(fixed["label"]) <= {"cat", "dog"}


def test_demo_finds_planted_errors(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "features: the images' own pixels" in printed and "precision" in printed
    found = int(re.search(r"; (\d+) of them are planted errors", printed).group(1))
    assert found >= 90  # of 180 planted errors
    assert (tmp_path / "demo" / "report.html").is_file()
    assert (tmp_path / "demo" / "truth.csv").is_file()


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"clipsei {command}: error: ")
    return err[0]


def test_scan_bad_path(tmp_path, capsys):
    assert main(["scan", str(tmp_path / "missing"), *TINY, "--out", str(tmp_path / "o")]) == 2
    assert "not found" in _one_line_error(capsys, "scan")


def test_scan_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["scan", str(tmp_path / "empty"), *TINY, "--out", str(tmp_path / "o")]) == 2
    assert "empty" in _one_line_error(capsys, "scan")


def test_scan_manifest_naming_missing_files(tmp_path, write_images, capsys):
    write_images(tmp_path / "images")
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nimages/cat/img00.jpg,cat\nimages/dog/gone.png,dog\n")
    assert main(["scan", str(manifest), *TINY, "--out", str(tmp_path / "o")]) == 2
    assert "gone.png" in _one_line_error(capsys, "scan")


def test_scan_single_class_folder(tmp_path, write_images, capsys):
    write_images(tmp_path / "images", classes=("cat",))
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(tmp_path / "o")]) == 2
    assert "at least 2 classes" in _one_line_error(capsys, "scan")


def test_relabel_and_demo_errors(tmp_path, capsys):
    assert main(["relabel", str(tmp_path), "--accept-above", "0.9"]) == 2
    assert "no saved scan" in _one_line_error(capsys, "relabel")
    assert main(["relabel", str(tmp_path), "--accept-above", "7"]) == 2
    assert "accept_above must be in [0, 1]" in _one_line_error(capsys, "relabel")
    (tmp_path / "images").mkdir()
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "clipsei did not create" in _one_line_error(capsys, "demo")


def test_demo_never_deletes_a_users_images(tmp_path, capsys):
    """Issue 13.1, the exact reproduction: a user's project with images/ and truth.csv."""
    project = tmp_path / "proj"
    (project / "images" / "cats").mkdir(parents=True)
    (project / "images" / "cats" / "x.png").write_bytes(b"a user's picture")
    (project / "truth.csv").write_text("path,label\n")
    assert main(["demo", "--out", str(project)]) == 2
    assert "--out" in _one_line_error(capsys, "demo")
    assert (project / "images" / "cats" / "x.png").read_bytes() == b"a user's picture"
    assert (project / "truth.csv").read_text() == "path,label\n"


def test_demo_replaces_only_its_own_output(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    assert main(["demo", "--out", str(out), "--noise-rate", "0.2"]) == 0  # its own: replaced
    assert capsys.readouterr().out.count("1797 PNG files") == 2
    assert len(list((out / "images").rglob("*.png"))) == 1797
    assert json.loads((out / ".clipsei-output").read_text())["kind"] == "demo"


def test_demo_rerun_keeps_a_file_the_user_added_to_its_images(tmp_path, capsys):
    # a marked demo folder is the demo's, but a file dropped into it later is the user's
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    mine = out / "images" / "0-zero" / "my_scan.png"
    mine.write_bytes(b"a user's picture")
    assert main(["demo", "--out", str(out)]) == 2
    assert "did not write" in _one_line_error(capsys, "demo")
    assert mine.read_bytes() == b"a user's picture"


_NO_TORCH = """
import sys
from clipsei.cli import main
status = main(sys.argv[1:])
print(status, "torch" in sys.modules)
"""


def _run_cli(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, *map(str, args)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    return done.stdout.split(), done.stderr.strip().splitlines()


def _unwritable_folder() -> Path:
    """A folder nobody can create files in, root included (tests run as root, and root
    ignores permission bits): /proc."""
    import tempfile

    try:
        tempfile.mkstemp(dir="/proc")
    except OSError:
        return Path("/proc")
    pytest.skip("no unwritable folder on this system")  # pragma: no cover


@pytest.mark.parametrize("where", ["file", "under_file", "unwritable"])
@pytest.mark.parametrize("command", ["scan", "embed", "embed_cache", "demo", "relabel"])
def test_unusable_output_fails_first(command, where, tmp_path, write_images):
    """Issue 13.2: one line, exit 2, before any work (torch never imported)."""
    write_images(tmp_path / "images")
    blocker = tmp_path / "taken.txt"
    blocker.write_text("a user's file")
    if where == "unwritable":
        out = _unwritable_folder() / "clipsei-out"
        manifest = out / "m.csv"
    else:
        out = blocker if where == "file" else blocker / "out"
        manifest = tmp_path if where == "file" else blocker / "m.csv"  # a folder; under a file
    images = tmp_path / "images"
    args = {"scan": ["scan", images, *TINY, "--out", out],
            "embed": ["embed", images, *TINY[:4], "--out", out],
            "embed_cache": ["embed", images, *TINY[:4], "--cache", out,
                            "--out", tmp_path / "emb"],
            "demo": ["demo", "--out", out],
            "relabel": ["relabel", tmp_path, "--accept-above", "0.5", "--out", manifest]}[command]
    printed, err = _run_cli(args, tmp_path)
    assert printed == ["2", "False"], (printed, err)
    assert len(err) == 1 and re.match(r"clipsei \w+: error: --(out|cache) ", err[0]), err
    assert blocker.read_text() == "a user's file"


def test_relabel_never_overwrites_a_users_file(tmp_path, write_images, capsys):
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(out)]) == 0
    mine = tmp_path / "notes.csv"
    mine.write_text("path,label,group\na.png,cat,1\n")  # the user's own manifest
    capsys.readouterr()
    assert main(["relabel", str(out), "--accept-above", "0.5", "--out", str(mine)]) == 2
    assert "notes.csv already exists" in _one_line_error(capsys, "relabel")
    assert mine.read_text() == "path,label,group\na.png,cat,1\n"
    fixed = tmp_path / "fixed.csv"
    for _ in range(2):  # its own earlier manifest may be replaced
        assert main(["relabel", str(out), "--accept-above", "0.5", "--drop-flagged",
                     "--out", str(fixed)]) == 0
    printed = capsys.readouterr().out
    n_dropped = int(re.search(r"dropped (\d+) flagged rows", printed).group(1))
    assert len(pd.read_csv(fixed)) == 10 - n_dropped


def test_scan_with_random_weights_warns_on_stdout_and_in_summary(tmp_path, write_images,
                                                                capsys):
    """Issue 13.4: a random-weights run says so after its summary and in summary.json."""
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    warned = [i for i, line in enumerate(lines) if "RANDOM weights" in line]
    assert len(warned) == 1 and warned[0] > 2 and lines[warned[0]].startswith("WARNING:")
    summary = json.loads((out / "summary.json").read_text())
    assert any("RANDOM weights" in text for text in summary["warnings"])
    assert "RANDOM weights" in (out / "report.html").read_text()


@pytest.mark.parametrize("option", ["--n-epochs", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_bad_numeric_options_fail_before_work(option, value, tmp_path, capsys):
    """Issue 13.9: --n-epochs 0 is refused on the command line, in one line."""
    assert main(["scan", str(tmp_path / "missing"), *TINY[:4], option, value,
                 "--out", str(tmp_path / "o")]) == 2
    err = _one_line_error(capsys, "scan")
    assert option in err and "positive integer" in err
    assert not (tmp_path / "o").exists()


def test_warnings_print_once_on_one_line(tmp_path, write_images):
    """Issue 13.10: the random-weights warning reaches stderr once, without source lines
    (in a fresh interpreter: pytest would record the warning instead)."""
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    printed, err = _run_cli(["scan", tmp_path / "images", *TINY, "--out", tmp_path / "o"],
                            tmp_path)
    assert printed[-2:] == ["0", "True"], (printed, err)
    assert sum("RANDOM weights" in line for line in err) == 1, err
    assert not any("warnings.warn" in line or ".py:" in line for line in err), err


@pytest.mark.parametrize("flags", [["-q", "scan"], ["scan", "-q"], ["scan", "--verbose"],
                                   ["-v", "scan"]])
def test_verbosity_before_and_after_the_command(flags, tmp_path, write_images, capsys):
    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    command = flags.index("scan")
    argv = [*flags[:command + 1], str(tmp_path / "images"), *flags[command + 1:], *TINY,
            "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert ("RANDOM weights" in err) != ("-q" in flags)
    assert ("took" in err) == ("-v" in flags or "--verbose" in flags)


def test_labels_is_a_deprecated_alias_of_manifest(tmp_path, write_images, capsys):
    paths = write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(
        f"{Path(p).parent.name}/{Path(p).name},{Path(p).parent.name}\n" for p in paths))
    for option in ("--manifest", "--labels"):
        out = tmp_path / option.strip("-")
        assert main(["scan", str(tmp_path / "images"), option, str(manifest), *TINY,
                     "--out", str(out)]) == 0
        assert "scored 10 of 10 images" in capsys.readouterr().out


def test_no_class_information_states_no_error_count(tmp_path, write_images, capsys):
    paths = write_images(tmp_path / "images", n_per_class=8, classes=("cat", "dog"))
    manifest = tmp_path / "labels.csv"  # labels that ignore the images' colour: no class signal
    pd.DataFrame({"path": paths, "label": ["a", "b"] * 8}).to_csv(manifest, index=False)
    assert main(["scan", str(manifest), *TINY, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["class_signal"]["informative"] is False and summary["n_flagged"] == 0
    assert "label errors not estimated (no class information)" in printed
    assert "estimated label errors" not in printed and "expected real errors" not in printed
    page = (tmp_path / "out" / "report.html").read_text()
    assert "not estimated (no class information)" in page
    assert "expected errors left unflagged" not in page


@pytest.mark.parametrize("cache", ["default", "given", "none"])
def test_interrupt_says_what_is_kept(cache, tmp_path, write_images, capsys, monkeypatch):
    import clipsei.images.embed

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt  # what a Ctrl-C during embedding raises

    monkeypatch.setattr(clipsei.images.embed, "embed_images", ctrl_c)
    write_images(tmp_path / "images", n_per_class=4, classes=("cat", "dog"))
    extra = {"default": [], "given": ["--cache", str(tmp_path / "cache")],
             "none": ["--no-cache"]}[cache]
    assert main(["scan", str(tmp_path / "images"), *TINY, *extra, "--out",
                 str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    if cache == "none":
        assert err == ("clipsei scan: interrupted; nothing was kept (--no-cache; without it a "
                       "rerun resumes where it stopped)")
    else:
        kept = tmp_path / ("cache" if cache == "given" else "out/cache")
        assert err == (f"clipsei scan: interrupted; the embeddings computed so far are kept in "
                       f"{kept}: run the same command again to resume")


def test_embeddings_are_cached_in_the_output_folder_by_default(tmp_path, write_images, capsys):
    # without --cache a killed or repeated run re-encoded every image: nothing was kept
    write_images(tmp_path / "images", n_per_class=3, classes=("cat", "dog"))
    command = ["embed", str(tmp_path / "images"), *TINY[:4], "--out", str(tmp_path / "out")]
    assert main(command) == 0
    assert "0 from cache, 6 encoded" in capsys.readouterr().out
    assert main(command) == 0
    assert "6 from cache, 0 encoded" in capsys.readouterr().out
    assert main([*command, "--no-cache"]) == 0
    assert "0 from cache, 6 encoded" in capsys.readouterr().out
    assert main([*command, "--no-cache", "--cache", str(tmp_path / "c")]) == 2
    assert "--no-cache" in capsys.readouterr().err


def test_bench_json_never_overwrites_a_users_file(tmp_path, capsys):
    import numpy as np

    from clipsei.evaluation.synthetic import make_noisy_blobs

    blobs = make_noisy_blobs(80, n_classes=2, n_features=8, noise_rate=0.1, random_state=0)
    data = tmp_path / "blobs.npz"
    np.savez(data, features=blobs.embeddings, labels=blobs.labels)
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}\n')
    assert main(["bench", str(data), "--methods", "knn", "--json", str(mine)]) == 2
    assert "already exists and was not written by clipsei" in _one_line_error(capsys, "bench")
    assert mine.read_text() == '{"my": "notes"}\n'
    result = tmp_path / "result.json"
    for seed in ("0", "1"):  # an earlier bench result is replaced
        assert main(["bench", str(data), "--methods", "knn", "--seed", seed, "--json",
                     str(result)]) == 0
    assert json.loads(result.read_text())["seed"] == 1


def test_relabel_never_overwrites_a_filled_audit_sheet_in_the_scan_folder(tmp_path,
                                                                          write_images, capsys):
    write_images(tmp_path / "images", n_per_class=10, classes=("cat", "dog"))
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(out),
                 "--audit-sample", "8"]) == 0
    sheet = out / "audit.csv"
    filled = pd.read_csv(sheet).assign(label="cat")  # the reviewer's verified labels
    filled.to_csv(sheet, index=False)
    before = sheet.read_text()
    capsys.readouterr()
    assert main(["relabel", str(out), "--accept-above", "0.5", "--out", str(sheet)]) == 2
    assert "audit.csv already exists and was not written by clipsei" in _one_line_error(
        capsys, "relabel")
    assert sheet.read_text() == before


def test_demo_interrupted_while_writing_its_images_can_run_again(tmp_path, capsys,
                                                                 monkeypatch):
    from PIL import Image

    save, calls = Image.Image.save, []

    def save_then_ctrl_c(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 100:
            raise KeyboardInterrupt  # what a Ctrl-C during the demo's image writing raises
        return save(self, *args, **kwargs)

    out = tmp_path / "demo"
    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", save_then_ctrl_c)
        assert main(["demo", "--out", str(out)]) == 130
    assert len(list((out / "images").rglob("*.png"))) == 99
    assert main(["demo", "--out", str(out)]) == 0
    assert len(list((out / "images").rglob("*.png"))) == 1797


@pytest.mark.parametrize("command", [["scan", "--random-state"], ["demo", "--random-state"],
                                     ["bench", "--seed"]])
def test_negative_seed_is_refused_by_name_before_work(command, tmp_path, capsys):
    name, option = command
    argv = {"scan": ["scan", str(tmp_path / "missing"), *TINY[:4], "--out", str(tmp_path / "o")],
            "demo": ["demo", "--out", str(tmp_path / "o")],
            "bench": ["bench", str(tmp_path / "missing.npz")]}[name]
    assert main([*argv, option, "-1"]) == 2
    err = _one_line_error(capsys, name)
    assert f"argument {option}: expected an integer >= 0; got '-1'" in err
    assert not (tmp_path / "o").exists()



def test_too_few_images_say_so_instead_of_no_class_information(tmp_path, write_images, capsys):
    # 2 images a class: the class-signal check cannot tell, which is not "no class information"
    write_images(tmp_path / "images", n_per_class=2, classes=("cat", "dog"))
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "summary.json").read_text())[
        "class_signal"]["too_few_samples"] is True
    assert "label errors not estimated (too few images to tell)" in printed
    page = (tmp_path / "out" / "report.html").read_text()
    assert "not estimated (too few images to tell)" in page
