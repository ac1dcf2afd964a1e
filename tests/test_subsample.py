import pytest
import torch

from transferlab.errors import DataError
from transferlab.data.subsample import stratified_split


def make_labels(counts=(30, 50, 40), shuffle_seed=123):
    # Interleaved rather than grouped, so per-class bookkeeping is exercised on real index order.
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(shuffle_seed))]


def per_class(labels, idx):
    return torch.bincount(labels[idx], minlength=int(labels.max()) + 1).tolist()


def test_same_seed_same_indices_and_independent_of_global_rng():
    labels = make_labels()
    torch.manual_seed(0)
    a = stratified_split(labels, seed=7, val_per_class=5, samples_per_class=10)
    torch.manual_seed(999)
    torch.rand(10)
    b = stratified_split(labels, seed=7, val_per_class=5, samples_per_class=10)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_different_seed_different_indices():
    labels = make_labels()
    a_train, a_val = stratified_split(labels, seed=1, val_per_class=5, samples_per_class=10)
    b_train, b_val = stratified_split(labels, seed=2, val_per_class=5, samples_per_class=10)
    assert not torch.equal(a_train, b_train)
    assert not torch.equal(a_val, b_val)


def test_exact_counts_sorted_int64_and_disjoint():
    labels = make_labels()
    train, val = stratified_split(labels, seed=0, val_per_class=5, samples_per_class=12)
    assert per_class(labels, train) == [12, 12, 12]
    assert per_class(labels, val) == [5, 5, 5]
    for idx in (train, val):
        assert idx.dtype == torch.int64
        assert torch.equal(idx, torch.sort(idx).values)
        assert len(set(idx.tolist())) == len(idx)
    assert not set(train.tolist()) & set(val.tolist())


def test_fractions_round_per_class():
    labels = make_labels((30, 50, 40))
    train, val = stratified_split(labels, seed=0, val_fraction=0.1, train_fraction=0.5)
    assert per_class(labels, val) == [3, 5, 4]
    # Half of what validation left: 27 -> 14 (half up), 45 -> 23, 36 -> 18.
    assert per_class(labels, train) == [14, 23, 18]


def test_defaults_no_val_and_all_rest_for_training():
    labels = make_labels()
    train, val = stratified_split(labels, seed=0)
    assert len(val) == 0 and val.dtype == torch.int64
    assert torch.equal(train, torch.arange(len(labels)))
    train, val = stratified_split(labels, seed=0, val_per_class=4)
    assert per_class(labels, train) == [26, 46, 36]
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))


def test_smaller_training_subset_is_contained_in_larger():
    labels = make_labels()
    previous = set()
    for n in (1, 5, 10, 20, 25):
        train, _ = stratified_split(labels, seed=3, val_per_class=5, samples_per_class=n)
        assert previous <= set(train.tolist()), n
        previous = set(train.tolist())
    small, _ = stratified_split(labels, seed=3, val_fraction=0.1, train_fraction=0.2)
    large, _ = stratified_split(labels, seed=3, val_fraction=0.1, train_fraction=0.9)
    assert set(small.tolist()) <= set(large.tolist())


def test_val_does_not_depend_on_training_size():
    labels = make_labels()
    vals = [stratified_split(labels, seed=5, val_per_class=6, samples_per_class=n)[1] for n in (1, 10, 24)]
    vals.append(stratified_split(labels, seed=5, val_per_class=6, train_fraction=0.3)[1])
    vals.append(stratified_split(labels, seed=5, val_per_class=6)[1])
    for v in vals[1:]:
        assert torch.equal(vals[0], v)


def test_too_many_samples_per_class_names_class_count_and_fix():
    labels = make_labels((30, 50, 40))
    with pytest.raises(DataError) as e:
        stratified_split(labels, seed=0, val_per_class=10, samples_per_class=25)
    msg = str(e.value)
    assert "class 0" in msg and "has 20 images left" in msg
    assert "lower data.samples_per_class or data.val_per_class" in msg


def test_val_larger_than_class_is_an_error():
    with pytest.raises(DataError, match=r"class 0 has 30 images, fewer than data.val_per_class=31"):
        stratified_split(make_labels(), seed=0, val_per_class=31)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(val_per_class=5, val_fraction=0.1), "val_per_class=5 and data.val_fraction=0.1 are both set"),
        (dict(samples_per_class=5, train_fraction=0.1), "samples_per_class=5 and data.train_fraction=0.1 are both set"),
    ],
)
def test_both_of_a_pair_set_is_an_error(kwargs, fragment):
    with pytest.raises(DataError) as e:
        stratified_split(make_labels(), seed=0, **kwargs)
    assert fragment in str(e.value) and "set one of them to null" in str(e.value)


@pytest.mark.parametrize("name", ["val_fraction", "train_fraction"])
@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
def test_fraction_outside_unit_interval_is_an_error(name, value):
    with pytest.raises(DataError) as e:
        stratified_split(make_labels(), seed=0, **{name: value})
    assert f"data.{name}={value} is outside (0, 1]" in str(e.value)


def test_fraction_one_is_allowed():
    labels = make_labels()
    train, val = stratified_split(labels, seed=0, val_per_class=2, train_fraction=1.0)
    assert len(train) + len(val) == len(labels)


def test_tiny_train_fraction_keeps_one_per_class():
    labels = make_labels((3, 4, 5))
    train, _ = stratified_split(labels, seed=0, train_fraction=0.01)
    assert per_class(labels, train) == [1, 1, 1]


def test_nonpositive_samples_per_class_is_an_error():
    with pytest.raises(DataError, match=r"samples_per_class=0 must be a whole number >= 1"):
        stratified_split(make_labels(), seed=0, samples_per_class=0)


def test_empty_labels():
    train, val = stratified_split(torch.empty(0, dtype=torch.int64), seed=0, val_per_class=2)
    assert len(train) == 0 and len(val) == 0
