"""The settings tfvision takes from the CPU before TensorFlow loads (tfvision/host.py)."""

import os
import subprocess
import sys

import pytest

from tfvision.host import TF_ONEDNN_FEATURES, Cpu, cpu, lone_image_is_slow, onednn_choice

AVX2 = Cpu("AMD EPYC", 2, frozenset({"fma", "avx", "avx2"}))
AVX512_BF16 = Cpu("AMD EPYC", 2, frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}))
NO_AVX2 = Cpu("old", 2, frozenset({"sse4_2", "avx"}))


@pytest.mark.parametrize(("machine", "environ", "loaded", "value", "reason"), [
    (AVX2, {}, False, "1", "AVX2 without VNNI"),
    (AVX2, {"TF_ENABLE_ONEDNN_OPTS": "0"}, False, None, "TF_ENABLE_ONEDNN_OPTS=0 set by you"),
    (AVX2, {}, True, None, "TensorFlow was imported before tfvision; set TF_ENABLE_ONEDNN_OPTS=1"),
    (AVX512_BF16, {}, False, None, "TensorFlow's default on a CPU with avx512_vnni"),
    (NO_AVX2, {}, False, None, "TensorFlow's default on this CPU"),
])
def test_onednn_is_turned_on_only_where_tensorflow_leaves_an_avx2_cpu_without_it(
        machine, environ, loaded, value, reason):
    chosen, why = onednn_choice(machine, environ, loaded)
    assert chosen == value
    assert why.startswith(reason)


@pytest.mark.parametrize(("machine", "onednn_on", "environ", "slow"), [
    (AVX2, True, {}, True),
    (AVX2, True, {"TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "1"}, False),  # predict, evaluate
    (AVX2, True, {"TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "0"}, True),
    (AVX2, False, {}, False),  # Eigen's kernels
    (AVX512_BF16, True, {}, False),  # not measured there: left alone
])
def test_a_lone_image_is_sent_twice_only_to_avx2_onednn_with_weights_not_frozen(
        machine, onednn_on, environ, slow):
    assert lone_image_is_slow(machine, onednn_on, environ) == slow


def _onednn_in_a_new_process(code, **env):
    """``onednn_status()`` printed by a fresh interpreter that runs ``code`` first."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run(
        [sys.executable, "-c",
         f"{code}; from tfvision.host import onednn_status; print(onednn_status())"],
        env={**environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}, capture_output=True, text=True,
        timeout=300, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_tensorflow_runs_onednn_kernels_on_this_cpu_unless_the_user_says_no():
    flags = cpu().flags
    tensorflow_default = any(f in flags for f in TF_ONEDNN_FEATURES)
    on, why = eval(_onednn_in_a_new_process("import tfvision, tensorflow"))
    assert on == (tensorflow_default or "avx2" in flags), why
    off = eval(_onednn_in_a_new_process("import tfvision, tensorflow",
                                        TF_ENABLE_ONEDNN_OPTS="0"))
    assert off == (False, "TF_ENABLE_ONEDNN_OPTS=0 set by you")
    # TensorFlow imported first has read its switch already: tfvision leaves it as it is.
    first, why = eval(_onednn_in_a_new_process("import tensorflow, tfvision"))
    assert first == tensorflow_default, why


@pytest.mark.parametrize(("code", "env", "frozen"), [
    ("", {}, "1"),
    ("", {"TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "0"}, "0"),  # the user's value
    ("import tensorflow", {}, None),  # TensorFlow first: this process may train
])
def test_inference_only_commands_freeze_weights_only_before_tensorflow_loads(code, env, frozen):
    environ = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"}
    script = (f"{code}\nimport os\nfrom tfvision.host import inference_only_process\n"
              "inference_only_process()\nprint(os.environ.get('TF_ONEDNN_ASSUME_FROZEN_WEIGHTS'))")
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}, capture_output=True, text=True,
        timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == str(frozen)
