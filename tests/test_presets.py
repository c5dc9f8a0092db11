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
from tfvision.data.pipeline import Preset

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
