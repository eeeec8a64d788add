"""The benchmark instrument: noise injection, metrics, npz loading, baselines and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipsei.evaluation.bench import (METHODS, compute_detection_metrics, load_bench_npz, run_bench,
                           score_cleanlab, score_knn)
from clipsei.cli import main
from clipsei.evaluation.noise import (compute_confusion_matrix, inject_label_noise,
                           load_noise_mapping)
from clipsei.evaluation.synthetic import make_noisy_blobs


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Tiny fits run fastest on one thread; on a busy 2-core machine, far faster."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def clean():
    """200 samples, 4 classes, no flips; wide clusters so a classifier makes some mistakes."""
    return make_noisy_blobs(200, n_classes=4, n_features=16, noise_rate=0.0, cluster_std=1.6,
                            random_state=1)


@pytest.fixture(scope="module")
def confusion(clean):
    return compute_confusion_matrix(clean.embeddings, clean.labels)


# --- noise injection ------------------------------------------------------------------------

@pytest.mark.parametrize("noise", ["symmetric", "asymmetric", "confusion"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37])
def test_noise_flips_exact_count_to_other_classes(clean, confusion, noise, rate):
    noisy = inject_label_noise(clean.labels, noise=noise, rate=rate, random_state=3,
                               confusion=confusion if noise == "confusion" else None)
    assert noisy.dtype == np.int64 and noisy.shape == clean.labels.shape
    assert (noisy != clean.labels).sum() == round(rate * clean.labels.size)
    assert noisy.min() >= 0 and noisy.max() < 4


@pytest.mark.parametrize("noise", ["symmetric", "asymmetric", "confusion"])
def test_noise_is_reproducible_and_leaves_input_unchanged(clean, confusion, noise):
    before = clean.labels.copy()
    first, again, other = (
        inject_label_noise(clean.labels, noise=noise, rate=0.2, random_state=seed,
                           confusion=confusion if noise == "confusion" else None)
        for seed in (7, 7, 8))
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()
    np.testing.assert_array_equal(clean.labels, before)


def test_noise_spreads_flips_evenly_over_classes():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    noisy = inject_label_noise(labels, noise="symmetric", rate=0.2, random_state=0)
    per_class = np.bincount(labels[noisy != labels], minlength=4)
    np.testing.assert_array_equal(per_class, [20, 10, 6, 4])


def test_asymmetric_default_is_next_class():
    labels = np.repeat(np.arange(3), 20)
    noisy = inject_label_noise(labels, noise="asymmetric", rate=0.3, random_state=0)
    flipped = noisy != labels
    np.testing.assert_array_equal(noisy[flipped], (labels[flipped] + 1) % 3)


def test_asymmetric_mapping_file(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"cat": "dog", "2": 0}))
    mapping = load_noise_mapping(path, n_classes=3, class_names=np.array(["cat", "dog", "owl"]))
    assert mapping == {0: 1, 2: 0}
    labels = np.repeat(np.arange(3), 20)
    with pytest.warns(UserWarning, match="only 18 of the 24"):
        noisy = inject_label_noise(labels, noise="asymmetric", rate=0.4, random_state=0,
                                   mapping=mapping)
    flipped = noisy != labels
    assert flipped.sum() == 18 and not flipped[labels == 1].any()  # 9 of 20 in classes 0, 2
    assert set(zip(labels[flipped], noisy[flipped])) == {(0, 1), (2, 0)}


def test_mapping_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="mapping file not found"):
        load_noise_mapping(tmp_path / "none.json", n_classes=3)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_noise_mapping(bad, n_classes=3)
    bad.write_text('{"0": 5}')
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        load_noise_mapping(bad, n_classes=3)


def test_confusion_draws_only_off_diagonal(clean, confusion):
    assert confusion.shape == (4, 4) and confusion.sum() == 200
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(clean.labels))
    noisy = inject_label_noise(clean.labels, noise="confusion", rate=0.3, random_state=0,
                               confusion=confusion)
    flipped = noisy != clean.labels
    assert flipped.sum() == 60
    assert (confusion[clean.labels[flipped], noisy[flipped]] > 0).all()


def test_confusion_weights_classes_by_their_mistakes():
    labels = np.repeat([0, 1], [80, 40])
    confusion = np.array([[70.0, 10.0], [10.0, 30.0]])  # each class errs 10 times
    noisy = inject_label_noise(labels, noise="confusion", rate=0.2, random_state=0,
                               confusion=confusion)
    np.testing.assert_array_equal(np.bincount(labels[noisy != labels], minlength=2), [12, 12])
    confusion[1] = [0.0, 40.0]  # class 1 is never misclassified: never flipped
    noisy = inject_label_noise(labels, noise="confusion", rate=0.2, random_state=0,
                               confusion=confusion)
    np.testing.assert_array_equal(np.bincount(labels[noisy != labels], minlength=2), [24, 0])
    confusion = np.array([[70.0, 10.0], [36.0, 4.0]])  # class 1's share (37) is capped at 19
    noisy = inject_label_noise(labels, noise="confusion", rate=0.4, random_state=0,
                               confusion=confusion)
    np.testing.assert_array_equal(np.bincount(labels[noisy != labels], minlength=2), [29, 19])


def test_noise_errors(clean):
    with pytest.raises(ValueError, match="noise must be one of"):
        inject_label_noise(clean.labels, noise="pairflip")
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        inject_label_noise(clean.labels, rate=1.0)
    with pytest.raises(ValueError, match="needs features"):
        inject_label_noise(clean.labels, noise="confusion")


# --- metrics --------------------------------------------------------------------------------

def test_metrics_perfect_and_hand_computed():
    is_error = np.array([1, 0, 0, 1, 0, 0], dtype=bool)
    perfect = compute_detection_metrics(np.where(is_error, 0.1, 0.9), is_error, is_error)
    assert perfect["auroc"] == 1 and perfect["auprc"] == 1 and perfect["f1"] == 1
    assert perfect["p_at_noise"] == 1
    scores = np.array([0.3, 0.1, 0.8, 0.2, 0.9, 0.7])  # ranking: 1, 3, 0, 5, 2, 4
    flags = np.array([0, 1, 0, 1, 0, 0], dtype=bool)
    metrics = compute_detection_metrics(scores, flags, is_error)
    assert metrics["auroc"] == pytest.approx(6 / 8)  # 6 of 8 (error, clean) pairs ordered
    assert metrics["precision"] == 0.5 and metrics["recall"] == 0.5 and metrics["f1"] == 0.5
    assert metrics["p_at_noise"] == 0.5  # lowest two: samples 1 and 3


def test_best_cutoff_f1_and_precision_at_k():
    is_error = np.zeros(200, dtype=bool)
    is_error[[0, 1, 2, 50]] = True
    scores = np.linspace(0, 1, 200)  # errors at ranks 1, 2, 3 and 51
    metrics = compute_detection_metrics(scores, np.zeros(200, bool), is_error)
    assert metrics["best_f1"] == pytest.approx(2 * 3 / (3 + 4))  # flag the lowest three
    assert metrics["p_at_10"] == pytest.approx(0.3) and metrics["p_at_50"] == pytest.approx(0.06)
    assert metrics["p_at_100"] == pytest.approx(0.04) and metrics["f1"] == 0
    clean = compute_detection_metrics(scores, np.zeros(200, bool), np.zeros(200, bool))
    assert clean["best_f1"] is None and clean["p_at_10"] is None


def test_metrics_match_sklearn(rng):
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    is_error = rng.random(300) < 0.2
    scores = rng.random(300) - 0.3 * is_error
    flags = scores < 0.2
    metrics = compute_detection_metrics(scores, flags, is_error)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(is_error, -scores))
    assert metrics["auprc"] == pytest.approx(average_precision_score(is_error, -scores))
    assert metrics["f1"] == pytest.approx(f1_score(is_error, flags))


def test_metrics_without_errors_and_bad_input():
    metrics = compute_detection_metrics(np.ones(4), np.zeros(4, bool), np.zeros(4, bool))
    assert metrics["auroc"] is None and metrics["f1"] == 0
    with pytest.raises(ValueError, match="one length"):
        compute_detection_metrics(np.ones(4), np.zeros(3, bool), np.zeros(4, bool))


# --- baselines and run_bench ----------------------------------------------------------------

@pytest.mark.parametrize("score", [score_cleanlab, score_knn])
def test_baselines_find_planted_flips(blobs, score):
    scores, flags = score(blobs.embeddings, blobs.labels)
    metrics = compute_detection_metrics(scores, flags, blobs.is_flipped)
    assert scores.shape == flags.shape == (200,) and np.isfinite(scores).all()
    assert metrics["auroc"] > 0.95 and metrics["recall"] > 0.7 and metrics["precision"] > 0.5


def test_knn_excludes_query_by_id_with_duplicates():
    points = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.0, 1.0], [0.01, 1.0]])
    labels = np.array([0, 0, 1, 1, 1, 0])
    scores, flags = score_knn(points, labels, k=2)
    np.testing.assert_array_equal(flags, [False, False, True, False, False, True])
    assert scores[2] < scores[0] and scores[5] < scores[3]


def test_run_bench_schema_and_real_noise(blobs):
    result = run_bench(blobs.embeddings, blobs.labels, true_labels=blobs.true_labels,
                       methods="knn")
    assert result["n"] == 200 and result["k"] == 4 and result["noise"] == "real"
    assert result["noise_rate"] == pytest.approx(0.1)
    assert list(result["methods"]) == ["knn"]
    for metrics in result["methods"].values():
        assert {"auroc", "auprc", "precision", "recall", "f1", "p_at_noise",
                "seconds"} <= set(metrics)
    json.dumps(result)


def test_run_bench_injects_and_checks(blobs):
    result = run_bench(blobs.embeddings, blobs.true_labels,
                       noise="asymmetric", rate=0.25, seed=2, methods=["knn"])
    assert result["n_errors"] == 50 and result["methods"]["knn"]["auroc"] > 0.9
    with pytest.raises(ValueError, match="methods must be one of"):
        run_bench(blobs.embeddings, blobs.labels, methods="knn,magic")
    with pytest.raises(ValueError, match="noise must be None when true_labels"):
        run_bench(blobs.embeddings, blobs.labels, true_labels=blobs.true_labels,
                  noise="symmetric")


def test_run_bench_engine_method(blobs):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny heads: one thread is fastest
    try:
        result = run_bench(blobs.embeddings, blobs.labels, true_labels=blobs.true_labels,
                           methods=["clipsei"], text_features=blobs.class_embeddings, seed=0)
    finally:
        torch.set_num_threads(threads)
    metrics = result["methods"]["clipsei"]
    assert metrics["auroc"] > 0.9 and 0 <= metrics["f1"] <= 1 and metrics["seconds"] > 0


def test_method_names():
    assert METHODS == ("clipsei", "sei_paper", "aum", "entropy_integral", "cleanlab", "knn")


# --- npz loading and the CLI ----------------------------------------------------------------

def test_load_bench_npz_errors(tmp_path, blobs):
    with pytest.raises(FileNotFoundError, match="bench file not found"):
        load_bench_npz(tmp_path / "none.npz")
    path = tmp_path / "bad.npz"
    np.savez(path, features=blobs.embeddings)
    with pytest.raises(ValueError, match=r"bad.npz lacks required key\(s\) \['labels'\]"):
        load_bench_npz(path)
    np.savez(path, features=blobs.embeddings, labels=blobs.labels[:10])
    with pytest.raises(ValueError, match="bad.npz:labels must have one entry per sample"):
        load_bench_npz(path)
    np.savez(path, features=blobs.embeddings, labels=blobs.labels,
             text_features=blobs.class_embeddings[:, :5])
    with pytest.raises(ValueError, match="bad.npz:text_features must have shape"):
        load_bench_npz(path)
    np.savez(path, features=blobs.embeddings, labels=blobs.labels, true_labels=blobs.true_labels,
             class_names=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"bad.npz:class_names must name every class \(4, as the "
                                         r"labels use 0..3\); got 3 names"):
        load_bench_npz(path)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_bench_npz(tmp_path / "junk.npz")


def test_cli_bench_writes_json(tmp_path, blobs, capsys):
    path = tmp_path / "blobs.npz"
    np.savez(path, features=blobs.embeddings, labels=blobs.true_labels,
             class_names=np.array(["a", "b", "c", "d"]))
    out = tmp_path / "out" / "result.json"
    status = main(["bench", str(path), "--noise", "symmetric", "--rate", "0.1", "--seed", "1",
                   "--methods", "knn", "--json", str(out)])
    assert status == 0
    result = json.loads(out.read_text())
    assert result["n_errors"] == 20 and result["methods"]["knn"]["auroc"] > 0.9
    assert "knn" in capsys.readouterr().out


def test_cli_bench_reports_errors(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "none.npz")]) == 2
    assert "bench file not found" in capsys.readouterr().err


def test_shared_data_file_loads(shared_data):
    from benchmarks.prepare import prepare_dataset

    data = prepare_dataset("brain_mri", shared_data)[0][1]
    assert data["features"].shape == (254, 1280) and data["features"].dtype == np.float32
    assert set(np.unique(data["labels"])) == {0, 1}


def test_keep_label_errors_keeps_a_random_share_of_the_real_ones():
    from clipsei.evaluation.noise import keep_label_errors

    clean = np.repeat(np.arange(4), 250)
    noisy = inject_label_noise(clean, rate=0.2, random_state=0)
    kept = keep_label_errors(clean, noisy, rate=0.01, random_state=1)
    wrong = np.flatnonzero(kept != clean)
    assert wrong.size == 10 and np.array_equal(kept[wrong], noisy[wrong])
    assert not np.array_equal(wrong, np.flatnonzero(
        keep_label_errors(clean, noisy, rate=0.01, random_state=2) != clean))
    with pytest.raises(ValueError, match="rate 0.5 asks for 500 errors; the labels hold 200"):
        keep_label_errors(clean, noisy, rate=0.5)
