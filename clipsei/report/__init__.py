"""The report layer: the self-contained HTML report, its thumbnails, plots and summary.json."""

from .html import render_report, save_report

__all__ = ["render_report", "save_report"]
