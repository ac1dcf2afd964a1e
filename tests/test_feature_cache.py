"""The feature cache (strategy=extract's fast path) and the L-BFGS linear probe.

Keys change with every input and only then; stale or corrupt files are rebuilt; cached features
are the features the model computes on images; a cached run's checkpoint evaluates in eval.py
(through the backbone, on images) to the accuracy the run reported; the probe learns.
"""

import logging

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from transferlab import CONFIG_DIR
from transferlab.data.caches.feature_cache import (
    FeatureCache,
    extract_features,
    make_key,
    state_dict_digest,
)
from transferlab.data.images.transforms import BatchPreprocess, Preprocess
from transferlab.engine.builders import make_strategy
from transferlab.errors import ConfigError
from transferlab.finetune.linear_probe import fit_linear_probe, linear_layer_of, load_into_head
from transferlab.models.timm_backbone import TimmBackbone
from transferlab.utils.resolvers import register

register()

PRE = Preprocess(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bilinear", crop_pct=0.875)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=0).eval()


def images(n=6, size=36, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def encoder(model, channels_last=False):
    return TimmBackbone(model, "resnet10t", "none", PRE, channels_last=channels_last)


def key_for(model="resnet10t", weights="none (random init)", digest="w0", pre=PRE, imgs=None, view="image"):
    return make_key(model, weights, digest, pre.as_dict(), images() if imgs is None else imgs, view=view)


# --- keys ----------------------------------------------------------------------------------------
def test_key_is_stable_and_changes_with_every_input(backbone):
    base = key_for()
    assert key_for().digest() == base.digest()  # fresh but equal tensors: a hit
    assert key_for(imgs=images().clone()).digest() == base.digest()

    edited = images()
    edited[3, 1, 5, 7] ^= 1  # one bit of one pixel
    variants = {
        "model": key_for(model="resnet14t"),
        "weights description": key_for(weights="file:/w.pth (w.pth, 10 tensors)"),
        "weights content": key_for(digest="w1"),
        "image size": key_for(pre=Preprocess(**{**PRE.as_dict(), "image_size": 28, "mean": PRE.mean, "std": PRE.std})),
        "mean": key_for(pre=Preprocess(**{**PRE.as_dict(), "mean": (0.4, 0.5, 0.5), "std": PRE.std})),
        "crop": key_for(pre=Preprocess(**{**PRE.as_dict(), "crop_pct": 1.0, "mean": PRE.mean, "std": PRE.std})),
        "interpolation": key_for(pre=Preprocess(**{**PRE.as_dict(), "interpolation": "bicubic", "mean": PRE.mean, "std": PRE.std})),
        "data": key_for(imgs=edited),
        "fewer images": key_for(imgs=images()[:5]),
        "view": key_for(view="hflip"),
    }
    digests = {name: k.digest() for name, k in variants.items()}
    assert base.digest() not in digests.values()
    assert len(set(digests.values())) == len(digests), digests


def test_weights_digest_follows_the_tensors_not_the_object(backbone):
    twin = timm.create_model("resnet10t", num_classes=0)
    twin.load_state_dict(backbone.state_dict())
    assert state_dict_digest(twin) == state_dict_digest(backbone)
    assert state_dict_digest(twin.to(memory_format=torch.channels_last)) == state_dict_digest(backbone)
    with torch.no_grad():
        twin.conv1[0].weight[0, 0, 0, 0] += 1e-3
    assert state_dict_digest(twin) != state_dict_digest(backbone)
    twin.load_state_dict(backbone.state_dict())
    twin.bn1.running_mean[0] += 1.0  # buffers count too: they change eval-mode features
    assert state_dict_digest(twin) != state_dict_digest(backbone)


# --- the cache -----------------------------------------------------------------------------------
class Builder:
    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value.clone()


def test_miss_then_hit_then_miss_on_another_key(tmp_path):
    cache = FeatureCache(tmp_path)
    key = key_for()
    build = Builder(torch.randn(6, 8))
    first = cache.get_or_build(key, 8, build, split="train")
    second = cache.get_or_build(key, 8, build, split="train")
    assert build.calls == 1 and torch.equal(first, second)
    assert (cache.stats.built, cache.stats.hits) == (1, 1)
    # A new process (a later run or another sweep job) reads the same file.
    later = FeatureCache(tmp_path)
    assert torch.equal(later.get_or_build(key, 8, build, split="train"), first) and build.calls == 1
    other = cache.get_or_build(key_for(digest="w1"), 8, Builder(torch.zeros(6, 8)), split="train")
    assert torch.equal(other, torch.zeros(6, 8)) and cache.stats.built == 2
    assert not list(tmp_path.rglob("*.tmp"))  # temp files are renamed, never left behind


def _garbage(path, key):
    path.write_bytes(b"not a torch file at all")


def _truncated(path, key):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_key(path, key):
    blob = torch.load(path, weights_only=True)
    blob["key"] = key_for(digest="someone else's weights").to_json()
    torch.save(blob, path)


def _wrong_shape(path, key):
    blob = torch.load(path, weights_only=True)
    blob["features"] = blob["features"][:, :4].contiguous()
    torch.save(blob, path)


def _old_format(path, key):
    blob = torch.load(path, weights_only=True)
    blob["format"] = 0
    torch.save(blob, path)


def _nan(path, key):
    blob = torch.load(path, weights_only=True)
    blob["features"][0, 0] = float("nan")
    torch.save(blob, path)


@pytest.mark.parametrize("damage", [_garbage, _truncated, _other_key, _wrong_shape, _old_format, _nan])
def test_a_stale_or_corrupt_file_is_logged_and_rebuilt(tmp_path, caplog, damage):
    cache = FeatureCache(tmp_path)
    key = key_for()
    good = torch.randn(6, 8)
    cache.get_or_build(key, 8, Builder(good), split="val")
    path = cache.path_for(key, "val")
    damage(path, key)

    build = Builder(good)
    with caplog.at_level(logging.WARNING, logger="transferlab.data.caches.feature_cache"):
        again = FeatureCache(tmp_path)
        features = again.get_or_build(key, 8, build, split="val")
    assert build.calls == 1 and again.stats.rebuilt == 1 and torch.equal(features, good)
    assert "rebuilding" in caplog.text and str(path) in caplog.text
    assert torch.equal(FeatureCache.read(path, key, 8), good)  # the rebuilt file is whole


# --- cached features are the model's features ----------------------------------------------------
def test_cached_features_equal_the_models_own_within_tolerance(backbone, tmp_path):
    pre = BatchPreprocess(**PRE.as_dict())
    imgs = images(n=10)
    with torch.no_grad():
        x = pre(imgs, train=False)
        direct = backbone(x)
        mirrored = backbone(x.flip(-1))
    batched = extract_features(encoder(backbone), pre, imgs, batch_size=3)
    assert batched.shape == (10, backbone.num_features) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, direct, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(extract_features(encoder(backbone), pre, imgs, batch_size=4, view="hflip"), mirrored, rtol=1e-4, atol=1e-5)
    nhwc = encoder(timm.create_model("resnet10t", num_classes=0).eval(), channels_last=True)
    nhwc.model.load_state_dict(backbone.state_dict())
    torch.testing.assert_close(extract_features(nhwc, pre, imgs, batch_size=10), direct, rtol=1e-4, atol=1e-5)

    cache = FeatureCache(tmp_path)
    key = make_key("resnet10t", "none", state_dict_digest(backbone), PRE.as_dict(), imgs)
    cached = cache.get_or_build(key, backbone.num_features, lambda: extract_features(encoder(backbone), pre, imgs, batch_size=3))
    reread = FeatureCache(tmp_path).get_or_build(key, backbone.num_features, lambda: pytest.fail("should hit"))
    torch.testing.assert_close(reread, direct, rtol=1e-4, atol=1e-5)
    assert torch.equal(reread, cached)


def test_extraction_runs_in_eval_mode_and_restores_each_modules_mode():
    model = timm.create_model("resnet10t", num_classes=0, drop_path_rate=0.5)
    model.train()
    model.bn1.eval()  # a frozen group's norm layer, as FinetunePlan leaves it
    before = {name: m.training for name, m in model.named_modules()}
    pre = BatchPreprocess(**PRE.as_dict())
    a = extract_features(encoder(model), pre, images(4), batch_size=4)
    b = extract_features(encoder(model), pre, images(4), batch_size=2)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # no drop path, no batch statistics
    assert {name: m.training for name, m in model.named_modules()} == before
    assert all(p.requires_grad for p in model.parameters()) and not any(p.is_inference() for p in model.parameters())


# --- config --------------------------------------------------------------------------------------
def _cfg(tmp_path, *extra, out="run"):
    overrides = [
        "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
        "trainer.accelerator=cpu", "trainer.max_epochs=2", "logger=csv", f"paths.output_dir={tmp_path / out}",
        f"paths.root_dir={tmp_path}", "data.source_args.train_per_class=16", "data.source_args.test_per_class=8",
        "data.val_per_class=6", "data.batch_size=8", "+trainer.enable_progress_bar=false", *extra,
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_config_errors_are_clear(tmp_path):
    assert make_strategy(_cfg(tmp_path, "strategy=extract")).feature_cache is True
    assert make_strategy(_cfg(tmp_path, "strategy=partial")).feature_cache is False
    with pytest.raises(ConfigError, match="strategy=partial has no knob strategy.feature_cache.*strategies that have it: extract"):
        make_strategy(_cfg(tmp_path, "strategy=partial", "+strategy.feature_cache=true"))
    with pytest.raises(ConfigError, match="frozen_norm=train"):
        make_strategy(_cfg(tmp_path, "strategy=extract", "strategy.frozen_norm=train"))
    with pytest.raises(ConfigError, match="set strategy.feature_cache=true"):
        make_strategy(_cfg(tmp_path, "strategy=extract", "strategy.feature_cache=false", "strategy.solver=lbfgs"))
    with pytest.raises(ConfigError, match="use one of sgd, lbfgs"):
        make_strategy(_cfg(tmp_path, "strategy=extract", "strategy.solver=adam"))
    with pytest.raises(ConfigError, match="model.head.type=mlp"):
        make_strategy(_cfg(tmp_path, "strategy=extract", "strategy.solver=lbfgs", "model.head.type=mlp"))


# --- end to end: train with the cache, evaluate like eval.py ---------------------------------------
@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_cached_run_checkpoint_evaluates_to_the_reported_accuracy(tmp_path, solver):
    from transferlab.eval import evaluate
    from transferlab.train import train

    extra = ["strategy=extract", f"strategy.solver={solver}", "data.eval_hflip=true"]
    if solver == "lbfgs":
        extra.append("strategy.probe_weight_decays=[1e-4,1e-2,1]")
    m = train(_cfg(tmp_path, *extra))
    assert m["status"] == "completed" and "acc" in m["val"]
    assert m["test"]["acc"] > 0.4  # 4 learnable classes: chance is 0.25, even random features are well above it
    assert m["feature_cache"]["built"] == 5 and m["feature_cache"]["hits"] == 0  # train; val and test x 2 views
    assert m["params"]["trainable"] == 512 * 4 + 4
    if solver == "lbfgs":
        assert m["probe"]["weight_decay"] in (1e-4, 1e-2, 1.0)
        assert abs(m["val"]["acc"] - m["probe"]["val_acc"]) < 1e-6
        assert m["test"]["acc"] > 0.5  # 4 classes: chance is 0.25

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        eval_cfg = compose("eval", overrides=[
            f"ckpt_path={m['best_checkpoint']}", "trainer.accelerator=cpu", f"paths.output_dir={tmp_path / 'eval'}",
            "+trainer.enable_progress_bar=false",
        ])
    out = evaluate(eval_cfg)  # the full model rebuilt from the checkpoint, tested through the backbone on images
    assert abs(out["metrics"]["acc"] - m["test"]["acc"]) < 1e-3
    assert abs(out["metrics"]["loss"] - m["test"]["loss"]) < 1e-3

    # The same run again: every split is read from the cache.
    again = train(_cfg(tmp_path, *extra, out="again"))
    assert again["feature_cache"]["hits"] == 5 and again["feature_cache"]["built"] == 0
    if solver == "lbfgs":
        assert again["test"]["acc"] == m["test"]["acc"]


# --- the L-BFGS probe ----------------------------------------------------------------------------
def _blobs(n_per_class, num_classes=5, dim=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * 1.2
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), dim, generator=g) * 1.5
    return x * 3.0 + 5.0, y  # off-centre, unscaled: the probe standardises


def test_lbfgs_probe_beats_chance_and_picks_lambda_from_the_grid():
    train_x, train_y = _blobs(40, seed=1)
    val_x, val_y = _blobs(30, seed=2)
    test_x, test_y = _blobs(60, seed=3)
    grid = [1e-5, 1e-3, 1e-1, 10.0]
    result = fit_linear_probe(train_x, train_y, val_x, val_y, num_classes=5, grid=grid)
    assert result.weight_decay in grid
    assert [r["weight_decay"] for r in result.grid] == grid
    best = max(r["val_acc"] for r in result.grid)
    assert result.val_acc == best
    # The folded layer works on raw features.
    test_acc = float(((test_x @ result.weight.T + result.bias).argmax(-1) == test_y).float().mean())
    assert test_acc > 0.6 and result.val_acc > 0.6  # chance is 0.2
    # Much too strong a penalty loses to the chosen one on validation.
    assert result.grid[-1]["val_acc"] <= best

    head = nn.Sequential(nn.Dropout(0.4), nn.Linear(24, 5)).eval()
    load_into_head(head, result)
    with torch.no_grad():
        torch.testing.assert_close(head(test_x), test_x @ result.weight.T + result.bias)


def test_probe_averages_views_and_rejects_an_mlp_head():
    train_x, train_y = _blobs(30, seed=4)
    val_x, val_y = _blobs(20, seed=5)
    views = torch.stack([val_x, val_x + 0.01], dim=1)  # [N, 2, D], like the image and its mirror
    one = fit_linear_probe(train_x, train_y, val_x, val_y, 5, grid=[1e-2])
    two = fit_linear_probe(train_x, train_y, views, val_y, 5, grid=[1e-2])
    assert abs(one.val_acc - two.val_acc) < 0.05
    with pytest.raises(ConfigError, match="linear layers"):
        linear_layer_of(nn.Sequential(nn.Linear(8, 4), nn.GELU(), nn.Linear(4, 2)))


# --- two builders at once ------------------------------------------------------------------------
def _build_in_process(root, marker, out, delay):
    import time as _time

    def slow():
        with open(marker, "a") as f:
            f.write("built\n")
        _time.sleep(delay)
        return torch.arange(48, dtype=torch.float32).view(6, 8)

    features = FeatureCache(root).get_or_build(key_for(), 8, slow, split="train")
    torch.save(features, out)


def test_two_processes_building_the_same_features_build_them_once(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    marker = tmp_path / "builds.txt"
    procs = [ctx.Process(target=_build_in_process, args=(tmp_path / "cache", marker, tmp_path / f"out{i}.pt", 1.0)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert marker.read_text().splitlines() == ["built"]  # the second waited for the first, then read its file
    a, b = (torch.load(tmp_path / f"out{i}.pt") for i in range(2))
    assert torch.equal(a, b) and torch.equal(a, torch.arange(48, dtype=torch.float32).view(6, 8))
