"""``tfvision evaluate``: one pass over a set, the report's numbers, and the report folder.

``report.json`` is written first and always; the pictures and the page (``plots``,
``page``) need matplotlib, the ``report`` extra.
"""

import json

import numpy as np
import tensorflow as tf

from tfvision import explanations, fs, rundir
from tfvision.errors import DataError, MissingExtraError
from tfvision.evaluation import corruptions as corrupting
from tfvision.evaluation import metrics, targets
from tfvision.evaluation.collect import collect

MISSING_MATPLOTLIB = ('the report\'s pictures need matplotlib: pip install "tfvision[report]" '
                      "(report.json needs nothing)")


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def robustness(target, pixels, clean_accuracy, seed, progress=None) -> dict:
    """Accuracy and ECE under every corruption and severity, their mean and the drop."""
    results = {}
    for name in corrupting.CORRUPTIONS:
        rows = []
        for severity in corrupting.SEVERITIES:
            batches = corrupting.corrupt(pixels, name, severity, seed)
            if target.takes_bytes:
                batches = batches.map(targets.encode_pair)
            found = collect(target.logits_of, batches, keep=0)
            probabilities = metrics.softmax(found.logits)
            rows.append({"severity": severity,
                         "accuracy": float((found.logits.argmax(1) == found.labels).mean()),
                         "ece": metrics.ece(probabilities, found.labels)})
            if progress:
                progress(f"{name} {severity}: accuracy {rows[-1]['accuracy']:.4f}")
        results[name] = rows
    mean = float(np.mean([r["accuracy"] for rows in results.values() for r in rows]))
    return {"seed": seed, "severities": list(corrupting.SEVERITIES), "results": results,
            "clean_accuracy": clean_accuracy, "mean_accuracy": mean,
            "drop": clean_accuracy - mean}


def calibrate(target, model=None) -> dict:
    """The temperature minimising the NLL of a run's model on its validation split
    (``tfvision export --calibrate``), with the NLL before and after."""
    target = targets.resolve(target, model=model)
    found = collect(target.logits_of, targets.batches(target).clean, keep=0)
    temperature = metrics.fit_temperature(found.logits, found.labels)
    return {"temperature": temperature, "nll": metrics.nll(found.logits, found.labels),
            "nll_calibrated": metrics.nll(found.logits / temperature, found.labels)}


def evaluate(target, config=None, overrides=(), data=None, corruptions=False,
             report_dir=None, pictures=True, model=None, dataset=None, overlay=None,
             progress=None) -> dict:
    """The report of ``target`` (a run dir, a ``.keras`` file or an export) on the
    validation split of its config, or on all of ``data``; written to ``report_dir``.

    ``pictures``: True (needs matplotlib), False (report.json only) or ``"auto"`` (when
    matplotlib is installed). ``model`` and ``dataset`` (from ``load_dataset``): what
    training has in memory, used instead of loading them again. ``overlay(image,
    class_id) -> RGB uint8 image``: drawn beside each mistake instead of its Grad-CAM. ``progress(text)`` hears about the corruption sweep.
    """
    if pictures is True and report_dir is not None and not have_matplotlib():
        raise MissingExtraError(MISSING_MATPLOTLIB)
    target = targets.resolve(target, config, overrides, data, model)
    sets = targets.batches(target, with_pixels=corruptions, dataset=dataset)
    found = collect(target.logits_of, sets.clean)
    if not len(found.labels):
        raise DataError(f"no examples to evaluate {target.path} on")
    report = metrics.summarize(found.logits, found.labels, target.class_names,
                               target.config.train.top_k)
    names = target.class_names
    report["mistakes"] = [
        {"image": sets.names[m.index] if sets.names else f"#{m.index}",
         "true": names[m.true], "predicted": names[m.predicted], "score": m.score}
        for m in found.mistakes
    ]
    if corruptions:
        report["corruptions"] = robustness(target, sets.pixels, report["accuracy"],
                                           target.config.train.seed, progress)
    if report_dir is not None:
        write(report_dir, report, target, found, pictures, overlay)
    return report


def gradcam_overlays(model, thumbnails, class_ids) -> list:
    """The gallery's default beside each mistake: Grad-CAM of the class the model wrongly
    gave, over the picture it saw, in one batch (an export has no Keras model to explain:
    no overlays)."""
    images = np.stack(thumbnails).astype(np.float32)
    heatmaps = explanations.explain(model, images, class_index=np.asarray(class_ids)).heatmaps
    return [explanations.overlay(image, heatmap) for image, heatmap in zip(thumbnails, heatmaps)]


def write(report_dir, report, target, found, pictures, overlay) -> None:
    """report.json, then (with matplotlib) the PNGs and report.html. Local or a URL."""
    out = str(report_dir)
    tf.io.gfile.makedirs(out)
    rundir.write_text(fs.join(out, "report.json"), json.dumps(report, indent=2) + "\n")
    if pictures == "auto" and not have_matplotlib():
        print(f"{fs.join(out, 'report.json')} written; {MISSING_MATPLOTLIB}")
        return
    if not pictures:
        return
    from tfvision.evaluation import page, plots

    history = rundir.run_file(target.run_dir, "history") if target.run_dir else None
    thumbnails = [targets.thumbnail(target, m.image) for m in found.mistakes]
    predicted = [m.predicted for m in found.mistakes]
    if overlay is not None:
        overlays = [overlay(image, c) for image, c in zip(thumbnails, predicted)]
    elif target.keras_model is not None and thumbnails:
        overlays = gradcam_overlays(target.keras_model, thumbnails, predicted)
    else:
        overlays = None
    drawn = plots.draw_all(out, report, found, thumbnails, history, overlays)
    page.write_page(fs.join(out, "report.html"), report, drawn)
