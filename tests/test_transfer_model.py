"""transfer_model: any backbone with a new head; only the head trains until it is unfrozen."""

import keras
import numpy as np
import pytest

from tfvision.errors import ModelError
from tfvision.models import BACKBONES, resnet18, scratch_cnn, transfer_model, unfreeze
from tfvision.models.transfer import backbone_of, block_names

SHAPE = (32, 32, 3)  # the smallest input every listed backbone accepts
CLASSES = (2, 3, 10, 37, 101)


def _pixels(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *SHAPE)).astype("float32")


def _trainable_layers(model):
    """Names of the layers (inside the backbone too) that own a trainable weight."""
    names = {w.path.split("/")[0] for w in model.trainable_weights}
    return [layer.name for layer in backbone_of(model).layers if layer.name in names]


@pytest.mark.parametrize("index, name", list(enumerate(BACKBONES)))
def test_every_backbone_gets_a_new_head_and_only_the_head_trains(index, name):
    num_classes = CLASSES[index % len(CLASSES)]
    model = transfer_model(name, num_classes, weights=None, input_shape=SHAPE)
    logits = model(_pixels())
    assert logits.shape == (2, num_classes) and np.all(np.isfinite(logits))
    # Phase 1: the trainable weights are exactly the new head's.
    assert sorted(w.path for w in model.trainable_weights) == ["fc/bias", "fc/kernel"]
    # Phase 2 from the last block: the backbone trains from that block's first layer on.
    backbone = backbone_of(model)
    unfreeze(model, 1)
    trainable = _trainable_layers(model)
    assert trainable and trainable[0].startswith(block_names(backbone)[-1])
    unfreeze(model, "all")
    frozen_norms = [layer for layer in backbone.layers
                    if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    assert len(model.trainable_weights) > 2 and not frozen_norms


@pytest.mark.parametrize("name, reference", [
    ("resnet50", keras.applications.resnet.preprocess_input),
    ("resnet50v2", keras.applications.resnet_v2.preprocess_input),
])
def test_preprocessing_in_the_graph_matches_keras_applications(name, reference, tmp_path):
    model = transfer_model(name, 4, weights=None, input_shape=SHAPE)
    pixels = _pixels()
    preprocess = model.layers[1]
    np.testing.assert_allclose(preprocess(pixels), reference(pixels.copy()), atol=1e-4)
    # The preprocessing layer is serializable: the saved model reloads with equal outputs.
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded(pixels), model(pixels), atol=1e-5)


def test_a_keras_applications_backbone_answers_as_keras_builds_it(tmp_path):
    """Its biased convolutions become tfvision's Conv2D (their bias gradient summed by
    TensorFlow, models/conv.py); layer names, weights and outputs stay keras.applications',
    and a local weights file still gives its own weights."""
    from tfvision.models.conv import Conv2D

    backbone = backbone_of(transfer_model("resnet50", 3, weights=None, input_shape=SHAPE))
    plain = keras.applications.ResNet50(include_top=False, weights=None, input_shape=SHAPE,
                                        pooling="avg")
    # (the input layers' names differ by Keras' numbering of unnamed inputs)
    assert [layer.name for layer in backbone.layers[1:]] == [
        layer.name for layer in plain.layers[1:]]
    swapped = [layer.name for layer in backbone.layers if isinstance(layer, Conv2D)]
    assert "conv1_conv" in swapped and len(swapped) == 53  # every convolution of ResNet50
    plain.set_weights(backbone.get_weights())
    pixels = keras.applications.resnet.preprocess_input(_pixels())
    np.testing.assert_array_equal(backbone(pixels, training=False),
                                  plain(pixels, training=False))
    rng = np.random.default_rng(1)
    plain.set_weights([rng.normal(size=w.shape).astype("float32") for w in plain.get_weights()])
    plain.save_weights(tmp_path / "resnet50_notop.weights.h5")
    loaded = backbone_of(transfer_model("resnet50", 3, input_shape=SHAPE,
                                        weights=str(tmp_path / "resnet50_notop.weights.h5")))
    assert _same(loaded.get_weights(), plain.get_weights())


def _fit_once(model, seed):
    model.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labels = np.arange(8) % 3
    model.fit(_pixels(8, seed), labels, batch_size=4, epochs=1, verbose=0)


def _values(layers, kind):
    return [w.numpy().copy() for layer in layers if isinstance(layer, kind)
            for w in layer.weights]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_fine_tuning_keeps_pretrained_batchnorm_and_trains_it_from_scratch(tmp_path):
    pretrained = tmp_path / "pretrained.weights.h5"  # stands in for ImageNet weights
    resnet18(input_shape=SHAPE).save_weights(pretrained)
    model = transfer_model("resnet18", 3, weights=str(pretrained), input_shape=SHAPE)
    layers = backbone_of(model).layers
    bn, conv = keras.layers.BatchNormalization, keras.layers.Conv2D
    bn_before, conv_before = _values(layers, bn), _values(layers, conv)
    head_before = model.get_layer("fc").get_weights()[0].copy()

    _fit_once(model, seed=1)  # phase 1: the head learns, the backbone does not move
    assert not np.array_equal(head_before, model.get_layer("fc").get_weights()[0])
    assert _same(conv_before, _values(layers, conv)) and _same(bn_before, _values(layers, bn))

    unfreeze(model, "all")  # phase 2: convolutions learn, BatchNorm keeps its statistics
    _fit_once(model, seed=2)
    assert not _same(conv_before, _values(layers, conv))
    assert _same(bn_before, _values(layers, bn))

    scratch = transfer_model("resnet18", 3, weights=None, input_shape=SHAPE)
    scratch_layers = backbone_of(scratch).layers
    bn_before = _values(scratch_layers, bn)
    unfreeze(scratch, "all", freeze_batchnorm=False)  # no pretrained statistics to keep
    _fit_once(scratch, seed=3)
    assert not _same(bn_before, _values(scratch_layers, bn))


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ModelError) as err:
        transfer_model("resnet19", 10, weights=None)
    assert all(name in str(err.value) for name in BACKBONES)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(ModelError, match="nope.pth does not exist"):
        transfer_model("resnet18", 10, weights=str(tmp_path / "nope.pth"), input_shape=SHAPE)


def test_bad_unfreeze_points_are_explained():
    model = transfer_model("resnet18", 3, weights=None, input_shape=SHAPE)
    with pytest.raises(ModelError, match="no layer of resnet18 starts with 'layer5'.*layer4"):
        unfreeze(model, "layer5")
    with pytest.raises(ModelError, match="last 9 blocks of resnet18: it has 8"):
        unfreeze(model, 9)
    with pytest.raises(ModelError, match="no backbone to unfreeze"):
        unfreeze(scratch_cnn(), "all")
    unfreeze(model, "layer4")
    assert _trainable_layers(model)[0] == "layer4.0.conv1"


def _conv_kernels(seed):
    keras.utils.set_random_seed(seed)
    model = resnet18(10, input_shape=SHAPE)
    return {layer.name: layer.kernel.numpy() for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D)}


def test_resnet_from_scratch_draws_each_convolution_as_torchvision_does_from_the_run_seed():
    first, other, again = _conv_kernels(0), _conv_kernels(1), _conv_kernels(0)
    for name, kernel in first.items():
        np.testing.assert_array_equal(kernel, again[name], err_msg=name)  # the seed decides
        assert not np.array_equal(kernel, other[name]), name
        fan_out = kernel.shape[0] * kernel.shape[1] * kernel.shape[3]
        # kaiming_normal_(mode="fan_out", nonlinearity="relu")
        assert kernel.std() == pytest.approx(np.sqrt(2 / fan_out), rel=0.1), name
    # Layers of one shape are drawn apart, not handed one kernel.
    assert not np.array_equal(first["layer1.0.conv1"], first["layer1.0.conv2"])
    assert not np.array_equal(first["layer4.0.conv2"], first["layer4.1.conv1"])
