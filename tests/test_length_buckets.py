"""Length-bucketed text batches: each epoch is still every example once, in an order fixed by
(seed, epoch) and shared out among DDP ranks as before, with batches of similar lengths (less padding
once each batch is cut to its longest text); eval batches go longest first and score the same."""

import pytest
import torch

from test_text import backbone_of, make_encoder, make_texts

from transferlab.data.batch import Batch
from transferlab.data.datamodule import TransferDataModule
from transferlab.data.loaders import EpochBatches, length_bucketed
from transferlab.data.text.tokens import padding_share


def random_lengths(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 129, (n,), generator=torch.Generator().manual_seed(seed))


def batches_of(size, batch, shuffle=True, lengths=None, epoch=0, world=1, multiplier=4):
    ranks = [EpochBatches(size, batch, shuffle, seed=5, rank=r, world_size=world, lengths=lengths, bucket_size_multiplier=multiplier)
             for r in range(world)]
    for s in ranks:
        s.set_epoch(epoch)
    return [list(s) for s in ranks]


def mean_padding(lengths: torch.Tensor, batches) -> float:
    shares = []
    for b in batches:
        n = lengths[b]
        shares.append(1 - float(n.sum()) / (len(n) * int(n.max())))
    return sum(shares) / len(shares)


@pytest.mark.parametrize("size,batch", [(203, 8), (64, 8), (9, 8), (8, 8), (161, 16)])
def test_every_example_once_per_epoch_and_no_batch_of_one(size, batch):
    lengths = random_lengths(size)
    (bucketed,), (plain,) = batches_of(size, batch, lengths=lengths), batches_of(size, batch)
    taken = [i for b in bucketed for i in b]
    # Each once; a lone last example is dropped as before (one from the last chunk, not the permutation's last).
    assert len(taken) == len(set(taken)) == sum(map(len, plain)) >= size - 1 and len(bucketed) == len(plain)
    assert all(len(b) == batch for b in bucketed[:-1]) and all(len(b) >= 2 for b in bucketed)


def test_bucketed_batches_hold_similar_lengths():
    lengths = random_lengths(800)
    (bucketed,), (plain,) = batches_of(800, 16, lengths=lengths, multiplier=50), batches_of(800, 16)
    assert mean_padding(lengths, bucketed) < 0.5 * mean_padding(lengths, plain)


def test_the_order_is_a_function_of_seed_and_epoch():
    lengths = random_lengths(300)
    one, again, other = (batches_of(300, 8, lengths=lengths, epoch=e)[0] for e in (2, 2, 3))
    assert one == again and one != other
    assert sorted(map(sorted, one)) != sorted(map(sorted, other))  # not only the batch order moves: the batches do


def test_the_one_short_batch_stays_last_and_the_full_ones_are_shuffled():
    lengths = torch.arange(50)  # already sorted: an unshuffled batch order would climb
    order = length_bucketed(torch.randperm(50, generator=torch.Generator().manual_seed(0)), lengths, 8, 2,
                            torch.Generator().manual_seed(1))
    batches = order.split(8)
    assert len(batches[-1]) == 2 and sorted(order.tolist()) == list(range(50))
    assert [int(lengths[b].max()) for b in batches[:-1]] != sorted(int(lengths[b].max()) for b in batches[:-1])


@pytest.mark.parametrize("size", [203, 66])
def test_ddp_ranks_take_disjoint_bucketed_shares_of_every_step(size):
    lengths = random_lengths(size)
    ranks, plain = batches_of(size, 8, lengths=lengths, world=2), batches_of(size, 8, world=2)
    assert len(ranks[0]) == len(ranks[1]) == len(plain[0])  # the same number of steps on every rank, as before
    steps = [a + b for a, b in zip(*ranks)]
    assert all(len(a) == len(b) and not set(a) & set(b) for a, b in zip(*ranks))
    taken = [i for step in steps for i in step]
    assert len(taken) == len(set(taken)) == sum(len(a) + len(b) for a, b in zip(*plain))
    # Each step's global batch (both shares together) is a bucket.
    assert mean_padding(lengths, steps) < 0.7 * mean_padding(lengths, [a + b for a, b in zip(*plain)])


def test_ddp_ranks_together_take_the_one_process_batches():
    """With an even split there is no tail to drop: rank r's batch k is its half of the 1-process batch k."""
    lengths = random_lengths(160)
    (one,) = batches_of(160, 16, lengths=lengths, world=1)
    r0, r1 = batches_of(160, 8, lengths=lengths, world=2)
    assert len(one) == len(r0) == len(r1)
    for full, a, b in zip(one, r0, r1):
        assert not set(a) & set(b) and set(a) | set(b) == set(full)


def test_eval_batches_go_longest_first_and_score_every_example():
    lengths = random_lengths(41)
    (single,) = batches_of(41, 8, shuffle=False, lengths=lengths)
    flat = [i for b in single for i in b]
    assert sorted(flat) == list(range(41)) and [int(lengths[i]) for i in flat] == sorted(lengths.tolist(), reverse=True)
    ranks = batches_of(41, 4, shuffle=False, lengths=lengths, world=2)
    assert {i for r in ranks for b in r for i in b} == set(range(41))


# --- in the DataModule -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return make_encoder(tmp_path_factory.mktemp("enc") / "bert")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return make_texts(tmp_path_factory.mktemp("texts") / "tree", per_class=40)


def datamodule(encoder, texts, bucket: bool):
    backbone = backbone_of(encoder)
    dm = TransferDataModule("text_files", transform=backbone.batch_transform(), source_args={"root": str(texts)},
                            val_fraction=0.2, batch_size=8, eval_batch_size=8, tokenize=backbone.tokenize, bucket_by_length=bucket,
                            bucket_size_multiplier=4)
    dm.setup()
    return dm, backbone


def test_text_training_batches_carry_less_padding(encoder, texts):
    shares = {}
    for bucket in (False, True):
        dm, _ = datamodule(encoder, texts, bucket)
        batches = list(dm.train_dataloader())
        shares[bucket] = sum(padding_share(b.input_ids, 0) for b in batches) / len(batches)
    assert shares[True] < shares[False]


def test_eval_order_does_not_change_what_each_text_scores(encoder, texts):
    outputs = {}
    for bucket in (False, True):
        dm, backbone = datamodule(encoder, texts, bucket)
        backbone.model.eval()
        rows = {}
        with torch.no_grad():
            for batch in dm.test_dataloader():
                trimmed = backbone.batch_transform().apply(Batch(input_ids=batch.input_ids), train=False)
                for ids, features in zip(batch.input_ids, backbone.features(trimmed)):
                    rows.setdefault(tuple(ids.tolist()), []).append(features)
        outputs[bucket] = rows
    assert outputs[True].keys() == outputs[False].keys()
    for ids, features in outputs[False].items():
        torch.testing.assert_close(torch.stack(outputs[True][ids]), torch.stack(features), atol=1e-5, rtol=0)


def test_images_and_overfit_batches_are_not_bucketed(encoder, texts):
    dm, _ = datamodule(encoder, texts, True)
    assert dm._lengths("train", shuffle=True) is not None and dm._lengths("test", shuffle=False) is not None
    assert dm._lengths("train", shuffle=False) is None  # overfit_batches: the split's own first batches
    from transferlab.data.arrays import ImageArrays

    dm.splits["test"] = ImageArrays(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64))
    assert dm._lengths("test", shuffle=False) is None
