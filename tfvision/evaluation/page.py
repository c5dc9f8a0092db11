"""report.html: one self-contained page (pictures as base64 data URIs, no network).

A script in the page checks that every picture decoded (``naturalWidth > 0``) and writes
the result into ``#image-check``, so a browser (and the test that drives one) can tell a
broken page from a good one.
"""

import base64
import html

from tfvision import fs, rundir

TITLES = {
    "confusion_matrix": "Confusion matrix",
    "reliability": "Reliability diagram",
    "curves": "Training curves",
    "mistakes": "Most confident mistakes",
    "corruptions": "Robustness to corruptions",
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1.5em; max-width: 1100px;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.summary td { font-weight: bold; }
#image-check { color: #555; font-size: 0.85em; }
"""

_CHECK = """
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var check = document.getElementById("image-check");
  check.textContent = broken.length === 0
    ? "all " + images.length + " images loaded"
    : "broken images: " + broken.map(function (i) { return i.alt; }).join(", ");
  check.dataset.ok = String(broken.length === 0);
});
"""


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _image(directory, name: str, file: str) -> str:
    with fs.open_file(fs.join(directory, file)) as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return (f"<h2>{TITLES[name]}</h2>"
            f'<img alt="{name}" src="data:image/png;base64,{data}">')


def write_page(path, report, pictures: dict) -> None:
    """Write ``path`` from ``report`` (report.json's content) and the PNGs ``pictures``
    (``{name: file name}`` beside ``path``)."""
    cal = report["calibration"]
    parts = [
        "<h1>tfvision evaluation report</h1>",
        _table(["examples", "accuracy", f"top-{report['top_k']} accuracy", "loss", "ECE",
                "temperature", "ECE calibrated"],
               [[report["num_examples"], report["accuracy"], report["top_k_accuracy"],
                 report["loss"], cal["ece"], cal["temperature"], cal["ece_calibrated"]]]),
    ]
    images = {name: _image(fs.dirname(path), name, file) for name, file in pictures.items()}
    parts.append(images.pop("curves", ""))
    parts.append(images.pop("confusion_matrix", ""))
    parts.append("<h2>Per class</h2>" + _table(
        ["class", "precision", "recall", "F1", "support"],
        [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]]
         for r in report["per_class"]]
        + [[name, avg["precision"], avg["recall"], avg["f1"], report["num_examples"]]
           for name, avg in (("macro avg", report["macro_avg"]),
                             ("weighted avg", report["weighted_avg"]))]))
    if report["confused_pairs"]:
        parts.append("<h2>Most confused pairs</h2>" + _table(
            ["true", "predicted", "count", "share of true"],
            [[p["true"], p["predicted"], p["count"], p["share_of_true"]]
             for p in report["confused_pairs"]]))
    parts.append(images.pop("reliability", ""))
    parts.append("<h2>Calibration</h2>" + _table(list(cal), [list(cal.values())]))
    if "corruptions" in report:
        found = report["corruptions"]
        parts.append(images.pop("corruptions", ""))
        parts.append(_table(["corruption", *[f"severity {s}" for s in found["severities"]]],
                            [[name.replace("_", " "),
                              *[f"{r['accuracy']:.3f} (ECE {r['ece']:.3f})" for r in rows]]
                             for name, rows in found["results"].items()]))
    parts.append(images.pop("mistakes", ""))
    if report["mistakes"]:
        parts.append(_table(["image", "true", "predicted", "score"],
                            [[m["image"], m["true"], m["predicted"], m["score"]]
                             for m in report["mistakes"]]))
    parts.append('<p id="image-check" data-ok="unknown">checking images...</p>')
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>tfvision report"
            f"</title><style>{_STYLE}</style></head><body>{''.join(parts)}"
            f"<script>{_CHECK}</script></body></html>\n")
    rundir.write_text(path, page)
