"""The only two ways text from a run folder reaches ``report.html``.

A run folder may come from a stranger, so every value read from it (summary.json, metrics.json,
config.toml, clusters.md, assignments.csv, plugin and stage names, file names) enters the page
either as HTML text through :func:`page_text` or as JSON data through :func:`script_json`, which
the page's script only ever sets as ``textContent``. The page modules call nothing else to
escape (a test holds them to it).
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# characters that end or change a <script> element, or end a JavaScript string before ES2019
_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def page_text(value: Any) -> str:
    """``value`` as HTML text, safe in element content and in quoted attributes alike."""
    return html.escape(str(value), quote=True)


def script_json(value: Any) -> str:
    """``value`` as JSON safe inside a ``<script>`` element: no ``</script>``, no ``<!--``, no
    line separators; NaN and infinities are refused rather than written as invalid JSON."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    for character, escaped in _SCRIPT_ESCAPES.items():
        text = text.replace(character, escaped)
    return text


def png_uri(data: bytes) -> str | None:
    """PNG bytes as a ``data:`` URI for an ``src`` attribute; None for bytes that are not a PNG
    (nothing else from the run folder is embedded as an image)."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
