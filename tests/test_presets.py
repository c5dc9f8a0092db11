"""torchvision's evaluation preset (resize the shorter side, centre-crop), checked against a
reference written in torch from torchvision's documented semantics, on photos no one here
made (scikit-learn's sample images) and on odd and portrait sizes."""

import math
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch
from conftest import REPO, small_config
from sklearn.datasets import load_sample_images

from tfvision import preprocess
from tfvision.data.pipeline import Preset, resize

sys.path.insert(0, str(REPO / "scripts"))
from torch_reference import imagenet_input, reference_resnet


def torchvision_eval(image, crop=224, crop_fraction=0.875):
    """``Resize(floor(crop / crop_fraction), bilinear, antialias)`` + ``CenterCrop(crop)``,
    as torchvision's ClassificationPresetEval: shorter side resized, longer one truncated
    (``int``); crop offsets ``int(round(...))`` (Python rounds half to even)."""
    height, width = image.shape[:2]
    short = math.floor(crop / crop_fraction)
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    x = torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear",
                                        antialias=True, align_corners=False)
    x = x.round().clamp(0, 255)[0].permute(1, 2, 0).numpy()
    top, left = round((new_h - crop) / 2), round((new_w - crop) / 2)
    return x[top:top + crop, left:left + crop]


@pytest.fixture(scope="module")
def photos():
    china, flower = load_sample_images().images  # 427×640 JPEG photos
    return {"china": china, "flower": flower, "portrait": china[:, 100:400],
            "odd": flower[3:300, 11:222], "tall_thin": china[:401, 250:337]}


@pytest.mark.slow
@pytest.mark.parametrize("crop", [224, 57])
def test_eval_preset_matches_torchvision_pixels(photos, crop):
    for name, photo in photos.items():
        got = preprocess(tf.constant(photo), crop).numpy()
        want = torchvision_eval(photo, crop)
        assert got.shape == want.shape == (crop, crop, 3), name
        diff = np.abs(got - want)
        assert (diff <= 1).mean() >= 0.99 and diff.max() <= 2, (name, diff.max())


def test_squash_fits_the_whole_image_and_batches_crop_alike(photos):
    photo = photos["china"]
    squashed = preprocess(tf.constant(photo), (40, 60), eval_resize="squash").numpy()
    assert squashed.shape == (40, 60, 3)
    batch = tf.constant(np.stack([photo, photo[::-1]]))
    cropped = preprocess(batch, 32).numpy()
    assert cropped.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(cropped[0], preprocess(tf.constant(photo), 32).numpy())
    with pytest.raises(ValueError, match="eval_resize must be squash or center_crop"):
        preprocess(tf.constant(photo), 32, eval_resize="stretch")


def test_an_image_already_at_size_comes_through_unchanged_with_its_static_shape(photos):
    photo = photos["odd"]
    np.testing.assert_array_equal(resize(tf.constant(photo), photo.shape[:2]).numpy(), photo)
    # Float pixels at the size are still rounded into [0, 255], as resized ones are.
    floats = tf.constant([[[-3.0, 2.4, 300.0]]])
    np.testing.assert_array_equal(resize(floats, (1, 1)).numpy(), [[[0.0, 2.0, 255.0]]])
    # A serving signature takes any size and still answers the model's.
    fit = tf.function(lambda images: preprocess(images, (64, 64), eval_resize="squash"),
                      input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    assert fit.get_concrete_function().structured_outputs.shape.as_list() == [None, 64, 64, 3]
    batch = np.stack([photo[:64, :64], photo[64:128, :64]])
    np.testing.assert_array_equal(fit(tf.constant(batch)).numpy(), batch)
    assert fit(tf.constant(np.stack([photo] * 2))).shape == (2, 64, 64, 3)


def test_auto_takes_torchvision_preset_only_for_torchvision_weights():
    assert small_config().eval_resize == "squash"  # the scratch CNN
    resnet = small_config("model.name=resnet18", "model.weights=imagenet")
    assert resnet.eval_resize == "center_crop"
    assert small_config("model.name=resnet18", "model.weights=none").eval_resize == "squash"
    assert small_config("model.name=resnet50", "model.weights=imagenet").eval_resize == "squash"
    forced = small_config("data.eval_resize=center_crop", "data.crop_fraction=0.95")
    assert Preset.of(forced) == Preset((16, 16), "center_crop", 0.95)


@pytest.mark.slow
def test_export_answers_torchvision_logits_on_a_photo(photos, tmp_path):
    """A torchvision ResNet-18 state dict exported with the preset: the photo's JPEG bytes
    through serving_default give torch's logits on torchvision's pixels."""
    from tfvision.export.savedmodel import export_model
    from tfvision.models import load_torch_weights, resnet18

    reference = reference_resnet("resnet18", seed=3)
    model = load_torch_weights(resnet18(), reference.state_dict())
    path = export_model(model, tmp_path / "m", [f"class_{i}" for i in range(1000)],
                        preset=Preset((224, 224), "center_crop", 0.875))
    jpegs = [tf.io.encode_jpeg(photos[name], quality=95) for name in ("china", "portrait")]
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        image_bytes=tf.stack(jpegs))["logits"].numpy()
    pixels = np.stack([torchvision_eval(tf.io.decode_jpeg(j).numpy()) for j in jpegs])
    with torch.no_grad():
        want = reference(imagenet_input(pixels)).numpy()
    assert np.abs(served - want).max() < 0.05
    for got_row, want_row in zip(served, want):
        assert list(np.argsort(-got_row)[:5]) == list(np.argsort(-want_row)[:5])
    # The export says how it fits images, for clients and tools that read it back.
    from tfvision.export.loaded import load_export

    assert load_export(path).preset == Preset((224, 224), "center_crop", 0.875)


def torchvision_crop_params(height, width, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """``RandomResizedCrop.get_params``, as torchvision writes it (with ``rng`` for torch's
    generator): ``(top, left, height, width)``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize(("height", "width"), [(375, 500), (60, 600)])
def test_random_resized_crops_are_distributed_as_torchvision_draws_them(height, width):
    from scipy.stats import ks_2samp

    from tfvision.data.augment import crop_boxes

    draws = 10_000
    rng = np.random.default_rng(0)
    want = np.array([torchvision_crop_params(height, width, rng) for _ in range(draws)])
    top, left, h, w = (t.numpy() for t in crop_boxes(
        tf.fill([draws], height), tf.fill([draws], width), tf.constant([7, 11], tf.int64)))
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    for name, got, ref in (("area", h * w / (height * width), want[:, 2] * want[:, 3] /
                            (height * width)), ("aspect", w / h, want[:, 3] / want[:, 2]),
                           ("top", top / height, want[:, 0] / height)):
        assert ks_2samp(got, ref, method="asymp").pvalue > 0.01, name


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_training_crops_come_from_the_original_and_keep_its_detail(kind, tmp_path):
    """Stripes 8 px apart on 400×400 pictures: a 64×64 crop of the original keeps them;
    squashing to 64 px first (as crops of the resized image did) blurs them to grey."""
    from imagedata import encode

    from tfvision.data.dataset import load_dataset

    rows = np.arange(400)[:, None, None]
    stripes = np.broadcast_to(np.where(rows // 4 % 2, 230, 25), (400, 400, 3)).astype(np.uint8)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            data, suffix = encode(stripes, kind)
            (tmp_path / name / f"{i}{suffix}").write_bytes(data)
    share = (64 / 400) ** 2  # a crop exactly 64×64: resized 1:1
    config = small_config("data.source=folder", f"data.path={tmp_path}", "data.image_size=64",
                          "data.augment=resized_crop_flip", "data.validation_fraction=0.25",
                          f"data.crop_scale=[{share},{share}]", "data.crop_ratio=[1,1]",
                          "data.batch_size=6")
    images, _ = next(iter(load_dataset(config).train))
    assert images.shape == (6, 64, 64, 3)
    assert images.numpy().std(axis=(1, 2, 3)).min() > 80
    squashed = preprocess(tf.constant(stripes), 64, eval_resize="squash").numpy()
    assert squashed.std() < 20


@pytest.mark.slow
def test_torchvision_recipe_trains_offline_on_an_image_folder(tmp_path):
    """The shipped recipe, shrunk: crops from the originals, label smoothing, the
    torchvision eval preset, and an export, from random init with no network."""
    from imagedata import write_folder

    from tfvision.config import load_config
    from tfvision.training import train

    write_folder(tmp_path / "images")
    config = load_config("torchvision_resnet18", [
        f"data.path={tmp_path / 'images'}", "data.image_size=32", "data.batch_size=8",
        "train.epochs=1", "train.label_smoothing=0.1", "train.learning_rate=0.05"])
    assert (config.eval_resize, config.data.augment) == ("center_crop", "resized_crop_flip")
    result = train(config, tmp_path / "run", verbose=0)
    assert set(result.metrics) >= {"loss", "val_accuracy"}
    assert (result.export_path / "saved_model.pb").exists()
