"""``facesal report``: one self-contained HTML file (figures embedded as PNG data URIs).

The page opens with findings written from the numbers (never from a group below
``min_group``), then the CMS and group maps on shared colour scales with colour bars, the
group differences with their family-wise tests, region shares with confidence intervals,
convergence, split-half reliability, a per-image gallery, failures and settings. This module
renders (:func:`audit_sections`, :func:`gallery`) from a CMS result and plain values; reading
the run folder and writing the file is ``facesal_fast.audit.run_report.write_report``. The
helpers here (findings, difference tables, figure embedding, page frame) also build the page
of ``facesal compare``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facesal_fast import moved_name
from facesal_fast.align import canonical_mask
from facesal_fast.report.figures import (
    convergence_figure,
    map_figure,
    panel_limits,
    png,
    region_share_figure,
    reliability_figure,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from facesal_fast.saliency.cms import CMSResult
    from facesal_fast.saliency.stats import GroupDifference, Reliability

__all__ = [
    "audit_sections",
    "difference_section",
    "findings",
    "gallery",
    "page",
    "share_cell",
    "share_columns",
]


def __getattr__(name: str) -> Any:
    """``write_report``, now ``facesal_fast.audit.run_report.write_report``: the old path works
    one release, warned (``facesal_fast.MOVED_NAMES``)."""
    return moved_name(__name__, name)


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
figure{display:inline-block;margin:.4em;text-align:center;vertical-align:top}figcaption{font-size:.85em;color:#555}
.pair .pics{display:flex;align-items:center;gap:.3em}.pair figcaption{max-width:430px;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
td{white-space:nowrap}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.bad{color:#a00}code{font-size:.9em}
#findings{background:#f6f8fa;border-left:4px solid #36c;padding:.6em 1em}.warn{color:#a60}"""

# Marks the page as fully rendered once every figure decoded (checked by the browser test).
_SCRIPT = """window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}}
document.body.setAttribute('data-figures-loaded',ok+'/'+im.length);});"""


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _photo_png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode a report figure")
    return buffer.tobytes()


def _img(data: bytes, caption: str, width: int, css: str) -> str:
    alt = html.escape(caption)
    return (
        f'<figure class="{css}"{" data-colorbar=1" if css == "map" else ""}><img src="{_data_uri(data)}" '
        f'width="{width}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
    )


def map_html(fig, caption: str, width: int | None = None) -> str:
    """A :func:`~facesal_fast.report.figures.map_figure` (maps with colour bars) as a figure."""
    return _img(png(fig), caption, width or int(fig.get_figwidth() * 100), "map")


def chart_html(fig, caption: str) -> str:
    return _img(png(fig), caption, int(fig.get_figwidth() * 100), "chart")


def region_label(name: str) -> str:
    """``left_eye`` -> ``subject's left eye``."""
    words = name.replace("_", " ")
    return f"subject's {words}" if words.startswith(("left", "right")) else words


def _p(value: float, error: float = 0.0) -> str:
    """``0.004``, ``< 0.001``, or with its Monte-Carlo standard error ``0.012 ± 0.002``."""
    text = "< 0.001" if value < 0.001 else f"{value:.3f}"
    return f"{text} ± {error:.3f}" if error >= 0.0005 else text


def _p_is(value: float, error: float = 0.0) -> str:
    """``p = 0.004``, ``p < 0.001`` or ``p = 0.012 ± 0.002``."""
    text = _p(value, error)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _detectable(d: GroupDifference, unit: str) -> str:
    """What the test could have found: ``; these groups find a shift of 2.1 points (nose) to 7.9
    points (forehead) with 80% power``, or ``""`` when no region's is known."""
    shifts = {r: s for r, s in d.detectable_shifts.items() if math.isfinite(s)}
    if not shifts:
        return ""
    low, high = min(shifts, key=shifts.get), max(shifts, key=shifts.get)
    return (
        f"; with these {unit}s a shift of {shifts[low]:.1f} points ({region_label(low)}) to {shifts[high]:.1f} points "
        f"({region_label(high)}) would be found with 80% power"
    )


def _level(d: GroupDifference) -> str:
    percent = f"{100 * d.level:g}%"
    return (
        f"{percent} family-wise level" if d.correction == "fwer" else f"{100 * (1 - d.level):g}% false discovery rate"
    )


def _mean_shares(shares: dict[str, dict[str, float]] | None, first: str, second: str, region: str) -> str:
    """``on average 13.9% of an image's saliency against 7.2%; `` (the region table's numbers), or ``""``."""
    if not shares or first not in shares or second not in shares:
        return ""
    return (
        f"on average {100 * shares[first][region]:.1f}% of an image's saliency against "
        f"{100 * shares[second][region]:.1f}%; "
    )


def _finding(d: GroupDifference, unit: str, shares: dict[str, dict[str, float]] | None = None) -> tuple[str, list[str]]:
    """(summary sentence, one sentence per significant region, largest shift first); ``shares``:
    name -> region -> mean per-image share, quoted beside each shift."""
    n = f"n = {d.n_a} / {d.n_b}" + (" pairs" if d.paired else "")
    if d.too_few:
        return f"No difference between {unit} {d.a} and {unit} {d.b} is claimed: {'; '.join(d.too_few)}.", []
    if not d.significant_regions:
        return (
            f"No region differs between {unit} {d.a} and {unit} {d.b} at the {_level(d)} ({n}){_detectable(d, unit)}.",
            [],
        )
    sentences = []
    for region in d.significant_regions:
        t = d.region_tests[region]
        first, second, low, high = (d.a, d.b, t.low, t.high) if t.difference > 0 else (d.b, d.a, -t.high, -t.low)
        sentences.append(
            f"For {unit} {first} the model puts {100 * abs(t.difference):.1f} points more of its saliency on the "
            f"{region_label(region)} than for {unit} {second} ({_mean_shares(shares, first, second, region)}"
            f"{100 * d.level:g}% CI {100 * low:.1f} to "
            f"{100 * high:.1f}, adjusted {_p_is(t.p_adjusted, t.p_error)}, effect size {abs(t.effect_size):.2f}, {n})."
        )
    count = len(sentences)
    summary = (
        f"{unit.capitalize()} {d.a} and {unit} {d.b} differ in {count} of {len(d.region_tests)} region"
        f"{'s' if len(d.region_tests) > 1 else ''} at the {_level(d)}:"
    )
    return summary, sentences


def findings(
    differences: Sequence[GroupDifference],
    unit: str = "group",
    groups: dict[str, int] | None = None,
    caveat: str = "",
    shares: dict[str, dict[str, float]] | None = None,
) -> str:
    """The findings paragraph, written from the tests (``<div id="findings">``); ``groups``
    (name -> images) explains why there is nothing to compare; ``caveat`` is added at the end;
    ``shares`` (name -> region -> mean per-image share, as the region table shows them) are
    quoted beside each shift."""
    if not differences and groups:
        only = ", ".join(f"{html.escape(g)} (n={n})" for g, n in groups.items())
        text = f"Only one group was found ({only}), so no group difference was tested."
    elif not differences:
        text = "No groups were given, so no group difference was tested (use <code>--groups</code>)."
    else:
        parts = []
        for d in differences:
            summary, sentences = _finding(d, unit, shares)
            items = "".join(f"<li>{html.escape(s)}</li>" for s in sentences)
            parts.append(html.escape(summary) + (f"<ul>{items}</ul>" if items else " "))
        control = " ".join(dict.fromkeys(f"Controlled: {d.controlled}." for d in differences if d.controlled))
        text = "".join(parts) + (f"<p class=controlled>{html.escape(control)}</p>" if control else "")
    note = f'<p class="warn">{html.escape(caveat)}</p>' if caveat else ""
    return f'<div id="findings"><strong>Findings.</strong> {text}{note}</div>'


def difference_table(d: GroupDifference) -> str:
    """Per region: difference of shares, CI, effect size, raw and adjusted p (± Monte-Carlo error), n,
    significant, and the smallest shift these groups find with 80% power."""
    a, b = html.escape(d.a), html.escape(d.b)
    adjusted = "adjusted p (max-T)" if d.correction == "fwer" else "adjusted p (BH)"
    head = (
        f"<tr><th>region</th><th>share {a} - {b} (points)</th><th>{100 * d.level:g}% CI (this region alone)</th>"
        f"<th>effect size (d)</th><th>raw p</th><th>{adjusted}</th><th>n {a} / {b}</th><th>significant</th>"
        "<th>detectable shift (points, 80% power)</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(region_label(r))}</td><td>{100 * t.difference:+.1f}</td>"
        f"<td>[{100 * t.low:+.1f}, {100 * t.high:+.1f}]</td><td>{t.effect_size:+.2f}</td><td>{_p(t.p_raw)}</td>"
        f"<td>{_p(t.p_adjusted, t.p_error)}</td><td>{d.n_a} / {d.n_b}</td><td>{'yes' if t.significant else ''}</td>"
        f"<td>{f'{100 * t.detectable:.1f}' if math.isfinite(t.detectable) else 'unknown'}</td></tr>"
        for r, t in d.region_tests.items()
    )
    return f"<table class=differences>{head}{rows}</table>"


def difference_section(d: GroupDifference, unit: str = "group") -> str:
    """The difference map (diverging, on the faint mean face, significant pixels outlined) and its table."""
    test = "family-wise max-T" if d.correction == "fwer" else "Benjamini-Hochberg FDR"
    fig = map_figure(
        [(f"CMS[{d.a}] - CMS[{d.b}]", d.difference)],
        kind="difference",
        significant=[d.significant],
        label=f"difference (red: {d.a} higher)",
    )
    warn = "".join(f'<p class="warn">{html.escape(m)}: no significance is claimed.</p>' for m in d.too_few)
    draws = "bootstrap resamples" if d.method == "bootstrap" else "sign flips" if d.paired else "permutations"
    caption = (
        f"{unit} {d.a} minus {unit} {d.b}; outlined: pixels significant at the {test} level "
        f"({'every labelling' if d.exact else f'{d.permutations} {draws}'})"
    )
    null = f"<p class=null>Null hypothesis: {html.escape(d.null_hypothesis)}</p>" if d.null_hypothesis else ""
    return f"<h3>{html.escape(d.a)} vs {html.escape(d.b)}</h3>{warn}{null}{map_html(fig, caption)}{difference_table(d)}"


def _cms_maps(result: CMSResult) -> tuple[str, str]:
    """The CMS of all images and the group maps, on one colour scale: (CMS figure, group figure)."""
    limits = panel_limits([result.cms, *(m for m, _ in result.groups.values())], "saliency")
    cms = map_html(
        map_figure([(f"CMS, all images (n={result.count})", result.cms)], limits=limits),
        "CMS over the mean face" + (", on the colour scale of the group maps" if result.groups else ""),
    )
    if not result.groups:
        return cms, "<p>No groups were given (use <code>--groups</code>).</p>"
    maps = [(f"CMS {g} (n={n})", m) for g, (m, n) in result.groups.items()]
    return cms, map_html(map_figure(maps, limits=limits), "every group on one colour scale, that of the CMS above")


def share_columns(result: CMSResult) -> list[tuple[str, dict[str, tuple[float, float, float]]]]:
    """``(label, region -> (mean per-image share, CI low, CI high))``: all images, then each group;
    the columns of the region table and of the bars."""
    counts = {g: n for g, (_, n) in result.groups.items()}
    return [
        (f"all images (n={result.count})", result.overall_intervals),
        *((f"{g} (n={counts[g]})", intervals) for g, intervals in result.share_intervals.items()),
    ]


def share_cell(mean: float, low: float, high: float) -> str:
    """``13.9% [12.1, 15.8]``: a mean share (fraction) and its interval, in percent."""
    return f"{100 * mean:.1f}% <small>[{100 * low:.1f}, {100 * high:.1f}]</small>"


def _region_table(result: CMSResult) -> str:
    columns = share_columns(result)
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in columns)
    body = "".join(
        f"<tr><td>{html.escape(region_label(r))}</td>"
        + "".join(f"<td>{share_cell(*shares[r])}</td>" for _, shares in columns)
        + "</tr>"
        for r in result.overall_intervals
    )
    return (
        "<p>Each cell: the mean over the images of each image's share of its positive saliency, and its "
        f"{100 * result.level:g}% bootstrap CI. The group tests compare these means (a difference in the "
        "tables above is the difference of two cells of this table).</p>"
        f"<table class=shares><tr><th>region</th>{head}</tr>{body}</table>"
    )


def _coverage(result: CMSResult) -> str:
    """The coverage maps (fraction of images covering each pixel) and what they mean for the CMS."""
    if result.coverage is None:
        return ""
    face = canonical_mask(result.coverage.shape)
    on_face = result.coverage[face]
    lowest = float(on_face.min())
    text = (
        f"{100 * float((on_face >= 1).mean()):.0f}% of the canonical face's pixels are covered by every image; the "
        f"least covered pixel by {round(lowest * result.count)} of {result.count} images. Each pixel of a CMS is "
        "the mean over the images that cover it (a face turned aside or cut by the photo's edge covers part of the "
        "canonical face), so a pixel covered by few images rests on those alone."
    )
    if lowest < 1:
        text += " The pixel tests compare low-resolution copies in which an image's uncovered pixels count as 0."
    maps = [("all images", result.coverage)]
    maps += [(f"{g} (n={result.groups[g][1]})", c) for g, c in result.group_coverage.items()]
    fig = map_figure(maps, label="fraction of images covering the pixel", limits=(0.0, 1.0))
    return (
        f"<p class=coverage>{html.escape(text)}</p>{map_html(fig, 'coverage: fraction of images covering each pixel')}"
    )


def _reliability_line(group: str, rel: Reliability) -> str:
    """One group's split-half reliability with its interval, and the images still needed with theirs."""
    text = f"group {group} (n={rel.n}): "
    if not math.isfinite(rel.reliability):
        return text + "too few images to measure the reliability or predict the images needed"
    level = f"{100 * rel.level:g}% CI"
    known = math.isfinite(rel.low) and math.isfinite(rel.high)
    text += f"split-half reliability {rel.reliability:.2f}" + (
        f" ({level} {rel.low:.2f} to {rel.high:.2f})" if known else ""
    )
    if rel.images_needed is None:
        return text + "; no consistent pattern yet to predict the images needed"
    if rel.more_needed == 0:
        return text + f", reaching {rel.target:g}"
    low, high = ("unknown" if end is None else end for end in rel.more_needed_range)
    return (
        text + f"; collect about {rel.more_needed} more image{'s' if rel.more_needed > 1 else ''} of group {group} "
        f"({level} {low} to {high}) to reach {rel.target:g}"
    )


def _reliability(result: CMSResult) -> str:
    if not result.reliability:
        return "<p>No groups were given.</p>"
    lines = [_reliability_line(group, rel) for group, rel in result.reliability.items()]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    chart = chart_html(
        reliability_figure(result.reliability),
        "split-half reliability of each group's CMS (dashed: Spearman-Brown prophecy)",
    )
    return f"<ul class=reliability>{items}</ul>{chart}"


def gallery(cells: Sequence[tuple[str, np.ndarray, np.ndarray | None]]) -> str:
    """Per-image CIS maps on one colour scale, each beside its photo's face crop; ``cells``:
    ``(caption, canonical map H x W, face crop h x w x 3 uint8 or None)``, in the order shown.
    A cell without its crop says that the photo is missing or changed since the audit."""
    if not cells:
        return "<p>None.</p>"
    limits = panel_limits([canonical for _, canonical, _ in cells], "saliency")
    parts = []
    for caption, canonical, crop in cells:
        if crop is None:  # the photo moved, or was replaced by a smaller one, since the audit
            caption += " (photo missing or changed since the audit)"
        figure = map_figure([("", canonical)], limits=limits)  # the caption is the cell's, in HTML
        parts.append(_pair(None if crop is None else _photo_png(crop), png(figure), caption))
    return "".join(parts)


def _pair(photo: bytes | None, heat: bytes, caption: str) -> str:
    """One gallery cell: the face crop (PNG, when there is one) beside its map (PNG with its
    colour bar), under one caption that wraps instead of being cut."""
    alt = html.escape(caption)
    face = f'<img class="photo" src="{_data_uri(photo)}" width="160" alt="photo: {alt}">' if photo else ""
    return (
        f'<figure class="pair"><div class="pics">{face}<img class="map" data-colorbar=1 src="{_data_uri(heat)}" '
        f'width="260" alt="map: {alt}"></div><figcaption>{alt}</figcaption></figure>'
    )


def _evaluation_link(evaluated: bool) -> str:
    """A link to ``facesal evaluate``'s page when the run has one."""
    if not evaluated:
        return ""
    return (
        "<h2>Faithfulness</h2><p>Metrics, ablations and sanity checks: "
        '<a href="evaluate/evaluate.html">evaluate/evaluate.html</a> (from <code>facesal evaluate</code>).</p>'
    )


def page(title: str, sections: Sequence[str]) -> bytes:
    """A self-contained HTML page in the report's style."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f"</head><body>{''.join(sections)}<script>{_SCRIPT}</script></body></html>"
    ).encode()


def _caveat(groups: str | None) -> str:
    if groups != "predicted":
        return ""
    return (
        "The groups are the model's own predictions: a difference mixes how the model treats a group with what it "
        "looks at when it makes that decision (see docs/saliency.md, caveats)."
    )


def audit_sections(
    result: CMSResult,
    settings: Mapping[str, Any],
    failures: Sequence[str],
    gallery_html: str,
    approximation: str | None = None,
    evaluated: bool = False,
) -> list[str]:
    """The sections of ``facesal report``'s page (for :func:`page`): ``result`` the run's CMS and
    tests, ``settings`` its ``run.json``, ``failures`` the error of each photo that failed,
    ``gallery_html`` the :func:`gallery` of its results, ``approximation`` the sentence on its
    maps' modes (None: nothing recorded), ``evaluated`` whether ``evaluate/evaluate.html`` exists."""
    counts = {g: n for g, (_, n) in result.groups.items()}
    cms_figure, group_figure = _cms_maps(result)
    return [
        f"<h1>facesal audit: {html.escape(str(settings['settings'].get('model', 'model')))}</h1>",
        findings(
            result.differences,
            groups=counts,
            caveat=_caveat(settings["settings"].get("groups")),
            shares=result.group_shares,
        ),
        f"<p>{result.count} images explained, {len(failures)} failed. Canonical Model Saliency = mean of the "
        "per-image Canonical Image Saliency maps (occlusion drop of the model's confidence, splatted on one canonical "
        "face, shown frontal: the subject's left is on the right).</p>",
        "<h2>Canonical Model Saliency</h2>",
        cms_figure,
        "<h2>Coverage</h2>",
        _coverage(result),
        "<h2>Groups</h2>",
        "".join(
            f'<p class="warn">{html.escape(m)}: no significance is claimed for it.</p>' for m in result.small_groups
        ),
        group_figure,
        "".join(difference_section(d) for d in result.differences),
        "<h2>Region shares</h2>",
        _region_table(result),
        chart_html(
            region_share_figure(share_columns(result), result.level),
            f"mean per-image share of positive saliency per region (the table's numbers); error bars: "
            f"{100 * result.level:g}% bootstrap CI of each mean",
        ),
        "<h2>Convergence</h2>",
        chart_html(
            convergence_figure(result.convergence), "distance of the running CMS to the final CMS, every checkpoint"
        ),
        "<h2>Stability per group</h2>",
        _reliability(result),
        _evaluation_link(evaluated),
        "<h2>Per-image saliency (most and least confident)</h2>",
        gallery_html,
        "<h2>Failures</h2>",
        "<ul>" + "".join(f'<li class="bad">{html.escape(error)}</li>' for error in failures) + "</ul>"
        if failures
        else "<p>None.</p>",
        "<h2>Settings and versions</h2>",
        *[f"<p>{html.escape(line)}</p>" for line in [approximation] if line],
        f"<pre>{html.escape(json.dumps(settings, indent=2, sort_keys=True))}</pre>",
    ]
