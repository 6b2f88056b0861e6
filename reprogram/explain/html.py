"""The self-contained HTML of a saliency report: page, styles, tables, token highlights.

Everything a report needs is inlined: styles in one ``<style>`` element (scoped to
``.rp-report``, so a notebook can embed the fragment without restyling itself), figures
as PNG ``data:`` URIs. No scripts, no fonts, no stylesheet or image is fetched from
anywhere, so the page reads the same offline, archived, or attached to an audit.
Every piece of text that comes from data (column values, group and class names, tokens)
goes through :func:`esc`.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["STYLE", "esc", "figure_png", "fmt", "img_tag", "meta_list", "page", "table", "token_legend", "token_row"]

# Signed attribution colours, the same in heatmaps (RdBu_r) and token highlights:
# red supports the explained class, blue speaks against it.
POS_RGB = (202, 0, 32)
NEG_RGB = (5, 113, 176)
TRIGGER_RGB = (123, 63, 228)

STYLE = """
.rp-report { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 15px; line-height: 1.45; color: #1d232b; background: #fff; max-width: 1240px; margin: 0 auto;
  padding: 18px 24px 40px; box-sizing: border-box; }
.rp-report * { box-sizing: border-box; }
.rp-report h1 { font-size: 26px; margin: 4px 0 6px; }
.rp-report h2 { font-size: 21px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e7ee; }
.rp-report h3 { font-size: 17px; margin: 22px 0 8px; }
.rp-report p { margin: 6px 0; }
.rp-report .muted { color: #5b6675; }
.rp-report .small { font-size: 13px; }
.rp-report code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  background: #f1f3f7; padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
.rp-report .meta { display: grid; grid-template-columns: minmax(150px, max-content) 1fr; gap: 4px 18px;
  margin: 10px 0; padding: 12px 16px; background: #f7f8fb; border: 1px solid #e3e7ee; border-radius: 6px; }
.rp-report .meta dt { font-weight: 600; color: #3a4452; }
.rp-report .meta dd { margin: 0; overflow-wrap: anywhere; }
.rp-report .table-wrap { overflow-x: auto; max-width: 100%; margin: 8px 0 14px; }
.rp-report table { border-collapse: collapse; font-size: 14px; font-variant-numeric: tabular-nums; }
.rp-report th, .rp-report td { padding: 5px 10px; border-bottom: 1px solid #e3e7ee; text-align: right;
  white-space: nowrap; }
.rp-report th { background: #f1f3f7; font-weight: 600; vertical-align: bottom; }
.rp-report thead tr:first-child th { border-bottom: 1px solid #d5dbe5; }
.rp-report thead tr:first-child:not(:last-child) th { text-align: center; }
.rp-report th.l, .rp-report td.l { text-align: left; }
.rp-report td.wrap, .rp-report th.wrap { white-space: normal; min-width: 140px; max-width: 320px;
  overflow-wrap: anywhere; text-align: left; }
.rp-report tbody tr:nth-child(even) td { background: #fafbfd; }
.rp-report td.sep, .rp-report th.sep { border-left: 2px solid #d5dbe5; }
.rp-report .better { color: #0a7a2f; font-weight: 600; }
.rp-report .worse { color: #b3261e; font-weight: 600; }
.rp-report .flag { color: #9a6700; }
.rp-report .badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px;
  font-weight: 600; background: #eef1f6; color: #3a4452; white-space: nowrap; }
.rp-report .badge.flip { background: #fde7c8; color: #7a4300; }
.rp-report .badge.ok { background: #dcf3e3; color: #0a5c24; }
.rp-report .badge.bad { background: #fbdedc; color: #8c1d18; }
.rp-report .group { margin: 18px 0 30px; }
.rp-report .group-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 16px; }
.rp-report .sample { border: 1px solid #e3e7ee; border-radius: 6px; margin: 10px 0 14px; padding: 8px 12px 10px;
  background: #fff; }
.rp-report .sample .preds { display: flex; flex-wrap: wrap; gap: 4px 18px; align-items: baseline;
  font-size: 14px; margin-bottom: 4px; }
.rp-report .sample img, .rp-report figure img { display: block; max-width: 100%; height: auto; }
.rp-report figure { margin: 8px 0 16px; }
.rp-report figcaption { font-size: 13px; color: #5b6675; margin-top: 4px; }
.rp-report .tokens { margin: 6px 0; line-height: 2.1; overflow-wrap: anywhere; }
.rp-report .tokens .lab { display: inline-block; min-width: 84px; font-size: 13px; font-weight: 600;
  color: #3a4452; }
.rp-report .tok { padding: 2px 3px; margin: 0 1px; border-radius: 3px; white-space: pre-wrap; }
.rp-report .tokens .peak { font-size: 12px; color: #5b6675; margin-left: 8px; white-space: nowrap; }
.rp-report .tok.special { color: #7d8794; font-size: 12px; }
.rp-report .tok.trig { outline: 2px dashed rgb(123, 63, 228); outline-offset: 1px; font-weight: 600; }
.rp-report .legend { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 14px; font-size: 13px;
  color: #3a4452; margin: 6px 0 10px; }
.rp-report .legend .bar { display: inline-block; width: 220px; height: 14px; border: 1px solid #c9d0db;
  border-radius: 2px; vertical-align: middle;
  background: linear-gradient(to right, rgb(5, 113, 176), #ffffff 50%, rgb(202, 0, 32)); }
.rp-report .note { font-size: 13px; color: #5b6675; border-left: 3px solid #d5dbe5; padding: 2px 10px;
  margin: 8px 0; }
.rp-report .grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 10px 24px; }
"""


def esc(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: fixed digits, ``–`` for NaN/None, integers as they are."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return esc(value)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}f}".replace("-", "−")


def figure_png(fig, dpi: int = 100) -> bytes:
    """The PNG bytes of a matplotlib Figure (drawn on its own Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def img_tag(png: bytes, alt: str, *, width: int | None = None) -> str:
    """An ``<img>`` carrying ``png`` inline as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    style = f' style="width: {int(width)}px"' if width else ""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}"{style}>'


def table(header: Sequence[Any] | Sequence[Sequence[tuple[str, int]]], rows: Iterable[Sequence[Any]], *,
          left: int = 1, cls: str = "", sep_every: int = 0, sep_after: int = 0, table_id: str | None = None,
          raw: bool = False, wrap_cols: Sequence[int] = ()) -> str:
    """An HTML table in a horizontally scrolling wrapper (never wider than the page).

    ``header`` is one row of labels, or several rows of ``(label, colspan)`` pairs.
    The first ``left`` columns are left-aligned. ``sep_every``/``sep_after`` draw a
    rule before column ``sep_after + k * sep_every`` (to group base / +trigger pairs).
    Cells are escaped unless ``raw`` (cells already HTML).
    """
    def cell_class(j: int) -> str:
        c = []
        if j < left:
            c.append("l")
        if j in wrap_cols:
            c.append("wrap")
        if sep_every and j >= sep_after and (j - sep_after) % sep_every == 0:
            c.append("sep")
        return f' class="{" ".join(c)}"' if c else ""

    head_rows = header if header and isinstance(header[0], (list, tuple)) else [[(h, 1) for h in header]]
    out = [f'<div class="table-wrap"><table class="{esc(cls)}"' + (f' id="{esc(table_id)}"' if table_id else "") + ">"]
    out.append("<thead>")
    for hr in head_rows:
        out.append("<tr>")
        j = 0
        for label, span in hr:
            cc = cell_class(j)
            out.append(f"<th{cc}" + (f' colspan="{span}"' if span > 1 else "") + f">{esc(label)}</th>")
            j += span
        out.append("</tr>")
    out.append("</thead><tbody>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td{cell_class(j)}>{v if raw else esc(v)}</td>" for j, v in enumerate(r))
                   + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _rgba(score: float) -> str:
    a = min(1.0, abs(float(score))) * 0.85
    r, g, b = POS_RGB if score >= 0 else NEG_RGB
    return f"rgba({r}, {g}, {b}, {a:.3f})"


def token_row(label: str, tokens: Sequence[str], scores: np.ndarray, is_trigger: np.ndarray | None,
              scale: float | None = None, *, special: Iterable[str] = ()) -> str:
    """One text's tokens as spans coloured by signed score / ``scale`` (red +, blue −).

    ``scale`` defaults to the row's largest |score|, which is printed at the row's end.
    Trigger tokens get a dashed purple outline; special tokens ([CLS], [SEP]) are dimmed.
    Each span's ``title`` holds the exact score.
    """
    special = set(special)
    scores = np.asarray(scores, dtype=np.float64)
    if scale is None:
        scale = float(np.abs(scores).max()) if scores.size else 0.0
    shown = float(scale)
    scale = float(scale) if scale and np.isfinite(scale) and scale > 0 else 1.0
    trig = np.zeros(len(tokens), dtype=bool) if is_trigger is None else np.asarray(is_trigger, dtype=bool)
    spans = []
    for tok, s, t in zip(tokens, scores, trig):
        rel = float(s) / scale
        cls = "tok" + (" trig" if t else "") + (" special" if tok in special and not t else "")
        white = abs(rel) > 0.6
        color = "; color: #fff" if white else ""
        title = f"{'trigger token, ' if t else ''}attribution {float(s):+.4g}"
        spans.append(f'<span class="{cls}" style="background: {_rgba(rel)}{color}" title="{esc(title)}">'
                     f"{esc(tok)}</span>")
    peak = f' <span class="peak">max |IG| {shown:.2g}</span>'
    return f'<div class="tokens"><span class="lab">{esc(label)}</span>{" ".join(spans)}{peak}</div>'


def token_legend(has_trigger: bool) -> str:
    """The colour key of the token highlights (a CSS gradient, no image)."""
    parts = [('<div class="legend"><span>against the explained class</span><span class="bar"></span>'
              "<span>for the explained class</span>"),
             ('<span class="muted">(colour ∝ IG attribution ÷ the largest |attribution| of its row, printed at the '
              "row's end; hover a token for its value)</span>")]
    if has_trigger:
        parts.append('<span><span class="tok trig key" style="background: #fff">trigger</span> '
                     "= a token the prompt trigger inserts (⟨t1⟩, ⟨t2⟩…: its soft tokens; a hard trigger's are words)</span>")
    parts.append("</div>")
    return "".join(parts)


def meta_list(items: Mapping[str, str]) -> str:
    """A definition list of already-escaped HTML values under escaped labels."""
    return '<dl class="meta">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items.items()) + "</dl>"


def page(title: str, body: str) -> str:
    """The whole standalone page around ``body`` (a ``.rp-report`` fragment)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body style=\"margin: 0\">\n"
            f"{body}\n</body>\n</html>\n")
