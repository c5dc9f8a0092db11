"""The ``tfvision`` command line.

TensorFlow is imported inside each command, never at module level, so ``tfvision --help``
answers instantly. User errors (``tfvision.errors``) print one line and exit with code 2.
"""

import contextlib
import importlib.abc
import importlib.util
import json
import os
import re
import sys
import tempfile

import click

from tfvision.errors import TfvisionError
from tfvision.host import inference_only_process

# What TensorFlow's C++ code writes to stderr while it loads, before absl's logging is set up
# (so TF_CPP_MIN_LOG_LEVEL cannot hide it): the absl banner and I/W/E log lines.
_TF_LOAD_LOG = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR$|[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Whichever command first imports TensorFlow, it loads without its log lines.

    ``TF_CPP_MIN_LOG_LEVEL=3`` hides what TF logs once loaded (the cuInit error of a CPU-only
    machine, libjpeg's warnings). The lines it prints while loading go to file descriptor 2
    before that setting is read, so they are filtered out of the import alone; anything else
    written there (an ImportError's traceback) is passed on.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            sys.stderr.flush()
            saved = os.dup(2)
            with tempfile.TemporaryFile() as captured:
                os.dup2(captured.fileno(), 2)
                try:
                    load(module)
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
                    captured.seek(0)
                    for line in captured.read().decode(errors="replace").splitlines(True):
                        if not _TF_LOAD_LOG.match(line):
                            sys.stderr.write(line)

        spec.loader.exec_module = exec_module
        return spec


def _quiet_tensorflow(verbose):
    """TensorFlow's logs only when asked for: ``--verbose``, or the user's own
    ``TF_CPP_MIN_LOG_LEVEL``. Its Python side logs through absl (TFDS's "WARNING:absl:..."),
    kept to errors too."""
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.meta_path.insert(0, _QuietTensorFlowImport())
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TfvisionError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tfvision")
@click.option("-v", "--verbose", is_flag=True,
              help="Show TensorFlow's own log lines (hidden by default).")
def main(verbose):
    """Train, evaluate, export and serve image classifiers (Keras 3 / TensorFlow)."""
    _quiet_tensorflow(verbose)
    _plain_warnings()


@main.command()
@click.option("-c", "--config", default=None, help="YAML file or shipped config name "
              "(default: quickstart).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value (parsed as YAML); repeatable.")
@click.option("--run-dir", default=None, type=click.Path(file_okay=False),
              help="Where the run lives (default: runs/<config name>). Re-running resumes.")
@click.option("--strategy", default=None,
              type=click.Choice(["auto", "default", "one_device", "mirrored",
                                 "multi_worker_mirrored", "tpu"]),
              help="Same as --set distribute.strategy=...")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Train with N worker processes on this machine (MultiWorkerMirrored).")
def train(config, overrides, run_dir, strategy, workers):
    """Train a model; with no arguments, the quickstart on the embedded digits."""
    from tfvision.config import load_config

    if strategy:
        overrides = (*overrides, f"distribute.strategy={strategy}")
    cfg = load_config(config, overrides)
    if workers > 1:
        _launch_workers(cfg, workers, config, overrides, run_dir)
    from tfvision.training import train as run_training

    try:
        result = run_training(cfg, run_dir)
    except KeyboardInterrupt:
        from tfvision.training.trainer import resolve_run_dir, resume_point

        where = resolve_run_dir(cfg, run_dir)
        click.echo(f"\ninterrupted: re-run the same command to resume {where} "
                   f"{resume_point(where, cfg)}", err=True)
        sys.exit(130)
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if k.startswith("val"))
    click.echo(f"run directory: {result.run_dir}  ({metrics})")
    if result.export_path:
        click.echo(f"exported: {result.export_path}")


def _launch_workers(cfg, workers, config, overrides, run_dir):
    """``train --workers N``: the same command as N local workers; exits with their code."""
    from tfvision.training.launcher import launch

    if cfg.distribute.strategy not in ("auto", "multi_worker_mirrored"):
        raise click.UsageError(f"--workers needs distribute.strategy auto or "
                               f"multi_worker_mirrored, not {cfg.distribute.strategy}")
    if os.environ.get("TF_CONFIG"):
        raise click.UsageError("TF_CONFIG is set: --workers starts its own local cluster; "
                               "unset TF_CONFIG, or drop --workers to join the configured one")
    args = [*(["--config", config] if config else []),
            *[arg for text in overrides for arg in ("--set", text)],
            *(["--run-dir", run_dir] if run_dir else [])]
    sys.exit(launch(workers, args))


@main.command()
@click.argument("target", type=click.Path())
@click.option("-c", "--config", default=None,
              help="Config to evaluate with (default: the run's own config.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value (parsed as YAML); repeatable.")
@click.option("--data", default=None, metavar="SOURCE",
              help="Evaluate on all of SOURCE: an image folder, a TFRecord file pattern or "
                   "tfds:NAME[:SPLIT] (default: the config's validation split).")
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              metavar="DIR", help="Write report.json, the pictures and report.html to DIR.")
@click.option("--corruptions", is_flag=True,
              help="Also evaluate under 6 corruptions at severities 1-5 (ImageNet-C style).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
def evaluate(target, config, overrides, data, report_dir, corruptions, as_json):
    """Per-class metrics, confusion, calibration (and robustness) of TARGET: a run dir, a
    .keras file, or an export (a version, or a model folder: its latest) called through
    its serving_default as TF Serving calls it."""
    inference_only_process()
    from tfvision import fs
    from tfvision.config import load_config

    cfg = load_config(config) if config else None
    from tfvision.evaluation import evaluate as run_evaluation

    report = run_evaluation(target, cfg, overrides, data=data,
                            corruptions=corruptions, report_dir=report_dir,
                            progress=lambda text: click.echo(text, err=True))
    if as_json:
        click.echo(json.dumps(report))
        return
    cal = report["calibration"]
    lines = {"examples": report["num_examples"], "loss": report["loss"],
             "accuracy": report["accuracy"], "top_k_accuracy": report["top_k_accuracy"],
             "macro_f1": report["macro_avg"]["f1"], "ece": cal["ece"],
             "temperature": cal["temperature"], "ece_calibrated": cal["ece_calibrated"]}
    if corruptions:
        lines["corruption_accuracy"] = report["corruptions"]["mean_accuracy"]
    for key, value in lines.items():
        click.echo(f"{key}: {value}" if isinstance(value, int) else f"{key}: {value:.4f}")
    if report_dir:
        click.echo(f"report: {fs.join(report_dir, 'report.html')}")


@main.command()
@click.argument("target", metavar="RUN_DIR|MODEL", type=click.Path())
@click.option("--export-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Model folder; versions go to DIR/<N>/ (default: RUN_DIR/export/<config "
                   "name>, or RUN_DIR/tflite/<config name> for tflite).")
@click.option("--version", type=click.IntRange(min=1), default=None, metavar="N",
              help="Version number (default: the next free one); never overwritten.")
@click.option("--format", "fmt", type=click.Choice(["saved_model", "tflite"]),
              default="saved_model", show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Classes per image in the answers (default: export.top_k of the run).")
@click.option("--explain", is_flag=True, help="Add the serving_explain signature: the "
              "answers plus Grad-CAM heatmaps (default: export.explain of the run).")
@click.option("--calibrate", is_flag=True,
              help="Fit a temperature on the validation split (minimum NLL) and bake it into "
                   "the probabilities and scores (logits stay raw).")
def export(target, export_dir, version, fmt, top_k, explain, calibrate):
    """Export a run's model (or a .keras file in a run) for TF Serving or TFLite."""

    from tfvision import rundir
    from tfvision.export.savedmodel import export_model
    from tfvision.models import load_model

    for flag, asked in (("--explain", explain), ("--calibrate", calibrate)):
        if asked and fmt != "saved_model":
            raise click.UsageError(f"{flag} is for saved_model exports (TF Serving) only")
    model_path, run_dir = rundir.resolve_model_path(target)
    cfg = rundir.load_run_config(run_dir)
    model = load_model(model_path)
    export_dir = export_dir or rundir.default_export_dir(run_dir, cfg, fmt)
    if fmt == "saved_model":
        from tfvision.data.pipeline import Preset

        temperature = 1.0
        if calibrate:
            from tfvision.evaluation.report import calibrate as fit

            fitted = fit(model_path, model=model)
            temperature = fitted["temperature"]
            click.echo(f"temperature: {temperature:.4f} (fitted on the validation split: NLL "
                       f"{fitted['nll']:.4f} -> {fitted['nll_calibrated']:.4f})")
        path = export_model(model, export_dir, rundir.read_class_names(run_dir), version=version,
                            top_k=top_k or cfg.export.top_k, preset=Preset.of(cfg),
                            explain=explain or cfg.export.explain, temperature=temperature)
        click.echo(f"exported: {path}")
        return
    from tfvision.data.dataset import load_dataset
    from tfvision.export.tflite import export_tflite

    result = export_tflite(model, export_dir, load_dataset(cfg).validation, version=version)
    click.echo(f"exported: {result.path}")
    keras_accuracy = result.accuracy["keras"]
    for variant, accuracy in result.accuracy.items():
        click.echo(f"validation accuracy {variant}: {accuracy:.4f} "
                   f"(difference to keras: {accuracy - keras_accuracy:+.4f})")


@main.command()
@click.argument("model", type=click.Path())
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many classes per image.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.csv|FILE.jsonl", help="Write the predictions to FILE instead.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
def predict(model, paths, top_k, as_json, output, batch_size):
    """Classify images with MODEL: an export (a version, or a folder of versions: the latest)
    answering through its serving_default, or a .keras file.

    PATH: image files, folders (searched recursively) or globs. Files that cannot be read
    are named and skipped, and the exit code is then 1.
    """
    inference_only_process()
    from tfvision.inference import predict_stream

    if output and not output.endswith((".csv", ".jsonl")):
        raise click.UsageError(f"--output {output}: give a .csv or a .jsonl file")
    skipped, shown = [], {}
    with contextlib.ExitStack() as stack:
        def progress(done, total):  # the bar appears with the first batch, once paths are checked
            if not shown:
                shown["bar"] = stack.enter_context(click.progressbar(
                    length=total, label="predicting", file=sys.stderr))
            shown["bar"].update(done - shown["bar"].pos)

        results = predict_stream(model, paths, top_k=top_k, batch_size=batch_size,
                                 skipped=skipped, progress=progress)
        count = (_write_predictions(results, output, top_k) if output
                 else _print_predictions(results, as_json))
    for item in skipped:
        click.echo(f"warning: skipped {item}", err=True)
    if output:
        click.echo(f"wrote {count} predictions to {output}")
    if skipped:
        click.echo(f"{len(skipped)} path(s) skipped", err=True)
        sys.exit(1)


def _print_predictions(results, as_json) -> int:
    count = 0
    for count, result in enumerate(results, 1):
        if as_json:
            click.echo(json.dumps(result))
        else:
            best = ", ".join(f"{n} ({s:.3f})" for n, s in zip(result["class_names"],
                                                             result["scores"]))
            click.echo(f"{result['image']}: {best}")
    return count


def _write_predictions(results, output, top_k) -> int:
    """CSV: image, class_name, score (the best), then class_N, score_N for the top k;
    JSONL: one object per image, as --json prints."""
    import csv

    count = 0
    with open(output, "w", newline="") as f:
        if output.endswith(".jsonl"):
            for count, result in enumerate(results, 1):
                f.write(json.dumps(result) + "\n")
            return count
        writer = csv.writer(f)
        for count, result in enumerate(results, 1):
            if count == 1:
                k = len(result["scores"])
                writer.writerow(["image", "class_name", "score",
                                 *[f"{key}_{n}" for n in range(1, k + 1)
                                   for key in ("class", "score")]])
            names, scores = result["class_names"], result["scores"]
            writer.writerow([result["image"], names[0], f"{scores[0]:.6g}",
                             *[v for name, score in zip(names, scores)
                               for v in (name, f"{score:.6g}")]])
    return count


@main.command()
@click.argument("model", metavar="MODEL", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", default="explanations", show_default=True,
              type=click.Path(file_okay=False), metavar="DIR",
              help="Where the overlays, heatmaps and explanations.jsonl go.")
@click.option("--class", "class_name", default=None, metavar="NAME",
              help="Explain this class for every image (default: each image's top-1).")
@click.option("--layer", default=None, metavar="NAME",
              help="Layer to explain (default: the last feature map before pooling).")
@click.option("--method", type=click.Choice(["gradcam", "gradcam++"]), default="gradcam",
              show_default=True)
def explain(model, images, out_dir, class_name, layer, method):
    """Grad-CAM overlays of IMAGES for MODEL (a run directory or a .keras file): where the
    model looked for the class it chose."""
    from tfvision import rundir
    from tfvision.explanations import write_explanations
    from tfvision.inference import keras_preset, read_images
    from tfvision.models import load_model

    model_path, run_dir = rundir.resolve_model_path(model)
    pictures = read_images(images)
    keras_model = load_model(model_path)
    class_names = rundir.class_names_or_ids(run_dir, keras_model.output_shape[-1])
    for record in write_explanations(keras_model, class_names, images, pictures, out_dir,
                                     keras_preset(keras_model, model_path), class_name, layer,
                                     method):
        click.echo(f"{record['image']}: {record['class_name']} ({record['score']:.3f}) "
                   f"-> {record['overlay']}")
    click.echo(f"wrote {out_dir}/explanations.jsonl")


@main.command("serving-request")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--signature", type=click.Choice(["serving_default", "serving_tf_example",
                                                "serving_explain"]),
              default="serving_default", show_default=True,
              help="serving_tf_example wraps each image in a tf.Example (image/encoded); "
                   "serving_explain (an export made with --explain) answers heatmaps too.")
@click.option("--grpc", "grpc_file", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Write a serialized gRPC PredictRequest to FILE instead.")
@click.option("--model-name", default=None,
              help="The model's name in models.config (needed with --grpc).")
def serving_request(images, signature, grpc_file, model_name):
    """Print the TF Serving REST body for IMAGES (POST it to /v1/models/NAME:predict)."""
    from tfvision.data.imagecheck import read_image_files
    from tfvision.errors import ExportError
    from tfvision.export import serving

    encoded = read_image_files(images)
    if grpc_file is None:
        click.echo(json.dumps(serving.rest_body(signature, encoded)))
        return
    if not model_name:
        raise click.UsageError("--grpc needs --model-name (the name in models.config)")
    if not serving.have_serving_api():
        raise ExportError(serving.MISSING_API)
    request = serving.predict_request(
        model_name, signature, serving.string_inputs(signature, encoded)
    )
    with open(grpc_file, "wb") as f:
        f.write(request.SerializeToString())
    click.echo(f"wrote a PredictRequest for {len(encoded)} image(s) to {grpc_file}")


@main.group()
def weights():
    """Pretrained weights for transfer learning."""


@weights.command("convert")
@click.argument("src")
@click.argument("dst", type=click.Path(dir_okay=False))
def convert_weights(src, dst):
    """Write SRC, a torchvision ResNet-18/34 state dict (.pth/.pt needs torch, .safetensors
    does not; or resnet18/resnet34 to download torchvision's ImageNet checkpoint), as DST, a
    Keras .weights.h5 file: set `model.weights: DST` and later runs need neither torch nor
    network."""
    from tfvision.models.resnet import convert

    arch, num_classes = convert(src, dst)
    head = f"with its {num_classes}-class fc" if num_classes else "without fc"
    click.echo(f"wrote {dst}: {arch} {head}; use it with `model.weights: {dst}`")


@main.group()
def data():
    """Data: convert an image folder to TFRecords, inspect a source, benchmark the input."""


def _plain_warnings():
    """tfvision's own warnings (bad files skipped) print as ``warning: ...``, no source line."""
    import warnings

    default = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        if category.__module__.startswith("tfvision."):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


@data.command("convert")
@click.argument("src_folder", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--shards", default=4, show_default=True, type=click.IntRange(min=1),
              help="Training files; validation gets as many in proportion to its size.")
@click.option("--validation-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Share of each class written to validation-*.tfrecord.")
@click.option("--seed", default=42, show_default=True, help="Chooses the validation images.")
@click.option("--on-bad-file", type=click.Choice(["skip", "error"]), default="skip",
              show_default=True, help="Unreadable images: leave out with a warning, or stop.")
def convert_data(src_folder, out_dir, shards, validation_fraction, seed, on_bad_file):
    """Write SRC_FOLDER (one subfolder per class) as sharded TFRecords in OUT_DIR.

    Images keep their original bytes; OUT_DIR/labels.txt holds the class names. Train with
    data.source=tfrecord and data.path=OUT_DIR/train-*.tfrecord,
    data.validation_path=OUT_DIR/validation-*.tfrecord.
    """
    from tfvision.data.tfrecord import convert_folder

    result = convert_folder(src_folder, out_dir, shards, validation_fraction, seed, on_bad_file)
    for split in ("train", "validation"):
        if split in result:
            click.echo(f"{split}: {result[split]['examples']} images in "
                       f"{len(result[split]['files'])} shard(s) ({out_dir}/{split}-*.tfrecord)")
    click.echo(f"classes ({len(result['class_names'])}): {', '.join(result['class_names'])}  "
               f"-> {out_dir}/labels.txt")


@data.command("inspect")
@click.argument("source")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="TFDS data_dir, when SOURCE is a TFDS catalog name.")
def inspect_data(source, data_dir):
    """Classes, images per split, formats, size range and bad files of SOURCE.

    SOURCE is an image folder, a folder of TFRecords, a TFRecord file pattern (quoted), a
    TFDS catalog name (never downloaded) or `digits`. Nothing is decoded: headers only.
    """
    from tfvision.data.inspection import format_report, inspect_source

    click.echo(format_report(inspect_source(source, data_dir)))


@data.command("benchmark")
@click.option("-c", "--config", default=None, help="YAML file or shipped config name "
              "(default: quickstart).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value (parsed as YAML); repeatable.")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(min=1),
              help="Timed training steps per round and mode.")
@click.option("--batches", default=50, show_default=True, type=click.IntRange(min=1),
              help="Timed batches for the pipeline on its own.")
@click.option("--rounds", default=2, show_default=True, type=click.IntRange(min=1),
              help="Alternating rounds (constant batch, real pipeline); the best counts.")
def benchmark_data(config, overrides, steps, batches, rounds):
    """Input pipeline images/s alone and beside the model's training step, and a verdict."""
    from tfvision.config import load_config

    cfg = load_config(config, overrides)
    from tfvision.training.input_benchmark import run_benchmark

    run_benchmark(cfg, steps=steps, batches=batches, rounds=rounds, echo=click.echo)


if __name__ == "__main__":
    main()
