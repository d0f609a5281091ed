"""The text datasets: the embedded `dates` and `reverse` builders (deterministic, documented
splits, correct targets), the character vocabulary, the text batch contract (shapes, resume,
per-process slices, eval padding), and wmt14 through tfds.testing.mock_data with a sentencepiece
model trained on the mock text."""

from __future__ import annotations

import datetime
import json
import re

import numpy as np
import pytest

from attn_jax import data
from attn_jax.data import text
from attn_jax.data.dates import dates_dataset_builder as dates_lib
from attn_jax.data.reverse import reverse_dataset_builder as reverse_lib
from attn_jax.errors import UserError

BUILDERS = {"dates": dates_lib.Builder, "reverse": reverse_lib.Builder}


def read_all(builder_cls, data_dir) -> dict[str, list[dict]]:
    """Every example of every split, with the Text features (bytes in tfds) as str."""
    sources = builder_cls(data_dir=data_dir).as_data_source()
    return {
        name: [
            {k: v.decode() if isinstance(v, bytes) else v for k, v in ex.items()}
            for ex in src.__getitems__(list(range(len(src))))
        ]
        for name, src in sources.items()
    }


@pytest.fixture(scope="module")
def text_dir(data_dir) -> str:
    for name in BUILDERS:
        data.prepare(name, data_dir)
    return data_dir


@pytest.fixture(scope="module")
def splits(text_dir) -> dict[str, dict[str, list[dict]]]:
    return {name: read_all(cls, text_dir) for name, cls in BUILDERS.items()}


def cfg_of(name, data_dir, **kw):
    return {**data.DEFAULT_DATA_CONFIG, "name": name, "data_dir": data_dir, **kw}


def take(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def make(cfg, split="train", **kw):
    kw = {"train": True, "global_batch_size": 64, "seed": 0, **kw}
    return data.make_dataset(cfg, split, **kw)


# -- builders -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dates", "reverse"])
def test_builds_are_deterministic(name, splits, tmp_path):
    {"dates": dates_lib, "reverse": reverse_lib}[name].generate.cache_clear()  # generate anew
    data.prepare(name, tmp_path)
    again = read_all(BUILDERS[name], str(tmp_path))
    assert again.keys() == splits[name].keys()
    for split, examples in splits[name].items():
        assert again[split] == examples


@pytest.mark.parametrize("name", ["dates", "reverse"])
def test_split_sizes_and_no_overlap(name, splits):
    entry = data.get_entry(name)
    got = splits[name]
    assert {k: len(v) for k, v in got.items()} == entry.splits == {"train": 20000, "test": 2000}
    train = {ex["inputs"] for ex in got["train"]}
    test = {ex["inputs"] for ex in got["test"]}
    assert len(train) == 20000 and len(test) == 2000  # no duplicates inside a split either
    assert not train & test
    longest = max(len(ex["inputs"]) for v in got.values() for ex in v)
    assert entry.max_input_length == longest + 1  # the maximum over all splits, plus EOS
    longest = max(len(ex["targets"]) for v in got.values() for ex in v)
    assert entry.max_target_length == longest + 1


def test_every_date_format_reads_back_as_the_iso_target(splits):
    seen_formats, seen_cases = set(), set()
    for split, examples in splits["dates"].items():
        for ex in examples:
            source, target, fmt = ex["inputs"], ex["targets"], int(ex["format"])
            pattern = dates_lib.FORMATS[fmt][1]
            plain = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", source, flags=re.IGNORECASE)
            parsed = datetime.datetime.strptime(plain, pattern).date()  # case-insensitive
            assert parsed.isoformat() == target, (source, pattern)
            assert datetime.date(1900, 1, 1) <= parsed <= datetime.date(2099, 12, 31)
            if "%a" in pattern or "%A" in pattern:  # strptime ignores the weekday: check it
                day = dates_lib.WEEKDAYS[parsed.weekday()]
                assert day.lower()[:3] in source.lower(), source
            if plain != source:  # ordinals: the suffix fits the day
                assert dates_lib.ordinal(parsed.day).lower() in source.lower(), source
            if split == "test":
                seen_formats.add(fmt)
                if re.search("[a-zA-Z]", source):
                    seen_cases.add(
                        "lower" if source.islower() else "upper" if source.isupper() else "mixed"
                    )
    assert seen_formats == set(range(len(dates_lib.FORMATS))) and len(dates_lib.FORMATS) >= 12
    assert seen_cases == {"lower", "upper", "mixed"}
    years = [int(ex["targets"][:4]) for ex in splits["dates"]["train"]]
    assert min(years) < 1905 and max(years) > 2094  # drawn over the whole range


def test_reverse_targets_and_length_buckets(splits):
    edges = reverse_lib.LENGTH_BUCKETS
    for split, examples in splits["reverse"].items():
        lengths = []
        for ex in examples:
            assert ex["targets"] == ex["inputs"][::-1]
            assert set(ex["inputs"]) <= set(reverse_lib.SYMBOLS)
            lengths.append(len(ex["inputs"]))
        assert set(lengths) == set(range(10, 61)), split  # every length, in both splits
        if split == "test":
            counts = np.histogram(lengths, bins=edges)[0]
            np.testing.assert_array_equal(counts, [400] * 5)
    assert data.dataset_info({"name": "reverse"}).length_buckets == (10, 20, 30, 40, 50, 61)


# -- vocabulary -----------------------------------------------------------------------------------
def test_char_vocab_round_trip(text_dir, splits):
    for name in BUILDERS:
        vocab = data.get_vocab(cfg_of(name, text_dir))
        assert vocab.size == data.dataset_info({"name": name}).vocab_size
        for ex in splits[name]["test"][:200]:
            ids = vocab.encode(ex["inputs"])
            assert min(ids) >= text.NUM_RESERVED and max(ids) < vocab.size
            assert vocab.decode(ids) == ex["inputs"]
            padded = [text.BOS, *ids, text.EOS, text.PAD, *ids]
            assert vocab.decode(padded) == ex["inputs"]  # stops at EOS, skips BOS
    vocab = text.CharVocab("ab")
    assert (text.PAD, text.BOS, text.EOS, text.UNK) == (0, 1, 2, 3)
    assert vocab.encode("abz") == [4, 5, 3] and vocab.decode([4, 3, 5, 0, 5]) == "a?bb"


# -- batches --------------------------------------------------------------------------------------
def test_spec_and_batches_agree(text_dir):
    for name in BUILDERS:
        cfg = cfg_of(name, text_dir)
        spec = data.dataset_info(cfg)
        assert spec.kind == "text" and spec.num_classes == 0 and spec.image_shape is None
        (b,) = take(make(cfg), 1)
        assert set(b) == {*spec.element_spec, "mask"} and b["mask"].all()
        for key, (shape, dtype) in spec.element_spec.items():
            assert b[key].shape == (64, *shape) and b[key].dtype == np.dtype(dtype), key
    digits = data.dataset_info({"name": "sklearn_digits"})
    assert digits.kind == "image" and digits.vocab_size is None
    assert digits.element_spec == {"image": ((8, 8, 1), "float32"), "label": ((), "int32")}


@pytest.mark.parametrize("name", ["dates", "reverse"])
def test_eval_reads_the_split_in_order_with_padding(name, text_dir, splits):
    cfg = cfg_of(name, text_dir)
    vocab = data.get_vocab(cfg)
    batches = list(make(cfg, "test", train=False, global_batch_size=384))
    assert len(batches) == 6  # ceil(2000 / 384)
    cat = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    mask = cat["mask"]
    assert mask.sum() == 2000 and mask[:2000].all() and not mask[2000:].any()
    for key in ("inputs", "targets", "length"):
        assert not cat[key][~mask].any()  # padding rows are PAD / 0
    examples = splits[name]["test"]
    for i in range(0, 2000, 7):
        row, ex = cat["inputs"][i], examples[i]
        n = len(ex["inputs"])
        assert cat["length"][i] == n and row[n] == text.EOS and not row[n + 1 :].any()
        assert vocab.decode(row) == ex["inputs"]
        assert vocab.decode(cat["targets"][i]) == ex["targets"]
    # Reading tfds per batch (no in-memory cache) gives the same batches.
    direct = list(make({**cfg, "cache": False}, "test", train=False, global_batch_size=384))
    for a, b in zip(direct, batches, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_train_epoch_is_a_permutation(text_dir, splits):
    cfg = cfg_of("reverse", text_dir)
    vocab = data.get_vocab(cfg)
    batches = take(make(cfg, global_batch_size=4000, seed=1), 5)  # exactly one epoch
    got = sorted(vocab.decode(r) for b in batches for r in b["inputs"])
    assert got == sorted(ex["inputs"] for ex in splits["reverse"]["train"])


def test_resume_from_iterator_state(text_dir):
    cfg = cfg_of("dates", text_dir)
    it = iter(make(cfg, seed=5))
    take(it, 9)
    state = json.loads(json.dumps(it.get_state()))
    assert state["next_index"] == 9
    want = take(it, 4)
    fresh = iter(make(cfg, seed=5))
    fresh.set_state(state)
    for got, expected in zip(take(fresh, 4), want, strict=True):
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    other = take(make(cfg, seed=6), 1)[0]
    assert not np.array_equal(other["inputs"], take(make(cfg, seed=5), 1)[0]["inputs"])


@pytest.mark.parametrize("train", [True, False])
def test_process_slices_union_is_the_global_batch(text_dir, train):
    cfg = cfg_of("reverse", text_dir)
    split = "train" if train else "test"
    steps = 7 if train else 6
    kw = {"train": train, "global_batch_size": 384, "seed": 3}
    single = take(make(cfg, split, **kw), steps)
    parts = [
        take(make(cfg, split, process_index=p, process_count=4, **kw), steps) for p in range(4)
    ]
    for k in range(steps):
        for key in single[k]:
            joined = np.concatenate([parts[p][k][key] for p in range(4)])
            np.testing.assert_array_equal(joined, single[k][key])
    assert parts[3][-1]["mask"].sum() == (0 if not train else 96)  # 2000 < 5 * 384 + 3 * 96


@pytest.mark.parametrize(
    "update, match",
    [
        ({"augment": True}, "augmentation does not apply"),
        ({"image_size": 32}, "image_size does not apply"),
        ({"max_length": 64}, "max_length applies to subword text datasets"),
        ({"name": "wmt14_de_en", "vocab_size": 4}, "vocab_size must be an int >= 16"),
        ({"name": "wmt14_de_en", "max_length": True}, "max_length must be an int >= 2"),
        ({"name": "dates", "eval_split": "validation"}, "cannot read split 'validation' of dates"),
    ],
)
def test_text_config_errors(update, match):
    cfg = {"name": "dates", **update}
    with pytest.raises(data.DataConfigError, match=match) as info:
        data.dataset_info(cfg)
    assert "\n" not in str(info.value)


def test_image_datasets_have_no_vocab():
    with pytest.raises(data.DataConfigError, match="image dataset"):
        data.get_vocab({"name": "sklearn_digits"})


# -- wmt14 ----------------------------------------------------------------------------------------
def test_missing_wmt14_is_one_clear_line(tmp_path):
    cfg = {"name": "wmt14_de_en", "data_dir": str(tmp_path)}
    with pytest.raises(data.DatasetNotFoundError) as info:
        make(cfg)
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, UserError)
    assert f"dataset wmt14_de_en is not prepared in data dir {tmp_path}" in msg
    assert (
        f"tfds build wmt14_translate/de-en --data_dir={tmp_path} --file_format=array_record" in msg
    )
    with pytest.raises(data.DatasetNotFoundError):
        data.get_vocab(cfg)
    assert not list(tmp_path.iterdir())  # nothing created, nothing trained


def test_wmt14_via_mock_data(tmp_path):
    import tensorflow_datasets as tfds
    from test_catalog_datasets import mocked_tfds  # tests/data is on sys.path (rootdir conftest)

    cfg = {"name": "wmt14_de_en", "data_dir": str(tmp_path), "vocab_size": 64, "max_length": 16}
    spec = data.dataset_info(cfg)
    assert (spec.vocab_size, spec.max_input_length, spec.max_target_length) == (64, 16, 16)
    assert data.dataset_info({"name": "wmt14_en_de"}).max_input_length == 128
    with mocked_tfds(num_examples=40):
        raw = tfds.data_source("wmt14_translate/de-en", split="validation", data_dir=str(tmp_path))
        raw = [raw[i] for i in range(len(raw))]
        vocab = data.get_vocab(cfg)
        model = data.sequences.spm_model_path(data.get_entry("wmt14_de_en"), str(tmp_path), 64)
        assert model.is_file() and vocab.size == 64
        before = model.stat().st_mtime_ns
        evals = list(make(cfg, "validation", train=False, global_batch_size=16))
        train = take(make(cfg, global_batch_size=8), 6)
        reverse_dir = list(make({**cfg, "name": "wmt14_en_de"}, "validation", train=False))
    assert model.stat().st_mtime_ns == before  # trained once, shared by both directions
    assert len(evals) == 3
    cat = {k: np.concatenate([b[k] for b in evals]) for k in evals[0]}
    assert cat["mask"].sum() == 40 and cat["inputs"].shape == (48, 16)
    assert cat["inputs"].dtype == np.int32 and cat["inputs"].max() < 64
    for i, ex in enumerate(raw):
        ids = vocab.encode(ex["de"])
        assert 0 < len(ids) and cat["length"][i] == min(len(ids), 15)
        np.testing.assert_array_equal(cat["inputs"][i], text.pad_sequences([ids], 16)[0])
        # sentencepiece's normalization folds runs of spaces, nothing else changes
        assert (
            vocab.decode(cat["targets"][i])
            == " ".join(ex["en"].split())[: len(vocab.decode(cat["targets"][i]))]
        )
    np.testing.assert_array_equal(reverse_dir[0]["inputs"][0], cat["targets"][0])
    for b in train:
        assert b["inputs"].shape == (8, 16) and b["targets"].shape == (8, 16) and b["mask"].all()
        assert ((b["inputs"] == text.EOS).sum(1) == 1).all()
