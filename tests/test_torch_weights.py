"""PyTorch weights in tfvision models: the same numbers as PyTorch, and errors that say why not."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import torch
from conftest import REPO
from safetensors.torch import save_file
from torch import nn

from tfvision.errors import ModelError
from tfvision.models import load_torch_weights, resnet18, resnet34, scratch_cnn, transfer_model
from tfvision.models.resnet import convert
from tfvision.models.weights import load_weights

# torchvision is not installable here; scripts/torch_reference.py rebuilds its ResNets (same
# module names, shapes and initialization) and the seed's CNN in plain PyTorch.
sys.path.insert(0, str(REPO / "scripts"))
from torch_reference import SeedCNN, imagenet_input, reference_resnet

TOLERANCE = 1e-4  # max abs difference of logits, the acceptance bound
FACTORIES = {"resnet18": resnet18, "resnet34": resnet34}
def torch_outputs(module, x):
    with torch.no_grad():
        return module(x).numpy()


def torch_features(module, x):
    """The pooled features the ResNet's ``fc`` reads."""
    with torch.no_grad():
        x = module.maxpool(module.relu(module.bn1(module.conv1(x))))
        x = module.layer4(module.layer3(module.layer2(module.layer1(x))))
        return torch.flatten(module.avgpool(x), 1).numpy()


@pytest.fixture(scope="module")
def pixels():
    """Two 224×224 RGB images in [0, 255], as the pipelines hand them to models."""
    return np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")


@pytest.fixture(scope="module")
def torch_resnet18():
    return reference_resnet("resnet18")


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory, torch_resnet18):
    """The reference ResNet-18's state dict as .pth and .safetensors files."""
    folder = tmp_path_factory.mktemp("weights")
    state = torch_resnet18.state_dict()
    torch.save(state, folder / "resnet18.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "resnet18.safetensors"))
    return folder


def _max_diff(a, b):
    diff = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    print(f"max abs diff {diff:.3g} (logits up to {float(np.max(np.abs(a))):.3g})")
    return diff


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
def test_resnet_logits_match_torchvision_architecture(arch, pixels):
    reference = reference_resnet(arch, seed=1)
    model = load_torch_weights(FACTORIES[arch](), reference.state_dict())
    expected = torch_outputs(reference, imagenet_input(pixels))
    assert _max_diff(model(pixels, training=False), expected) < TOLERANCE


@pytest.mark.slow
def test_resnet18_training_mode_matches_torch_including_running_statistics(pixels):
    # Batch statistics in the forward pass, and running means and variances updated as
    # torch.nn.BatchNorm2d updates them (momentum 0.1, unbiased variance).
    reference = reference_resnet("resnet18", seed=2)
    model = load_torch_weights(resnet18(), reference.state_dict())
    batch = np.concatenate([pixels, pixels[:, ::-1]])  # 4 images: variance needs n > 1
    reference.train()
    expected = torch_outputs(reference, imagenet_input(batch))
    assert _max_diff(model(batch, training=True), expected) < 10 * TOLERANCE
    state = reference.state_dict()
    for name in ("bn1", "layer2.0.downsample.1", "layer4.1.bn2"):
        layer = model.get_layer(name)
        for keras_stat, torch_stat in ((layer.moving_mean, "running_mean"),
                                       (layer.moving_variance, "running_var")):
            np.testing.assert_allclose(keras_stat.numpy(), state[f"{name}.{torch_stat}"].numpy(),
                                       rtol=1e-4, atol=1e-5, err_msg=f"{name}.{torch_stat}")


def test_fused_batchnorm_in_bfloat16_gives_the_float32_numbers_rounded():
    """Under mixed_bfloat16 the layer hands bf16 activations to the kernel as they are: its
    outputs and input gradients are those of a float32 layer fed the same values, rounded to
    bf16, and its moving statistics float32's, in training and at inference."""
    import tensorflow as tf

    from tfvision.models.batchnorm import FusedBatchNormalization

    rng = np.random.default_rng(4)
    x = tf.cast(rng.normal(2.0, 3.0, (4, 6, 6, 8)), "bfloat16")
    weights = tf.constant(rng.normal(0.0, 1.0, x.shape), "float32")
    half = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, dtype="mixed_bfloat16")
    full = FusedBatchNormalization(epsilon=1e-5, momentum=0.9)
    for training in (True, False):
        results = []
        for layer, inputs in ((half, x), (full, tf.cast(x, "float32"))):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = layer(inputs, training=training)
                assert y.dtype == ("bfloat16" if layer is half else "float32")
                y = tf.cast(y, "bfloat16")  # as the next layer under mixed_bfloat16 reads it
                loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
            grad = tape.gradient(loss, inputs)
            results.append([tf.cast(tf.cast(t, "bfloat16"), "float32").numpy() for t in (y, grad)])
        for got, want in zip(*results):  # within one bf16 rounding step (8 significant bits)
            np.testing.assert_allclose(got, want, rtol=2**-8, atol=1e-6)
        for moving in ("moving_mean", "moving_variance"):  # float32 statistics
            np.testing.assert_allclose(getattr(half, moving).numpy(),
                                       getattr(full, moving).numpy(), rtol=1e-6)


def test_fused_batchnorm_at_inference_and_frozen_answers_as_keras_with_the_same_gradient():
    """The fused kernel in inference mode (which the graph optimizer folds into the
    convolution for serving) is Keras' BatchNormalization, numerically and for backprop."""
    import tensorflow as tf

    from tfvision.models.batchnorm import FusedBatchNormalization

    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 5, 5, 6)).astype("float32"))
    fused, plain = FusedBatchNormalization(epsilon=1e-5), keras.layers.BatchNormalization(
        epsilon=1e-5)
    for layer in (fused, plain):
        layer.build(x.shape)
    for weights in zip(fused.weights, plain.weights):
        value = rng.uniform(0.5, 2.0, weights[0].shape).astype("float32")
        for w in weights:
            w.assign(value)
    plain.trainable = False
    for training in (False, True):  # frozen: training=True still uses the moving statistics
        fused.trainable = not training
        grads = []
        for layer in (fused, plain):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=training)
                loss = tf.reduce_sum(y * tf.range(y.shape[-1], dtype=y.dtype))
            grads.append((y.numpy(), tape.gradient(loss, x).numpy()))
        (y_fused, g_fused), (y_plain, g_plain) = grads
        np.testing.assert_allclose(y_fused, y_plain, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g_fused, g_plain, rtol=1e-5, atol=1e-5)
    fused.trainable = True
    assert np.abs(fused(x, training=True).numpy() - y_plain).max() > 0.1  # batch statistics


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_conv2d_trains_as_keras_conv2d_with_its_bias_gradient_summed_by_tensorflow(policy):
    """tfvision's Conv2D, compiled into a graph as `fit` compiles it: the outputs and the
    gradients of the input and the kernel are Keras Conv2D's to the bit; the bias gradient
    is the same sum in another order, as close to a float64 sum as Keras' own."""
    import tensorflow as tf

    from tfvision.models.conv import Conv2D

    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(0.0, 1.0, (8, 12, 12, 3)).astype("float32"))
    weights = tf.constant(rng.normal(0.0, 1.0, (8, 12, 12, 16)).astype("float32"))
    ours, keras_own = (cls(16, 3, padding="same", activation="relu", dtype=policy)
                       for cls in (Conv2D, keras.layers.Conv2D))
    for layer in (ours, keras_own):
        layer.build(x.shape)
    keras_own.set_weights([rng.normal(0.0, 0.3, w.shape).astype("float32")
                           for w in ours.weights])
    ours.set_weights(keras_own.get_weights())

    def step(layer):
        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                # A large, non-uniform upstream gradient: its sum has rounding to disagree on.
                loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
            return [y, *tape.gradient(loss, [x, layer.kernel, layer.bias])], weights * (y > 0)

        results, upstream = run(x)
        return [tf.cast(t, "float32").numpy() for t in results], upstream.numpy()

    (y, dx, dkernel, dbias), upstream = step(ours)
    (y_k, dx_k, dkernel_k, dbias_k), _ = step(keras_own)
    assert dbias.dtype == np.float32 and dbias.shape == (16,)
    np.testing.assert_array_equal(y, y_k)
    np.testing.assert_array_equal(dx, dx_k)
    np.testing.assert_array_equal(dkernel, dkernel_k)
    exact = upstream.astype("float64").sum(axis=(0, 1, 2))
    scale = np.abs(upstream).sum(axis=(0, 1, 2))  # what a float32 sum's rounding scales with
    keras_error = np.max(np.abs(dbias_k - exact) / scale)
    assert np.max(np.abs(dbias - exact) / scale) <= max(2 * keras_error, 1e-6)
    np.testing.assert_allclose(dbias, dbias_k, rtol=1e-5, atol=1e-5 * scale.max())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scratch_cnn", "my_cnn"])
def test_seed_cnn_logits_match_torch(name):
    """Whatever the user names the model: the CNN is recognised by its layers."""
    reference = SeedCNN().eval()
    model = load_torch_weights(scratch_cnn(name=name), reference.state_dict())
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2)) / np.float32(255)
    expected = torch_outputs(reference, torch.from_numpy(nchw))
    assert _max_diff(model(images), expected) < TOLERANCE


@pytest.mark.slow
def test_convert_safetensors_without_torch(tmp_path, weight_files, pixels, torch_resnet18):
    """`tfvision weights convert` reads .safetensors in a process that never imports torch,
    and the Keras weights file it writes gives PyTorch's logits."""
    dst = tmp_path / "resnet18.weights.h5"
    script = textwrap.dedent(f"""
        import sys
        from tfvision.cli import main
        main(["weights", "convert", {str(weight_files / "resnet18.safetensors")!r},
              {str(dst)!r}], standalone_mode=False)
        assert "torch" not in sys.modules, "torch was imported"
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resnet18 with its 1000-class fc" in done.stdout
    model = resnet18(weights=str(dst))
    expected = torch_outputs(torch_resnet18, imagenet_input(pixels))
    assert _max_diff(model(pixels, training=False), expected) < TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18.pth", "resnet18.safetensors", "converted"])
def test_transfer_model_from_local_weights_file(name, tmp_path, weight_files, pixels,
                                                torch_resnet18):
    """The new head sits on exactly the backbone the file holds (torch's pooled features)."""
    path = weight_files / name
    if name == "converted":
        path = tmp_path / "resnet18.weights.h5"
        convert(str(weight_files / "resnet18.pth"), path)
    model = transfer_model("resnet18", 7, weights=str(path), input_shape=(224, 224, 3))
    backbone = model.get_layer("resnet18")
    expected = torch_features(torch_resnet18, imagenet_input(pixels))
    assert _max_diff(backbone(pixels, training=False), expected) < TOLERANCE
    assert model(pixels).shape == (2, 7)


@pytest.fixture(scope="module")
def keras_resnet18():
    return resnet18()


def _state(**changes):
    state = {k: v.numpy() for k, v in reference_resnet("resnet18").state_dict().items()}
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


def test_missing_extra_and_misshaped_keys_are_named(keras_resnet18):
    before = [w.copy() for w in keras_resnet18.get_weights()]
    state = _state(**{"layer2.0.bn1.running_var": None})
    state["layer1.0.conv3.weight"] = np.zeros((64, 64, 1, 1), "float32")
    state["fc.weight"] = np.zeros((10, 512), "float32")
    with pytest.raises(ModelError) as err:
        load_torch_weights(keras_resnet18, state)
    message = str(err.value)
    assert "1 missing: layer2.0.bn1.running_var" in message
    assert "1 unexpected: layer1.0.conv3.weight" in message
    assert "fc.weight (file [10, 512], model [1000, 512])" in message
    # Nothing was loaded: the model is not left half-converted.
    assert all(np.array_equal(a, b) for a, b in zip(before, keras_resnet18.get_weights()))


def test_state_dict_of_another_architecture_is_refused(keras_resnet18):
    with pytest.raises(ModelError) as err:
        load_torch_weights(keras_resnet18, SeedCNN().state_dict())
    message = str(err.value)
    assert "102 missing: conv1.weight, bn1.weight, bn1.bias, ..." in message
    assert "8 unexpected: conv1.conv.weight, conv1.conv.bias, conv2.conv.weight, ..." in message


def test_headless_model_ignores_the_checkpoint_fc():
    model = resnet18(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    load_torch_weights(model, _state())
    with pytest.raises(ModelError, match="1 missing: fc.bias"):
        load_torch_weights(resnet18(input_shape=(64, 64, 3)), _state(**{"fc.bias": None}))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".weights.h5"])
def test_truncated_weights_file_fails_clearly(suffix, tmp_path, weight_files, keras_resnet18):
    if suffix == ".weights.h5":
        source = tmp_path / "full.weights.h5"
        keras_resnet18.save_weights(source)
    else:
        source = weight_files / f"resnet18{suffix}"
    data = source.read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=f"{truncated}"):
        load_weights(keras_resnet18, str(truncated))


def test_unknown_format_and_missing_file(tmp_path, keras_resnet18):
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown weights format"):
        load_torch_weights(keras_resnet18, tmp_path / "weights.npz")
    with pytest.raises(ModelError, match="does not exist"):
        load_torch_weights(keras_resnet18, tmp_path / "nope.pth")


def test_model_neither_cnn_nor_resnet_is_refused_even_when_the_names_fit():
    """keras.applications-style layers (biased convolution + BatchNorm) have no PyTorch
    layout here, though this state dict has a tensor of the right name for every weight."""
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv1"),
        keras.layers.BatchNormalization(name="bn1"), keras.layers.Flatten(),
        keras.layers.Dense(2, name="fc"),
    ], name="custom")
    state = nn.ModuleDict({"conv1": nn.Conv2d(3, 4, 3), "bn1": nn.BatchNorm2d(4),
                           "fc": nn.Linear(4 * 6 * 6, 2)}).state_dict()
    with pytest.raises(ModelError) as err:
        load_torch_weights(model, state)
    message = str(err.value)
    assert "model 'custom' (weighted layers: BatchNormalization, Conv2D, Dense)" in message
    assert "neither the seed's CNN" in message and "nor a torchvision ResNet-18/34" in message


def test_convert_refuses_a_state_dict_that_is_not_a_resnet(tmp_path):
    src = tmp_path / "cnn.pth"
    torch.save(SeedCNN().state_dict(), src)
    with pytest.raises(ModelError, match="not a torchvision ResNet-18/34 state dict"):
        convert(str(src), tmp_path / "cnn.weights.h5")
    assert not (tmp_path / "cnn.weights.h5").exists()
    with pytest.raises(ModelError, match=r"must be a Keras weights file \(\*.weights.h5\)"):
        convert(str(src), tmp_path / "cnn.h5")


@pytest.mark.slow
def test_imagenet_download_checks_sha256_and_fails_offline_with_a_way_out(tmp_path, weight_files,
                                                                           pixels,
                                                                           torch_resnet18):
    """weights="imagenet" fetches into the Keras cache (KERAS_HOME) and checks SHA-256; a
    local file:// URL stands in for download.pytorch.org, which is unreachable here."""
    pth = weight_files / "resnet18.pth"
    sha256 = hashlib.sha256(pth.read_bytes()).hexdigest()
    np.save(tmp_path / "pixels.npy", pixels)
    script = textwrap.dedent(f"""
        import json, numpy as np
        from tfvision.errors import ModelError
        from tfvision.models import resnet, resnet18
        cases = {{"ok": ({pth.as_uri()!r}, {sha256!r}),
                  "bad_hash": ({pth.as_uri()!r}, "0" * 64),
                  "offline": ("http://127.0.0.1:9/resnet18-f37072fd.pth", {sha256!r})}}
        out = {{}}
        for case, entry in cases.items():
            resnet.WEIGHTS["resnet18"] = entry
            try:
                model = resnet18(weights="imagenet")
                pixels = np.load({str(tmp_path / "pixels.npy")!r})
                np.save({str(tmp_path / "logits.npy")!r}, model(pixels).numpy())
                out[case] = "loaded"
            except ModelError as err:
                out[case] = str(err)
        print(json.dumps(out))
    """)
    env_home = tmp_path / "keras_home"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          timeout=300, env={**os.environ, "KERAS_HOME": str(env_home)})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ok"] == "loaded"
    assert (env_home / "models" / "resnet18.pth").is_file()
    expected = torch_outputs(torch_resnet18, imagenet_input(pixels))
    assert _max_diff(np.load(tmp_path / "logits.npy"), expected) < TOLERANCE
    assert pth.as_uri() in out["bad_hash"]
    assert "http://127.0.0.1:9/resnet18-f37072fd.pth" in out["offline"]
    assert "model.weights: /path/to/file" in out["offline"]


def test_keras_weights_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet34.weights.h5"
    resnet34(input_shape=(64, 64, 3)).save_weights(path)
    with pytest.raises(ModelError, match="written for another architecture"):
        resnet18(weights=str(path), input_shape=(64, 64, 3))


@pytest.mark.slow
def test_weights_files_on_an_object_store(weight_files, pixels, torch_resnet18):
    """PyTorch and Keras weights files read and written on ram:// (standing in for gs://)."""
    import tensorflow as tf

    for name in ("resnet18.pth", "resnet18.safetensors"):
        tf.io.gfile.copy(str(weight_files / name), f"ram://weights/{name}", overwrite=True)
    convert("ram://weights/resnet18.safetensors", "ram://weights/converted/resnet18.weights.h5")
    expected = torch_outputs(torch_resnet18, imagenet_input(pixels))
    for path in ("ram://weights/resnet18.pth", "ram://weights/converted/resnet18.weights.h5"):
        assert _max_diff(resnet18(weights=path)(pixels, training=False), expected) < TOLERANCE
    model = transfer_model("resnet18", 3, weights="ram://weights/resnet18.pth",
                           input_shape=(224, 224, 3))
    features = torch_features(torch_resnet18, imagenet_input(pixels))
    assert _max_diff(model.get_layer("resnet18")(pixels, training=False), features) < TOLERANCE


def test_a_convolution_without_its_relu_is_not_taken_for_the_seed_cnn():
    """scratch_cnn takes its ReLU after the max-pool; a biased convolution with no ReLU at all
    is another network, though the seed's state dict has a tensor for each of its weights."""
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Conv2D(32, 3, padding="same", name="conv1"),
        keras.layers.MaxPooling2D(2), keras.layers.Conv2D(64, 3, padding="same", name="conv2"),
        keras.layers.MaxPooling2D(2), keras.layers.ReLU(), keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu", name="fc1"), keras.layers.Dense(10, name="fc2"),
    ], name="no_relu_after_conv1")
    with pytest.raises(ModelError, match="'no_relu_after_conv1'.*neither the seed's CNN"):
        load_torch_weights(model, SeedCNN().state_dict())
