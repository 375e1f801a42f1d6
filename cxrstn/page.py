"""Markdown and HTML rendering: tables built once as rows, and the self-contained page.

The page has its CSS inline and every figure embedded as a base64 PNG, so it opens
offline and can be mailed as one file; it references nothing on the web.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

NUMERIC = re.compile(r"(n/a|—|[-+]?[\d,.]+( ± [\d,.]+)?( ?(%|s|images/s))?( for \d+ folds)?)")
"""Cells set right-aligned in HTML tables: numbers, mean ± std, units, and their placeholders."""


def md_table(columns: list, rows: list) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] * len(columns)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(columns: list | None, rows: list, css_class: str = "") -> str:
    """An HTML table (no header row when `columns` is None); numeric cells align right."""
    head = ""
    if columns is not None:
        head = "<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        head += "</tr></thead>"
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{html.escape(str(cell))}</td>'
            if NUMERIC.fullmatch(str(cell))
            else f"<td>{html.escape(str(cell))}</td>"
            for cell in row
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="{css_class}">{head}<tbody>{body}</tbody></table>'


CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #bbb; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.n { text-align: right; white-space: nowrap; }
table.kv td { font-family: ui-monospace, Menlo, Consolas, monospace; text-align: left; }
code { background: #f3f3f3; padding: 0 .2em; }
.pair { display: flex; gap: 1%; }
.pair img { width: 49.5%; }
.cards { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
table.table2 td:nth-child(2n+1):not(:first-child) { color: #777; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
.note { color: #555; font-size: .9em; }
nav a { margin-right: 1em; }
"""


def image_tag(png_path: str | os.PathLike, alt: str) -> str:
    """The PNG embedded as a data URI, so the page needs no other file."""
    data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def paragraph(text: str, css_class: str = "") -> str:
    """Escaped text in <p>, with `backtick` spans set as code."""
    attribute = f' class="{css_class}"' if css_class else ""
    body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return f"<p{attribute}>{body}</p>"


def render_html(title: str, sections: list[tuple[str, str]]) -> str:
    """One page: a title, a table of contents and the sections (title, HTML body) in order."""
    anchors = [f"s{index}" for index in range(len(sections))]
    nav = " ".join(
        f'<a href="#{anchor}">{html.escape(name)}</a>'
        for anchor, (name, _) in zip(anchors, sections, strict=True)
    )
    body = "\n".join(
        f'<h2 id="{anchor}">{html.escape(name)}</h2>\n{content}'
        for anchor, (name, content) in zip(anchors, sections, strict=True)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1><nav>{nav}</nav>\n{body}\n</body></html>\n"
    )
