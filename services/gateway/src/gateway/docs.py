"""``/docs``: the merged OpenAPI document as one self-contained HTML page (no scripts, no CDN assets).

It lists every operation by tag with its method, path, summary, whether it needs a token, its
parameters and its request body and response media types; the full machine-readable document is
``/openapi.json``.
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["DOCS_CSP", "render_docs"]

# The page has inline styles only.
DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1d1d1f}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
details{border:1px solid #e3e3e3;border-radius:6px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer}code{font:13px ui-monospace,monospace}
.m{display:inline-block;min-width:4.2rem;font:bold 12px ui-monospace,monospace;text-transform:uppercase}
.get{color:#0a6}.post{color:#06c}.put,.patch{color:#a60}.delete{color:#c22}
.lock{color:#777;font-size:12px}table{border-collapse:collapse;margin:.4rem 0}
td,th{border:1px solid #e3e3e3;padding:.2rem .5rem;text-align:left;font-size:13px}
"""


def _schema_name(schema: Any) -> str:
    if not isinstance(schema, dict):
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    if isinstance(schema.get("type"), str):
        return str(schema["type"])
    return ""


def _operation(method: str, path: str, op: dict[str, Any], path_params: list[Any]) -> str:
    summary = escape(str(op.get("summary") or op.get("operationId") or ""))
    public = op.get("security") == []
    lock = '<span class="lock">public</span>' if public else '<span class="lock">bearer token</span>'
    parts = [
        f'<details><summary><span class="m {escape(method)}">{escape(method)}</span> '
        f"<code>{escape(path)}</code> {summary} {lock}</summary>"
    ]
    if description := op.get("description"):
        parts.append(f"<p>{escape(str(description))}</p>")
    params = [p for p in [*path_params, *(op.get("parameters") or [])] if isinstance(p, dict)]
    if params:
        rows = "".join(
            f"<tr><td><code>{escape(str(p.get('name', '')))}</code></td><td>{escape(str(p.get('in', '')))}</td>"
            f"<td>{'yes' if p.get('required') else 'no'}</td><td>{escape(_schema_name(p.get('schema')))}</td></tr>"
            for p in params
        )
        parts.append(
            f"<table><tr><th>parameter</th><th>in</th><th>required</th><th>type</th></tr>{rows}</table>"
        )
    body = op.get("requestBody")
    if isinstance(body, dict):
        content = body.get("content") or {}
        kinds = ", ".join(
            f"{escape(str(media))} {escape(_schema_name(spec.get('schema')))}"
            for media, spec in content.items()
            if isinstance(spec, dict)
        )
        parts.append(f"<p>Request body: {kinds}</p>")
    responses = op.get("responses") or {}
    if isinstance(responses, dict) and responses:
        codes = ", ".join(escape(str(code)) for code in responses)
        parts.append(f"<p>Responses: {codes}</p>")
    parts.append("</details>")
    return "".join(parts)


def render_docs(document: dict[str, Any]) -> str:
    by_tag: dict[str, list[str]] = {}
    for path, item in (document.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        path_params = item.get("parameters") or []
        for method, op in item.items():
            if method == "parameters" or not isinstance(op, dict):
                continue
            tag = str((op.get("tags") or ["other"])[0])
            by_tag.setdefault(tag, []).append(_operation(method, path, op, path_params))
    info = document.get("info") or {}
    sections = "".join(f"<h2>{escape(tag)}</h2>{''.join(ops)}" for tag, ops in sorted(by_tag.items()))
    upstreams = document.get("x-baton-upstreams") or {}
    status = ", ".join(f"{escape(str(k))}: {escape(str(v))}" for k, v in upstreams.items())
    empty = "" if by_tag else "<p>No upstream service has published its operations yet.</p>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(str(info.get('title', 'API')))}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(str(info.get('title', 'API')))}</h1>"
        f"<p>{escape(str(info.get('description', '')))}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>.</p>'
        f"<p><small>Sources: {status}</small></p>{empty}{sections}</body></html>"
    )
