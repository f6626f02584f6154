"""The run report's two documents from one list of sections: Markdown, and a standalone HTML page
with the plots embedded. A section is (title, blocks), a block being ("text", str),
("table", headers, rows) or ("image", path relative to the run directory, caption).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from sightsound.report.tables import build_table, markdown, write_csv
from sightsound.rundir import RunDir
from sightsound.store import write_if_changed

CSS = """body { font-family: system-ui, sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em; color: #222; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f4f4f4; padding: 0 0.2em; }
img { max-width: 100%; }"""


def render_markdown(title: str, intro: str, sections: list) -> str:
    return "".join([f"# {title}\n\n{intro}\n", *_render(
        sections, heading=lambda h: f"\n## {h}\n", text=lambda t: f"\n{t}\n",
        table=lambda headers, rows: "\n" + markdown(headers, rows),
        image=lambda path, caption: f"\n![{caption}]({path})\n")])


def render_html(title: str, intro: str, sections: list, run_dir: Path) -> str:
    """One standalone HTML page: the same content as the Markdown, the plots embedded as base64 PNGs."""
    def text(value: str) -> str:  # escaped, with `code` spans kept as code and **bold** as bold
        value = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(value))
        return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", value)

    def table(headers: list[str], rows: list[list[str]]) -> str:  # a wide one scrolls sideways
        return "\n".join(['<div class="wide"><table><thead><tr>' + "".join(f"<th>{text(h)}</th>" for h in headers)
                          + "</tr></thead><tbody>",
                          *("<tr>" + "".join(f"<td>{text(cell)}</td>" for cell in row) + "</tr>" for row in rows),
                          "</tbody></table></div>"])

    def image(path: str, caption: str) -> str:
        data = base64.b64encode((run_dir / path).read_bytes()).decode("ascii")
        return f'<p><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"></p>'

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
             f"<style>\n{CSS}\n</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<p>{text(intro)}</p>"]
    parts += _render(sections, heading=lambda h: f"<h2>{html.escape(h)}</h2>", text=lambda t: f"<p>{text(t)}</p>",
                     table=table, image=image)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _render(sections: list, heading, text, table, image) -> list[str]:
    """Each section's heading, then its blocks, each rendered by the function for its kind."""
    kinds = {"text": text, "table": table, "image": image}
    parts = []
    for title, blocks in sections:
        parts.append(heading(title))
        parts += [kinds[block[0]](*block[1:]) for block in blocks]
    return parts


def write_documents(run_dir: Path, title: str, intro: str, sections: list, results: list[dict]) -> str:
    """Write a report's report.md, report.html and (with results) report.csv into `run_dir`, each
    only when its bytes change (a rerun that changes nothing keeps the files' times); returns the
    Markdown."""
    run = RunDir(run_dir)
    text = render_markdown(title, intro, sections)
    write_if_changed(run.report(".md"), text)
    write_if_changed(run.report(".html"), render_html(title, intro, sections, Path(run_dir)))
    if results:
        write_csv(run.report(".csv"), *build_table(results))
    return text
