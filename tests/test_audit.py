"""Audit samples: draw_audit_sample, calibrate_on_audit, the audit sheet and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clipsei.cli import main
from clipsei.engine.audit import calibrate_on_audit, draw_audit_sample
from clipsei.engine.flag_choice import split_inclusion
from clipsei.engine.flagging import compute_expected_f1_count

TINY = ["--model", "clipsei-tiny", "--pretrained", "none", "--n-epochs", "3"]


def _ranking(seed: int, n_samples: int = 10000, rate: float = 0.01):
    """Synthetic label scores (lower = likelier wrong) with known errors."""
    rng = np.random.default_rng(seed)
    is_error = rng.random(n_samples) < rate
    scores = np.where(is_error, rng.normal(-2.5, 1.0, n_samples), rng.normal(0.0, 1.0, n_samples))
    return scores, is_error


def _audit(scores, is_error, budget, seed):
    """(estimate of the expected-F1 flags, audited rows, calibration) of one audit draw."""
    rows, probability = draw_audit_sample(scores, budget, random_state=seed)
    audited = np.zeros(scores.size, dtype=bool)
    audited[rows] = True
    inclusion = np.zeros(scores.size)
    inclusion[rows] = probability
    calibration = calibrate_on_audit(scores, audited, audited & is_error, inclusion,
                                     rng=np.random.default_rng(seed))
    kept = np.flatnonzero(~audited)
    count = compute_expected_f1_count(calibration.error_probs[kept], scores[kept])
    flags = np.zeros(scores.size, dtype=bool)
    flags[kept[np.argsort(scores[kept], kind="stable")[:count]]] = True
    return calibration.estimate(flags), audited, calibration


def _best_count(scores, is_error, audited):
    kept = ~audited
    hits = np.cumsum(is_error[kept][np.argsort(scores[kept], kind="stable")])
    return int(np.argmax(2 * hits / (np.arange(1, hits.size + 1) + hits[-1]))) + 1


def test_draw_audit_sample_probabilities_and_determinism():
    scores, _ = _ranking(0)
    rows, probability = draw_audit_sample(scores, 160, random_state=3)
    assert rows.size == 160 == np.unique(rows).size
    assert np.all((probability > 0) & (probability <= 1))
    ranks = np.argsort(np.argsort(scores, kind="stable"))
    assert np.all(np.diff(ranks[rows]) > 0)  # likeliest wrong first
    assert ranks[rows[0]] == 0 and probability[0] == 1.0  # the top stratum in full
    assert (ranks[rows] >= scores.size // 2).sum() >= 5  # the bottom half is still sampled
    again = draw_audit_sample(scores, 160, random_state=3)
    np.testing.assert_array_equal(rows, again[0])
    assert not np.array_equal(rows, draw_audit_sample(scores, 160, random_state=4)[0])


def test_inclusion_probabilities_sum_to_the_budget():
    scores, _ = _ranking(1, n_samples=3000)
    for budget in (20, 160, 3000):
        rows, probability = draw_audit_sample(scores, budget)
        assert rows.size == budget
        # each stratum of N_h rows gives n_h of them probability n_h / N_h: the weights
        # 1 / probability count every row once, and the probabilities of all rows sum to n
        assert np.isclose(np.sum(1.0 / probability), scores.size)
        population = np.zeros(scores.size)
        ranks = np.argsort(np.argsort(scores, kind="stable"))
        for p in np.unique(probability):
            members = ranks[rows[probability == p]]
            population[np.argsort(scores, kind="stable")[members.min():members.max() + 1]] = p
        assert np.isclose(population.sum(), budget, atol=0.5 * budget)


def test_a_small_budget_draws_one_row_per_stratum():
    # a budget smaller than the strata a large set needs (8 of 254, 10 of 10,000) ended in
    # "need at least one array to concatenate" after the whole scan
    for n_samples, budget in ((254, 8), (10000, 10), (100, 1)):
        scores = np.random.default_rng(0).random(n_samples)
        rows, probability = draw_audit_sample(scores, budget)
        assert rows.size == np.unique(rows).size == budget
        assert np.isclose(np.sum(1.0 / probability), n_samples)
        assert probability.min() > 0


def test_estimated_count_approaches_the_best_cutoff_as_the_budget_grows():
    gaps, f1_shares = {}, {}
    for budget in (50, 800):
        gap, share = [], []
        for seed in range(8):
            scores, is_error = _ranking(seed, rate=0.05)
            estimate, audited, _ = _audit(scores, is_error, budget, seed)
            best = _best_count(scores, is_error, audited)
            gap.append(abs(estimate.n_flagged - best) / best)
            kept = ~audited
            order = np.argsort(scores[kept], kind="stable")
            hits = np.cumsum(is_error[kept][order])
            f1 = 2 * hits / (np.arange(1, hits.size + 1) + hits[-1])
            share.append(f1[max(estimate.n_flagged, 1) - 1] / f1.max())
        gaps[budget], f1_shares[budget] = np.median(gap), np.mean(share)
    assert gaps[800] < gaps[50]
    assert f1_shares[800] > max(f1_shares[50], 0.9)


def test_known_errors_and_precision_interval():
    scores, is_error = _ranking(5, rate=0.02)
    estimate, audited, _ = _audit(scores, is_error, 400, 5)
    assert estimate.n_known_errors == int((audited & is_error).sum()) > 0
    assert estimate.n_verified_clean + estimate.n_known_errors == 400
    low, high = estimate.precision_interval
    assert 0 <= low <= estimate.precision <= high <= 1
    true_errors = (is_error & ~audited).sum()
    assert 0.5 * true_errors < estimate.n_errors < 1.5 * true_errors


def test_bad_input():
    scores, _ = _ranking(0, n_samples=100)
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 100\]; got 0"):
        draw_audit_sample(scores, 0)
    with pytest.raises(ValueError, match="label_scores must be a non-empty 1-D array"):
        draw_audit_sample(np.r_[scores, np.nan], 10)
    with pytest.raises(ValueError, match=r"trusted\[3\]: inclusion probability must be in"):
        split_inclusion({1: (0, 0.5), 3: (1, 1.5)}, 5)
    with pytest.raises(ValueError, match=r"trusted\[3\] must be a \(label, inclusion"):
        split_inclusion({1: (0, 0.5), 3: 1}, 5)
    assert split_inclusion({1: 0}, 5) is None


def test_detector_takes_an_audit_sample():
    from clipsei import LabelIssueDetector
    from clipsei.engine.audit import rank_audit_sample
    from clipsei.evaluation.synthetic import make_noisy_blobs

    noisy = make_noisy_blobs(200, n_classes=4, noise_rate=0.1, cluster_std=0.45,
                             random_state=2)
    first = LabelIssueDetector(n_epochs=5).fit(noisy.embeddings, noisy.labels).issues_
    sheet = rank_audit_sample(first, 40, random_state=0)
    assert list(sheet.columns) == ["given_label", "label", "inclusion_probability"]
    trusted = {int(row): (int(noisy.true_labels[row]), float(p))
               for row, p in sheet["inclusion_probability"].items()}
    issues = LabelIssueDetector(n_epochs=5).fit(noisy.embeddings, noisy.labels,
                                                trusted=trusted).issues_
    verified, flagged = issues.attrs["verified"], issues["is_label_issue"].to_numpy()
    assert verified["n_known_errors"] == int(noisy.is_flipped[sheet.index].sum()) > 0
    assert verified["n_known_errors"] + verified["n_verified_clean"] == 40
    assert verified["n_flagged"] == flagged.sum() > 0
    assert not flagged[sheet.index].any()


def test_an_audit_states_one_estimate_its_refit(tmp_path):
    from clipsei import LabelIssueDetector, scan_embeddings
    from clipsei.engine.audit import rank_audit_sample
    from clipsei.evaluation.synthetic import make_noisy_blobs

    noisy = make_noisy_blobs(300, n_classes=4, noise_rate=0.1, cluster_std=0.45,
                             random_state=3)
    first = LabelIssueDetector(n_epochs=5).fit(noisy.embeddings, noisy.labels).issues_
    sheet = rank_audit_sample(first, 60, random_state=1)
    trusted = {int(row): (int(noisy.true_labels[row]), float(p))
               for row, p in sheet["inclusion_probability"].items()}
    result = scan_embeddings(noisy.embeddings, noisy.labels, out=tmp_path / "out", n_epochs=5,
                             trusted=trusted)
    summary, issues = result.summary, result.issues
    verified, probs = summary["verified"], issues["error_probability"].to_numpy()
    # the column, the rate, the expected errors and the stated precision are one estimate
    assert verified["error_probability_refitted"] and summary["estimate_used"] == "verified"
    assert "refitted on the 60 audited images" in summary["estimate_note"]
    assert summary["calibrated_error_rate"] == pytest.approx(probs.mean())
    assert summary["expected_errors_flagged"] == pytest.approx(verified["errors_flagged"])
    assert verified["n_errors"] == pytest.approx(probs[~issues.index.isin(sheet.index)].sum())
    np.testing.assert_array_equal(probs[sheet.index], noisy.is_flipped[sheet.index])
    # the flags are the likeliest by the refit, and it expects most of them to be wrong
    flagged = issues["is_label_issue"].to_numpy()
    assert flagged.sum() > 0 and probs[flagged].min() >= probs[~flagged & ~issues.index.isin(
        sheet.index)].max()
    assert verified["precision"] > 0.5
    page = (tmp_path / "out" / "report.html").read_text()
    assert "label-free estimate, not used" not in page


@pytest.mark.filterwarnings("ignore")
def test_scan_cli_audit_round_trip(tmp_path, write_images, capsys):
    write_images(tmp_path / "images", n_per_class=8, classes=("cat", "dog"))
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(out),
                 "--audit-sample", "12"]) == 0
    sheet = pd.read_csv(out / "audit.csv", keep_default_na=False)
    assert list(sheet.columns) == ["path", "given_label", "given_class", "label",
                                   "inclusion_probability"]
    assert len(sheet) == 12 and sheet["label"].eq("").all()
    # the reviewer compares against, and writes, class names (as --trusted reads them)
    assert set(sheet["given_class"]) <= {"cat", "dog"}
    assert (sheet["path"].str.split("/").str[-2] == sheet["given_class"]).all()
    issues = pd.read_csv(out / "issues.csv")
    # a reviewer corrects one image, confirms the others
    sheet.loc[0, "label"] = "dog" if sheet.loc[0, "given_class"] == "cat" else "cat"
    sheet.to_csv(tmp_path / "audit.csv", index=False)
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(tmp_path / "o2"),
                 "--trusted", str(tmp_path / "audit.csv")]) == 0
    # (the random-weight model's embeddings carry no class signal: nothing is flagged, so the
    # verified estimate is not reported here; test_detector_takes_an_audit_sample checks it)
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["n_flagged"] == 0
    again = pd.read_csv(tmp_path / "o2" / "issues.csv")
    assert not again.loc[again["path"].isin(sheet["path"]), "is_label_issue"].any()
    assert len(again) == len(issues)
    sheet.loc[1, "inclusion_probability"] = 0
    sheet.to_csv(tmp_path / "bad.csv", index=False)
    capsys.readouterr()
    assert main(["scan", str(tmp_path / "images"), *TINY, "--out", str(tmp_path / "o3"),
                 "--trusted", str(tmp_path / "bad.csv")]) == 2
    assert "bad.csv, row 3: inclusion_probability must be in (0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("rate", [0.005, 0.2])
def test_refitted_probabilities_mean_what_they_say(rate):
    scores, is_error = _ranking(7, n_samples=20000, rate=rate)
    _, audited, calibration = _audit(scores, is_error, 300, 7)
    probs, kept = calibration.error_probs, ~audited
    # the expected number of errors is about the true one, and within each band of
    # probability about that share of the (unverified) rows is wrong
    assert 0.6 < probs[kept].sum() / is_error[kept].sum() < 1.5
    for low, high in ((0.0, 0.05), (0.05, 0.5), (0.5, 1.0)):
        band = kept & (probs >= low) & (probs < high)
        if band.sum() >= 50:
            assert abs(is_error[band].mean() - probs[band].mean()) < 0.1
    np.testing.assert_array_equal(probs[audited], is_error[audited])


def test_an_audit_that_finds_no_error_flags_nothing():
    from clipsei import LabelIssueDetector
    from clipsei.engine.audit import rank_audit_sample
    from clipsei.evaluation.synthetic import make_noisy_blobs

    # overlapping classes: the label-free rule flags their hard images
    clean = make_noisy_blobs(200, n_classes=4, n_features=32, noise_rate=0.0,
                             cluster_std=3.5, random_state=1)
    first = LabelIssueDetector(n_epochs=5).fit(clean.embeddings, clean.labels).issues_
    sheet = rank_audit_sample(first, 40, random_state=0)
    trusted = {int(row): (int(clean.labels[row]), float(p))
               for row, p in sheet["inclusion_probability"].items()}
    issues = LabelIssueDetector(n_epochs=5).fit(clean.embeddings, clean.labels,
                                                trusted=trusted).issues_
    assert first["is_label_issue"].sum() > 0  # label-free, hard images are flagged
    assert issues["is_label_issue"].sum() == 0
    assert issues.attrs["expected_errors_flagged"] == 0
    assert issues.attrs["calibrated_error_rate"] == 0
    note = [w for w in issues.attrs["warnings"] if "consistent with zero" in w]
    # the audit looked at the images: no caveat about what a label-free estimate misses
    assert len(note) == 1 and "under-counts" not in note[0]
    # 40 checks cannot show that the unchecked rows hold no error: the interval says so
    low, high = issues.attrs["verified"]["n_errors_interval"]
    assert low == 0 and high >= 1


@pytest.mark.filterwarnings("ignore")
def test_a_rescan_never_overwrites_a_filled_in_audit_sheet(tmp_path, write_images, capsys):
    write_images(tmp_path / "images", n_per_class=8, classes=("cat", "dog"))
    out = tmp_path / "out"
    scan = ["scan", str(tmp_path / "images"), *TINY, "--out", str(out), "--audit-sample", "6"]
    assert main(scan) == 0
    sheet = pd.read_csv(out / "audit.csv", keep_default_na=False)
    sheet.loc[0, "label"] = "dog" if sheet.loc[0, "given_class"] == "cat" else "cat"
    sheet.to_csv(out / "audit.csv", index=False)  # the reviewer's work, in place
    capsys.readouterr()
    assert main([*scan, "--trusted", str(out / "audit.csv")]) == 0
    kept = pd.read_csv(out / "audit.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(kept, sheet)
    assert (out / "audit-1.csv").exists() and "audit-1.csv" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore")
def test_scan_cli_says_nothing_flagged_after_a_clean_audit(tmp_path, capsys):
    from PIL import Image

    # dark against bright images: even random weights tell these classes apart
    rng = np.random.default_rng(0)
    for name, level in (("dark", 40), ("bright", 210)):
        (tmp_path / "images" / name).mkdir(parents=True)
        for k in range(16):
            pixels = np.clip(rng.normal(level, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{k}.png")
    images, out = str(tmp_path / "images"), tmp_path / "out"
    assert main(["scan", images, *TINY, "--out", str(out), "--audit-sample", "12"]) == 0
    capsys.readouterr()  # every sheet row left empty: each label confirmed
    assert main(["scan", images, *TINY, "--out", str(tmp_path / "o2"), "--trusted",
                 str(out / "audit.csv")]) == 0
    printed = capsys.readouterr().out
    # it printed "precision of the flags 0% (80% interval 0%-0%)" for no flags at all
    assert "from 12 verified images (0 corrected): nothing flagged; about 0 label errors" in printed
    assert "precision of the flags" not in printed
