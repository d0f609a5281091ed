"""The embedded digit_captions builder and its image-text pipeline: the images, splits and labels
of the source datasets, reproducible captions that name the right digits, counts and positions,
held-out prompt templates that no training caption contains, the word vocabulary, and batches."""

from __future__ import annotations

import re
import string

import numpy as np
import pytest

from attn_jax import data
from attn_jax.data import captions as C
from attn_jax.data.digit_captions import digit_captions_dataset_builder as cb
from attn_jax.data.digit_scenes import digit_scenes_dataset_builder as ds
from attn_jax.data.sklearn_digits.sklearn_digits_dataset_builder import split_of

CONFIGS = {"digits": "digit_captions", "scenes": "scene_captions"}
NUMBERS = {w: i for i, w in enumerate(cb.DIGIT_WORDS)} | {d: i for i, d in enumerate(cb.NUMERALS)}


@pytest.fixture(scope="module")
def stored(data_dir) -> dict[str, dict[str, list[dict]]]:
    """Every stored example of both configs and splits, decoded, in stored order."""
    out = {}
    for config, name in CONFIGS.items():
        data.prepare(name, data_dir)
        sources = cb.Builder(data_dir=data_dir, config=config).as_data_source()
        out[config] = {s: src.__getitems__(list(range(len(src)))) for s, src in sources.items()}
    return out


def texts(example: dict) -> list[str]:
    return [c.decode() if isinstance(c, bytes) else str(c) for c in example["captions"]]


def numbers_in(words: list[str]) -> list[tuple[int, bool]]:
    """(value, is a count) of every digit word or numeral: a count is followed by digit(s)."""
    out = []
    for i, w in enumerate(words):
        if w in NUMBERS:
            follows = words[i + 1] if i + 1 < len(words) else ""
            out.append((NUMBERS[w], follows in ("digit", "digits")))
    return out


def template_pattern(template: str) -> re.Pattern:
    """Where a template occurs in lines of space-joined words: its words in order, any words
    (one or more) in each slot, punctuation ignored."""
    words = []
    for literal, field, _, _ in string.Formatter().parse(template):
        words += [re.escape(w) for w in C.split_words(literal) if w.isalnum()]
        if field is not None:
            words.append(r"\S+(?: \S+)*")
    return re.compile(r"(?m)(?:^| )" + " ".join(words) + r"(?: |$)")


def cfg(name: str, data_dir: str, **values) -> dict:
    return {**data.DEFAULT_DATA_CONFIG, "name": name, "data_dir": data_dir, **values}


# -- the builder ---------------------------------------------------------------------------------
def test_counts_features_images_and_labels(stored, digits_arrays):
    images, labels = digits_arrays
    digits = stored["digits"]
    assert {k: len(v) for k, v in digits.items()} == {"train": 1438, "test": 359}
    for split, examples in digits.items():
        ids = np.asarray([ex["id"] for ex in examples])
        assert all(split_of(int(i)) == split for i in ids) and (np.diff(ids) > 0).all()
        np.testing.assert_array_equal(np.stack([ex["image"] for ex in examples]), images[ids])
        np.testing.assert_array_equal([ex["label"] for ex in examples], labels[ids])
    scenes = stored["scenes"]
    assert {k: len(v) for k, v in scenes.items()} == {"train": 4000, "test": 500}
    raw, raw_labels = ds.load_digits()
    for split, indices in (("train", [0, 1, 2, 3999]), ("test", [0, 499])):
        pool = ds.pool_of(split)
        for i in indices:
            ex = scenes[split][i]
            layout = ds.layout_of(split, i, pool)
            np.testing.assert_array_equal(ex["image"], ds.render(layout, raw, raw_labels)["image"])
            assert ex["id"] == i and ex["label"] == len(layout) - 1
    for config in stored.values():
        for examples in config.values():
            ex = examples[0]
            assert set(ex) == {"image", "label", "captions", "id"}
            assert len(texts(ex)) == cb.N_CAPTIONS == len(set(texts(ex)))
    assert {ex["label"] for ex in scenes["train"]} == set(range(6))


def test_captions_are_a_pure_function_of_the_example(stored, digits_arrays):
    _, labels = digits_arrays
    for split in ("train", "test"):
        for ex in stored["digits"][split][::97]:
            again = cb.digit_captions(
                int(labels[ex["id"]]), cb.example_rng("digits", split, ex["id"])
            )
            assert again == texts(ex)
    raw, raw_labels = ds.load_digits()
    pool = ds.pool_of("test")
    for i in (0, 77, 499):
        objects = ds.render(ds.layout_of("test", i, pool), raw, raw_labels)["objects"]
        boxes = np.asarray([np.asarray(b) for b in objects["bbox"]])
        again = cb.scene_captions(objects["label"], boxes, cb.example_rng("scenes", "test", i))
        assert again == texts(stored["scenes"]["test"][i])
    # Seeded by the example, not shared: two sevens get different captions.
    sevens = [texts(ex) for ex in stored["digits"]["train"] if ex["label"] == 7]
    assert len({tuple(c) for c in sevens}) > 0.9 * len(sevens)


def test_heldout_templates_never_occur_in_training_captions(stored):
    for config, splits in stored.items():
        captions = [" ".join(C.split_words(c)) for ex in splits["train"] for c in texts(ex)]
        corpus = "\n".join(captions)
        seen = set(corpus.split())
        for template in cb.HELDOUT_TEMPLATES[config]:
            assert template_pattern(template).search(corpus) is None, template
            # ... while every word of the prompt was seen in training.
            literal = " ".join(text for text, _, _, _ in string.Formatter().parse(template))
            assert {w for w in C.split_words(literal) if w.isalnum()} <= seen, template
        for names in cb.CLASS_NAMES[config]:
            for template in cb.HELDOUT_TEMPLATES[config]:
                for name in names:
                    prompt = " ".join(w for w in C.split_words(cb.fill(template, name)) if w != ".")
                    assert prompt not in corpus


def test_heldout_check_catches_a_template_in_a_caption():
    # The check above finds held-out templates with several words in a slot, anywhere in a line,
    # but not a template's words without their slot filled or inside longer words.
    corpus = "a canvas with a 3\nthis image shows a 5 and a 2\nfour digits in this picture"
    assert template_pattern("this image shows {an}.").search(corpus)
    assert template_pattern("{c} in this picture.").search(corpus)
    assert template_pattern("a drawing of {an}.").search("a drawing of a 5 and a 2")
    assert not template_pattern("a drawing of {an}.").search("a pen drawing of")
    assert not template_pattern("{c} in this picture.").search("in this picture")
    assert not template_pattern("a photo of {c}.").search("ta photo of 3")


def test_digit_captions_name_the_label(stored):
    for examples in stored["digits"].values():
        for ex in examples:
            for caption in texts(ex):
                found = numbers_in(C.split_words(caption))
                assert found and all(v == ex["label"] and not count for v, count in found), caption


def test_scene_captions_name_the_digits_and_the_count(stored):
    _, raw_labels = ds.load_digits()
    pool = ds.pool_of("train")
    mentioned_positions = 0
    for i, ex in enumerate(stored["scenes"]["train"][:600]):
        digits = {int(raw_labels[d]) for d, *_ in ds.layout_of("train", i, pool)}
        n = ex["label"] + 1
        for caption in texts(ex):
            for value, count in numbers_in(C.split_words(caption)):
                assert value == n if count else value in digits, (caption, digits, n)
            mentioned_positions += any(w in caption for w in ("left", "top", "above", "bottom"))
    assert mentioned_positions > 0.08 * 600 * cb.N_CAPTIONS  # positions are described often


@pytest.mark.parametrize(
    "boxes, horizontal, vertical",
    [
        ([[10, 0, 30, 20], [12, 30, 32, 50]], True, False),  # side by side, same height
        ([[0, 10, 20, 30], [30, 15, 50, 35]], False, True),  # stacked
        ([[0, 0, 20, 20], [30, 30, 50, 50]], True, True),  # diagonal: both true
        ([[0, 0, 20, 20], [10, 10, 30, 30]], False, False),  # neither unambiguous
    ],
)
def test_positions_are_phrased_only_when_unambiguous(boxes, horizontal, vertical):
    labels = np.asarray([3, 8])
    seen = {"left": False, "above": False}
    for seed in range(150):
        for caption in cb.scene_captions(
            labels, np.asarray(boxes, float), np.random.default_rng(seed)
        ):
            words = C.split_words(caption)
            nums = [v for v, count in numbers_in(words) if not count]
            if "left" in words or "rightmost" in words:
                assert horizontal, caption
                seen["left"] = True
                if "leftmost" in words or "left" in words and "right" in words:
                    assert nums == [3, 8] or nums == [3], caption
                if "rightmost" in words:
                    assert nums == [8], caption
            if "above" in words or "top" in words or "bottom" in words:
                assert vertical, caption
                seen["above"] = True
                if "above" in words or "top" in words and "bottom" in words:
                    assert nums == [3, 8], caption  # box 0 is above box 1
                elif "top" in words or "bottom" in words:
                    assert nums == [3 if "top" in words else 8], caption
    assert seen == {"left": horizontal, "above": vertical}


def test_text_lengths_are_the_longest_caption_or_prompt(stored):
    for config, splits in stored.items():
        lengths = [len(C.split_words(c)) for s in splits.values() for ex in s for c in texts(ex)]
        prompts, _ = data.zero_shot_prompts({"name": CONFIGS[config]})
        assert (
            max(lengths) + 2
            == cb.TEXT_LENGTHS[config]
            == data.get_entry(CONFIGS[config]).text_length
        )
        assert (prompts == C.VOCAB.eot_id).any(-1).all()  # no prompt was cut


# -- the vocabulary ------------------------------------------------------------------------------
def test_vocab_ids_round_trip_and_no_unknown_words(stored):
    v = C.VOCAB
    assert (v.pad_id, v.unk_id, v.mask_id, v.sot_id) == (0, 1, 2, 3)
    assert v.eot_id == v.size - 1 == C.NUM_SPECIAL + len(v.words)
    for config, splits in stored.items():
        captions = [c for s in splits.values() for ex in s for c in texts(ex)]
        t = cb.TEXT_LENGTHS[config]
        tokens = v.tokenize(captions, t)
        assert tokens.dtype == np.int32 and tokens.shape == (len(captions), t)
        assert (tokens[:, 0] == v.sot_id).all() and not (tokens == v.unk_id).any()
        # OpenAI CLIP pools at argmax(ids): that must be the EOT of every row.
        eot = tokens.argmax(-1)
        np.testing.assert_array_equal(tokens[np.arange(len(tokens)), eot], v.eot_id)
        np.testing.assert_array_equal(eot - 1, [len(v.encode(c)) for c in captions])
        assert [v.decode(row) for row in tokens] == captions


def test_tokenize_cuts_before_eot_and_decode_marks_specials():
    v = C.VOCAB
    row = v.tokenize(["Three digits: 3, 8 and 5."], 6)[0]
    assert row.tolist() == [v.sot_id, *v.encode("three digits: 3"), v.eot_id]
    assert v.decode(row) == "three digits: 3"
    row = v.tokenize(["a 7"], 5)[0]
    assert row.tolist() == [v.sot_id, *v.encode("a 7"), v.eot_id, v.pad_id]
    assert v.encode("a zebra") == [v.encode("a")[0], v.unk_id]
    assert v.decode([v.sot_id, v.mask_id, *v.encode("seven"), v.eot_id, 9]) == "<mask> seven"
    with pytest.raises(ValueError, match="length must be >= 2"):
        v.tokenize(["a"], 1)


# -- the pipeline --------------------------------------------------------------------------------
def test_dataset_info_vocab_and_registry(data_dir):
    digits = data.dataset_info(cfg("digit_captions", data_dir, image_size=16))
    assert (digits.kind, digits.num_classes, digits.image_shape) == ("image_text", 10, (16, 16, 1))
    assert (digits.vocab_size, digits.text_length, digits.num_captions) == (C.VOCAB.size, 11, 5)
    assert digits.num_examples["train"] == 1438 and digits.num_examples["test"] == 359
    assert digits.element_spec == {
        "image": ((16, 16, 1), "float32"),
        "tokens": ((11,), "int32"),
        "captions": ((5, 11), "int32"),
        "label": ((), "int32"),
    }
    scenes = data.dataset_info(cfg("scene_captions", data_dir))
    assert (scenes.num_classes, scenes.image_shape, scenes.text_length) == (6, (64, 64, 1), 23)
    assert data.get_vocab(cfg("scene_captions", data_dir)) is C.VOCAB
    entry, source = data.get_entry("digit_captions"), data.get_entry("sklearn_digits")
    assert (entry.mean, entry.std, entry.max_value, entry.augmentation, entry.max_shift) == (
        source.mean,
        source.std,
        source.max_value,
        source.augmentation,
        source.max_shift,
    )
    entry, source = data.get_entry("scene_captions"), data.get_entry("digit_scenes")
    assert (entry.mean, entry.std, entry.max_value) == (source.mean, source.std, source.max_value)
    with pytest.raises(data.DataConfigError, match="not an image-text dataset"):
        data.zero_shot_prompts(cfg("sklearn_digits", data_dir))


def test_zero_shot_prompts():
    tokens, names = data.zero_shot_prompts({"name": "digit_captions"})
    m = len(cb.HELDOUT_TEMPLATES["digits"]) * 2
    assert tokens.shape == (10, m, 11) and tokens.dtype == np.int32
    assert names == list(cb.DIGIT_WORDS)
    assert C.VOCAB.decode(tokens[7, 0]) == "a photo of the number seven."
    assert C.VOCAB.decode(tokens[7, 1]) == "a photo of the number 7."
    assert C.VOCAB.decode(tokens[8, 3]) == "this image shows an 8."
    tokens, names = data.zero_shot_prompts({"name": "scene_captions"})
    assert tokens.shape == (6, m, 23) and names[0] == "one digit" and names[2] == "three digits"
    assert C.VOCAB.decode(tokens[0, 1]) == "a photo of 1 digit."


def test_eval_batches_match_the_image_dataset_and_pad(data_dir, stored):
    c = cfg("digit_captions", data_dir)
    batches = list(data.make_dataset(c, "test", train=False, global_batch_size=128, seed=0))
    images = list(
        data.make_dataset(
            {**c, "name": "sklearn_digits"}, "test", train=False, global_batch_size=128, seed=0
        )
    )
    assert len(batches) == 3
    spec = data.dataset_info(c).element_spec
    for b, ref in zip(batches, images, strict=True):
        assert set(b) == {*spec, "mask"}
        for key, (shape, dtype) in spec.items():
            assert b[key].shape == (128, *shape) and b[key].dtype == dtype, key
        np.testing.assert_array_equal(b["image"], ref["image"])
        np.testing.assert_array_equal(b["label"], ref["label"])
        np.testing.assert_array_equal(b["mask"], ref["mask"])
        np.testing.assert_array_equal(b["tokens"], b["captions"][:, 0])  # eval: caption 0
    last = batches[-1]
    assert last["mask"].sum() == 359 - 256
    assert not last["tokens"][~last["mask"]].any() and not last["captions"][~last["mask"]].any()
    # Read from the data source batch by batch instead of from memory: the same batches.
    uncached = data.make_dataset(
        {**c, "cache": False, "read_threads": 0}, "test", train=False, global_batch_size=128, seed=0
    )
    for a, b in zip(batches, uncached, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    want = [texts(ex) for ex in stored["digits"]["test"][:5]]
    got = [[C.VOCAB.decode(r) for r in caps] for caps in batches[0]["captions"][:5]]
    assert got == want


def test_train_batches_draw_captions_reproducibly(data_dir):
    c = cfg("digit_captions", data_dir, augment=True, image_size=16)
    it = iter(data.make_dataset(c, "train", train=True, global_batch_size=32, seed=3))
    first = [next(it) for _ in range(3)]
    state = it.get_state()
    after = [next(it) for _ in range(2)]
    for b in first:
        assert b["image"].shape == (32, 16, 16, 1) and b["mask"].all()
        match = (b["captions"] == b["tokens"][:, None]).all(-1)
        assert match.any(-1).all()  # each row is one of the image's captions
    picked = np.concatenate(
        [(b["captions"] == b["tokens"][:, None]).all(-1).argmax(-1) for b in first]
    )
    assert set(picked.tolist()) == set(range(cb.N_CAPTIONS))  # every caption gets drawn
    resumed = iter(data.make_dataset(c, "train", train=True, global_batch_size=32, seed=3))
    resumed.set_state(state)
    for a, b in zip(after, [next(resumed) for _ in range(2)], strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = next(iter(data.make_dataset(c, "train", train=True, global_batch_size=32, seed=4)))
    assert not np.array_equal(other["tokens"], first[0]["tokens"])


def test_scene_batches(data_dir):
    c = cfg("scene_captions", data_dir, image_size=32, augment=True)
    b = next(iter(data.make_dataset(c, "train", train=True, global_batch_size=8, seed=0)))
    assert b["image"].shape == (8, 32, 32, 1) and b["tokens"].shape == (8, 23)
    assert b["captions"].shape == (8, 5, 23) and set(b["label"].tolist()) <= set(range(6))
    # Two processes read the two halves of the one-process batch.
    halves = [
        next(
            iter(
                data.make_dataset(
                    c,
                    "train",
                    train=True,
                    global_batch_size=8,
                    seed=0,
                    process_index=p,
                    process_count=2,
                )
            )
        )
        for p in range(2)
    ]
    for key in b:
        np.testing.assert_array_equal(b[key], np.concatenate([h[key] for h in halves]))
