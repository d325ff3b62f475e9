"""The report as one self-contained HTML file: the template, its CSS and JS, and the model.

Nothing is fetched when the page opens: the style and the script are inlined, the charts
are SVG drawn by the script, and fonts are the system's. A Content-Security-Policy allows
exactly the inlined style and script (by hash) and nothing else, so the page cannot make a
request even if a value in it were crafted to. The model is embedded as JSON in a
``<script type="application/json">`` element with ``<``, ``>`` and ``&`` escaped, so no
value can close that element.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import time
from importlib import resources
from typing import Any

from hsm import __version__
from hsm.report.data import Report, SweepInfo

TEMPLATE = "report.html"
STYLE = "report.css"
SCRIPTS = ("report-params.js", "report.js")  # one inline script, in this order
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_UNSAFE = re.compile("[<>&\u2028\u2029]")


def asset(name: str) -> str:
    """A file shipped beside this module (the template, CSS or JS)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON text that is safe inside ``<script type="application/json">``.

    ``<`` ``>`` ``&`` only occur inside JSON strings, where the ``\\uXXXX`` escapes
    decode to the same characters, so ``JSON.parse`` gives back exactly ``data``.
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return _JSON_UNSAFE.sub(lambda m: _JSON_ESCAPES[m.group(0)], text)


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy(style: str, script: str) -> str:
    return (
        "default-src 'none'; "
        f"script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
        "img-src 'none'; font-src 'none'; connect-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    )


def render_html(report: Report) -> str:
    """The whole report page."""
    style = asset(STYLE)
    script = "\n".join(asset(name) for name in SCRIPTS)
    for name, text, closing in (
        ("style", style, "</style"),
        ("script", script, "</script"),
        ("script", script, "<!--"),
    ):
        if closing in text.lower():
            raise ValueError(f"the report's {name} must not contain {closing!r}")
    parts = {
        "TITLE": html.escape(f"hsm report: {report.sweep.id} ({report.sweep.state})"),
        "CSP": _attribute(content_security_policy(style, script)),
        "VERSION": html.escape(__version__),
        "CSS": style,
        "JS": script,
        "SUMMARY": summary_html(report.sweep, report.generated, report.utc_offset),
        "DATA": embed_json(report.to_json()),
    }
    # One pass: text put in by one placeholder is never scanned for another.
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], asset(TEMPLATE))


def _attribute(text: str) -> str:
    """Text for a double-quoted attribute (keeps the CSP's single quotes readable)."""
    return html.escape(text, quote=False).replace('"', "&quot;")


def fmt_time(epoch: float | None, utc_offset: int) -> str:
    if epoch is None:
        return "–"
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch + utc_offset))
    sign = "+" if utc_offset >= 0 else "-"
    minutes = abs(utc_offset) // 60
    return f"{text} {sign}{minutes // 60:02d}{minutes % 60:02d}"


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def summary_html(sweep: SweepInfo, generated: float, utc_offset: int) -> str:
    """The summary section, drawn here so that it reads even where scripts are blocked."""
    e = html.escape
    rows = [
        ("state", sweep.state),
        ("started", fmt_time(sweep.created, utc_offset)),
        (
            "finished",
            fmt_time(sweep.finished, utc_offset)
            if sweep.finished
            else "not yet"
            if sweep.running
            else "–",
        ),
        ("duration", fmt_duration(sweep.duration)),
        ("sources", ", ".join(sweep.sources)),
        ("folder", sweep.sweep_dir),
        ("sweep file", sweep.spec_path),
        ("command", sweep.command_line or "–"),
        ("code", sweep.code_version),
        ("report made", fmt_time(generated, utc_offset)),
    ]
    out = [
        f'<h1>Sweep <span class="sweep-id">{e(sweep.id)}</span> '
        f'<span class="badge state-{e(sweep.state)}">{e(sweep.state)}</span></h1>'
    ]
    if sweep.running:
        out.append(
            '<p class="banner running-banner">This sweep is still running: the report '
            f"shows its state at {e(fmt_time(generated, utc_offset))}. Run "
            f"<code>{e(sweep.report_command)}</code> again for a newer one.</p>"
        )
    if sweep.message:
        out.append(f'<p class="banner message">{e(sweep.message)}</p>')
    out.append('<div class="summary-grid"><dl class="facts">')
    out += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows]
    out.append("</dl><div>")
    out.append(_count_table("tasks by status", "status-counts", sweep.counts, sweep.total))
    if sweep.causes:
        out.append(_count_table("tasks by cause", "cause-counts", sweep.causes, None))
    out.append("</div></div>")
    out.append(
        '<div class="commands"><p>Continue this sweep (reattach, run what is left):</p>'
        f'<pre class="command" id="resume-command">{e(sweep.resume_command)}</pre>'
        "<p>Run its failed tasks again:</p>"
        f'<pre class="command" id="retry-command">{e(sweep.retry_command)}</pre></div>'
    )
    out.append(
        '<details class="spec"><summary>Sweep file</summary>'
        f'<pre id="spec-text">{e(sweep.spec_text)}</pre></details>'
    )
    return "\n".join(out)


def _count_table(title: str, css: str, counts: dict[str, int], total: int | None) -> str:
    e = html.escape
    cells = "".join(
        f'<tr class="count-{e(k)}"><th>{e(k)}</th><td>{v}</td></tr>' for k, v in counts.items()
    )
    if total is not None:
        cells += f'<tr class="count-total"><th>total</th><td>{total}</td></tr>'
    return (
        f'<table class="counts {css}"><caption>{e(title)}</caption><tbody>{cells}</tbody></table>'
    )
