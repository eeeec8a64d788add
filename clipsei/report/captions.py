"""The caption report: one self-contained HTML page, each suspicious pair's image beside its
caption and the neighbours' suggested caption, most suspicious first."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from .thumbnails import encode_thumbnails

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>clipsei: caption issues</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 6px; vertical-align: top; text-align: left; }}
tr.flagged {{ background: #fff3f0; }}
img {{ max-width: {size}px; max-height: {size}px; }}
.score {{ font-variant-numeric: tabular-nums; white-space: nowrap; }}
.path {{ color: #777; font-size: 85%; word-break: break-all; }}
</style></head><body>
<h1>Image-caption pairs that disagree</h1>
<p>{headline}</p>{warnings}
<table><thead><tr><th>#</th><th>image</th><th>caption</th><th>suggested caption
(from similar images)</th><th>scores</th></tr></thead><tbody>
{rows}
</tbody></table></body></html>
"""


def write_caption_report(path, issues: pd.DataFrame, *, summary: dict, limit: int = 200,
                         thumb_size: int = 160) -> Path:
    """Write the report for ``issues`` (sorted by rank, columns as ``scan_captions`` gives) to
    ``path``: flagged pairs, then the next-lowest ``caption_score`` ones, up to ``limit`` rows."""
    shown = issues.sort_values("rank", kind="stable").head(limit).reset_index(drop=True)
    thumbs, _ = encode_thumbnails(shown["path"].tolist(), list(range(len(shown))), thumb_size)
    rows = "\n".join(_row(i, record, thumbs.get(str(i))) for i, record in shown.iterrows())
    headline = (f"{summary['n_flagged']} of {summary['n_scored']} pairs flagged as mismatched "
                f"({summary['n_failed']} unreadable images, listed in failures.csv); showing "
                f"the {len(shown)} with the lowest caption_score. {html.escape(summary['method'])}"
                f", k = {summary['n_neighbors']}.")
    warnings = "".join(f"<p><strong>Warning:</strong> {html.escape(w)}</p>"
                       for w in summary.get("warnings", []))
    path = Path(path)
    path.write_text(_PAGE.format(size=thumb_size, headline=headline, warnings=warnings,
                                 rows=rows), encoding="utf-8")
    return path


def _row(position: int, record, thumb) -> str:
    image = (f'<img src="{thumb}" alt="">' if thumb else "<em>no thumbnail</em>")
    suggested = (f"{html.escape(record['suggested_caption'])}<br><span class=score>cos "
                 f"{record['suggested_similarity']:.3f}, row {record['suggested_row']}</span>"
                 if record["suggested_row"] >= 0 else "")
    scores = (f"caption_score {record['caption_score']:.3f}<br>pair cos "
              f"{record['pair_similarity']:.3f}<br>image-neighbours "
              f"{record['image_neighbor_agreement']:.3f}<br>text-neighbours "
              f"{record['text_neighbor_agreement']:.3f}")
    flagged = ' class="flagged"' if record["is_caption_issue"] else ""
    return (f"<tr{flagged}><td>{position + 1}</td><td>{image}<div class=path>"
            f"{html.escape(str(record['path']))}</div></td>"
            f"<td>{html.escape(str(record['caption']))}</td><td>{suggested}</td>"
            f"<td class=score>{scores}</td></tr>")
