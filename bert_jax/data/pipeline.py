"""tf.data input pipeline for BERT pretraining TFRecords (ours, the original's, MLPerf's).

Usage (what the training loop sees)::

    it = make_iterator("data/wiki/pretraining-*.tfrecord", batch_size=per_host_batch, max_seq_length=128,
                       max_predictions_per_seq=20, seed=0, process_index=0, process_count=1)
    batch = next(it)        # dict of numpy arrays, leading dim = per-host batch:
                            #   input_ids, attention_mask, token_type_ids     int32 [B, max_seq_length]
                            #   masked_lm_positions, masked_lm_ids            int32 [B, max_predictions]
                            #   masked_lm_weights                             float32 [B, max_predictions]
                            #   next_sentence_labels                          int32 [B, 1] (1 = random next)
    state = it.get_state()  # small JSON-able dict; save it with the checkpoint
    it = make_iterator(..., state=state)   # or it.set_state(state): the next batches are exactly those
                                           # the uninterrupted run would have seen

Batches use the model's names (``attention_mask``, ``token_type_ids``); the files keep the original's
(``input_mask``, ``segment_ids``), and `bert_jax.data.records` translates.

This module sees host numpy only: the caller says which slice of the global batch this host reads
(``process_index`` / ``process_count``), and `bert_jax.training.parallel` puts batches on devices.

What happens per epoch ``e`` (deterministic given ``seed``, ``e`` and the file list -- and the same global
batches whatever the number of hosts):

1. the files (sorted by name) are shuffled with a seed derived from (seed, e) and read interleaved;
2. the record stream is shuffled with a buffer of ``shuffle_buffer`` serialized records (seed from (seed, e));
   every host reads and shuffles the same stream;
3. it is cut into global batches of ``batch_size * process_count`` records (an epoch's last partial batch
   is dropped) and host ``process_index`` keeps rows ``[process_index * batch_size, (process_index + 1) *
   batch_size)`` of each: hosts get disjoint slices of equal size that together are exactly the batch a
   single host would see with ``batch_size * process_count``;
4. the host's slice is parsed (only its own records);
5. dynamic masking (``dynamic_masking=True``): masks drawn by :func:`bert_jax.data.pretraining.mask_tokens`
   from a counter-based generator keyed by (seed, e, the example's position in the epoch) -- the same after
   a restore or with another number of hosts, and fresh every epoch. Works on unmasked pairs
   (``--dynamic_masking`` files) and also on masked files, whose original ids are put back first;
6. prefetched.

Every host reads (but does not parse) every record: simple and exact, at the cost of I/O that grows with the
number of hosts. The iterator state is ``{epoch, batch_in_epoch}`` (plus what must match to resume: seed,
files, global batch size -- a state also resumes on another number of hosts with the same global batch);
resuming rebuilds epoch ``e`` and skips ``batch_in_epoch`` global batches *before* parsing (only raw records
are read and shuffled).
TensorFlow's op-level seeds are used: the order also depends on TF's global seed, so do not call
``tf.random.set_seed`` differently between the original and the resumed run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from typing import Iterator, Sequence

import numpy as np

from bert_jax import fileio
from bert_jax.data import pretraining, records

__all__ = ["PipelineConfig", "PretrainingIterator", "make_config", "make_iterator", "check_data", "list_files",
           "inspect_record_file"]

_FILE_ORDER_TAG = 0x66696C65
_SHUFFLE_TAG = 0x73687566
_MASK_TAG = 0x6D61736B
STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    batch_size: int                      # per host
    max_seq_length: int
    max_predictions_per_seq: int
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 10_000
    shuffle_files: bool = True
    epochs: int | None = None            # None: repeat forever
    dynamic_masking: bool = False
    masked_lm_prob: float = 0.15
    whole_word_mask: bool = False
    vocab_size: int | None = None        # dynamic masking: random replacement ids are drawn from [0, vocab_size)
    mask_id: int | None = None
    word_start_table: np.ndarray | None = dataclasses.field(default=None, repr=False)
    prefetch: int = 2
    cycle_length: int = 8                # files read in parallel


def list_files(file_patterns: str | Sequence[str]) -> list[str]:
    """The files of comma-separated paths / globs (`bert_jax.fileio.expand_patterns`), sorted by name:
    the order an epoch starts from. ValueError naming a pattern that matches nothing."""
    return sorted(fileio.expand_patterns(file_patterns, "file_patterns"))


def inspect_record_file(path: str) -> dict[str, tuple[str, int]] | None:
    """``{feature: (kind, length)}`` of the first record of a TFRecord file, None if it holds no record."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(12)
        if not head:
            return None
        if len(head) < 12:
            raise ValueError(f"{path}: not a TFRecord file (truncated header)")
        (length,) = struct.unpack("<Q", head[:8])
        if records.masked_crc32c(head[:8]) != struct.unpack("<I", head[8:])[0]:
            raise ValueError(f"{path}: not a TFRecord file (bad length checksum); is it compressed or another format?")
        data = f.read(length)
    try:
        ex = tf.train.Example.FromString(data)
    except Exception as e:  # protobuf DecodeError
        raise ValueError(f"{path}: first record is not a tf.train.Example ({e})") from e
    out = {}
    for name, feat in ex.features.feature.items():
        which = feat.WhichOneof("kind")
        values = getattr(feat, which).value if which else []
        out[name] = ({"int64_list": "int64", "float_list": "float", "bytes_list": "bytes"}.get(which, "none"),
                     len(values))
    return out


def check_config(cfg: PipelineConfig) -> None:
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size={cfg.batch_size} must be >= 1")
    if cfg.seed < 0:
        raise ValueError(f"seed={cfg.seed} must be >= 0")
    if cfg.dynamic_masking and (cfg.vocab_size is None or cfg.mask_id is None):
        raise ValueError("dynamic_masking needs vocab_size and mask_id (pass tokenizer=...)")
    if cfg.dynamic_masking and cfg.whole_word_mask and cfg.word_start_table is None:
        raise ValueError("whole-word dynamic masking needs word_start_table (pass tokenizer=...)")


def check_data(files: Sequence[str], cfg: PipelineConfig) -> str:
    """Checks ``cfg`` and each file's first record against the requested lengths, without reading
    further; returns the record kind (`records.MASKED` / `records.UNMASKED`)."""
    check_config(cfg)
    kinds_seen = set()
    for path in files:
        feats = inspect_record_file(path)
        if feats is None:
            continue
        kind = records.MASKED if "masked_lm_positions" in feats else records.UNMASKED
        kinds_seen.add(kind)
        expected = records.feature_lengths(kind, cfg.max_seq_length, cfg.max_predictions_per_seq)
        expected_kind = records.feature_kinds(kind)
        for name, n in expected.items():
            if name not in feats:
                raise ValueError(f"{path}: records lack feature {name!r} (they have {sorted(feats)}); expected "
                                 f"BERT pretraining records ({kind}: {sorted(expected)})")
            got_kind, got_n = feats[name]
            if got_kind != expected_kind[name]:
                raise ValueError(f"{path}: feature {name!r} is {got_kind}, expected {expected_kind[name]}")
            if got_n != n:
                what = "max_seq_length" if n == cfg.max_seq_length and name in ("input_ids", "input_mask",
                                                                                  "segment_ids") else (
                    "max_predictions_per_seq" if name.startswith("masked_lm") else "length")
                raise ValueError(f"{path}: feature {name!r} has length {got_n} but the pipeline was asked for "
                                 f"{what}={n}; pass {what}={got_n} (or regenerate the data)")
        if kind == records.UNMASKED and not cfg.dynamic_masking:
            raise ValueError(f"{path} holds unmasked pairs (written with --dynamic_masking): use "
                             "dynamic_masking=True to mask them on the fly")
    if len(kinds_seen) > 1:
        raise ValueError(f"the files mix masked and unmasked records ({sorted(kinds_seen)}); use one kind")
    if not kinds_seen:
        raise ValueError(f"the {len(files)} file(s) hold no records (first: {files[0]})")
    return kinds_seen.pop()


def _derive_seed(*entropy: int) -> int:
    ss = np.random.SeedSequence([int(e) for e in entropy])
    return int(ss.generate_state(1, np.uint32)[0] & 0x7FFFFFFF)


class PretrainingIterator:
    """Iterator of per-host batches (dicts of numpy arrays) with a restorable position."""

    def __init__(self, files: Sequence[str], cfg: PipelineConfig, process_index: int, process_count: int,
                 record_kind: str, state: dict | None = None):
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
        check_config(cfg)
        self.files = list(files)
        self.cfg = cfg
        self.process_index = int(process_index)
        self.process_count = int(process_count)
        self.record_kind = record_kind
        self._files_hash = hashlib.sha256("\n".join(f.rsplit("/", 1)[-1] for f in self.files).encode()
                                          ).hexdigest()[:16]
        self.epoch = 0
        self.batch_in_epoch = 0
        self._it = None
        if state is not None:
            self.set_state(state)

    # -- state -----------------------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Position after the last batch returned: JSON-able."""
        return {"version": STATE_VERSION, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "seed": self.cfg.seed, "global_batch_size": self.cfg.batch_size * self.process_count,
                "batch_size": self.cfg.batch_size, "process_index": self.process_index,
                "process_count": self.process_count, "num_files": len(self.files), "files_hash": self._files_hash}

    def set_state(self, state: dict) -> None:
        """Resumes at ``state`` (from :meth:`get_state`); the number of hosts may differ as long as the global
        batch (per-host batch x hosts) is the same."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a pipeline state (version {STATE_VERSION}): {state!r}")
        mine = self.get_state()
        for key in ("seed", "global_batch_size", "num_files", "files_hash"):
            if state.get(key) != mine[key]:
                raise ValueError(f"cannot resume: the saved pipeline state has {key}={state.get(key)!r} but this "
                                 f"pipeline has {key}={mine[key]!r}; the batches would differ. Use the same files, "
                                 "seed and global batch size (per-host batch x hosts).")
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self._it = None

    # -- iteration -------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        empty_epochs = 0
        while True:
            if self.cfg.epochs is not None and self.epoch >= self.cfg.epochs:
                raise StopIteration
            if self._it is None:
                self._it = iter(self._epoch_dataset(self.epoch, self.batch_in_epoch).as_numpy_iterator())
            try:
                batch = next(self._it)
            except StopIteration:
                if self.batch_in_epoch == 0:
                    empty_epochs += 1
                    if empty_epochs > 1 or self.cfg.epochs is None:
                        raise ValueError(
                            f"an epoch of {len(self.files)} file(s) gives no full batch of {self.cfg.batch_size} "
                            f"on host {self.process_index}/{self.process_count}: the data has fewer than "
                            f"{self.cfg.batch_size * self.process_count} records; use a smaller batch") from None
                self.epoch += 1
                self.batch_in_epoch = 0
                self._it = None
                continue
            self.batch_in_epoch += 1
            return batch

    def _epoch_dataset(self, epoch: int, skip_batches: int):
        import tensorflow as tf

        cfg = self.cfg
        files = list(self.files)
        if cfg.shuffle_files and len(files) > 1:
            order = np.random.default_rng(_derive_seed(_FILE_ORDER_TAG, cfg.seed, epoch)).permutation(len(files))
            files = [files[i] for i in order]
        ds = tf.data.Dataset.from_tensor_slices(files)
        cycle = max(1, min(cfg.cycle_length, len(files)))
        read = lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20)  # noqa: E731
        if cycle > 1:
            ds = ds.interleave(read, cycle_length=cycle, block_length=1, num_parallel_calls=cycle,
                               deterministic=True)
        else:
            ds = ds.flat_map(read)
        if cfg.shuffle:
            ds = ds.shuffle(cfg.shuffle_buffer, seed=_derive_seed(_SHUFFLE_TAG, cfg.seed, epoch),
                            reshuffle_each_iteration=False)
        per_host, hosts = cfg.batch_size, self.process_count
        ds = ds.batch(per_host * hosts, drop_remainder=True)   # global batches of serialized records
        if skip_batches:
            ds = ds.skip(skip_batches)   # raw records only: nothing is parsed for the skipped batches
        if hosts > 1:
            lo = self.process_index * per_host
            ds = ds.map(lambda serialized: serialized[lo:lo + per_host])
        parse_records = records.parse_fn(cfg.max_seq_length, cfg.max_predictions_per_seq, self.record_kind)

        def parse(serialized):
            feats = parse_records(serialized)
            return {k: (tf.cast(v, tf.int32) if v.dtype == tf.int64 else v) for k, v in feats.items()}

        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if cfg.dynamic_masking:
            ds = ds.enumerate(start=skip_batches).map(self._tf_mask_fn(epoch))
        return ds.prefetch(cfg.prefetch)

    def _tf_mask_fn(self, epoch: int):
        import tensorflow as tf

        cfg = self.cfg
        b, seq, npred = cfg.batch_size, cfg.max_seq_length, cfg.max_predictions_per_seq
        table = None if cfg.word_start_table is None else np.asarray(cfg.word_start_table, dtype=bool)
        has_masks = self.record_kind == records.MASKED
        host, hosts = self.process_index, self.process_count

        def mask_np(index, input_ids, attention_mask, token_type_ids, positions, label_ids, weights):
            ids = np.array(input_ids)
            if has_masks:  # put the original tokens back before drawing fresh masks
                rows, cols = np.nonzero(weights > 0)
                ids[rows, positions[rows, cols]] = label_ids[rows, cols]
            first = int(index) * b * hosts + host * b   # position in the epoch of this slice's first example
            rng = pretraining.KeyedRandom((_MASK_TAG, cfg.seed, epoch), np.arange(first, first + len(ids)))
            out = pretraining.dynamic_mask_batch(
                {"input_ids": ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}, rng,
                masked_lm_prob=cfg.masked_lm_prob, max_predictions=npred, vocab_size=cfg.vocab_size,
                mask_id=cfg.mask_id, whole_word=cfg.whole_word_mask, word_start_table=table)
            return (out["input_ids"].astype(np.int32), out["masked_lm_positions"].astype(np.int32),
                    out["masked_lm_ids"].astype(np.int32), out["masked_lm_weights"].astype(np.float32))

        def fn(index, batch):
            if has_masks:
                extra = [batch["masked_lm_positions"], batch["masked_lm_ids"], batch["masked_lm_weights"]]
            else:
                zeros = tf.zeros([b, 1], tf.int32)
                extra = [zeros, zeros, tf.zeros([b, 1], tf.float32)]
            ids, pos, lab, w = tf.numpy_function(
                mask_np, [index, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], *extra],
                [tf.int32, tf.int32, tf.int32, tf.float32], stateful=False)
            ids.set_shape([b, seq])
            pos.set_shape([b, npred])
            lab.set_shape([b, npred])
            w.set_shape([b, npred])
            return {"input_ids": ids, "attention_mask": batch["attention_mask"],
                    "token_type_ids": batch["token_type_ids"],
                    "masked_lm_positions": pos, "masked_lm_ids": lab, "masked_lm_weights": w,
                    "next_sentence_labels": batch["next_sentence_labels"]}

        return fn


def make_config(*, batch_size: int, max_seq_length: int, max_predictions_per_seq: int, seed: int = 0,
                shuffle: bool = True, shuffle_buffer: int = 10_000, shuffle_files: bool = True,
                epochs: int | None = None, dynamic_masking: bool = False, masked_lm_prob: float = 0.15,
                whole_word_mask: bool = False, tokenizer=None, vocab_size: int | None = None,
                mask_id: int | None = None, word_start_table=None, prefetch: int = 2,
                cycle_length: int = 8) -> PipelineConfig:
    """A `PipelineConfig`; ``tokenizer`` gives ``vocab_size``, ``mask_id`` and ``word_start_table``."""
    if tokenizer is not None:
        vocab_size = tokenizer.vocab_size if vocab_size is None else vocab_size
        mask_id = tokenizer.mask_id if mask_id is None else mask_id
        if word_start_table is None:
            word_start_table = tokenizer.word_start_table
    return PipelineConfig(batch_size=int(batch_size), max_seq_length=int(max_seq_length),
                          max_predictions_per_seq=int(max_predictions_per_seq), seed=int(seed), shuffle=shuffle,
                          shuffle_buffer=int(shuffle_buffer), shuffle_files=shuffle_files, epochs=epochs,
                          dynamic_masking=dynamic_masking, masked_lm_prob=float(masked_lm_prob),
                          whole_word_mask=whole_word_mask, vocab_size=vocab_size, mask_id=mask_id,
                          word_start_table=word_start_table, prefetch=int(prefetch), cycle_length=int(cycle_length))


def make_iterator(file_patterns: str | Sequence[str], *, process_index: int, process_count: int,
                  state: dict | None = None, **config) -> PretrainingIterator:
    """A restorable iterator of per-host batches (see the module docstring).

    Args:
      file_patterns: TFRecord paths/globs (comma-separated string or list).
      process_index, process_count: this host's slice of each global batch (one host: 0, 1).
      state: resume from :meth:`PretrainingIterator.get_state`.
      **config: `make_config`'s arguments: ``batch_size`` (examples per host per batch),
        ``max_seq_length`` and ``max_predictions_per_seq`` (must match the records: checked on each file's
        first record), ``seed`` (order and dynamic masks are a function of (seed, epoch)), ``epochs``
        (None repeats forever), ``dynamic_masking`` (draw masks on the fly; needs ``tokenizer`` or
        ``vocab_size`` + ``mask_id``, whole-word masking also the tokenizer's ``word_start_table``), ...
    """
    cfg = make_config(**config)
    files = list_files(file_patterns)
    kind = check_data(files, cfg)
    return PretrainingIterator(files, cfg, int(process_index), int(process_count), kind, state=state)
