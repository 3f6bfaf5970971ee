"""Fine-tuning batches from encoded arrays, host numpy only: fixed-size batches within length buckets.

``arrays``: ``input_ids``, ``token_type_ids``, ``attention_mask`` [N, L] and the labels of a head
(``labels`` [N] or [N, L], ``start_positions`` / ``end_positions`` [N]); batches add ``weights`` [B]
(0 for padding rows). Used by `bert_jax.training.finetune` (training and `Finetuner.predict`).
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from bert_jax.cli import parse_list

INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
IGNORE_INDEX = -100   # token tags that take no part in the loss (padding, word continuations)

# Short texts padded to max_seq_length waste most of the compute (Rotten Tomatoes: 27 tokens on average
# at max_seq_length 128). Each example goes into the smallest bucket length that holds it, batches are
# formed within a bucket, and every array with a length axis is cut to the bucket's length: a few static
# shapes, each compiled once. With attention masking the outputs at real positions do not depend on
# the padding, so only the composition of the training batches changes.

DEFAULT_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
PAD_LOGIT = -1e9   # per-position outputs (token tags, answer spans) past a bucket's length


def bucket_lengths(max_len: int, buckets=None) -> tuple:
    """The bucket lengths for sequences of at most ``max_len``: ``buckets`` (default `DEFAULT_BUCKETS`;
    a comma-separated string works) below ``max_len``, then ``max_len``. ``"none"`` / ``()``: no buckets."""
    if buckets is None or (isinstance(buckets, str) and not buckets.strip()):
        buckets = DEFAULT_BUCKETS
    elif isinstance(buckets, str):
        buckets = () if buckets.strip().lower() in ("none", "off", "0") else parse_list(buckets, int)
    return tuple(sorted({int(b) for b in buckets if 0 < int(b) < max_len} | {int(max_len)}))


def sequence_lengths(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """[N] positions each example needs: up to its last attended token, and to its last label (token tags
    other than -100, answer positions), so cutting at the bucket length never drops a target."""
    mask = np.asarray(arrays["attention_mask"])
    L = mask.shape[1]
    last = np.where(mask.any(1), L - np.argmax(mask[:, ::-1] != 0, axis=1), 1)
    labels = arrays.get("labels")
    if labels is not None and np.ndim(labels) == 2:
        tagged = np.asarray(labels) != IGNORE_INDEX
        last = np.maximum(last, np.where(tagged.any(1), L - np.argmax(tagged[:, ::-1], axis=1), 0))
    for key in ("start_positions", "end_positions"):
        if key in arrays:
            last = np.maximum(last, np.asarray(arrays[key]) + 1)
    return last.astype(np.int64)


def _bucket_batches(lengths, buckets, batch_size, order):
    """[(bucket length, example indices)] in ``order`` within each bucket, ``batch_size`` each; what does
    not fill a batch moves up to the next bucket, so only the very last batch is short (as unbucketed).
    That batch is cut at the bucket of its own longest example, not at the longest bucket."""
    assigned = np.searchsorted(np.asarray(buckets), lengths[order])   # index of the smallest bucket >= length
    batches, carry = [], np.zeros(0, np.int64)
    for b, L in enumerate(buckets):
        idx = np.concatenate([carry, order[assigned == b]])
        full = len(idx) // batch_size * batch_size
        batches += [(L, idx[s:s + batch_size]) for s in range(0, full, batch_size)]
        carry = idx[full:]
    if len(carry):
        batches.append((buckets[int(np.searchsorted(np.asarray(buckets), lengths[carry].max()))], carry))
    return batches


def _make_batch(arrays, idx, batch_size, L, keys):
    """Rows ``idx`` of ``keys``, length axes cut to ``L``, padded to ``batch_size`` rows of weight 0."""
    full_L = np.shape(arrays["input_ids"])[1]
    pad = batch_size - len(idx)
    batch = {}
    for k in keys:
        x = np.asarray(arrays[k])[idx]
        if x.ndim >= 2 and x.shape[1] == full_L and L < full_L:
            x = x[:, :L]
        if pad:
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        batch[k] = x
    w = np.ones(batch_size, np.float32)
    if pad:
        w[-pad:] = 0.0
    batch["weights"] = w
    return batch


def iterate_batches(arrays: Mapping[str, np.ndarray], batch_size: int, rng: Optional[np.random.Generator] = None,
                    keys=None, buckets=(), with_index: bool = False, skip: int = 0):
    """Yields ``(batch, number of real rows)`` (``with_index``: and the rows' example indices): fixed-size
    batches (the last one padded with weight-0 rows), shuffled when ``rng`` is given. With ``buckets`` (see
    `bucket_lengths`) batches are formed within length buckets, cut to the bucket's length, and their order
    is shuffled too. Every example is in exactly one batch; the same rng state gives the same batches.
    ``skip``: leave out the first batches (a resumed epoch); the rng is drawn from as without."""
    n = len(arrays["input_ids"])
    full_L = np.shape(arrays["input_ids"])[1]
    keys = keys or [k for k in arrays if k not in ("idx",)]
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if buckets and len(buckets) > 1:
        batches = _bucket_batches(sequence_lengths(arrays), tuple(buckets), batch_size, order)
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
    else:
        batches = [(full_L, order[s:s + batch_size]) for s in range(0, n, batch_size)]
    for L, idx in batches[skip:]:
        batch = _make_batch(arrays, idx, batch_size, L, keys)
        yield (batch, len(idx), idx) if with_index else (batch, len(idx))
