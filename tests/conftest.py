import os

# `make test` runs two xdist workers on this 2-core machine kind: one thread each, not two apiece,
# also in the train.py processes the CLI tests start (OpenMP threads that spin on a core another
# worker holds cost more than they give).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

# Tests never touch the network: hub weights would hang or fail differently on each machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFERLAB_OFFLINE", "1")
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    # `gpu` tests run wherever CUDA is (scripts/gpu_check.sh selects them with -m gpu) and skip elsewhere.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def tiny_models():
    """Small members of four families, so group cutting is checked on each."""
    return {
        "resnet": timm.create_model("resnet10t", num_classes=0),
        "efficientnet": timm.create_model("tf_efficientnet_lite0", num_classes=0),
        "convnext": timm.create_model("convnext_atto", num_classes=0),
        "vit": timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32),
    }
