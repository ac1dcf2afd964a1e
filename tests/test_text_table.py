"""data=text_table: one csv / tsv / jsonl / parquet table of texts and labels, sentence pairs, its test
and validation splits, and every bad input as one line naming the fix.

Tables are tiny and written under tmp_path; the encoder is test_text.py's tiny offline BERT.
"""

import json
import random

import pandas as pd
import pytest
import torch

from test_bad_input import error_line, run
from test_cli import metrics_of
from test_text import backbone, encoder  # noqa: F401 (fixtures)

from transferlab.data.sources import SourceContext, load_source
from transferlab.data.text.tokens import PAIR_SEPARATOR
from transferlab.errors import ConfigError, DataError

CLS, SEP = 2, 3  # make_encoder's vocabulary


@pytest.fixture
def ctx(backbone):
    return SourceContext(seed=0, tokenize=backbone.tokenize)


def topics(classes=3, per_class=20, seed=0, labels=None) -> pd.DataFrame:
    """Rows of random words, most from their class's own ten, with a second text for pairs."""
    rng = random.Random(seed)
    names = labels or [f"topic{c}" for c in range(classes)]
    rows = []
    for c, name in enumerate(names):
        for _ in range(per_class):
            words = [f"w{(c % 3) * 10 + rng.randrange(10)}" if rng.random() < 0.8 else f"w{30 + rng.randrange(30)}"
                     for _ in range(rng.randint(3, 10))]
            rows.append({"text": " ".join(words), "pair": f"w{30 + rng.randrange(30)} w{c}", "label": name})
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, path):
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix in (".jsonl", ".json"):
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        raise ValueError(suffix)
    return path


def load(ctx, path, **args):
    return load_source("text_table", {"path": str(path), **args}, ctx)


def same_arrays(a, b):
    assert a.classes == b.classes and a.texts == b.texts
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)


# --- reading ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", ["names", "numbers"])
@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".json", ".parquet"])
def test_every_format_reads_the_same_table_to_the_same_arrays(ctx, tmp_path, suffix, labels):
    frame = topics(labels=None if labels == "names" else [7, 0, 12])
    reference = load(ctx, write(frame, tmp_path / "t.csv"))
    other = load(ctx, write(frame, tmp_path / f"t{suffix}"))
    for split in ("train", "val", "test"):
        same_arrays(getattr(other, split), getattr(reference, split))
    assert reference.train.classes == (["topic0", "topic1", "topic2"] if labels == "names" else ["0", "7", "12"])
    assert len(reference.test) == 18 and len(reference.val) == 3 and len(reference.train) == 39
    assert reference.test.texts[0] in set(frame.text)


def test_the_tokens_are_the_backbones_ids_of_the_texts(ctx, backbone, tmp_path):
    splits = load(ctx, write(topics(), tmp_path / "t.csv"))
    assert torch.equal(splits.test.input_ids, backbone.tokenize(splits.test.texts).input_ids)


def test_format_names_the_reader_whatever_the_suffix(ctx, tmp_path):
    frame = topics()
    (tmp_path / "t.txt").write_text(frame.to_csv(sep="\t", index=False))
    same_arrays(load(ctx, tmp_path / "t.txt", format="tsv").test, load(ctx, write(frame, tmp_path / "t.csv")).test)


def test_labels_sort_as_numbers_when_all_are_whole_numbers(ctx, tmp_path):
    assert load(ctx, write(topics(labels=[10, 9, 2]), tmp_path / "n.parquet")).train.classes == ["2", "9", "10"]
    assert load(ctx, write(topics(labels=["10", "9", "b"]), tmp_path / "s.csv")).train.classes == ["10", "9", "b"]


def test_cells_reading_na_or_null_are_texts(ctx, tmp_path):
    frame = topics()
    frame.loc[0, "text"], frame.loc[1, "text"] = "NA", "null"
    splits = load(ctx, write(frame, tmp_path / "t.csv"), test_fraction=0.5)
    texts = splits.train.texts + splits.val.texts + splits.test.texts
    assert "NA" in texts and "null" in texts and len(texts) == 60


# --- pairs -----------------------------------------------------------------------------------------
def test_pairs_encode_both_texts_as_one_sequence(ctx, backbone, tmp_path):
    path = write(topics(), tmp_path / "t.csv")
    single, pairs = load(ctx, path), load(ctx, path, text_pair_column="pair")
    assert torch.equal(pairs.test.labels, single.test.labels)  # the same rows, the same split
    assert not torch.equal(pairs.test.input_ids, single.test.input_ids)
    assert ((pairs.test.input_ids == SEP).sum(1) == 2).all() and ((single.test.input_ids == SEP).sum(1) == 1).all()
    text, pair = pairs.test.texts[0].split(PAIR_SEPARATOR)
    assert text == single.test.texts[0]
    assert torch.equal(pairs.test.input_ids[:1], backbone.tokenize([text], [pair]).input_ids)
    ids = pairs.test.input_ids[0].tolist()
    assert ids[0] == CLS and ids[ids.index(SEP) + 1:].count(SEP) == 1  # [CLS] text [SEP] pair [SEP]


def test_a_pair_table_trains_end_to_end(encoder, tmp_path, monkeypatch, capsys):
    from transferlab import train as train_cli

    path = write(topics(), tmp_path / "pairs.jsonl")
    args = ["model=hf", f"model.name={encoder}", f"model.weights=file:{encoder}", "data=text_table", f"data.source_args.path={path}",
            "data.source_args.text_pair_column=pair", "data.max_length=32", "trainer.accelerator=cpu", "+trainer.fast_dev_run=true",
            "+trainer.enable_progress_bar=false"]
    code, out, err = run(train_cli.main, args, tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    m, run_dir = metrics_of(tmp_path)
    assert m["status"] == "debug" and m["config"]["data"] == "text_table" and m["config"]["modality"] == "text"
    assert m["data_sizes"] == {"train": 39, "val": 3, "test": 18} and "acc" in m["test"]
    assert "tokenized 60 text pairs" in (run_dir / "train.log").read_text()


# --- splits ----------------------------------------------------------------------------------------
def test_the_fixed_test_split_does_not_move_with_the_runs_seed(backbone, tmp_path):
    path = write(topics(), tmp_path / "t.csv")
    a, b = (load(SourceContext(seed=s, tokenize=backbone.tokenize), path) for s in (1, 2))
    same_arrays(a.test, b.test)
    assert torch.bincount(a.test.labels).tolist() == [6, 6, 6]
    assert a.val.texts != b.val.texts  # validation follows the run's seed, like every source's
    other = load(SourceContext(seed=1, tokenize=backbone.tokenize), path, split_seed=1)
    assert other.test.texts != a.test.texts  # split_seed is what moves it


def test_test_path_is_the_test_split(ctx, tmp_path):
    train, test = topics(seed=0), topics(per_class=4, seed=1)
    splits = load(ctx, write(train, tmp_path / "train.csv"), test_path=str(write(test, tmp_path / "test.parquet")))
    assert splits.test.texts == list(test.text) and splits.test.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert len(splits.train) + len(splits.val) == 60 and len(splits.val) == 6  # nothing carved for test
    assert set(splits.train.texts + splits.val.texts) == set(train.text)


def test_split_column_picks_each_rows_split(ctx, tmp_path):
    frame = topics()
    frame["split"] = (["train"] * 14 + [" Val"] * 2 + ["TEST"] * 4) * 3  # case and spaces aside
    splits = load(ctx, write(frame, tmp_path / "t.csv"), split_column="split")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (42, 6, 12)
    assert splits.test.texts == [t for t, s in zip(frame.text, frame.split) if s == "TEST"]
    assert splits.val.texts == [t for t, s in zip(frame.text, frame.split) if s == " Val"]
    frame["split"] = (["train"] * 16 + ["test"] * 4) * 3
    splits = load(ctx, write(frame, tmp_path / "t.csv"), split_column="split", val_fraction=0.25)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 12, 12)  # val carved: no val rows


def test_a_class_with_too_few_texts_for_samples_per_class_is_one_line(encoder, tmp_path, monkeypatch, capsys):
    from transferlab import train as train_cli

    path = write(topics(), tmp_path / "t.csv")
    args = ["model=hf", f"model.name={encoder}", f"model.weights=file:{encoder}", "data=text_table", f"data.source_args.path={path}",
            "data.max_length=32", "trainer.accelerator=cpu", "data.samples_per_class=20"]
    code, _, err = run(train_cli.main, args, tmp_path, monkeypatch, capsys)
    line = error_line(code, err)
    assert "class 'topic0' has 13 texts left after validation (13 in all, 0 for val), fewer than data.samples_per_class=20" in line
    assert "lower data.samples_per_class" in line


def test_an_unset_path_is_one_line(encoder, tmp_path, monkeypatch, capsys):
    from transferlab import train as train_cli

    args = ["model=hf", f"model.name={encoder}", f"model.weights=file:{encoder}", "data=text_table", "data.max_length=32", "trainer.accelerator=cpu"]
    code, _, err = run(train_cli.main, args, tmp_path, monkeypatch, capsys)
    assert "data.source_args.path is unset: pass data.source_args.path=<a csv, tsv, jsonl or parquet file" in error_line(code, err)


# --- bad input -------------------------------------------------------------------------------------
def test_empty_texts_are_skipped_and_counted_or_refused_when_strict(ctx, tmp_path, caplog):
    frame = topics()
    frame.loc[[2, 5], "text"] = ["", "   "]
    frame.loc[7, "pair"] = ""
    path = write(frame, tmp_path / "t.csv")
    splits = load(ctx, path)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60 - 2
    assert "skipped 2 empty texts" in caplog.text and "row 3, row 6" in caplog.text
    pairs = load(ctx, path, text_pair_column="pair")
    assert len(pairs.train) + len(pairs.val) + len(pairs.test) == 60 - 3  # an empty half empties the pair
    with pytest.raises(DataError, match=r"2 empty texts in .*t.csv: row 3, row 6; remove them, or set data.source_args.strict=false"):
        load(ctx, path, strict=True)


def test_a_file_not_in_the_encoding_names_the_option(ctx, tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("text,label\nw1 w2,a\ncaf\xe9 w3,b\nw4,b\nw5,a\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"^\S*/t.csv is not valid utf-8 \(invalid continuation byte at byte 22, line 3\): "
                                        r"set data.source_args.encoding=<its encoding> \(latin-1"):
        load(ctx, path)
    splits = load(ctx, path, encoding="latin-1", test_fraction=0.5, val_fraction=0)
    assert "café w3" in splits.train.texts + splits.test.texts
    with pytest.raises(DataError, match="encoding='latin-9' is not an encoding Python knows"):
        load(ctx, path, encoding="latin-9")


def csv_text(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", [
    "no file", "a folder", "unknown suffix", "unknown format", "no text column", "no label column", "no pair column",
    "header only", "zero bytes", "empty jsonl", "not parquet", "missing labels", "one label", "every text empty",
    "unseen test label", "bad split values", "no test rows", "test_path and split_column", "no test file",
])
def test_bad_tables_are_one_line_naming_the_fix(ctx, tmp_path, case):
    good = write(topics(), tmp_path / "good.csv")
    bad = {
        "no file": (dict(path=tmp_path / "nope.csv"), DataError, r"data.source_args.path '.*nope.csv' does not exist: pass "
                    r"data.source_args.path=<a csv, tsv, jsonl or parquet file"),
        "a folder": (dict(path=tmp_path), DataError, r"is a folder: pass data.source_args.path="),
        "unknown suffix": (dict(path=csv_text(tmp_path / "t.xlsx", "text,label\n")), DataError,
                           r"cannot tell the format of .*t.xlsx from its suffix .xlsx: .*set data.source_args.format=csv\|tsv\|jsonl\|parquet"),
        "unknown format": (dict(path=good, format="excel"), ConfigError,
                           r"data.source_args.format='excel' is unknown: use auto \(from the file's suffix\) or one of csv, tsv, jsonl, parquet"),
        "no text column": (dict(path=good, text_column="body"), DataError,
                           r"good.csv has no column 'body' \(data.source_args.text_column\); its columns, read as csv, are text, pair, "
                           r"label: set data.source_args.text_column=<one of them>"),
        "no label column": (dict(path=good, label_column="y"), DataError,
                            r"no column 'y' \(data.source_args.label_column\); its columns, read as csv, are text, pair, label"),
        "no pair column": (dict(path=good, text_pair_column="hypothesis"), DataError,
                           r"no column 'hypothesis' \(data.source_args.text_pair_column\); .* are text, pair, label: "
                           r"set data.source_args.text_pair_column=<one of them>"),
        "header only": (dict(path=csv_text(tmp_path / "h.csv", "text,label\n")), DataError,
                        r"h.csv holds no rows: give a table with a header and one row per text \(read as csv\)"),
        "zero bytes": (dict(path=csv_text(tmp_path / "z.tsv", "")), DataError, r"z.tsv holds no rows"),
        "empty jsonl": (dict(path=csv_text(tmp_path / "e.jsonl", "")), DataError, r"e.jsonl holds no rows: .*\(read as jsonl\)"),
        "not parquet": (dict(path=csv_text(tmp_path / "x.parquet", "text,label\n")), DataError,
                        r"x.parquet cannot be read as parquet \(.*\): fix the file, or set data.source_args.format= to its real format"),
        "missing labels": (dict(path=csv_text(tmp_path / "m.csv", "text,label\nw1,a\nw2,b\nw3,\nw4, \nw5,a\n")), DataError,
                           r"2 rows of .*m.csv have no label in column 'label' \(data rows 3, 4\): fill them in, or drop those rows"),
        "one label": (dict(path=csv_text(tmp_path / "o.csv", "text,label\nw1,a\nw2,a\n")), DataError,
                      r"o.csv has 1 label \(a\) in column 'label' and a classifier needs at least 2"),
        "every text empty": (dict(path=csv_text(tmp_path / "v.csv", "text,label\n,a\n ,b\n")), DataError,
                             r"every text in .*v.csv is empty \(column 'text'\)"),
        "unseen test label": (dict(path=good, test_path=str(csv_text(tmp_path / "test.csv", "text,label\nw1,topic0\nw2,sports\n"))),
                              DataError, r"test.csv has labels the training rows lack \(sports\): a test label never seen in training "
                                         r"cannot be predicted"),
        "bad split values": (dict(path=csv_text(tmp_path / "s.csv", "text,label,split\nw1,a,train\nw2,b,dev\nw3,a,test\nw4,b,\n"),
                                  split_column="split"), DataError,
                             r"column 'split' of .*s.csv \(data.source_args.split_column\) has values other than train, val, test: "
                             r"\(empty\), dev; rename them to train, val or test"),
        "no test rows": (dict(path=csv_text(tmp_path / "n.csv", "text,label,split\nw1,a,train\nw2,b,val\n"), split_column="split"),
                         DataError, r"column 'split' of .*n.csv marks no row test: mark some rows test"),
        "test_path and split_column": (dict(path=good, test_path=str(good), split_column="label"), ConfigError,
                                       r"data.source_args.test_path and data.source_args.split_column are both set"),
        "no test file": (dict(path=good, test_path=str(tmp_path / "t2.csv")), DataError,
                         r"data.source_args.test_path '.*t2.csv' does not exist"),
    }
    args, error, message = bad[case]
    with pytest.raises(error, match=message) as raised:
        load(ctx, **args)
    assert "\n" not in str(raised.value)


def test_rows_are_named_by_their_place_in_the_file_also_within_a_split(ctx, tmp_path, caplog):
    frame = topics().set_index(pd.Index(range(100, 160)))  # an index of its own, kept by parquet
    frame["split"] = (["test"] * 6 + ["train"] * 14) * 3
    frame.loc[[100 + 10, 100 + 30], "text"] = ""  # file rows 11 and 31, both training rows
    load(ctx, write(frame, tmp_path / "t.parquet"), split_column="split")
    assert "skipped 2 empty texts in the train rows of" in caplog.text and "row 11, row 31" in caplog.text


def test_a_test_label_unseen_in_the_training_rows_of_a_split_column(ctx, tmp_path):
    frame = topics()
    frame["split"] = "train"
    frame.loc[0, ["split", "label"]] = ["test", "topic9"]
    with pytest.raises(DataError, match=r"the test rows of .*t.csv has labels the training rows lack \(topic9\)"):
        load(ctx, write(frame, tmp_path / "t.csv"), split_column="split")


def test_the_config_documents_every_argument_the_source_takes():
    import inspect

    import yaml

    from transferlab import CONFIG_DIR
    from transferlab.data.sources.text_table import load_text_table

    config = yaml.safe_load((CONFIG_DIR / "data" / "text_table.yaml").read_text())
    params = set(inspect.signature(load_text_table).parameters) - {"context"}
    assert set(config["source_args"]) == params and config["source"] == "text_table"
    assert json.dumps(config["source_args"]["path"]) == '"???"'
