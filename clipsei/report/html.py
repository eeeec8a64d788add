"""One self-contained HTML report of a scan: no network, no CDN, thumbnails inline.

The page holds every row as compact JSON (column arrays) and renders 100 rows at a time
with plain JavaScript, so it stays usable at 50,000 images. Thumbnails are inlined as base64
JPEG only for the flagged rows, their neighbours and the first page (at most
``max_thumbnails``); other rows show a placeholder. Entropy trajectories are binned to at
most 30 points and stored as one letter per point. The layout lives in ``templates/``.
"""

from __future__ import annotations

import html
import logging
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np

from .summary import stated_error_rate
from .thumbnails import LOW_RANGE, NEIGHBOURS_SHOWN, encode_thumbnails, thumbnail_rows

logger = logging.getLogger(__name__)

_REQUIRED_COLUMNS = ("given_label", "suggested_label", "suggested_confidence", "label_score",
                     "is_label_issue", "rank")
_TRAJECTORY_POINTS = 30
_TRAJECTORY_LEVELS = 25  # letters a..z encode levels 0..25
_FAILURES_SHOWN = 200


def save_report(path, issues, **options) -> Path:
    """Write :func:`render_report` of ``issues`` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(issues, **options), encoding="utf-8")
    logger.info("wrote report %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def render_report(issues, *, class_names=None, entropy_history=None, agreement_history=None,
                  neighbor_ids=None, neighbor_sims=None, images=None, summary=None,
                  title="clipsei report", page_size=100, max_thumbnails=2000,
                  thumbnail_size=80) -> str:
    """Return the report page for an issues table as one HTML string.

    ``issues`` is the table of :func:`clipsei.find_label_issues` (one row per image, an
    optional ``path`` column for thumbnails); its ``attrs`` give the cutoff and the
    per-class noise rates. ``entropy_history``/``agreement_history`` are (E, N),
    ``neighbor_ids``/``neighbor_sims`` (N, k). Thumbnails come from ``images`` (a uint8
    array (N, H, W[, C]) or N PIL images) when given, else from the files in ``path``.
    ``summary`` is the scan summary dict (failures, model, settings, warnings), shown when
    given; its ``warnings`` (or ``issues.attrs["warnings"]``) become a banner on top.
    Thumbnails of low-range images (e.g. 8-bit files using grey levels 0-2) are stretched
    to the full range for display, and the footer says how many.
    """
    _check_issues(issues)
    n_samples = len(issues)
    if class_names is None:
        n_classes = int(max(issues["given_label"].max(), issues["suggested_label"].max())) + 1
        class_names = [str(k) for k in range(n_classes)]
    class_names = [str(name) for name in class_names]
    for name, array in (("entropy_history", entropy_history),
                        ("agreement_history", agreement_history)):
        if array is not None and np.shape(array)[1:] != (n_samples,):
            raise ValueError(f"{name} must have shape (epochs, {n_samples}); "
                             f"got {np.shape(array)}")
    if neighbor_ids is not None and np.shape(neighbor_ids)[0] != n_samples:
        raise ValueError(f"neighbor_ids must have {n_samples} rows; got {np.shape(neighbor_ids)}")
    summary = summary or {}
    cutoff = issues.attrs.get("cutoff")
    payload, root = _payload(issues, class_names, entropy_history, agreement_history,
                             neighbor_ids, neighbor_sims, page_size)
    n_stretched = 0
    if images is not None or "path" in issues:
        rows = thumbnail_rows(issues, neighbor_ids, page_size, max_thumbnails)
        rows += _issue_rows(payload["columns"], set(rows), max_thumbnails - len(rows))
        source = images if images is not None else issues["path"].to_numpy()
        payload["thumbs"], n_stretched = encode_thumbnails(source, rows, thumbnail_size)
    warnings = summary.get("warnings", issues.attrs.get("warnings")) or []
    values = {
        "banner": _banner_html(warnings),
        "failures": _failures_html(summary.get("failures") or []),
        "title": html.escape(title),
        "subtitle": html.escape(_subtitle(root, summary)),
        "stats": _stats_html(issues, summary),
        "histogram": _histogram_svg(issues["label_score"].to_numpy(np.float64),
                                    issues["is_label_issue"].to_numpy(bool), cutoff),
        "class_table": _class_table_html(issues, class_names),
        "confusions": _confusions_html(issues, class_names),
        "footer": html.escape(_footer(summary, n_stretched)),
        "style": _template("report.css"),
        "script": _template("report.js"),
        "data": _json_for_script(payload),
    }
    return _fill(_template("report.html"), values)


def _check_issues(issues) -> None:
    if not hasattr(issues, "columns"):
        raise TypeError(f"issues must be a pandas DataFrame; got {type(issues).__name__}")
    missing = [column for column in _REQUIRED_COLUMNS if column not in issues.columns]
    if missing:
        raise ValueError(f"issues is missing columns {missing}; expected {list(_REQUIRED_COLUMNS)}")
    if len(issues) == 0:
        raise ValueError("issues must have at least one row; got an empty table")


def _template(name: str) -> str:
    return (resources.files("clipsei.report") / "templates" / name).read_text(encoding="utf-8")


def _fill(template: str, values: dict) -> str:
    """Replace every ``{{name}}`` in one pass, so inserted text is never scanned again."""
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match.group(1)], template)


def _json_for_script(payload) -> str:
    """JSON that cannot close its ``<script>`` element or open a comment inside it."""
    import json

    text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _rounded(values, digits: int) -> list:
    values = np.round(np.asarray(values, dtype=np.float64), digits)
    return [float(v) if np.isfinite(v) else None for v in values]


def _payload(issues, class_names, entropy_history, agreement_history, neighbor_ids,
             neighbor_sims, page_size):
    columns = {
        "given": issues["given_label"].astype(int).tolist(),
        "suggested": issues["suggested_label"].astype(int).tolist(),
        "conf": _rounded(issues["suggested_confidence"], 3),
        "score": _rounded(issues["label_score"], 4),
        "perr": (_rounded(issues["error_probability"], 3) if "error_probability" in issues
                 else None),
        "sei": _rounded(issues["sei_score"], 4) if "sei_score" in issues else None,
        "knn": _rounded(issues["knn_agreement"], 3) if "knn_agreement" in issues else None,
        "flag": issues["is_label_issue"].astype(bool).astype(int).tolist(),
        "rank": issues["rank"].astype(int).tolist(),
    }
    columns.update(_data_issue_columns(issues))
    root = ""
    if "path" in issues:
        root, columns["path"] = _relative_paths(issues["path"].astype(str).tolist())
    trajectory_range = None
    if entropy_history is not None:
        columns["traj"], trajectory_range = _encode_trajectories(entropy_history,
                                                                 agreement_history)
    if neighbor_ids is not None:
        shown = np.asarray(neighbor_ids)[:, :NEIGHBOURS_SHOWN]
        columns["nbr"] = shown.astype(int).tolist()
        if neighbor_sims is not None:
            sims = np.asarray(neighbor_sims, dtype=np.float64)[:, :NEIGHBOURS_SHOWN]
            columns["nsim"] = np.where(np.isfinite(sims), np.round(sims, 3), 0.0).tolist()
    payload = {"classes": class_names, "columns": columns, "thumbs": {},
               "pageSize": int(page_size), "trajectoryRange": trajectory_range}
    return payload, root


def _data_issue_columns(issues) -> dict:
    """``issues``: {issue type: row ids} of every non-empty ``is_<type>`` column other than
    the label flag; ``dgroup``: duplicate set per row (-1 none), when the table has one."""
    flagged = {column[3:]: np.flatnonzero(issues[column].astype(bool).to_numpy()).tolist()
               for column in issues.columns
               if column.startswith("is_") and column != "is_label_issue"}
    columns = {"issues": {name: rows for name, rows in flagged.items() if rows}}
    if "duplicate_group" in issues:
        columns["dgroup"] = issues["duplicate_group"].astype(int).tolist()
    return columns


def _issue_rows(columns: dict, chosen: set, limit: int) -> list:
    """Rows of the data-issue filters not yet in ``chosen``, at most ``limit``."""
    extra = {row: None for rows in columns.get("issues", {}).values() for row in rows
             if row not in chosen}
    return list(extra)[:max(limit, 0)]


def _relative_paths(paths: list) -> tuple:
    """Strip the folder all paths share; return (that folder, the shortened paths)."""
    try:
        root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    except ValueError:  # a mix of absolute and relative paths, or of drives
        return "", paths
    if root in paths:  # a single distinct file
        root = os.path.dirname(root)
    if not root:
        return "", paths
    return root, [os.path.relpath(path, root) for path in paths]


def _encode_trajectories(entropy_history, agreement_history) -> tuple:
    """One string per sample: a letter per epoch bin, upper case where the prediction mostly
    disagreed with the given label in that bin. Letters a..z span the 1st to 99th percentile
    of all entropies, returned as the (low, high) range in nats."""
    entropy = np.asarray(entropy_history, dtype=np.float32)
    n_epochs = entropy.shape[0]
    bins = np.array_split(np.arange(n_epochs), min(n_epochs, _TRAJECTORY_POINTS))
    binned = np.stack([entropy[idx].mean(axis=0) for idx in bins], axis=1)  # (N, P)
    low, high = (float(v) for v in np.nanpercentile(binned, [1, 99]))
    high = max(high, low + 1e-3)
    levels = np.clip(np.round((binned - low) / (high - low) * _TRAJECTORY_LEVELS), 0,
                     _TRAJECTORY_LEVELS)
    levels = np.nan_to_num(levels)
    letters = (levels.astype(np.uint8) + ord("a"))
    if agreement_history is not None:
        agree = np.asarray(agreement_history, dtype=np.float32)
        disagree = np.stack([agree[idx].mean(axis=0) < 0.5 for idx in bins], axis=1)
        letters = np.where(disagree, letters - 32, letters).astype(np.uint8)
    return [row.tobytes().decode("ascii") for row in letters], [round(low, 3), round(high, 3)]


def _subtitle(root: str, summary: dict) -> str:
    parts = []
    if root:
        parts.append(f"Images under {root}")
    settings = summary.get("settings", {})
    if settings.get("model"):
        parts.append(f"model {settings['model']} ({settings.get('pretrained', '?')})")
    if settings.get("method"):
        parts.append(f"method {settings['method']}")
    return " \u00b7 ".join(parts)


def _stats_html(issues, summary: dict) -> str:
    n_flagged = int(issues["is_label_issue"].sum())
    cutoff = issues.attrs.get("cutoff")
    noise = stated_error_rate(issues.attrs, len(issues))  # the expected errors' rate
    stats = [("images scored", f"{len(issues):,}", ""),
             ("flagged", f"{n_flagged:,} ({n_flagged / len(issues):.1%})", " flag")]
    verified = issues.attrs.get("verified")
    if verified:  # the verified images' estimate is the one used: say how sure it is
        stats.extend(_verified_stats(verified))
    refitted = bool(verified and verified.get("error_probability_refitted"))
    label_free = "label-free estimate, not used: " if verified and not refitted else ""
    expected = (issues.attrs.get("expected_errors_flagged"),
                issues.attrs.get("expected_errors_unflagged"))
    signal = issues.attrs.get("class_signal") or {}
    if not signal.get("informative", True):
        noise, expected = None, (None, None)  # chance-level heads cannot count errors
        why = "too few images to tell" if signal.get("too_few_samples") else "no class information"
        stats.append(("label errors", f"not estimated ({why})", ""))
    if noise is not None:
        stats.append((f"{label_free}label errors", f"{noise:.1%}", ""))
    if None not in expected:
        stats.append((f"{label_free}expected real errors among the flags",
                      f"{expected[0]:,.0f}", ""))
        stats.append((f"{label_free}expected errors left unflagged", f"{expected[1]:,.0f}", ""))
    if cutoff is not None:
        stats.append(("cutoff on label score", f"{cutoff:.3f}", ""))
    elif issues.attrs.get("class_cutoffs"):
        stats.append(("cutoff on label score", "per class", ""))
    if "n_failed" in summary:
        stats.append(("unreadable files", f"{summary['n_failed']:,}", ""))
    return "".join(f'<div class="stat{cls}"><b>{html.escape(value)}</b>'
                   f"<span>{html.escape(name)}</span></div>" for name, value, cls in stats)


def _verified_stats(verified: dict) -> list:
    """(name, value, class) boxes of the verified images' precision and error count."""
    n_verified = verified["n_verified_clean"] + verified["n_known_errors"]
    low, high = verified["precision_interval"]
    errors_low, errors_high = verified["n_errors_interval"]
    return [(f"precision of the flags (from {n_verified} verified images, 80% interval)",
             f"{verified['precision']:.0%} ({low:.0%}\u2013{high:.0%})", ""),
            (f"label errors among the {verified['n_unverified']:,} unverified images (from "
             "verified images, 80% interval)",
             f"{verified['n_errors']:,.0f} ({errors_low:,.0f}\u2013{errors_high:,.0f})", "")]


def _histogram_svg(scores, flagged, cutoff, *, n_bins: int = 40) -> str:
    """A stacked histogram of label scores in [0, 1] (kept grey, flagged red) as inline SVG."""
    width, height, left, bottom = 520, 180, 36, 22
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    finite = np.isfinite(scores)
    kept = np.histogram(np.clip(scores[finite & ~flagged], 0, 1), bins=edges)[0]
    bad = np.histogram(np.clip(scores[finite & flagged], 0, 1), bins=edges)[0]
    top = max(int((kept + bad).max()), 1)
    plot_w, plot_h = width - left - 6, height - bottom - 8
    bar_w = plot_w / n_bins
    parts = [(f'<svg class="hist" viewBox="0 0 {width} {height}" role="img" '
              'aria-label="histogram of label scores">')]
    for b in range(n_bins):
        x = left + b * bar_w
        y0 = 8 + plot_h
        for count, color in ((kept[b], "#adb5bd"), (bad[b], "#c0392b")):
            h = plot_h * count / top
            if count:
                parts.append(f'<rect x="{x:.1f}" y="{y0 - h:.1f}" width="{bar_w - 1:.1f}" '
                             f'height="{h:.1f}" fill="{color}"><title>{count} images</title>'
                             "</rect>")
            y0 -= h
    for tick in np.linspace(0, 1, 6):
        x = left + tick * plot_w
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{tick:.1f}</text>')
    parts.append(f'<text x="{left - 4}" y="14" text-anchor="end">{top}</text>'
                 f'<text x="{left - 4}" y="{8 + plot_h}" text-anchor="end">0</text>'
                 f'<line x1="{left}" y1="{8 + plot_h}" x2="{left + plot_w}" y2="{8 + plot_h}" '
                 'stroke="#495057"/>')
    if cutoff is not None and np.isfinite(cutoff):
        x = left + float(np.clip(cutoff, 0, 1)) * plot_w
        parts.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{8 + plot_h}" stroke="#000" '
                     f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="14">cutoff '
                     f'{cutoff:.3f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _class_table_html(issues, class_names) -> str:
    """Per class: images, flagged, [own cutoff], est. errors (confident learning's count) and
    flagged share (flagged / images), with a bar of the flagged share."""
    given = issues["given_label"].to_numpy(int)
    flagged = issues["is_label_issue"].to_numpy(bool)
    n_classes = len(class_names)
    counts = np.bincount(given, minlength=n_classes)
    n_flagged = np.bincount(given[flagged], minlength=n_classes)
    attrs = issues.attrs
    shares = attrs.get("flagged_share_per_class")
    shares = (np.asarray([np.nan if v is None else v for v in shares], dtype=float)
              if shares is not None else n_flagged / np.maximum(counts, 1))
    errors = attrs.get("estimated_errors_per_class")
    top = max(float(np.nanmax(shares, initial=0.0)), 1e-9)
    class_cutoffs = attrs.get("class_cutoffs") if attrs.get("cutoff") is None \
        else None  # a column only where the classes have their own cutoffs
    rows = []
    for k, name in enumerate(class_names):
        share = float(shares[k]) if k < len(shares) else float("nan")
        finite = np.isfinite(share)
        width = min(100.0, 100 * share / top) if finite else 0.0
        cutoff_cell = ""
        if class_cutoffs is not None:
            cutoff_cell = f"<td class=num>{_number(_item(class_cutoffs, k), '.3f')}</td>"
        rows.append(f"<tr><td>{html.escape(name)}</td><td class=num>{counts[k]:,}</td>"
                    f"<td class=num>{n_flagged[k]:,}</td>{cutoff_cell}"
                    f"<td class=num>{_number(_item(errors, k), ',.0f')}</td>"
                    f"<td class=num>{f'{share:.1%}' if finite else '&ndash;'}</td>"
                    f'<td class="bar-cell"><div class="bar" style="width:{width:.0f}%"></div>'
                    "</td></tr>")
    cutoff_head = "<th class=num>cutoff</th>" if class_cutoffs is not None else ""
    return ('<table class="classes"><thead><tr><th>given class</th><th class=num>images</th>'
            f"<th class=num>flagged</th>{cutoff_head}"
            '<th class=num title="confident learning\'s estimated number of wrong labels">'
            "est. errors</th>"
            '<th class=num title="share of the class flagged for review">flagged share</th>'
            f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _item(values, k: int):
    return values[k] if values is not None and k < len(values) else None


def _number(value, spec: str) -> str:
    if value is None or not np.isfinite(value):
        return "&ndash;"
    return format(value, spec)


def _banner_html(warnings) -> str:
    """The run's warnings (random weights, no class signal...) as a banner; '' when none."""
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(str(text))}</li>" for text in warnings)
    return (f'<div class="banner" role="alert"><b>Read with care: these results may not mean '
            f"what they seem.</b><ul>{items}</ul></div>")


def _failures_html(failures: list) -> str:
    """A section listing unreadable files (path and reason); '' when every file was read."""
    if not failures:
        return ""
    rows = "".join(f'<tr><td class="path">{html.escape(str(row.get("path")))}</td>'
                   f'<td>{html.escape(str(row.get("reason")))}</td></tr>'
                   for row in failures[:_FAILURES_SHOWN])
    more = (f'<p class="hint">and {len(failures) - _FAILURES_SHOWN:,} more, in failures.csv</p>'
            if len(failures) > _FAILURES_SHOWN else "")
    return (f'<section class="failures"><h2>Unreadable files ({len(failures):,})</h2>'
            '<p class="hint">Not scored: they could not be decoded.</p>'
            f"<table><tbody>{rows}</tbody></table>{more}</section>")


def _confusions_html(issues, class_names, *, top: int = 8) -> str:
    flagged = issues[issues["is_label_issue"].astype(bool)]
    moved = flagged[flagged["given_label"] != flagged["suggested_label"]]
    if moved.empty:
        return '<p class="hint">No flagged image has a different suggested label.</p>'
    pairs = moved.groupby(["given_label", "suggested_label"]).size().nlargest(top)
    rows = "".join(f"<tr><td>{html.escape(class_names[int(g)])}</td><td>&rarr;</td>"
                   f"<td>{html.escape(class_names[int(s)])}</td><td class=num>{n:,}</td></tr>"
                   for (g, s), n in pairs.items())
    return ('<table class="confusions"><thead><tr><th>given</th><th></th><th>suggested</th>'
            f"<th class=num>images</th></tr></thead><tbody>{rows}</tbody></table>")


def _footer(summary: dict, n_stretched: int = 0) -> str:
    versions = summary.get("versions", {})
    text = "Made by clipsei"
    if versions.get("clipsei"):
        text += f" {versions['clipsei']}"
    if summary.get("created"):
        text += f" on {summary['created']}"
    text += ". Scores: lower = more likely mislabeled. Self-contained file: no network access."
    if n_stretched:
        text += (f" {n_stretched} thumbnails of low-contrast images (fewer than {LOW_RANGE} "
                 "grey levels) are contrast-stretched, for display only.")
    return text
