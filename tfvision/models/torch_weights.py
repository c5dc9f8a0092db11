"""PyTorch state dicts in tfvision models: the seed's CNN and torchvision's ResNets.

PyTorch stores convolution kernels as (out, in, kh, kw) and dense ones as (out, in); Keras as
(kh, kw, in, out) and (in, out). A dense layer right after a flatten also sees its inputs in
another order: PyTorch flattens NCHW as (C, H, W), Keras flattens NHWC as (H, W, C), so its
kernel rows are permuted. Keras layer names are the PyTorch module names, except that the
seed's CNN wraps each convolution in a ``ConvLayer``: there ``conv1`` is PyTorch's
``conv1.conv``. The two layouts are told apart by their layers, never by the model's name,
which users choose.
"""

import io

import keras
import numpy as np
from keras import layers

from tfvision import fs
from tfvision.errors import ModelError

# torchvision's name for the classifier: the ResNets' top and the new head of transfer_model
# (the seed's swapped ``fc``). A headless model ignores a checkpoint's.
HEAD = "fc"
TORCH_SUFFIXES = (".pth", ".pt")
# Keras variable name → PyTorch parameter name.
_PARAMS = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_MAPPED = (layers.Conv2D, layers.Dense, layers.BatchNormalization)


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch ourselves
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _read(path) -> bytes:
    with fs.open_file(path) as f:  # bytes, so a weights file may be on any filesystem
        return f.read()


def read_state_dict(path) -> dict:
    """Name → numpy array from a ``.pth``/``.pt`` (needs torch) or ``.safetensors`` file."""
    path = str(path)
    if not fs.isfile(path):
        raise ModelError(f"weights file {path} does not exist")
    suffix = "." + fs.basename(path).rsplit(".", 1)[-1]
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load

        try:
            return load(_read(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelError(
                f"cannot read {path}: truncated or not a safetensors file ({err})"
            ) from None
    if suffix not in TORCH_SUFFIXES:
        raise ModelError(f"{path}: unknown weights format; use a PyTorch .pth/.pt or "
                         ".safetensors state dict, or the Keras weights file that "
                         "`tfvision weights convert` writes from one")
    try:
        import torch
    except ImportError:
        raise ModelError(
            f"reading {path} needs PyTorch (pip install torch); or convert it once where "
            "torch is installed with `tfvision weights convert` and use the file it writes"
        ) from None
    try:
        state = torch.load(io.BytesIO(_read(path)), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch: RuntimeError, EOFError, UnpicklingError...)
        raise ModelError(
            f"cannot read {path}: truncated or not a PyTorch checkpoint ({err})"
        ) from None
    # Training checkpoints often wrap the weights: {"state_dict": {...}, "epoch": ...}.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k: _to_numpy(v) for k, v in state.items() if hasattr(v, "shape")}


def _flat_layers(model):
    """Every layer, nested models' included, in graph order (a functional model's order)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer


def _leaf_layers(model):
    return (layer for layer in _flat_layers(model) if layer.weights)


def _seed_convs(model) -> bool:
    """Whether every convolution is the seed's ``ConvLayer`` (conv + ReLU): biased, with its
    ReLU fused, or next, or after a max-pool (``scratch_cnn`` pools first: same numbers)."""
    ordered = list(_flat_layers(model))
    for i, layer in enumerate(ordered):
        if not isinstance(layer, layers.Conv2D):
            continue
        following = [type(later) for later in ordered[i + 1:i + 3]]
        if not layer.use_bias or not (
                layer.activation is keras.activations.relu
                or following[:1] == [layers.ReLU]
                or following == [layers.MaxPooling2D, layers.ReLU]):
            return False
    return True


def _torch_prefixes(model, leaves) -> list[str]:
    """The PyTorch module name of each layer in ``leaves``.

    The seed's CNN: every convolution is a ``ConvLayer`` and there is no BatchNorm.
    torchvision's ResNets: every convolution is bias-free and there is BatchNorm.
    """
    convs = [layer for layer in leaves if isinstance(layer, layers.Conv2D)]
    norms = [layer for layer in leaves if isinstance(layer, layers.BatchNormalization)]
    if convs and all(isinstance(layer, _MAPPED) for layer in leaves):
        if not norms and _seed_convs(model):
            return [f"{layer.name}.conv" if isinstance(layer, layers.Conv2D) else layer.name
                    for layer in leaves]
        if norms and not any(layer.use_bias for layer in convs):
            return [layer.name for layer in leaves]
    kinds = ", ".join(sorted({type(layer).__name__ for layer in leaves}))
    raise ModelError(
        f"model {model.name!r} (weighted layers: {kinds or 'none'}) is neither the seed's CNN "
        "(scratch_cnn: convolutions with bias and ReLU, then Dense) nor a torchvision "
        "ResNet-18/34 (bias-free convolutions with BatchNorm); load_torch_weights maps only "
        "those onto PyTorch names"
    )


def _flatten_input_shape(layer):
    """(H, W, C) when ``layer`` reads the output of a Flatten, else None."""
    source = layer.input._keras_history.operation
    return tuple(source.input.shape[1:]) if isinstance(source, layers.Flatten) else None


def _converter(layer, var_name):
    """(PyTorch array → Keras array, Keras shape → PyTorch shape) for one variable."""
    if var_name != "kernel":
        return (lambda a: a), (lambda s: s)
    if isinstance(layer, layers.Conv2D):
        return (lambda a: a.transpose(2, 3, 1, 0)), (lambda s: (s[3], s[2], s[0], s[1]))
    hwc = _flatten_input_shape(layer)
    if hwc is None:
        return (lambda a: a.T), (lambda s: (s[1], s[0]))
    h, w, c = hwc

    def permuted(a):  # rows (c, h, w) → (h, w, c)
        return a.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)

    return permuted, (lambda s: (s[1], s[0]))


def _plan(model):
    """``[(torch key, variable, to_keras, torch shape)]`` for every weight of ``model``."""
    leaves = list(_leaf_layers(model))
    plan = []
    for layer, prefix in zip(leaves, _torch_prefixes(model, leaves), strict=True):
        for var in layer.weights:
            to_keras, torch_shape = _converter(layer, var.name)
            key = f"{prefix}.{_PARAMS[var.name]}"
            plan.append((key, var, to_keras, tuple(torch_shape(tuple(var.shape)))))
    return plan


def _first(items, n=3):
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def load_torch_weights(model, source):
    """Load a PyTorch ``state_dict`` into a tfvision ResNet-18/34 or ``scratch_cnn``.

    ``source`` is a mapping of names to arrays or tensors, or a ``.pth``/``.pt`` (read with
    torch) or ``.safetensors`` (read without torch) file. Every weight of the model must be
    in the state dict with its shape, and every tensor of the state dict must be used (a
    model without its ``fc`` ignores the checkpoint's); otherwise nothing is loaded and the
    error names the first offending keys.
    """
    state = source if hasattr(source, "items") else read_state_dict(source)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    plan = _plan(model)
    wanted = {key for key, *_ in plan}
    missing = [key for key, *_ in plan if key not in state]
    head_missing = not any(key.startswith(f"{HEAD}.") for key in wanted)
    extra = [
        key for key in state
        if key not in wanted and not (head_missing and key.startswith(f"{HEAD}."))
    ]
    misshaped, assignments = [], []
    for key, var, to_keras, torch_shape in plan:
        if key not in state:
            continue
        array = _to_numpy(state[key])
        if tuple(array.shape) != torch_shape:
            misshaped.append(f"{key} (file {list(array.shape)}, model {list(torch_shape)})")
            continue
        assignments.append((var, to_keras(array)))
    if missing or extra or misshaped:
        problems = [
            f"{len(found)} {kind}: {_first(found)}"
            for kind, found in (("missing", missing), ("unexpected", extra),
                                ("mis-shaped", misshaped))
            if found
        ]
        raise ModelError(
            f"state dict does not fit model {model.name!r} ({'; '.join(problems)}); "
            "is it from another architecture or number of classes?"
        )
    for var, array in assignments:
        var.assign(array.astype(var.dtype))
    return model
