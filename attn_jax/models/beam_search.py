"""Autoregressive search for sequence models: greedy decoding and beam search with the length
penalty of Wu, Schuster, Chen, Le, Norouzi et al. 2016, "Google's Neural Machine Translation
System: Bridging the Gap between Human and Machine Translation" (GNMT), sec. 7:

    s(Y, X) = log P(Y | X) / lp(Y),    lp(Y) = ((5 + |Y|) / 6)^alpha,

the scoring Vaswani et al. 2017 use with beam size 4 and alpha = 0.6 (sec. 6.1). |Y| counts the
generated tokens including EOS (BOS excluded); a hypothesis that reaches `max_length` without EOS
is scored with |Y| = max_length. GNMT's coverage penalty is not implemented (beta = 0).

Both searches are model-agnostic: they drive a `step_fn(last_tokens, cache, step)` that returns
the next-token scores and the updated cache (the key/value cache of a decoder), inside one
`lax.while_loop`, so nothing loops over steps in Python under jit.

Beam search bookkeeping (the rule of fairseq's sequence generator, chosen because beam size 1 then
is exactly greedy decoding): each step ranks the 2k best one-token extensions of the k live
hypotheses; the EOS-ending ones among the best k are finished, the best k that do not end in EOS
stay alive (2k candidates always hold k of them, since each hypothesis contributes at most one EOS
extension). A sentence is done once it has k finished hypotheses, or at `max_length`, where its
live hypotheses are finished as they stand. The best finished hypothesis by s(Y, X) is returned
first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PAD, BOS, EOS = 0, 1, 2

# step_fn(last_tokens [N], cache, step) -> (scores [N, V], cache) or (scores, cache, record).
StepFn = Callable[[jax.Array, Any, jax.Array], tuple[Any, ...]]


def gnmt_length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
    """lp(Y) = ((5 + |Y|) / 6)^alpha of GNMT sec. 7; 1 for alpha = 0 or |Y| = 1."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def tile_beams(tree: Any, beam_size: int) -> Any:
    """Repeats every leaf's leading batch axis beam_size times: [B, ...] -> [B * k, ...], with row
    b * k + j holding beam j of example b (the layout `beam_search` expects of its cache)."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, beam_size, axis=0), tree)


def _gather_rows(cache: Any, rows: jax.Array) -> Any:
    # Leaves without the flattened beam axis (e.g. a scalar cache index) are shared by all beams.
    n = rows.shape[0]

    def gather(x):
        if x.ndim == 0 or x.shape[0] != n:
            return x
        return jnp.take(x, rows, axis=0)

    return jax.tree_util.tree_map(gather, cache)


def greedy_search(
    step_fn: StepFn,
    cache: Any,
    *,
    batch_size: int,
    max_length: int,
    bos: int = BOS,
    eos: int = EOS,
    pad: int = PAD,
    record_like: Any = None,
) -> tuple[jax.Array, Any]:
    """y_t = argmax_v p(v | y_<t, X) until EOS (kept) or `max_length`; PAD after EOS.

    Args:
      step_fn: (last tokens [B], cache, step) -> (logits or log-probs [B, V], cache[, record]);
        `record` (a pytree of [B, ...] arrays, e.g. attention weights) is returned only when
        `record_like` is given.
      cache: the decoder state for batch rows [B].
      batch_size: B.
      max_length: number of generated positions L.
      bos, eos, pad: token ids.
      record_like: a pytree of `jax.ShapeDtypeStruct` [B, ...] describing `record`, or None.

    Returns:
      (tokens int32 [B, L], records [B, L, ...] (zeros after the loop stopped) or None).
    """
    tokens = jnp.full((batch_size, max_length), pad, jnp.int32)
    records = None
    if record_like is not None:
        records = jax.tree_util.tree_map(
            lambda s: jnp.zeros((s.shape[0], max_length, *s.shape[1:]), s.dtype), record_like
        )
    last = jnp.full((batch_size,), bos, jnp.int32)
    done = jnp.zeros((batch_size,), bool)

    def cond(state):
        i, _, _, done, _, _ = state
        return (i < max_length) & ~jnp.all(done)

    def body(state):
        i, tokens, last, done, cache, records = state
        out = step_fn(last, cache, i)
        scores, cache = out[0], out[1]
        token = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        token = jnp.where(done, pad, token)
        tokens = tokens.at[:, i].set(token)
        if records is not None:
            records = jax.tree_util.tree_map(lambda buf, r: buf.at[:, i].set(r), records, out[2])
        return i + 1, tokens, token, done | (token == eos), cache, records

    state = (jnp.array(0, jnp.int32), tokens, last, done, cache, records)
    _, tokens, _, _, _, records = jax.lax.while_loop(cond, body, state)
    return tokens, records


def beam_search(
    step_fn: StepFn,
    cache: Any,
    *,
    batch_size: int,
    beam_size: int,
    max_length: int,
    length_penalty: float = 0.6,
    bos: int = BOS,
    eos: int = EOS,
    pad: int = PAD,
) -> tuple[jax.Array, jax.Array]:
    """Beam search maximizing log P(Y | X) / lp(Y) (see the module docstring for the rule).

    Args:
      step_fn: (last tokens [B * k], cache, step) -> (log-probabilities [B * k, V], cache, ...);
        the scores must be normalized log-probabilities (they are summed along a hypothesis).
      cache: decoder state with rows [B * k] laid out as `tile_beams` does; leaves whose leading
        axis is B * k are reordered when hypotheses are, other leaves are left as they are.
      batch_size: B.
      beam_size: k.
      max_length: number of generated positions L.
      length_penalty: alpha of lp(Y).
      bos, eos, pad: token ids.

    Returns:
      (tokens int32 [B, k, L] best first, PAD after EOS; scores float32 [B, k], -inf for slots
      that hold no hypothesis).
    """
    b, k, n = batch_size, beam_size, batch_size * beam_size
    neg_inf = jnp.array(-jnp.inf, jnp.float32)
    # Only beam 0 is live at the start; k identical copies would fill the beam with duplicates.
    alive_logp = jnp.where(jnp.arange(k) == 0, 0.0, neg_inf)[None].repeat(b, axis=0)
    state = dict(
        i=jnp.array(0, jnp.int32),
        alive_seq=jnp.full((b, k, max_length), pad, jnp.int32),
        alive_logp=alive_logp,
        last=jnp.full((b, k), bos, jnp.int32),
        fin_seq=jnp.full((b, k, max_length), pad, jnp.int32),
        fin_score=jnp.full((b, k), neg_inf),
        fin_count=jnp.zeros((b,), jnp.int32),
        cache=cache,
    )

    def cond(s):
        return (s["i"] < max_length) & ~jnp.all(s["fin_count"] >= k)

    def body(s):
        i = s["i"]
        logp, cache = step_fn(s["last"].reshape(n), s["cache"], i)[:2]
        vocab = logp.shape[-1]
        cand = s["alive_logp"][:, :, None] + logp.reshape(b, k, vocab).astype(jnp.float32)
        top_logp, top_idx = jax.lax.top_k(cand.reshape(b, k * vocab), 2 * k)  # [B, 2k]
        origin, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(s["alive_seq"], origin[:, :, None], axis=1)
        seqs = seqs.at[:, :, i].set(token)  # [B, 2k, L]
        is_eos = token == eos

        # Finish the EOS extensions among the k best candidates of sentences not yet done.
        finish = is_eos & (jnp.arange(2 * k) < k)[None] & (s["fin_count"] < k)[:, None]
        finish &= jnp.isfinite(top_logp)
        new_score = jnp.where(
            finish, top_logp / gnmt_length_penalty(i + 1, length_penalty), -jnp.inf
        )
        pool_score = jnp.concatenate([s["fin_score"], new_score], axis=1)  # [B, 3k]
        pool_seq = jnp.concatenate([s["fin_seq"], seqs], axis=1)
        fin_score, keep = jax.lax.top_k(pool_score, k)
        fin_seq = jnp.take_along_axis(pool_seq, keep[:, :, None], axis=1)

        # The k best non-EOS extensions stay alive; the cache follows their origins.
        alive_logp, pick = jax.lax.top_k(jnp.where(is_eos, -jnp.inf, top_logp), k)
        alive_origin = jnp.take_along_axis(origin, pick, axis=1)  # [B, k]
        rows = (jnp.arange(b)[:, None] * k + alive_origin).reshape(n)
        return dict(
            i=i + 1,
            alive_seq=jnp.take_along_axis(seqs, pick[:, :, None], axis=1),
            alive_logp=alive_logp,
            last=jnp.take_along_axis(token, pick, axis=1),
            fin_seq=fin_seq,
            fin_score=fin_score,
            fin_count=s["fin_count"] + jnp.sum(finish, axis=1, dtype=jnp.int32),
            cache=_gather_rows(cache, rows),
        )

    s = jax.lax.while_loop(cond, body, state)
    # Sentences cut by max_length finish their live hypotheses as they stand (no EOS).
    open_ = (s["fin_count"] < k)[:, None] & jnp.isfinite(s["alive_logp"])
    alive_score = s["alive_logp"] / gnmt_length_penalty(s["i"], length_penalty)
    pool_score = jnp.concatenate([s["fin_score"], jnp.where(open_, alive_score, -jnp.inf)], 1)
    pool_seq = jnp.concatenate([s["fin_seq"], s["alive_seq"]], axis=1)
    scores, keep = jax.lax.top_k(pool_score, k)
    return jnp.take_along_axis(pool_seq, keep[:, :, None], axis=1), scores


__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "beam_search",
    "gnmt_length_penalty",
    "greedy_search",
    "tile_beams",
]
