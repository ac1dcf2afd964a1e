"""What only a GPU can show: training on CUDA with the GPU trainer's knobs, the per-batch transform
on the device, the feature cache extracting there. Marked `gpu`: skipped where torch sees no CUDA;
scripts/gpu_check.sh runs them (`pytest -m gpu`)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir

from transferlab import CONFIG_DIR
from transferlab.data.images.transforms import AugmentConfig, BatchPreprocess
from transferlab.train import train
from transferlab.utils.devices import ENV_DEVICES

pytestmark = pytest.mark.gpu

# tests/test_cli.py's tiny run (learnable synthetic data, 4 classes), on the GPU trainer.
TINY = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
    "trainer=gpu", "trainer.max_epochs=3", "+trainer.enable_progress_bar=false", "logger=csv",
]


@pytest.fixture(autouse=True)
def no_pool(monkeypatch):
    monkeypatch.delenv(ENV_DEVICES, raising=False)


def config(tmp_path, *extra):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*TINY, f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", *extra])


class Seen(pl.Callback):
    """Where the model and the transformed batch are, and the logits' dtype, as training sees them.
    Loaded through the callbacks config (+callbacks.seen._target_=test_gpu.Seen); read from `last`."""

    last: dict = {}

    def on_fit_start(self, trainer, module):
        Seen.last = {}

        def logits_dtype(head, args, out) -> None:  # returns None: the output stays as it is
            Seen.last.setdefault("logits", out.dtype)

        module.head.register_forward_hook(logits_dtype)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if "param" not in Seen.last:
            p = next(module.backbone.parameters())
            Seen.last.update(param=p.device.type, images=batch.images.device.type, dtype=batch.images.dtype)


def test_gpu_trainer_trains_on_cuda_with_bf16_and_transforms_on_the_device(tmp_path):
    record = train(config(tmp_path, "strategy=partial", "+callbacks.seen._target_=test_gpu.Seen"))
    assert record["status"] == "completed" and record["test"]["acc"] > 0.4
    seen = Seen.last
    # uint8 batches go to the GPU and become float model input there (data/datamodule.py).
    assert seen["param"] == seen["images"] == "cuda" and seen["dtype"] == torch.float32
    assert seen["logits"] == torch.bfloat16  # trainer=gpu's bf16 autocast in the training step


def test_compiled_backbone_trains_and_keeps_plain_checkpoint_keys(tmp_path):
    record = train(config(tmp_path, "strategy=full", "trainer.compile=true", "trainer.max_epochs=1", "test=false"))
    assert record["status"] == "completed"
    state = torch.load(record["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert not any("_orig_mod" in k for k in state)  # loadable without compiling


def test_feature_cache_extracts_on_the_gpu(tmp_path):
    cold = train(config(tmp_path / "a", "strategy=extract", "strategy.feature_cache=true"))
    warm = train(config(tmp_path / "b", "strategy=extract", "strategy.feature_cache=true"))
    assert cold["status"] == warm["status"] == "completed"
    assert cold["feature_cache"]["built"] > 0 and warm["feature_cache"]["hits"] > 0 and warm["feature_cache"]["built"] == 0
    assert warm["feature_cache"]["test_on"] == "cached_features" and warm["test"]["acc"] > 0.4


@pytest.mark.parametrize("train_mode", [False, True])
def test_batch_preprocess_on_cuda_matches_cpu(train_mode):
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    pre = BatchPreprocess(96, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), augment=AugmentConfig(enabled=True))
    # The crop parameters come from a CPU generator on either device, so both crop alike.
    cpu = pre(images, train=train_mode, generator=torch.Generator().manual_seed(0))
    gpu = pre.to("cuda")(images.cuda(), train=train_mode, generator=torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape == (16, 3, 96, 96)
    assert (gpu.cpu() - cpu).abs().max().item() < 1e-3


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="trainer=ddp needs 2 GPUs")
def test_ddp_on_two_gpus_trains_and_records_once(tmp_path):
    record = train(config(tmp_path, "trainer=ddp", "strategy=partial"))
    assert record["status"] == "completed" and record["test"]["acc"] > 0.4
