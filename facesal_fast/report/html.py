"""``facesal report``: one self-contained HTML file (figures embedded as PNG data URIs)."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import cv2
import numpy as np

from facesal_fast.align import canonical_face, load_image
from facesal_fast.audit.runner import cms_from_store
from facesal_fast.audit.store import RunStore, atomic_write_bytes
from facesal_fast.saliency.cms import CMSResult
from facesal_fast.saliency.overlay import colorize, heat_overlay

__all__ = ["write_report"]

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
figure{display:inline-block;margin:.4em;text-align:center;vertical-align:top}figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.bad{color:#a00}code{font-size:.9em}"""

# Marks the page as fully rendered once every figure decoded (checked by the browser test).
_SCRIPT = """window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}}
document.body.setAttribute('data-figures-loaded',ok+'/'+im.length);});"""


def _png(image: np.ndarray) -> str:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode a report figure")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode()


def _figure(image: np.ndarray, caption: str, width: int = 256) -> str:
    return f'<figure><img src="{_png(image)}" width="{width}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _plot(draw) -> np.ndarray:
    """Render a matplotlib drawing function to an RGB array."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    draw(ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    data = np.frombuffer(buffer.getvalue(), np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _diverging(diff: np.ndarray) -> np.ndarray:
    """Red where the first group relies more, blue where the second does."""
    top = float(np.abs(diff).max()) or 1.0
    pos, neg = np.clip(diff / top, 0, 1), np.clip(-diff / top, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], -1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _region_table(result: CMSResult) -> str:
    columns = list(result.region_shares)
    regions = list(result.region_shares["all"])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><td>{html.escape(r)}</td>" + "".join(f"<td>{100 * result.region_shares[c][r]:.1f}%</td>" for c in columns) + "</tr>"
        for r in regions
    )
    return f"<table><tr><th>region</th>{head}</tr>{body}</table>"


def _region_chart(result: CMSResult) -> np.ndarray:
    def draw(ax):
        regions = list(result.region_shares["all"])
        columns = list(result.region_shares)
        width = 0.8 / len(columns)
        for i, c in enumerate(columns):
            ax.bar(np.arange(len(regions)) + i * width, [100 * result.region_shares[c][r] for r in regions], width, label=c)
        ax.set_xticks(np.arange(len(regions)) + 0.4 - width / 2, regions, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("share of saliency (%)")
        ax.legend(fontsize=8)

    return _plot(draw)


def _convergence_chart(result: CMSResult) -> np.ndarray:
    def draw(ax):
        n, d = zip(*result.convergence)
        ax.plot(n, d, marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("images in the running CMS")
        ax.set_ylabel("relative L2 distance to final CMS")

    return _plot(draw)


def _differences(result: CMSResult, face: np.ndarray) -> str:
    parts = []
    for d in result.differences:
        significant = cv2.resize(d.significant.astype(np.uint8), face.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        masked = np.where(significant[..., None] > 0, _diverging(d.difference), 255).astype(np.uint8)
        parts.append(_figure(_diverging(d.difference), f"CMS[{d.a}] - CMS[{d.b}] (red: {d.a} relies more)"))
        parts.append(_figure(masked, "where the 95% bootstrap CI excludes 0"))
        rows = "".join(
            f"<tr><td>{html.escape(r)}</td><td>{100 * v:+.1f}%</td><td>[{100 * lo:+.1f}, {100 * hi:+.1f}]</td>"
            f"<td>{'yes' if lo > 0 or hi < 0 else ''}</td></tr>"
            for r, (v, lo, hi) in d.regions.items()
        )
        parts.append(f"<table><tr><th>region</th><th>share {html.escape(d.a)} - {html.escape(d.b)}</th><th>95% CI</th><th>significant</th></tr>{rows}</table>")
    return "".join(parts) or "<p>No groups were given (use <code>--groups</code>).</p>"


def _gallery(store: RunStore, count: int) -> str:
    """Per-image CIS overlays for the most and least confident decisions."""
    rows = sorted(store.rows("done"), key=lambda r: r.base_score)
    picks = rows[-count:][::-1] + [r for r in rows[:count] if r not in rows[-count:]]
    parts = []
    for row in picks:
        arrays = store.load(row.key)
        caption = f"{row.key}: {row.target_name or row.target} ({row.base_score:.2f})"
        try:
            photo = load_image(row.source)
        except Exception:  # noqa: BLE001 - the photo may have moved since the run; show the canonical map
            parts.append(_figure(heat_overlay(canonical_face(arrays["canonical"].shape), arrays["canonical"]), caption, 160))
            continue
        x0, y0, x1, y1 = (int(v) for v in arrays["face_box"])
        crop = photo[max(y0, 0) : max(y1, 1), max(x0, 0) : max(x1, 1)]
        overlay = heat_overlay(canonical_face(arrays["canonical"].shape), arrays["canonical"])
        if crop.size == 0:  # the photo was replaced by a smaller one after the audit: its face box is gone
            parts.append(_figure(overlay, caption + " (photo changed since the audit)", 160))
            continue
        side = 160
        pair = np.concatenate([cv2.resize(crop, (side, side)), cv2.resize(overlay, (side, side))], axis=1)
        parts.append(_figure(pair, caption, 2 * side))
    return "".join(parts)


def _evaluation_link(run: Path) -> str:
    """A link to ``facesal evaluate``'s page when the run has one."""
    if not (run / "evaluate" / "evaluate.html").is_file():
        return ""
    return ('<h2>Faithfulness</h2><p>Metrics, ablations and sanity checks: '
            '<a href="evaluate/evaluate.html">evaluate/evaluate.html</a> (from <code>facesal evaluate</code>).</p>')


def write_report(run: str | Path, out: str | Path | None = None, gallery: int = 6) -> Path:
    """Write ``run/report.html`` (or ``out``) for a finished or partial run; returns its path."""
    store = RunStore(run)
    result = cms_from_store(store)
    face = canonical_face(result.cms.shape)
    failed = store.rows("failed")
    settings = store.meta
    sections = [
        f"<h1>facesal audit: {html.escape(str(settings['settings'].get('model', 'model')))}</h1>",
        f"<p>{result.count} images explained, {len(failed)} failed. Canonical Model Saliency = mean of the "
        "per-image Canonical Image Saliency maps (occlusion drop of the model's confidence, splatted on one canonical face).</p>",
        "<h2>Canonical Model Saliency</h2>",
        _figure(heat_overlay(face, result.cms), "CMS over the mean face"),
        _figure(colorize(result.cms), "CMS"),
        "<h2>Groups</h2>",
        "".join(_figure(heat_overlay(face, m), f"CMS {g} (n={n})") for g, (m, n) in result.groups.items()),
        _differences(result, face),
        "<h2>Region shares</h2>",
        _region_table(result),
        _figure(_region_chart(result), "share of positive saliency per region", 600),
        "<h2>Convergence</h2>",
        _figure(_convergence_chart(result), "distance of the running CMS to the final CMS", 600),
        _evaluation_link(Path(run)),
        "<h2>Per-image saliency (most and least confident)</h2>",
        _gallery(store, gallery),
        "<h2>Failures</h2>",
        "<ul>" + "".join(f'<li class="bad">{html.escape(r.error or "")}</li>' for r in failed) + "</ul>" if failed else "<p>None.</p>",
        "<h2>Settings and versions</h2>",
        f"<pre>{html.escape(json.dumps(settings, indent=2, sort_keys=True))}</pre>",
    ]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>facesal report</title><style>{_STYLE}</style>"
            f"</head><body>{''.join(sections)}<script>{_SCRIPT}</script></body></html>")
    path = Path(out) if out else Path(run) / "report.html"
    atomic_write_bytes(path, page.encode())
    store.close()
    return path
