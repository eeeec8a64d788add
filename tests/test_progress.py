import io
import sys

import pytest

from clipsei._progress import progress_bars
from clipsei.engine.detect import LabelIssueDetector


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("method", ["clipsei", "aum"])
def test_fit_reports_every_stage_to_its_end(blobs, method):
    calls = []
    LabelIssueDetector(method=method, n_epochs=3, n_repeats=2).fit(
        blobs.embeddings, blobs.labels, progress=lambda *call: calls.append(call))
    for stage in ("neighbours", "heads"):
        done = [d for s, d, _ in calls if s == stage]
        totals = {t for s, _, t in calls if s == stage}
        assert len(totals) == 1 and done[-1] == totals.pop()
        assert done == sorted(done)
    heads_total = {t for s, _, t in calls if s == "heads"}.pop()
    # clipsei: temperature search + 2 repeats x (threshold runs + 2 held-out rounds); aum: 2 x 1
    assert heads_total == (3 * (1 + 2 * 3) if method == "clipsei" else 3 * 2)


def test_bars_draw_rate_on_a_terminal_only(blobs, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bars = progress_bars(True)
    LabelIssueDetector(method="aum", n_epochs=2).fit(blobs.embeddings, blobs.labels,
                                                     progress=bars)
    drawn = terminal.getvalue()
    assert "heads" in drawn and "epoch/s" in drawn and "neighbours" in drawn
    assert progress_bars(False) is None
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe, a log file, a notebook
    assert progress_bars(True) is None


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_scan_bars_unless_quiet(tmp_path, write_images, monkeypatch, quiet):
    from clipsei.cli import main

    write_images(tmp_path / "images", n_per_class=5, classes=("cat", "dog"))
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert main(["scan", str(tmp_path / "images"), "--model", "clipsei-tiny",
                 "--pretrained", "none", "--out", str(tmp_path / "out"),
                 *(["-q"] if quiet else [])]) == 0
    drawn = sys.stderr.getvalue()
    assert ("heads" in drawn and "epoch/s" in drawn) is not quiet
