"""The text side of ``clipsei bench`` (issue 16, item 5), end to end with the tiny open_clip
model: class prompts, ``zero_shot``, the default's prior and the prompt-tuned head."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipsei.cli import main
from clipsei.evaluation.bench import compute_detection_metrics, run_bench
from clipsei.evaluation.bench_text import NO_TEXT_MODEL
from clipsei.evaluation.synthetic import make_noisy_blobs

NAMES = np.array(["cat", "dog", "car"])


@pytest.fixture
def tiny_blobs():
    """90 samples of 3 classes in 16 dimensions (the tiny model's width), 10% flips."""
    return make_noisy_blobs(90, n_classes=3, n_features=16, noise_rate=0.1, random_state=0)


def _write(path, blobs, **extra):
    np.savez(path, features=blobs.embeddings, labels=blobs.labels,
             true_labels=blobs.true_labels, **extra)
    return path


def test_cli_bench_runs_every_text_method_with_a_model(tmp_path, tiny_blobs, tiny_clip,
                                                       capsys):
    from clipsei import find_label_issues
    from clipsei.images.prompts import encode_class_prompts

    path = _write(tmp_path / "tiny.npz", tiny_blobs, class_names=NAMES)
    out = tmp_path / "result.json"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        status = main(["bench", str(path), "--model", "clipsei-tiny", "--pretrained", "none",
                       "--device", "cpu", "--methods", "clipsei,zero_shot,sei_prompt",
                       "--json", str(out)])
    assert status == 0
    result = json.loads(out.read_text())
    assert result["text"] == "prompts" and result["not_run"] == {}
    assert list(result["methods"]) == ["clipsei", "zero_shot", "sei_prompt"]
    for metrics in result["methods"].values():
        assert 0.0 <= metrics["auroc"] <= 1.0 and 0.0 <= metrics["f1"] <= 1.0
    # zero_shot scored with the model's own class prompts, as a direct call does
    text = encode_class_prompts(list(NAMES), tiny_clip)
    direct = find_label_issues(tiny_blobs.embeddings, tiny_blobs.labels, method="zero_shot",
                               class_embeddings=text)
    expected = compute_detection_metrics(direct["label_score"], direct["is_label_issue"],
                                         tiny_blobs.labels != tiny_blobs.true_labels)
    assert result["methods"]["zero_shot"]["auroc"] == pytest.approx(expected["auroc"])
    assert "text=prompts" in capsys.readouterr().out


def test_text_features_without_a_model_skip_the_prompt_head(tiny_blobs, capsys):
    from clipsei.evaluation.bench import format_bench_table

    rng = np.random.default_rng(0)
    result = run_bench(tiny_blobs.embeddings, tiny_blobs.labels,
                       true_labels=tiny_blobs.true_labels, methods="zero_shot,sei_prompt",
                       text_features=rng.normal(size=(3, 16)))
    assert list(result["methods"]) == ["zero_shot"] and result["text"] == "file"
    assert result["not_run"] == {"sei_prompt": NO_TEXT_MODEL}
    assert "sei_prompt         not run: needs a CLIP text encoder" in format_bench_table(result)


def test_cli_bench_text_model_errors(tmp_path, tiny_blobs, tiny_clip, capsys):
    no_names = _write(tmp_path / "no_names.npz", tiny_blobs)
    wide = tmp_path / "wide.npz"
    np.savez(wide, features=np.hstack([tiny_blobs.embeddings] * 2), labels=tiny_blobs.labels,
             class_names=NAMES)
    for path, message in ((no_names, "class_names must name every class"),
                          (wide, "embeds in 16 dimensions but features are")):
        with pytest.warns(UserWarning, match="RANDOM weights"):
            status = main(["bench", str(path), "--model", "clipsei-tiny", "--pretrained",
                           "none", "--device", "cpu", "--methods", "zero_shot"])
        assert status == 2 and message in capsys.readouterr().err
