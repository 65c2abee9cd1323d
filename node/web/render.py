"""Templates and the server-drawn chart: pages work offline (no CDN, no script libraries)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from node.preview import DryRun, FramePicture, frame_file_name

TEMPLATES = Path(__file__).resolve().parent / "templates"
ENVIRONMENT = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


def inline_png(frame: FramePicture) -> str:
    """A frame as a data: URI, so a page shows it without a second request (and without a URL
    that names the instance)."""
    return "data:image/png;base64," + base64.b64encode(frame.png).decode()


def render_report(run: DryRun) -> str:
    """The dry-run report as a standalone HTML file beside its PNGs."""
    return ENVIRONMENT.get_template("report.html").render(run=run, image_src=lambda f: frame_file_name(f.index))


def per_minute_chart(series: dict[str, Sequence[int]], *, width: int = 720, height: int = 160) -> Markup:
    """Bars per minute, one colour per series, oldest minute on the left; inline SVG."""
    colours = {"received": "#4a7bd0", "forwarded": "#3a9a5b", "quarantined": "#c9463d"}
    minutes = max((len(v) for v in series.values()), default=0)
    peak = max((max(v, default=0) for v in series.values()), default=0) or 1
    margin, slot = 28, (width - 28) / max(minutes, 1)
    bar = slot / max(len(series), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}" role="img" '
             f'aria-label="instances per minute, last hour">',
             f'<text x="0" y="12" font-size="11">{peak}</text><text x="0" y="{height}" font-size="11">0</text>',
             f'<line x1="{margin}" y1="{height}" x2="{width}" y2="{height}" stroke="#999"/>']
    for n, (name, values) in enumerate(series.items()):
        for minute, value in enumerate(values):
            h = value / peak * (height - 16)
            x = margin + minute * slot + n * bar
            parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{max(bar - 0.5, 0.5):.1f}" '
                         f'height="{h:.1f}" fill="{colours.get(name, "#777")}"><title>{name}: {value}</title></rect>')
    legend_x = margin
    for name in series:
        parts.append(f'<rect x="{legend_x}" y="{height + 8}" width="10" height="10" fill="{colours.get(name, "#777")}"/>'
                     f'<text x="{legend_x + 14}" y="{height + 17}" font-size="11">{name}</text>')
        legend_x += 100
    parts.append(f'<text x="{width - 120}" y="{height + 17}" font-size="11">-60 min … now</text></svg>')
    return Markup("".join(parts))


def write_report(run: DryRun, directory: Path) -> Path:
    """report.json, report.html and one PNG per rendered frame in `directory`; returns the HTML."""
    directory.mkdir(parents=True, exist_ok=True)
    for frame in run.frames:
        (directory / frame_file_name(frame.index)).write_bytes(frame.png)
    (directory / "report.json").write_text(json.dumps(run.summary(), indent=2))
    html = directory / "report.html"
    html.write_text(render_report(run))
    return html
