"""The CPU this process runs on, and the TensorFlow settings chosen from it before TF loads.

TensorFlow's Linux x86 wheels turn their oneDNN kernels on by default only on CPUs with
AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (``DefaultOneDnnPolicy`` in
tensorflow/core/util/port.cc). Elsewhere, on an AVX2-only CPU for instance, convolutions run
on Eigen's kernels: the seed CNN's training step took 80 ms there against 40 ms with oneDNN
(``scripts/profile_step.py``, AVX2 EPYC; BENCHMARKS.md). ``import tfvision`` therefore turns
oneDNN on for AVX2 CPUs that TensorFlow's policy leaves out, before TensorFlow is imported
and unless ``TF_ENABLE_ONEDNN_OPTS`` is already set: the user's value always wins.

This module imports no TensorFlow, so ``tfvision --help`` stays instant.
"""

import dataclasses
import functools
import os
import platform
import sys
from pathlib import Path

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# oneDNN reorders each convolution's weights once, not on every call (onednn_env_vars.cc).
FROZEN_WEIGHTS_ENV = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"
# What TensorFlow's DefaultOneDnnPolicy tests, in /proc/cpuinfo's names.
TF_ONEDNN_FEATURES = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
                      "amx_bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class Cpu:
    model: str
    cores: int
    flags: frozenset

    def reported_flags(self) -> list:
        """The vector extensions that decide kernels and speed, as every figure names them."""
        return [f for f in REPORTED_FLAGS if f in self.flags]


@functools.cache
def cpu() -> Cpu:
    """This machine's CPU model, cores and flags (no flags where /proc/cpuinfo is absent).

    The model carries the CPU family and model numbers: a virtual machine's name ("AMD EPYC")
    is the same for CPU generations whose speeds differ twofold."""
    fields, info = {}, Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():  # the first processor's lines
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
    return Cpu(model, os.cpu_count() or 1, frozenset(fields.get("flags", "").split()))


def tensorflow_onednn_features(machine: Cpu) -> list:
    """The flags for which TensorFlow itself turns oneDNN on; none: it leaves oneDNN off."""
    return [f for f in TF_ONEDNN_FEATURES if f in machine.flags]


def onednn_choice(machine: Cpu, environ, tensorflow_loaded=False) -> tuple:
    """``(value to set TF_ENABLE_ONEDNN_OPTS to, or None; why)``."""
    if ONEDNN_ENV in environ:
        return None, f"{ONEDNN_ENV}={environ[ONEDNN_ENV]} set by you"
    has = tensorflow_onednn_features(machine)
    if has:
        return None, f"TensorFlow's default on a CPU with {has[0]}"
    if "avx2" not in machine.flags:
        return None, "TensorFlow's default on this CPU"
    if tensorflow_loaded:  # TF read the variable when it loaded
        return None, f"TensorFlow was imported before tfvision; set {ONEDNN_ENV}=1 to turn it on"
    return "1", "AVX2 without VNNI, where TensorFlow falls back to Eigen kernels at half the speed"


_ONEDNN_WHY = []


def choose_tensorflow_settings():
    """Set what the CPU calls for in the environment, once, while TensorFlow is not loaded."""
    if not _ONEDNN_WHY:
        value, why = onednn_choice(cpu(), os.environ, "tensorflow" in sys.modules)
        if value is not None:
            os.environ[ONEDNN_ENV] = value
        _ONEDNN_WHY.append(why)


def inference_only_process():
    """For a command that loads a model and only answers with it (``predict``, ``evaluate``):
    let oneDNN reorder each convolution's weights into its working layout once, not on every
    call, as README's serving settings do. Without it, a lone image through a ResNet took
    0.46 s instead of 0.04 on an AVX2 CPU, where oneDNN then falls back to a plain GEMM for a
    batch of one (BENCHMARKS.md, AVX2 again).

    Only before TensorFlow loads, so never in a process that may train, assign weights after
    a call or run layers eagerly (there the cached weights go stale); the user's value wins.
    """
    if FROZEN_WEIGHTS_ENV not in os.environ and "tensorflow" not in sys.modules:
        os.environ[FROZEN_WEIGHTS_ENV] = "1"


def lone_image_is_slow(machine: Cpu, onednn_on: bool, environ) -> bool:
    """Whether a batch of one image is better sent as two. oneDNN's AVX2 convolutions fall back
    to a plain GEMM at a minibatch of one when the weights are not frozen: in a Python process
    on an AVX2 CPU a lone image through a ResNet-18 export took 366 ms, the same image twice
    75 ms (BENCHMARKS.md, "A lone image in a Python process"). AVX-512 was not measured."""
    return (onednn_on and environ.get(FROZEN_WEIGHTS_ENV) != "1"
            and "avx2" in machine.flags and "avx512f" not in machine.flags)


def onednn_status() -> tuple:
    """``(on, why)``: whether this process's TensorFlow runs oneDNN kernels, and why."""
    from tensorflow.python.util import _pywrap_util_port  # the flag TF's kernels read

    return bool(_pywrap_util_port.IsMklEnabled()), (_ONEDNN_WHY or ["TensorFlow's default"])[0]
