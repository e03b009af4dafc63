"""A self-contained HTML page: sections, tables and PNG figures embedded as data URIs.

The page references nothing outside itself: the style sheet is inline, fonts
are the reader's own, and every image is a ``data:image/png;base64`` URI.
Links point only at anchors of the same page.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from matplotlib.figure import Figure

from pea_spark._report_figures import png_bytes

__all__ = ["Page", "Section", "RenderedFigure", "format_value"]

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: #1d2733; background: #f6f7f9; margin: 0; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
header { border-bottom: 3px solid #1f77b4; margin-bottom: 12px; }
h1 { font-size: 1.8em; margin: 0.2em 0; }
h2 { font-size: 1.35em; margin-top: 2em; padding-bottom: 4px; border-bottom: 1px solid #d5dbe3; }
h3 { font-size: 1.08em; margin-top: 1.4em; }
nav ol { columns: 2; padding-left: 1.4em; }
nav a, a { color: #1f5f99; text-decoration: none; }
nav a:hover { text-decoration: underline; }
.meta { color: #506070; font-size: 0.92em; }
.summary { background: #eef4fa; border-left: 4px solid #1f77b4; padding: 2px 16px; }
.missing { background: #fff4e5; border-left: 4px solid #e67e22; padding: 8px 16px; }
.verdict { font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.88em; min-width: 320px;
        max-width: 100%; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e2e6ea; text-align: left;
         vertical-align: top; }
td.long { overflow-wrap: anywhere; min-width: 12em; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
.scroll { max-height: 520px; overflow-y: auto; display: inline-block; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 8px 0; flex: 0 1 552px; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #e2e6ea; }
figcaption { font-size: 0.86em; color: #405060; }
code { background: #f0f2f5; padding: 1px 4px; border-radius: 3px; }
"""

# Text cells longer than this many characters may break anywhere (file paths, for example).
_LONG_CELL = 40


def format_value(value: Any) -> str:
    """Format a table cell: thousands separators for integers, 4 decimals for floats.

    A :class:`decimal.Decimal` keeps its own digits, so ``Decimal("0.50")``
    shows a threshold with 2 decimals.
    """
    if value is None:
        return "n/a"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "n/a"
        return f"{number:.4f}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real | Decimal) and not isinstance(value, bool)


def _inline(text: str) -> str:
    """Escape ``text`` and render `backquoted` spans as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


@dataclass
class RenderedFigure:
    """One figure of the page: its PNG file name, caption and PNG bytes."""

    file_name: str
    caption: str
    png: bytes

    def data_uri(self) -> str:
        """Return the PNG as a ``data:image/png;base64`` URI."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Section:
    """One numbered section of the page, filled in reading order."""

    anchor: str
    heading: str
    page: Page = field(repr=False)
    parts: list[str] = field(default_factory=list)

    def paragraph(self, text: str, css_class: str | None = None) -> None:
        """Add a paragraph, in which `backquoted` spans become code."""
        attribute = f' class="{css_class}"' if css_class else ""
        self.parts.append(f"<p{attribute}>{_inline(text)}</p>")

    def box(self, texts: Sequence[str], css_class: str) -> None:
        """Add paragraphs inside one highlighted block, with `backquoted` spans as code."""
        paragraphs = "".join(f"<p>{_inline(t)}</p>" for t in texts)
        self.parts.append(f'<div class="{css_class}">{paragraphs}</div>')

    def missing(self, text: str) -> None:
        """Add a highlighted sentence saying what is absent and which command adds it."""
        self.paragraph(text, "missing")

    def subheading(self, text: str) -> None:
        """Add a third-level heading."""
        self.parts.append(f"<h3>{html.escape(text)}</h3>")

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]],
              caption: str | None = None, scroll: bool = False,
              align_numbers: bool = True) -> None:
        """Add a table of cells formatted by :func:`format_value`.

        Numbers are right-aligned unless ``align_numbers`` is false (for
        tables of settings, whose values mix text and numbers).
        """
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = []
        for row in rows:
            cells = []
            for value in row:
                text = format_value(value)
                css = ""
                if align_numbers and _is_number(value):
                    css = ' class="num"'
                elif len(text) > _LONG_CELL:
                    css = ' class="long"'
                cells.append(f"<td{css}>{html.escape(text)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        table = (f"<table>{title}<thead><tr>{head}</tr></thead>"
                 f"<tbody>{''.join(body)}</tbody></table>")
        self.parts.append(f'<div class="scroll">{table}</div>' if scroll else table)

    def figures(self, *items: tuple[Figure, str, str]) -> None:
        """Add figures side by side, each given as (figure, file name, caption)."""
        rendered = [self.page.add_figure(figure, name, caption) for figure, name, caption in items]
        blocks = [
            f'<figure><img src="{f.data_uri()}" alt="{html.escape(f.caption)}">'
            f"<figcaption>{_inline(f.caption)}</figcaption></figure>"
            for f in rendered
        ]
        self.parts.append('<div class="figures">' + "".join(blocks) + "</div>")


@dataclass
class Page:
    """The whole report page: a header, a table of contents and the sections."""

    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)
    figures: list[RenderedFigure] = field(default_factory=list)

    def section(self, anchor: str, heading: str) -> Section:
        """Start a new section with an anchor for the table of contents."""
        section = Section(anchor, heading, self)
        self.sections.append(section)
        return section

    def add_figure(self, figure: Figure, file_name: str, caption: str) -> RenderedFigure:
        """Render ``figure`` to PNG and keep it for the page and for its own file."""
        if any(f.file_name == file_name for f in self.figures):
            raise ValueError(f"duplicate figure file name {file_name!r} in the report")
        rendered = RenderedFigure(file_name, caption, png_bytes(figure))
        self.figures.append(rendered)
        return rendered

    def render(self) -> str:
        """Return the page as one HTML document."""
        contents = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.heading)}</a></li>'
                           for s in self.sections)
        body = "".join(
            f'<section id="{s.anchor}"><h2>{html.escape(s.heading)}</h2>{"".join(s.parts)}'
            f"</section>"
            for s in self.sections
        )
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>"
            f"<body><main><header><h1>{html.escape(self.title)}</h1>"
            f"<p class=\"meta\">{_inline(self.subtitle)}</p></header>"
            f"<nav><h2>Contents</h2><ol>{contents}</ol></nav>{body}</main></body></html>\n"
        )
