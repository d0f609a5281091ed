"""Hugging Face CLIPModel checkpoints as attn_jax CLIP, with their tokenizer.

Radford, Kim, Hallacy, Ramesh, Goh, Agarwal, Sastry, Askell, Mishkin, Clark, Krueger, Sutskever
2021, "Learning Transferable Visual Models From Natural Language Supervision" (ICML 2021). The model
is attn_jax/models/clip.py (Fig. 3: I_e = l2_normalize(I_f W_i), T_e = l2_normalize(T_f W_t),
logits = exp(t) I_e T_e^T; sec. 2.4: the image ViT with its extra LayerNorm before the blocks, the
causal text Transformer read at the [EOT] position); this module maps the transformers port (e.g.
openai/clip-vit-base-patch32) onto it and ranks captions for an image (sec. 3.1.2: the softmax over
the captions of the scaled cosine similarities).

The checkpoint's config.json decides the architecture: `vision_config` (hidden_size,
num_hidden_layers, num_attention_heads, intermediate_size, image_size, patch_size), `text_config`
(vocab_size, hidden_size, layers, heads, intermediate_size, max_position_embeddings = the context
length), `projection_dim`, `hidden_act` ("quick_gelu" of the released models, or "gelu", the exact
erf form) and `layer_norm_eps`; keys a config leaves out take transformers' CLIPConfig defaults
(ViT-B/32), and the legacy `text_config_dict` / `vision_config_dict` override as transformers
reads them. Both towers must share the activation, the epsilon and the MLP ratio, as our model has
one of each.

Where transformers pools the text: at argmax(token ids) when the text config's `eos_token_id` is 2
(the value configs carried before transformers PR #24773, openai/clip-vit-base-patch32's included;
the real [EOT] 49407 is then the largest id), else at the FIRST position equal to `eos_token_id`.
The converted model gets `eot_id=None` or `eot_id=eos_token_id` accordingly. Caption logits are
exp(logit_scale) times the cosine similarities with no clipping, as transformers computes them
(`predict_rank_captions`; our module's forward clips the multiplier at 100, sec. 2.5, which the
released checkpoints, storing exactly ln 100, never exceed).

Layouts: torch Linear weights are [out, in] (ours [in, out]; query/key/value split per head as
[in, heads, Dh], the output projection [heads, Dh, out]); the patch Conv is [w, 3, P, P] (ours
[P, P, 3, w]); `visual_projection` and `text_projection` are bias-free Linear layers, transposed
into our `proj` and `text_projection` kernels. Saved and in-memory tensor names agree for CLIP in
transformers 4.x and 5.x; the `position_ids` buffers that older checkpoints saved are ignored.

Tokenizer: the checkpoint's tokenizer.json run by the `tokenizers` library, or, without it,
vocab.json and merges.txt assembled into the pipeline transformers' CLIPTokenizer builds from them
(NFC, whitespace runs to one space, lowercase; CLIP's split pattern; byte-level BPE with "</w>"
word ends; [SOT] text [EOT]). Captions are truncated (keeping [EOT] last) and padded with the pad
token of tokenizer_config.json to the model's context length, as
`CLIPTokenizer(captions, padding="max_length", truncation=True)` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.pretrained.checkpoint_files import (
    Pretrained,
    PretrainedError,
    TensorSource,
    read_config,
    read_json,
    read_state_dict,
    weights_file,
)

# transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig defaults (openai ViT-B/32): what a
# key missing from config.json means.
TEXT_DEFAULTS: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    eos_token_id=49407,
)
VISION_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=32,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
PROJECTION_DIM_DEFAULT = 512
# Configs written before transformers PR #24773 carry eos_token_id 2; transformers then pools at
# argmax(ids), which finds [EOT] because it is the largest id of CLIP's vocabulary.
LEGACY_EOS_TOKEN_ID = 2
ACTIVATIONS = ("quick_gelu", "gelu")

# CLIP's pre-tokenization: the special tokens, English contractions, letter runs, single digits,
# runs of other non-space characters (openai/CLIP simple_tokenizer; transformers' CLIPTokenizer).
CLIP_SPLIT_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)


# -- config ----------------------------------------------------------------------------------------


def clip_sub_configs(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(text, vision) configs of a CLIPModel config.json with transformers' defaults filled in.

    A legacy `text_config_dict` / `vision_config_dict` wins over `text_config` / `vision_config`
    for every key, as transformers' CLIPConfig resolves them.
    """
    resolved = []
    for name, defaults in (("text", TEXT_DEFAULTS), ("vision", VISION_DEFAULTS)):
        sub = dict(defaults)
        sub.update(config.get(f"{name}_config") or {})
        legacy = config.get(f"{name}_config_dict")
        if legacy:
            sub.update(defaults)
            sub.update(legacy)
        resolved.append(sub)
    return resolved[0], resolved[1]


def eot_id_from_config(text_config: Mapping[str, Any], where: str = "config.json") -> int | None:
    """Our model's `eot_id` for a text config: None (argmax pooling) for the legacy
    eos_token_id 2, else eos_token_id (first-occurrence pooling), as transformers decides.

    Raises:
      PretrainedError: an eos_token_id that is not one integer.
    """
    eos = text_config.get("eos_token_id", TEXT_DEFAULTS["eos_token_id"])
    if isinstance(eos, bool) or not isinstance(eos, int):
        raise PretrainedError(
            f"{where}: text_config eos_token_id {eos!r} is not one integer; set it to the "
            "[EOT] id of the tokenizer (49407 for OpenAI's vocabulary)"
        )
    return None if eos == LEGACY_EOS_TOKEN_ID else eos


def _square(value: Any, key: str, where: str) -> int:
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise PretrainedError(
                f"{where}: vision_config {key} {list(value)} is not square; only square "
                f"{key}s convert"
            )
        value = value[0]
    return int(value)


def clip_kwargs_from_config(
    config: Mapping[str, Any], where: str = "config.json"
) -> dict[str, Any]:
    """attn_jax CLIP constructor kwargs equivalent to a transformers CLIPConfig (config.json).

    Args:
      config: the parsed config.json of a CLIPModel.
      where: what the config is (a path), for error messages.

    Returns:
      kwargs of `attn_jax.models.clip.CLIP`, with image_size set and eot_id as transformers pools.

    Raises:
      PretrainedError: another model type, or a setting our CLIP cannot represent, naming the key.
    """
    if config.get("model_type") != "clip":
        raise PretrainedError(
            f"{where}: model_type {config.get('model_type')!r} is not 'clip'; pass a CLIPModel "
            "checkpoint directory"
        )
    text, vision = clip_sub_configs(config)
    for tower, sub in (("text", text), ("vision", vision)):
        if sub["hidden_act"] not in ACTIVATIONS:
            raise PretrainedError(
                f"{where}: {tower}_config hidden_act {sub['hidden_act']!r} is not supported; "
                f"supported: {', '.join(ACTIVATIONS)}"
            )
        if sub["hidden_size"] % sub["num_attention_heads"]:
            raise PretrainedError(
                f"{where}: {tower}_config hidden_size {sub['hidden_size']} is not divisible by "
                f"num_attention_heads {sub['num_attention_heads']}"
            )
    if text["hidden_act"] != vision["hidden_act"]:
        raise PretrainedError(
            f"{where}: the towers use different activations ({text['hidden_act']!r} text, "
            f"{vision['hidden_act']!r} vision), which this CLIP cannot represent"
        )
    if float(text["layer_norm_eps"]) != float(vision["layer_norm_eps"]):
        raise PretrainedError(
            f"{where}: the towers use different layer_norm_eps ({text['layer_norm_eps']} text, "
            f"{vision['layer_norm_eps']} vision), which this CLIP cannot represent"
        )
    mlp_ratio = text["intermediate_size"] / text["hidden_size"]
    if vision["intermediate_size"] != int(vision["hidden_size"] * mlp_ratio) or text[
        "intermediate_size"
    ] != int(text["hidden_size"] * mlp_ratio):
        raise PretrainedError(
            f"{where}: intermediate_size / hidden_size differs between the towers "
            f"({text['intermediate_size']}/{text['hidden_size']} text, "
            f"{vision['intermediate_size']}/{vision['hidden_size']} vision), which this CLIP "
            "cannot represent"
        )
    if vision["num_channels"] != 3:
        raise PretrainedError(f"{where}: vision_config num_channels {vision['num_channels']} != 3")
    image_size = _square(vision["image_size"], "image_size", where)
    patch_size = _square(vision["patch_size"], "patch_size", where)
    if image_size % patch_size:
        raise PretrainedError(
            f"{where}: vision_config image_size {image_size} is not a multiple of patch_size "
            f"{patch_size}"
        )
    projection_dim = config.get("projection_dim")
    return dict(
        embed_dim=int(projection_dim if projection_dim is not None else PROJECTION_DIM_DEFAULT),
        patch_size=patch_size,
        vision_width=int(vision["hidden_size"]),
        vision_layers=int(vision["num_hidden_layers"]),
        vision_heads=int(vision["num_attention_heads"]),
        vocab_size=int(text["vocab_size"]),
        context_length=int(text["max_position_embeddings"]),
        text_width=int(text["hidden_size"]),
        text_layers=int(text["num_hidden_layers"]),
        text_heads=int(text["num_attention_heads"]),
        image_size=image_size,
        mlp_ratio=mlp_ratio,
        activation=text["hidden_act"],
        eot_id=eot_id_from_config(text, where),
        layernorm_epsilon=float(text["layer_norm_eps"]),
    )


# -- tensors ---------------------------------------------------------------------------------------


def _t(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else np.ascontiguousarray(x.T)


def _reshape(x: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if x is None else x.reshape(shape)


def _tower_blocks(
    src: TensorSource, prefix: str, width: int, heads: int, layers: int, hidden: int
) -> dict[str, Any]:
    """Our `transformer` subtree from `{prefix}.encoder.layers.{i}` of one tower."""
    dh = width // heads

    def linear(name: str, n_in: int, n_out: int) -> dict[str, np.ndarray | None]:
        return {
            "kernel": _t(src.take(f"{name}.weight", (n_out, n_in))),
            "bias": src.take(f"{name}.bias", (n_out,)),
        }

    def norm(name: str) -> dict[str, np.ndarray | None]:
        return {
            "scale": src.take(f"{name}.weight", (width,)),
            "bias": src.take(f"{name}.bias", (width,)),
        }

    blocks = {}
    for i in range(layers):
        p = f"{prefix}.encoder.layers.{i}"
        attn = {}
        for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            lin = linear(f"{p}.self_attn.{theirs}", width, width)
            attn[ours] = {
                "kernel": _reshape(lin["kernel"], (width, heads, dh)),
                "bias": _reshape(lin["bias"], (heads, dh)),
            }
        out = linear(f"{p}.self_attn.out_proj", width, width)
        attn["out"] = {"kernel": _reshape(out["kernel"], (heads, dh, width)), "bias": out["bias"]}
        blocks[f"resblocks_{i}"] = {
            "ln_1": norm(f"{p}.layer_norm1"),
            "attn": attn,
            "ln_2": norm(f"{p}.layer_norm2"),
            "mlp": {
                "c_fc": linear(f"{p}.mlp.fc1", width, hidden),
                "c_proj": linear(f"{p}.mlp.fc2", hidden, width),
            },
        }
    return blocks


def convert_clip_tensors(
    tensors: Mapping[str, np.ndarray], kwargs: Mapping[str, Any], where: str = "checkpoint"
) -> dict[str, Any]:
    """{"params": ...} of our CLIP from a transformers CLIPModel state dict.

    Args:
      tensors: {name: array} as saved (either transformers version).
      kwargs: our CLIP kwargs (`clip_kwargs_from_config`).
      where: what the tensors are (a path), for error messages.

    Raises:
      PretrainedError: one line naming missing, misshaped and unused tensors.
    """
    src = TensorSource(tensors, where, ignore=("position_ids",))
    w, tw, e = kwargs["vision_width"], kwargs["text_width"], kwargs["embed_dim"]
    p = kwargs["patch_size"]
    tokens = (kwargs["image_size"] // p) ** 2 + 1
    ratio = kwargs["mlp_ratio"]

    def norm(name: str, width: int) -> dict[str, np.ndarray | None]:
        return {
            "scale": src.take(f"{name}.weight", (width,)),
            "bias": src.take(f"{name}.bias", (width,)),
        }

    conv = src.take("vision_model.embeddings.patch_embedding.weight", (w, 3, p, p))
    visual = {
        "conv1": {"kernel": None if conv is None else np.transpose(conv, (2, 3, 1, 0))},
        "class_embedding": src.take("vision_model.embeddings.class_embedding", (w,)),
        "positional_embedding": src.take(
            "vision_model.embeddings.position_embedding.weight", (tokens, w)
        ),
        "ln_pre": norm("vision_model.pre_layrnorm", w),
        "transformer": _tower_blocks(
            src, "vision_model", w, kwargs["vision_heads"], kwargs["vision_layers"], int(w * ratio)
        ),
        "ln_post": norm("vision_model.post_layernorm", w),
        "proj": {"kernel": _t(src.take("visual_projection.weight", (e, w)))},
    }
    text = {
        "token_embedding": {
            "embedding": src.take(
                "text_model.embeddings.token_embedding.weight", (kwargs["vocab_size"], tw)
            )
        },
        "positional_embedding": src.take(
            "text_model.embeddings.position_embedding.weight", (kwargs["context_length"], tw)
        ),
        "transformer": _tower_blocks(
            src, "text_model", tw, kwargs["text_heads"], kwargs["text_layers"], int(tw * ratio)
        ),
        "ln_final": norm("text_model.final_layer_norm", tw),
    }
    logit_scale = src.take("logit_scale", ())
    params = {
        "visual": visual,
        "text": text,
        "text_projection": {"kernel": _t(src.take("text_projection.weight", (e, tw)))},
        "logit_scale": logit_scale,
    }
    src.check()
    return {"params": params}


# -- tokenizer -------------------------------------------------------------------------------------


def _token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json stores it: a string or {"content": ...}."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


class ClipTokenizer:
    """CLIP's byte-level BPE, producing fixed-length id rows as the reference tokenizer does with
    `padding="max_length", truncation=True` (module docstring).

    Attributes:
      context_length: the length of every row (the text tower's max_position_embeddings).
      pad_id: the padding id (the pad token of tokenizer_config.json; CLIPTokenizer's default is
        [EOT] itself).
      bos_id: the [SOT] id (None if the vocabulary has no such token).
      eos_id: the [EOT] id (None likewise).
    """

    def __init__(
        self,
        tokenizer: Any,
        context_length: int,
        *,
        pad_token: str = "<|endoftext|>",
        bos_token: str = "<|startoftext|>",
        eos_token: str = "<|endoftext|>",
        padding_side: str = "right",
        truncation_side: str = "right",
        where: str = "tokenizer",
    ):
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise PretrainedError(
                f"{where}: the pad token {pad_token!r} is not in the vocabulary; use the "
                "checkpoint's own tokenizer files"
            )
        self.context_length = int(context_length)
        self.pad_id = pad_id
        # For reference only: tokenizer.json's post-processor inserts [SOT] / [EOT] itself.
        self.bos_id = tokenizer.token_to_id(bos_token)
        self.eos_id = tokenizer.token_to_id(eos_token)
        self.tokenizer = tokenizer
        # The settings transformers gives the tokenizers backend for padding="max_length" and
        # truncation=True: the post-processor's [SOT] / [EOT] are counted within max_length.
        tokenizer.enable_truncation(
            max_length=self.context_length,
            stride=0,
            strategy="longest_first",
            direction=truncation_side,
        )
        tokenizer.enable_padding(
            direction=padding_side,
            pad_id=self.pad_id,
            pad_type_id=0,
            pad_token=pad_token,
            length=self.context_length,
        )

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        """int32 [len(captions), context_length] token ids: [SOT] caption [EOT] pad...

        Raises:
          ValueError: no captions, or a caption that is not a string.
        """
        if isinstance(captions, str):
            captions = [captions]
        captions = list(captions)
        if not captions:
            raise ValueError("no captions to tokenize; pass at least one caption")
        for c in captions:
            if not isinstance(c, str):
                raise ValueError(f"a caption must be a string, got {type(c).__name__}: {c!r}")
        encodings = self.tokenizer.encode_batch(captions)
        return np.asarray([enc.ids for enc in encodings], np.int32)


def _bpe_from_vocab_and_merges(directory: Path, settings: Mapping[str, Any]) -> Any:
    """The tokenizers pipeline transformers' CLIPTokenizer assembles from vocab.json and
    merges.txt (module docstring); `settings` is tokenizer_config.json."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import BPE

    def token(name: str, default: str) -> str:
        return _token_content(settings.get(name)) or default

    bos, eos = token("bos_token", "<|startoftext|>"), token("eos_token", "<|endoftext|>")
    unk = token("unk_token", "<|endoftext|>")
    try:
        vocab, merges = BPE.read_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    except Exception as e:  # noqa: BLE001 - any unreadable file is a corrupt download
        raise PretrainedError(
            f"{directory}: vocab.json / merges.txt cannot be read ({type(e).__name__}: "
            f"{str(e)[:100]}); download them again"
        ) from None
    tokenizer = Tokenizer(
        BPE(
            vocab,
            merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=unk,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # The special tokens match before normalization, wherever they occur in a caption.
    specials = dict.fromkeys([unk, bos, eos, token("pad_token", "<|endoftext|>")])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    for t in (bos, eos):
        if tokenizer.token_to_id(t) is None:
            raise PretrainedError(
                f"{directory}/vocab.json has no {t!r}; use the checkpoint's own vocab.json"
            )
    tokenizer.post_processor = processors.RobertaProcessing(
        (eos, tokenizer.token_to_id(eos)),
        (bos, tokenizer.token_to_id(bos)),
        trim_offsets=False,
        add_prefix_space=False,
    )
    return tokenizer


def load_clip_tokenizer(directory: str | Path, context_length: int) -> ClipTokenizer:
    """The tokenizer of a CLIP checkpoint directory: tokenizer.json, else vocab.json + merges.txt,
    with the special tokens and sides of tokenizer_config.json.

    Args:
      directory: the checkpoint directory.
      context_length: the length of the id rows (the model's max_position_embeddings).

    Raises:
      PretrainedError: no tokenizer files, or files that cannot be read.
    """
    directory = Path(directory)
    settings = dict(read_json(directory, "tokenizer_config.json") or {})
    for key, value in (read_json(directory, "special_tokens_map.json") or {}).items():
        settings.setdefault(key, value)
    if (directory / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as e:  # noqa: BLE001
            raise PretrainedError(
                f"{directory / 'tokenizer.json'} cannot be read by the tokenizers library "
                f"({type(e).__name__}: {str(e)[:100]}); download it again"
            ) from None
    elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        tokenizer = _bpe_from_vocab_and_merges(directory, settings)
    else:
        raise PretrainedError(
            f"no tokenizer in {directory}: captions need tokenizer.json (or vocab.json and "
            "merges.txt) from the checkpoint; download it next to config.json"
        )
    sides = {}
    for key in ("padding_side", "truncation_side"):
        sides[key] = settings.get(key) or "right"
        if sides[key] not in ("left", "right"):
            raise PretrainedError(
                f"{directory}/tokenizer_config.json: {key} {sides[key]!r} is not 'left' or 'right'"
            )
    return ClipTokenizer(
        tokenizer,
        context_length,
        pad_token=_token_content(settings.get("pad_token")) or "<|endoftext|>",
        bos_token=_token_content(settings.get("bos_token")) or "<|startoftext|>",
        eos_token=_token_content(settings.get("eos_token")) or "<|endoftext|>",
        where=str(directory),
        **sides,
    )


# -- loading ---------------------------------------------------------------------------------------


def clip_from_tensors(
    config: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    processor_config: Mapping[str, Any] | None = None,
    tokenizer: ClipTokenizer | None = None,
    where: str = "checkpoint",
) -> Pretrained:
    """`load_clip` from what its files hold: config.json, the state dict (numpy arrays),
    preprocessor_config.json (None: CLIPImageProcessor's defaults at the config's image_size) and
    the tokenizer (None: captions cannot be ranked; `predict_rank_captions` says so)."""
    import jax
    import jax.numpy as jnp

    from attn_jax.models.clip import CLIP
    from attn_jax.pretrained.preprocess import from_hf_processor_config

    kwargs = clip_kwargs_from_config(config, f"{where}/config.json")
    variables = convert_clip_tensors(tensors, kwargs, where)
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables)
    size = kwargs["image_size"]
    if processor_config is None:
        processor_config = {
            "size": {"shortest_edge": size},
            "crop_size": {"height": size, "width": size},
        }
    preprocess = from_hf_processor_config(processor_config, model_type="clip")
    # Any input size tells whether the crop (or an exact resize) lands on the model's size.
    if preprocess.output_size(size, size) != (size, size):
        raise PretrainedError(
            f"{where}/preprocessor_config.json makes {preprocess.output_size(size, size)} images "
            f"but the model's position embeddings are for image_size {size}; use the "
            "checkpoint's own preprocessor_config.json"
        )
    return Pretrained(
        model=CLIP(**kwargs),
        variables=variables,
        preprocess=preprocess,
        kind="contrastive",
        labels=None,
        config=dict(config),
        extras={"tokenizer": tokenizer, "image_size": (size, size)},
    )


def load_clip(directory: str | Path) -> Pretrained:
    """A CLIPModel directory (config.json, model.safetensors or pytorch_model.bin,
    preprocessor_config.json, tokenizer.json or vocab.json + merges.txt) as a kind "contrastive"
    `Pretrained`.

    `extras["tokenizer"]` is a `ClipTokenizer` (captions -> int32 [n, context_length]), or None
    when the directory has no tokenizer files (`extras["tokenizer_error"]` then says which).

    Raises:
      PretrainedError: a directory without config or weights, another model type, an unsupported
        setting, or tensors that do not match the config (named).
    """
    directory = Path(directory)
    config = read_config(directory)
    kwargs = clip_kwargs_from_config(config, str(directory / "config.json"))
    path = weights_file(directory)
    tokenizer, tokenizer_error = None, None
    try:
        tokenizer = load_clip_tokenizer(directory, kwargs["context_length"])
    except PretrainedError as e:
        # The image tower is usable without one; ranking captions reports this message.
        tokenizer_error = str(e)
    pretrained = clip_from_tensors(
        config,
        read_state_dict(path),
        read_json(directory, "preprocessor_config.json"),
        tokenizer,
        where=str(directory),
    )
    pretrained.extras["tokenizer_error"] = tokenizer_error
    return pretrained


# -- caption ranking -------------------------------------------------------------------------------


def clip_forward(model: Any) -> Callable[..., Any]:
    """jit of (variables, images [B, H, W, 3], tokens [n, T]) -> {"logits_per_image" [B, n],
    "image_embeds" [B, E], "text_embeds" [n, E]}, float32 with full-precision matmuls.

    The logits are exp(logit_scale) I_e T_e^T without the clipping at 100, as transformers
    computes them (module docstring).
    """
    import jax
    import jax.numpy as jnp

    def forward(variables, images, tokens):
        with jax.default_matmul_precision("highest"):
            _, aux = model.apply(variables, images, tokens)
            scale = jnp.exp(variables["params"]["logit_scale"].astype(jnp.float32))
            logits = scale * jnp.einsum("ie,te->it", aux["image_embeds"], aux["text_embeds"])
        return {
            "logits_per_image": logits,
            "image_embeds": aux["image_embeds"],
            "text_embeds": aux["text_embeds"],
        }

    return jax.jit(forward)


def _forward_fn(pretrained: Pretrained) -> Callable[..., Any]:
    """The jitted forward pass of a converted CLIP, compiled once per `Pretrained` (and caption
    count)."""
    if "forward" not in pretrained.extras:
        pretrained.extras["forward"] = clip_forward(pretrained.model)
    return pretrained.extras["forward"]


def predict_rank_captions_batch(
    pretrained: Pretrained, images: Sequence[Any], captions: Sequence[str]
) -> list[dict[str, Any]]:
    """Ranks captions for several images in one batch with a converted CLIP (`load_clip`).

    Args:
      pretrained: a kind "contrastive" `Pretrained` with a tokenizer.
      images: image paths, PIL images or uint8 [H, W, 3] arrays (at least one).
      captions: the candidate captions (at least one), the same for every image.

    Returns:
      per image, in order: {"captions": the captions, "probabilities": softmax over the captions
      of the image's logits [n], "logits_per_image": [1][n], "image_embeds": [1][E],
      "text_embeds": [n][E] (both L2-normalized), "image_size": [height, width] of the original
      image}; JSON-serialisable.

    Raises:
      ValueError: a `Pretrained` of another kind, no images or no captions.
      PretrainedError: the checkpoint had no tokenizer files.
      ImageError: an image that cannot be read.
    """
    from attn_jax.pretrained.preprocess import read_image

    if pretrained.kind != "contrastive":
        raise ValueError(
            f"predict_rank_captions needs a CLIP checkpoint (kind 'contrastive'); got kind "
            f"{pretrained.kind!r}; use a CLIPModel directory"
        )
    if not images:
        raise ValueError("predict_rank_captions_batch needs at least one image")
    tokenizer = pretrained.extras.get("tokenizer")
    if tokenizer is None:
        raise PretrainedError(
            pretrained.extras.get("tokenizer_error")
            or "this CLIP checkpoint was loaded without a tokenizer; pass its tokenizer.json"
        )
    captions = [captions] if isinstance(captions, str) else list(captions)
    tokens = tokenizer(captions)
    pictures = [read_image(image) for image in images]
    inputs = pretrained.preprocess.batch(pictures)
    out = _forward_fn(pretrained)(pretrained.variables, inputs["image"], tokens)
    logits = np.asarray(out["logits_per_image"], np.float32)
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    probabilities = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    image_embeds = np.asarray(out["image_embeds"])
    text_embeds = np.asarray(out["text_embeds"]).tolist()
    return [
        {
            "captions": captions,
            "probabilities": probabilities[i].tolist(),
            "logits_per_image": logits[i : i + 1].tolist(),
            "image_embeds": image_embeds[i : i + 1].tolist(),
            "text_embeds": text_embeds,
            "image_size": [picture.height, picture.width],
        }
        for i, picture in enumerate(pictures)
    ]


def predict_rank_captions(
    pretrained: Pretrained, image: Any, captions: Sequence[str]
) -> dict[str, Any]:
    """Ranks captions for one image with a converted CLIP (`load_clip`):
    `predict_rank_captions_batch` of one image.

    Args:
      pretrained: a kind "contrastive" `Pretrained` with a tokenizer.
      image: an image path, a PIL image or a uint8 [H, W, 3] array.
      captions: the candidate captions (at least one).

    Returns:
      {"captions": the captions, "probabilities": softmax over the captions of the image's logits
      [n], "logits_per_image": [1][n], "image_embeds": [1][E], "text_embeds": [n][E] (both
      L2-normalized), "image_size": [height, width] of the original image}; JSON-serialisable.

    Raises:
      ValueError: a `Pretrained` of another kind, or no captions.
      PretrainedError: the checkpoint had no tokenizer files.
      ImageError: an image that cannot be read.
    """
    return predict_rank_captions_batch(pretrained, [image], captions)[0]


__all__ = [
    "ClipTokenizer",
    "clip_forward",
    "clip_from_tensors",
    "clip_kwargs_from_config",
    "clip_sub_configs",
    "convert_clip_tensors",
    "eot_id_from_config",
    "load_clip",
    "load_clip_tokenizer",
    "predict_rank_captions",
    "predict_rank_captions_batch",
]
