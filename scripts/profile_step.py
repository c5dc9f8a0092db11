"""Where one training step's time goes, tfvision against the seed's PyTorch loop (issue 15).

Three views of the same model (the seed CNN at 32², batch 64, or ResNet-18), each in its own
process so that one's instrumentation does not slow the other:

- ``tf``: TensorFlow's profiler traces a few ``fit`` steps; the host ops are summed by name
  (which TF kernels ran: oneDNN's ``_MklNative*`` or TF's Eigen ones), and the step's wall
  time is split into time inside ops and time outside any op (Python, Keras' loop, waiting).
- ``onednn``: the same steps under ``ONEDNN_VERBOSE=1``; every primitive oneDNN executed is
  summed by kind and implementation (``brg:avx2``, ``jit:avx2``, ``gemm:jit``...), which
  tells whether conv+bias+ReLU fused (``attr-post-ops``) and how much time reorders between
  memory layouts take.
- ``torch``: ``torch.profiler`` over the seed's loop, summed by aten op.
- ``kernels``: oneDNN's primitives layer by layer (kind, propagation, problem shape), TF's
  beside those of PyTorch in ``channels_last`` (the best PyTorch variant, same oneDNN). TF
  runs with one inter-op thread here: with two, independent ops (a convolution's gradients
  by data and by weights) share the cores, and each primitive's time would include the
  other's. This view says whether a layer's kernel, rather than the framework, is slower.

    python scripts/profile_step.py                    # the CNN: tf, onednn, torch
    python scripts/profile_step.py --model resnet18 --size 160 --steps 4
    python scripts/profile_step.py --view kernels     # the CNN's kernels, TF beside torch
"""

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parent))
from benchmark import (
    TORCH_VARIANTS,
    as_variant,
    call_worker,
    machine,
    parse_or_work,
    synthetic_images,
    tf_compiled,
    torch_batches,
    torch_model,
)

TOP = 12
PROFILE_START = "PROFILE START"  # the verbose lines after it are the measured steps
WRAPPERS = ("Iterator", "$", "Executor", "__inference")  # events that contain ops


def tf_model(spec):
    """The model, compiled as the benchmark's tfvision side compiles it, and a ready batch."""
    import tensorflow as tf

    from tfvision.config import load_config
    from tfvision.data.pipeline import resolve_autotune

    size, batch = spec["image_size"], spec["batch"]
    config = load_config("cifar10_cnn", [f"data.image_size={size}", f"data.batch_size={batch}",
                                         *spec["overrides"]])
    model, distribute = tf_compiled(spec, config, spec["steps"])
    images, labels = synthetic_images(batch, size)
    # tf.data's autotuning as tfvision's pipelines resolve it: off on CPU hosts. Left on, it
    # stalled one fit call in two by ~0.5 s here, which the step times would include.
    options = tf.data.Options()
    options.autotune.enabled = resolve_autotune(config.data.autotune)
    data = tf.data.Dataset.from_tensors((tf.constant(images, tf.float32), labels)).repeat()
    return model, data.with_options(options), distribute


def tf_fit(model, data, steps, spe):
    """Seconds per step of ``fit`` over ``steps`` steps (a multiple of steps_per_execution)."""
    steps = max(spe, steps // spe * spe)
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps, steps


def xplane_ops(logdir):
    """``({op type: (count, µs)}, µs the executor ran any op)`` from a trace's host plane.

    Ops are the events named ``name:Type``; ``ExecutorState::Process`` events wrap the ops an
    executor thread runs, so the union of their intervals is the time some op was running.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.defaultdict(lambda: [0, 0.0])
    running = []
    for path in Path(logdir).rglob("*.xplane.pb"):
        for plane in xplane_pb2.XSpace.FromString(path.read_bytes()).planes:
            if plane.name != "/host:CPU":
                continue
            names = {k: m.name for k, m in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "?")
                    begin = line.timestamp_ns * 1e-3 + event.offset_ps * 1e-6
                    if name == "ExecutorState::Process":
                        running.append((begin, begin + event.duration_ps * 1e-6))
                    elif ":" in name and not name.startswith(WRAPPERS):
                        op_type = name.rsplit(":", 1)[1]
                        if op_type in ("Run", "Process") or op_type.startswith("__inference"):
                            continue
                        totals[op_type][0] += 1
                        totals[op_type][1] += event.duration_ps * 1e-6
    busy, end = 0.0, float("-inf")
    for begin, finish in sorted(running):
        busy += max(0.0, finish - max(begin, end))
        end = max(end, finish)
    return dict(totals), busy


def tf_view(spec):
    import tensorflow as tf

    from tfvision.host import onednn_status

    model, data, distribute = tf_model(spec)
    spe = distribute.steps_per_execution
    tf_fit(model, data, 4 * spe, spe)  # trace and warm up
    seconds, _ = tf_fit(model, data, spec["steps"], spe)
    for _ in range(2):  # the profiler's first session pays for its own start-up
        with tempfile.TemporaryDirectory() as logdir:
            tf.profiler.experimental.start(logdir)
            traced, traced_steps = tf_fit(model, data, spec["steps"], spe)
            tf.profiler.experimental.stop()
            ops, busy = xplane_ops(logdir)
    in_ops = sum(us for _, us in ops.values())
    return {
        "step_ms": 1000 * seconds,
        "traced_step_ms": 1000 * traced,
        "steps_per_execution": spe,
        "onednn": onednn_status()[0],
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        # Summed over threads: above the wall time when ops ran in parallel.
        "op_ms_per_step": in_ops / 1000 / traced_steps,
        # Python, Keras' loop and waits: the traced step's time when no op ran.
        "outside_ops_ms_per_step": traced * 1000 - busy / 1000 / traced_steps,
        "ops": {name: {"count": c / traced_steps, "ms": us / 1000 / traced_steps}
                for name, (c, us) in sorted(ops.items(), key=lambda kv: -kv[1][1])},
    }


Primitive = collections.namedtuple("Primitive", "kind impl prop post_ops shape ms")


def verbose_primitives(worker, spec, env=None):
    """``(isa, [Primitive], steps)``: every primitive a worker ran under ONEDNN_VERBOSE in
    its measured steps, and how many steps those were."""
    result, stdout = call_worker(SCRIPT, worker, spec, {"ONEDNN_VERBOSE": "1", **(env or {})})
    lines = stdout.splitlines()
    isa = next((line.split("isa:", 1)[1] for line in lines
                if line.startswith("onednn_verbose") and "isa:" in line), "")
    runs = []
    for line in lines[lines.index(PROFILE_START) + 1:]:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields[:4]:
            continue
        i = fields.index("exec")
        attrs = next((f for f in fields if f.startswith("attr-post-ops:")), "")
        runs.append(Primitive(*fields[i + 2:i + 5], attrs[len("attr-post-ops:"):], fields[-2],
                              float(fields[-1])))
    return isa, runs, result["steps"]


def per_step(runs, steps, key) -> dict:
    """``{key(run): {"count", "ms"}}`` per step, the slowest first."""
    totals = collections.defaultdict(lambda: [0, 0.0])
    for run in runs:
        totals[key(run)][0] += 1
        totals[key(run)][1] += run.ms
    return {k: {"count": c / steps, "ms": ms / steps}
            for k, (c, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1])}


def onednn_view(spec):
    """The TF model's primitives summed by kind, implementation and propagation."""
    isa, runs, steps = verbose_primitives("onednn_steps", spec)
    primitives = per_step(runs, steps, lambda r: f"{r.kind} {r.impl} {r.prop}"
                          + (f" [{r.post_ops}]" if r.post_ops else ""))
    return {
        "isa": isa,
        "primitive_ms_per_step": sum(row["ms"] for row in primitives.values()),
        "reorder_ms_per_step": sum(row["ms"] for k, row in primitives.items()
                                   if k.startswith("reorder")),
        "primitives": primitives,
    }


def kernels_view(spec):
    """Each layer's primitives, TF's (one inter-op thread) beside torch's channels_last."""
    sides = {"tf": verbose_primitives("onednn_steps", spec, {"TF_NUM_INTEROP_THREADS": "1"}),
             "torch": verbose_primitives("torch_onednn_steps", spec)}
    def layer(run):
        return f"{run.kind} {run.prop} {run.shape}"

    layers = {}
    for side, (_, runs, steps) in sides.items():
        implementations = {layer(run): run.impl for run in runs}
        for key, row in per_step(runs, steps, layer).items():
            layers.setdefault(key, {})[side] = {**row, "impl": implementations[key]}
    totals = {side: sum(run.ms for run in runs) / steps
              for side, (_, runs, steps) in sides.items()}
    slowest_first = sorted(layers.items(), key=lambda kv: -max(v["ms"] for v in kv[1].values()))
    return {**totals, "layers": dict(slowest_first)}


def onednn_steps(spec):
    model, data, distribute = tf_model(spec)
    spe = distribute.steps_per_execution
    tf_fit(model, data, 4 * spe, spe)
    print(PROFILE_START, flush=True)
    return {"steps": tf_fit(model, data, spec["steps"], spe)[1]}


def torch_step(spec, variant="seed loop"):
    """One training step of the seed's loop on a ready batch, as ``variant`` runs it."""
    import torch

    inputs, targets = torch_batches(spec["batch"], spec["image_size"])
    model, inputs = as_variant(torch_model(spec), inputs, variant)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    return step


def torch_onednn_steps(spec):
    step = torch_step(spec, "channels_last")
    print(PROFILE_START, flush=True)
    for _ in range(spec["steps"]):
        step()
    return {"steps": spec["steps"]}


def torch_view(spec):
    import torch

    step = torch_step(spec, spec["torch_variant"])
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    seconds = (time.perf_counter() - start) / spec["steps"]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(spec["steps"]):
            step()
    # Self time of the aten ops, so nested calls are not counted twice.
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return {
        "step_ms": 1000 * seconds,
        "threads": torch.get_num_threads(),
        "ops": {e.key: {"count": e.count / spec["steps"],
                        "ms": e.self_cpu_time_total / 1000 / spec["steps"]} for e in rows[:40]},
    }


WORKERS = {f.__name__: f for f in (tf_view, onednn_steps, torch_view, torch_onednn_steps)}
IN_WORKER = {"tf": "tf_view", "torch": "torch_view"}
IN_PARENT = {"onednn": onednn_view, "kernels": kernels_view}  # they start their own workers
VIEWS = (*IN_WORKER, *IN_PARENT)
DEFAULT_VIEWS = ("tf", "onednn", "torch")


def show(title, rows, total=None):
    print(f"  {title}")
    for name, row in list(rows.items())[:TOP]:
        share = f" {100 * row['ms'] / total:5.1f}%" if total else ""
        print(f"    {row['ms']:8.3f} ms{share}  x{row['count']:<6.3g} {name}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("cnn", "resnet18"), default="cnn")
    parser.add_argument("--size", type=int, help="image side (default: 32 cnn, 160 resnet18)")
    parser.add_argument("--batch", type=int, help="default: 64 cnn, 32 resnet18")
    parser.add_argument("--steps", type=int, help="steps per view (default 64 cnn, 4 resnet)")
    parser.add_argument("--view", choices=VIEWS, action="append", help="default: tf, onednn, torch")
    parser.add_argument("--torch-variant", choices=TORCH_VARIANTS, default="seed loop",
                        help="the PyTorch the torch view profiles (default: the seed's loop)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="config override for tfvision")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parse_or_work(parser, WORKERS, argv)
    if args is None:
        return
    cnn = args.model == "cnn"
    spec = {"model": args.model, "image_size": args.size or (32 if cnn else 160),
            "batch": args.batch or (64 if cnn else 32), "steps": args.steps or (64 if cnn else 4),
            "overrides": args.overrides, "torch_variant": args.torch_variant}
    figures = {"machine": machine(), "spec": spec}
    print(f"machine: {figures['machine']}\nspec: {spec}", flush=True)
    for view in args.view or DEFAULT_VIEWS:
        result = (IN_PARENT[view](spec) if view in IN_PARENT
                  else call_worker(SCRIPT, IN_WORKER[view], spec)[0])
        figures[view] = result
        if view == "tf":
            print(f"\n== tfvision fit: {result['step_ms']:.2f} ms/step "
                  f"(traced {result['traced_step_ms']:.2f}), steps_per_execution "
                  f"{result['steps_per_execution']}, oneDNN {result['onednn']}, threads "
                  f"{result['threads']}; "
                  f"ops {result['op_ms_per_step']:.2f} ms/step summed over threads; no op "
                  f"running {result['outside_ops_ms_per_step']:.2f} ms/step")
            show("TF ops by type, per step (summed over threads):", result["ops"],
                 result["op_ms_per_step"])
        elif view == "onednn":
            print(f"\n== oneDNN primitives, {result['primitive_ms_per_step']:.2f} ms/step; "
                  f"reorders {result['reorder_ms_per_step']:.3f} ms/step; isa {result['isa']}")
            show("by kind, implementation, propagation [fused post-ops]:",
                 result["primitives"], result["primitive_ms_per_step"])
        elif view == "kernels":
            print(f"\n== oneDNN kernels per step, layer by layer: TF (one inter-op thread) "
                  f"{result['tf']:.2f} ms, PyTorch channels_last {result['torch']:.2f} ms")
            for layer, sides in list(result["layers"].items())[:2 * TOP]:
                cells = [f"{sides[s]['ms']:7.3f} ms x{sides[s]['count']:<3.3g} {sides[s]['impl']:<24}"
                         if s in sides else f"{'-':>10}{'':31}" for s in ("tf", "torch")]
                print(f"    tf {cells[0]}  torch {cells[1]}  {layer}")
        else:
            total = sum(r["ms"] for r in result["ops"].values())
            print(f"\n== PyTorch {spec['torch_variant']}: {result['step_ms']:.2f} ms/step, "
                  f"{result['threads']} threads")
            show("aten ops by self time, per step:", result["ops"], total)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
