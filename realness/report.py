"""The HTML report of a `realness run`: one self-contained page, sortable, with pictures next to it.

`report.html` links the run's own files by relative path (`thumbs/`, `maps/`, `histogram.png`,
`scatter.png`), so the output folder can be moved or zipped as a whole. No external scripts, fonts or
styles: it opens offline in any browser. Click a column header to sort; `report.html#sort=-score`
opens sorted (a leading `-` for descending).
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from realness.files import write_text_atomic

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: .2em; } .muted { color: #666; }
.warn { background: #fff3cd; border: 1px solid #e0b252; padding: .6em 1em; margin: 1em 0; }
.warned { background: #fff3cd; font-weight: bold; }
.note { background: #e8f1fb; border: 1px solid #7aa7d6; padding: .6em 1em; margin: 1em 0; }
.stats td, .stats th { padding: .15em .8em .15em 0; text-align: left; }
.plots img { max-width: 48%; margin-right: 1%; }
table.results { border-collapse: collapse; width: 100%; margin-top: 1em; }
table.results th { position: sticky; top: 0; background: #eee; cursor: pointer; user-select: none; padding: .4em; }
table.results th[aria-sort=ascending]::after { content: " \\25B2"; }
table.results th[aria-sort=descending]::after { content: " \\25BC"; }
table.results td { border-top: 1px solid #ddd; padding: .4em; vertical-align: top; }
td.text { max-width: 32em; overflow-wrap: anywhere; } td.name { overflow-wrap: anywhere; max-width: 14em; }
td.verdict { white-space: nowrap; } .caption { font-size: .85em; color: #555; }
table.results img { max-width: 200px; max-height: 200px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fbeaea; } .error { color: #a40000; }
.v-yes { color: #a40000; font-weight: bold; } .v-somewhat { color: #b36b00; font-weight: bold; }
.v-no { color: #1d6b1d; font-weight: bold; }
"""

# Sorting: every sortable cell carries data-v; numbers compare as numbers, empty cells sort last.
_JS = """
(function () {
  var table = document.getElementById("results");
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  function sortBy(key, descending) {
    var col = -1;
    for (var i = 0; i < heads.length; i++) {
      if (heads[i].dataset.key === key) { col = i; }
      heads[i].removeAttribute("aria-sort");
    }
    if (col < 0) { return; }
    var numeric = heads[col].dataset.type === "num";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      if (x === "" || y === "") { return (x === "") - (y === ""); }
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return descending ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    heads[col].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  for (var i = 0; i < heads.length; i++) {
    if (!heads[i].dataset.key) { continue; }
    heads[i].addEventListener("click", function (e) {
      var h = e.currentTarget;
      sortBy(h.dataset.key, h.getAttribute("aria-sort") === "ascending");
    });
  }
  var m = /sort=(-?)([\\w]+)/.exec(window.location.hash);
  if (m) { sortBy(m[2], m[1] === "-"); }
})();
"""


def _e(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _img(src: str, alt: str) -> str:
    return f'<img src="{_e(quote(src))}" alt="{_e(alt)}" loading="lazy">' if src else ""


def _num(value, digits: int, css: str = "num") -> str:
    if value is None:
        return f'<td class="{css}" data-v=""></td>'
    return f'<td class="{css}" data-v="{value:.6f}">{value:.{digits}f}</td>'


def write_report(records: list[dict], summary: dict, path: str | Path) -> Path:
    """Write `report.html` for a run's records (one table row each, in the given order) and its summary."""
    path = Path(path)
    stats = summary.get("scores") or {}
    has_mos_scale = stats.get("column") == "score_mos"
    has_truth = any(r.get("mos") is not None for r in records)
    parts = ['<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>realness report: {len(records)} images</title><style>{_CSS}</style></head><body>",
             "<h1>Realness report</h1>",
             f'<p class="muted">{summary.get("ok", 0)} of {len(records)} images scored; '
             f'{len(summary.get("failed", {}))} failed. Higher score = looks more real.</p>']
    for name in summary.get("placeholders", []):
        parts.append(f'<div class="warn"><b>Placeholder {name}.</b> The default {name} could not be loaded (no '
                     f"network), so a tiny model with random weights stood in: its output below is random. "
                     f"Run with network access or pass a local model.</div>")
    describer = (summary.get("models") or {}).get("describer") or {}
    if describer.get("stands_in_for") and not describer.get("placeholder"):
        parts.append(f'<div class="note"><b>Offline describer.</b> {_e(describer["stands_in_for"])} could not be '
                     f'downloaded, so the bundled {_e(describer["name"])} wrote the descriptions. '
                     f'{_e(_measured(describer.get("measured")))}</div>')
    guide = describer.get("verdict_guide")
    if guide:
        low, high = guide["thresholds"]
        parts.append(f'<div class="note"><b>Verdicts from image-only CORE.</b> Each description\'s Yes / Somewhat / No '
                     f'was set by {_e(guide["core"])}\'s score (z below {low:.2f}: Yes, something looks unreal; from '
                     f'{high:.2f}: No) and the describer wrote the explanation after it.</div>')
    maps = (summary.get("models") or {}).get("maps") or {}
    if maps.get("source") == "evidence":
        parts.append(f'<div class="note"><b>Evidence maps.</b> The maps come from the artifact map '
                     f'({_e(maps.get("artifact_model"))}: a head on frozen EfficientNet-Lite0 trained on real photographs '
                     f'with self-made local corruptions) sharpened by detected {_e(", ".join(maps.get("detectors", [])))} '
                     f'regions (boxes on the overlays); a claim naming a face, hand, body or text is placed in those '
                     f'boxes' + (f', since {_e(maps["stands_in_for"])} could not be downloaded' if maps.get("stands_in_for") else "")
                     + ".</div>")
    core = (summary.get("models") or {}).get("core") or {}
    if core.get("chosen"):
        parts.append(f'<div class="note"><b>Image-only scores.</b> CORE: {_e(core["chosen"])}.</div>')
    warned = [r for r in records if r.get("warning")]
    if warned:
        parts.append(f'<div class="warn"><b>{len(warned)} image(s) unlike the images CORE learned from.</b> Their '
                     f'novelty (0-100: how far an image lies from the training images, as a percentile of the training '
                     f'images\' own distances) is above the warning line, so their scores may not hold: '
                     f'{_e(", ".join(r["filename"] for r in warned[:10]))}{" ..." if len(warned) > 10 else ""}.</div>')
    rows = [("images", len(records)), ("scored", summary.get("ok", 0)), ("failed", len(summary.get("failed", {})))]
    if stats:
        rows += [(f"{k} ({stats['column']})", f"{stats[k]:.3f}") for k in ("mean", "median", "std", "min", "max")]
    rows += [(f"verdict {k or '(none)'}", v) for k, v in (summary.get("verdicts") or {}).items() if v]
    if summary.get("vs_mos"):
        c = summary["vs_mos"]
        rows += [("vs human MOS", f"n={c['n']}  SROCC {c['srocc']:.3f}  PLCC {c['plcc']:.3f}  KRCC {c['krcc']:.3f}")]
    for key, info in (summary.get("models") or {}).items():
        rows.append((f"model: {key}", f"{info.get('name')}" + (" (PLACEHOLDER)" if info.get("placeholder") else "")))
    e2e = (summary.get("seconds") or {}).get("end_to_end_s_per_image")
    if e2e is not None:
        rows.append(("seconds per image (this run)", f"{e2e:.3f}"))
    parts.append('<table class="stats">' + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
                 + "</table>")
    plots = summary.get("plots") or {}
    if plots:
        parts.append('<div class="plots">' + "".join(_img(f, k) for k, f in plots.items()) + "</div>")
    score_head = "score (0-100)" if has_mos_scale else "score (z)"
    heads = [("", "", "image"), ("filename", "text", "file"), ("score", "num", score_head), ("z", "num", "z-score")]
    has_novelty = any(r.get("novelty") is not None for r in records)
    if has_novelty:
        heads.append(("novelty", "num", "novelty (0-100)"))
    if has_truth:
        heads.append(("mos", "num", "human MOS"))
    heads += [("verdict", "num", "verdict"), ("", "", "description"), ("", "", "realness map"),
              ("status", "text", "status")]
    parts.append('<table class="results" id="results"><thead><tr>' + "".join(
        f'<th data-key="{k}" data-type="{t}">{_e(label)}</th>' if k else f"<th>{_e(label)}</th>"
        for k, t, label in heads) + "</tr></thead><tbody>")
    for r in records:
        score = r.get("score_mos") if has_mos_scale else r.get("score_z")
        failed = r.get("status") != "ok"
        cells = [f'<td>{_img(r.get("thumb", ""), r["filename"])}</td>',
                 f'<td class="name" data-v="{_e(r["filename"])}">{_e(r["filename"])}</td>',
                 _num(score, 1 if has_mos_scale else 3), _num(r.get("score_z"), 3)]
        if has_novelty:
            cells.append(_num(r.get("novelty"), 0, "num warned" if r.get("warning") else "num"))
        if has_truth:
            cells.append(_num(r.get("mos"), 1))
        verdict = r.get("verdict") or ""
        rank = {"no": 0, "somewhat": 1, "yes": 2}.get(verdict, "")  # sorts by severity, unparsed last
        cells.append(f'<td data-v="{rank}" class="verdict v-{_e(verdict)}">{_e(verdict)}</td>')
        text = _e(r.get("description"))
        if failed:
            text += f'<div class="error">{_e(r.get("stage"))} failed: {_e(r.get("error"))}</div>'
        cells.append(f'<td class="text">{text}</td>')
        overlay = r.get("overlay_thumb", "")
        link = r.get("overlay", "")
        caption = '<div class="caption">flat: no flaw described</div>' if r.get("map_flat") else ""
        if r.get("map_note"):
            caption += f'<div class="caption looked">{_e(r["map_note"])}</div>'
        if r.get("regions"):
            caption += '<div class="caption regions">' + ", ".join(
                f'<span class="region" data-label="{_e(g["label"])}">{_e(g["label"])} {g["score"]:.2f}</span>'
                for g in r["regions"]) + "</div>"
        if r.get("claims"):
            caption += '<div class="caption claims">' + "; ".join(
                f'<span class="claim">{_e(c["claim"])} {_e(str(c["box"]))}</span>' for c in r["claims"]) + "</div>"
        cells.append(f'<td><a href="{_e(quote(link))}">{_img(overlay, "map of " + r["filename"])}</a>{caption}</td>'
                     if overlay else "<td></td>")
        cells.append(f'<td data-v="{_e(r.get("status"))}">{_e(r.get("status"))}</td>')
        parts.append(f'<tr class="row{" failed" if failed else ""}" data-filename="{_e(r["filename"])}">'
                     + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    parts.append(f"<script>{_JS}</script></body></html>\n")

    write_text_atomic(path, "\n".join(parts))
    return path


def _measured(gate: dict | None) -> str:
    """One sentence on what a stand-in describer measured on held-out images (its gate.json)."""
    if not gate:
        return "Its quality has not been measured."
    return gate.get("summary") or ""
