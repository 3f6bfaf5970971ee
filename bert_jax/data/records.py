"""TFRecord I/O for pretraining data: the original BERT feature spec, a fast writer, and parsers.

Two record kinds share the original's feature names (google-research/bert ``create_pretraining_data.py``;
MLPerf's BERT TFRecords use the same names, so all three read with one spec):

* ``masked`` (the original): ``input_ids``, ``input_mask``, ``segment_ids`` int64 ``[max_seq_length]``;
  ``masked_lm_positions``, ``masked_lm_ids`` int64 and ``masked_lm_weights`` float ``[max_predictions]``;
  ``next_sentence_labels`` int64 ``[1]`` (1 = B is a random segment / swapped for SOP).
* ``unmasked`` (for on-the-fly masking, ``--dynamic_masking``): ``input_ids``, ``input_mask``,
  ``segment_ids``, ``next_sentence_labels`` only. Word starts for whole-word masking are recomputed at read
  time from the tokenizer's ``word_start_table`` (an id alone says whether it starts a word).

Names: on disk the records keep the original's feature names above; in memory every batch uses the
model's argument names, ``attention_mask`` for ``input_mask`` and ``token_type_ids`` for ``segment_ids``
(the other names are the same). This module is the only place that translates (`FILE_NAMES`): the
writers take batches with the in-memory names, `parse_fn` and `read_examples` return them;
`feature_kinds`, `feature_lengths`, `feature_spec` and `parse_example_bytes` describe the file and use
the file's names.

The writer needs no TensorFlow: ``tf.train.Example`` protos are encoded with numpy for a whole batch of
instances at once (packed varints), framed as TFRecords with a vectorised CRC32C, and written to a
temporary name that is ``os.replace``-d into place on success, so a partial file never looks complete.
Parsing (`parse_fn`/`feature_spec`) imports TensorFlow lazily.
"""

from __future__ import annotations

import os
import struct
import tempfile
from typing import Mapping

import numpy as np

try:   # hardware CRC32C (SSE4.2 / ARMv8); the numpy path below is the fallback and the reference
    import google_crc32c as _hw_crc
    if getattr(_hw_crc, "implementation", "") != "c":
        _hw_crc = None
except ImportError:  # pragma: no cover - google-crc32c is in requirements.txt
    _hw_crc = None

__all__ = [
    "MASKED", "UNMASKED", "RECORD_KINDS", "FILE_NAMES", "batch_keys", "feature_spec", "feature_kinds", "parse_fn",
    "serialize_examples", "frame_records", "encode_records", "RecordWriter", "write_examples",
    "crc32c", "masked_crc32c", "read_raw_records", "parse_example_bytes", "read_examples", "read_summaries",
]

MASKED = "masked"
UNMASKED = "unmasked"
RECORD_KINDS = (MASKED, UNMASKED)

# Feature names and order as the original writes them; "f" = float_list, "i" = int64_list.
_MASKED_FEATURES = (
    ("input_ids", "i", "seq"), ("input_mask", "i", "seq"), ("segment_ids", "i", "seq"),
    ("masked_lm_positions", "i", "pred"), ("masked_lm_ids", "i", "pred"), ("masked_lm_weights", "f", "pred"),
    ("next_sentence_labels", "i", "one"),
)
_UNMASKED_FEATURES = (
    ("input_ids", "i", "seq"), ("input_mask", "i", "seq"), ("segment_ids", "i", "seq"),
    ("next_sentence_labels", "i", "one"),
)


# The one translation between the two vocabularies: in-memory batch key -> feature name in the file.
FILE_NAMES = {"attention_mask": "input_mask", "token_type_ids": "segment_ids"}
_MEMORY_NAMES = {file: memory for memory, file in FILE_NAMES.items()}


def _to_file_names(features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch with the in-memory names -> the same arrays under the file's names (for the writers)."""
    stale = sorted(set(features) & set(_MEMORY_NAMES))
    if stale:
        raise ValueError(f"in memory the features are named {[_MEMORY_NAMES[k] for k in stale]}, not {stale} "
                         "(those are the names in the file; the writer translates)")
    return {FILE_NAMES.get(k, k): v for k, v in features.items()}


def _to_memory_names(features: Mapping) -> dict:
    """Parsed features under the file's names -> the in-memory names (for the readers)."""
    return {_MEMORY_NAMES.get(k, k): v for k, v in features.items()}


def _features(kind: str):
    if kind == MASKED:
        return _MASKED_FEATURES
    if kind == UNMASKED:
        return _UNMASKED_FEATURES
    raise ValueError(f"unknown record kind {kind!r}; expected one of {RECORD_KINDS}")


def batch_keys(kind: str = MASKED) -> tuple[str, ...]:
    """The in-memory names of a record kind's features, in the original's order."""
    return tuple(_MEMORY_NAMES.get(name, name) for name, _, _ in _features(kind))


def feature_kinds(kind: str = MASKED) -> dict[str, str]:
    """``{name in the file: "int64" | "float"}`` for a record kind, in the original's order."""
    return {name: ("float" if t == "f" else "int64") for name, t, _ in _features(kind)}


def feature_lengths(kind: str, max_seq_length: int, max_predictions_per_seq: int) -> dict[str, int]:
    """``{name in the file: length}`` of every feature of a record kind."""
    sizes = {"seq": int(max_seq_length), "pred": int(max_predictions_per_seq), "one": 1}
    return {name: sizes[size] for name, _, size in _features(kind)}


def feature_spec(max_seq_length: int, max_predictions_per_seq: int = 0, kind: str = MASKED) -> dict:
    """``tf.io.FixedLenFeature`` spec for ``tf.io.parse_example`` (imports TensorFlow)."""
    import tensorflow as tf

    kinds = feature_kinds(kind)
    return {name: tf.io.FixedLenFeature([n], tf.float32 if kinds[name] == "float" else tf.int64)
            for name, n in feature_lengths(kind, max_seq_length, max_predictions_per_seq).items()}


def parse_fn(max_seq_length: int, max_predictions_per_seq: int = 0, kind: str = MASKED):
    """``parse(serialized [N]) -> {in-memory name: tensor [N, K]}`` (int64 / float32, as in the file):
    ``tf.io.parse_example`` with `feature_spec`, renamed to the in-memory names. Imports TensorFlow."""
    import tensorflow as tf

    spec = feature_spec(max_seq_length, max_predictions_per_seq, kind)
    return lambda serialized: _to_memory_names(tf.io.parse_example(serialized, spec))


# ------------------------------------------------------------------------------------------- CRC32C
def _crc32c_byte_table() -> np.ndarray:
    poly = np.uint32(0x82F63B78)  # Castagnoli, reflected
    crc = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ poly, crc >> 1).astype(np.uint32)
    return crc


_BYTE_TABLE = _crc32c_byte_table()
# _POS_TABLE[k, b]: the CRC register contribution of byte b followed by k more bytes (CRC is linear over
# GF(2), so a message's CRC is the XOR of its bytes' contributions plus the CRC of as many zero bytes).
# Row _POS_TABLE.shape[0]-1 is all zeros (used for padding). Grown on demand.
_POS_TABLE = np.zeros((1, 256), dtype=np.uint32)
_ZERO_CRC = np.zeros((1,), dtype=np.uint32)  # _ZERO_CRC[n] = crc32c(b"\0" * n)


def _advance(state: np.ndarray) -> np.ndarray:
    """The CRC register after one more zero byte."""
    return _BYTE_TABLE[state & 0xFF] ^ (state >> 8)


def _ensure_tables(max_len: int) -> None:
    global _POS_TABLE, _ZERO_CRC
    have = _POS_TABLE.shape[0] - 1
    if have >= max_len:
        return
    new_len = max(max_len, 2 * have, 1024)
    rows = np.empty((new_len + 1, 256), dtype=np.uint32)
    rows[-1] = 0
    row = _BYTE_TABLE.copy()
    for k in range(new_len):
        rows[k] = row
        row = _advance(row)
    zero = np.empty((new_len + 1,), dtype=np.uint32)
    state = np.uint32(0xFFFFFFFF)
    for n in range(new_len + 1):
        zero[n] = state ^ np.uint32(0xFFFFFFFF)
        state = _BYTE_TABLE[state & 0xFF] ^ (state >> np.uint32(8))
    _POS_TABLE, _ZERO_CRC = rows, zero


def _crc32c_rows(mat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC32C of each row's first ``lengths[r]`` bytes of a uint8 matrix ``[N, W]``."""
    n, w = mat.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    _ensure_tables(max(int(lengths.max(initial=0)), 1))
    pad_row = _POS_TABLE.shape[0] - 1
    # bytes from the end: the last valid byte has 0, padding maps to the zero row.
    from_end = lengths[:, None] - 1 - np.arange(w, dtype=np.int64)[None, :]
    from_end = np.where(from_end >= 0, from_end, pad_row)
    contrib = _POS_TABLE.reshape(-1)[from_end * 256 + mat]
    return np.bitwise_xor.reduce(contrib, axis=1) ^ _ZERO_CRC[lengths]


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data`` -- the checksum TFRecord framing uses."""
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    return int(_crc32c_rows(buf[None, :], np.array([buf.size]))[0])


def _mask_crc(crc: np.ndarray) -> np.ndarray:
    crc = crc.astype(np.uint32)
    return (((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)).astype(np.uint32)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of ``data``."""
    return int(_mask_crc(np.array([crc32c(data)], dtype=np.uint32))[0])


# ------------------------------------------------------------------------------------------ encoding
def _varint_len(v: np.ndarray) -> np.ndarray:
    """Bytes each non-negative value takes as a protobuf varint."""
    v = np.asarray(v)
    vmax = int(v.max(initial=0))
    n = np.ones(v.shape, dtype=np.int32)
    k = 1
    while k < 10 and vmax >= (1 << (7 * k)):
        n += v >= (1 << (7 * k))
        k += 1
    return n


def _varints(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varint bytes of non-negative ``v [N, K]``: ``(bytes [N, K*B], valid [N, K*B])`` in row order."""
    v = np.asarray(v)
    n, k = v.shape
    vmax = int(v.max(initial=0))
    if vmax < 128:
        return v.astype(np.uint8), np.ones(v.shape, dtype=bool)
    width = 1
    while width < 10 and vmax >= (1 << (7 * width)):
        width += 1
    v = v.astype(np.int64 if vmax >= (1 << 31) else np.int32)
    out = np.empty((n, k, width), dtype=np.uint8)
    valid = np.empty((n, k, width), dtype=bool)
    valid[:, :, 0] = True
    for b in range(width):
        rest = v >> (7 * (b + 1))
        more = rest > 0
        out[:, :, b] = (v >> (7 * b)) & 0x7F
        out[:, :, b] |= more.astype(np.uint8) << 7
        if b + 1 < width:
            valid[:, :, b + 1] = more
    return out.reshape(n, -1), valid.reshape(n, -1)


def _const(n: int, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    arr = np.frombuffer(data, dtype=np.uint8)
    return np.broadcast_to(arr, (n, arr.size)), np.ones((n, arr.size), dtype=bool)


def _example_parts(features: Mapping[str, np.ndarray], kinds: Mapping[str, str]):
    """The byte columns of ``N`` serialized Examples: a list of ``(bytes [N, w], valid [N, w])``.
    ``features`` has the in-memory names, ``kinds`` the file's."""
    features = _to_file_names(features)
    names = list(kinds)
    n = None
    for name in names:
        arr = np.asarray(features[name])
        if arr.ndim != 2:
            raise ValueError(f"feature {name!r} must be [N, K], got shape {arr.shape}")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise ValueError(f"feature {name!r} has {arr.shape[0]} rows, expected {n}")
    parts_per_feature = []
    entry_lens = []
    for name in names:
        arr = np.asarray(features[name])
        key = name.encode("utf-8")
        if kinds[name] == "float":
            payload = np.ascontiguousarray(arr.astype("<f4")).view(np.uint8).reshape(n, -1)
            payload_valid = np.ones(payload.shape, dtype=bool)
            payload_len = np.full((n,), payload.shape[1], dtype=np.int64)
            list_tag = 0x12
        elif kinds[name] == "int64":
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"int64 feature {name!r} has dtype {arr.dtype}")
            if arr.size and arr.min() < 0:
                raise ValueError(f"int64 feature {name!r} has negative values (min {arr.min()}); "
                                 "only non-negative ids/masks/labels are written")
            payload, payload_valid = _varints(arr)
            payload_len = payload_valid.sum(axis=1, dtype=np.int64)
            list_tag = 0x1A
        else:
            raise ValueError(f"feature {name!r}: kind must be 'int64' or 'float', got {kinds[name]!r}")
        list_len = 1 + _varint_len(payload_len) + payload_len              # Int64List/FloatList message
        feat_len = 1 + _varint_len(list_len) + list_len                    # Feature message
        entry_len = 1 + 1 + len(key) + 1 + _varint_len(feat_len) + feat_len  # map entry (key < 128 bytes)
        if len(key) >= 128:
            raise ValueError(f"feature name {name!r} is too long")
        parts = [
            _const(n, b"\x0a"), _varints(entry_len[:, None]),
            _const(n, b"\x0a" + bytes([len(key)]) + key + b"\x12"), _varints(feat_len[:, None]),
            _const(n, bytes([list_tag])), _varints(list_len[:, None]),
            _const(n, b"\x0a"), _varints(payload_len[:, None]),
            (payload, payload_valid),
        ]
        parts_per_feature.append(parts)
        entry_lens.append(entry_len)
    features_len = sum(1 + _varint_len(e) + e for e in entry_lens)
    head = [_const(n, b"\x0a"), _varints(features_len[:, None])]
    return head + [p for parts in parts_per_feature for p in parts]


def _concat_parts(parts) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.concatenate([np.asarray(p[0], dtype=np.uint8) for p in parts], axis=1)
    valid = np.concatenate([np.broadcast_to(p[1], p[0].shape) for p in parts], axis=1)
    return matrix, valid


def serialize_examples(features: Mapping[str, np.ndarray], kinds: Mapping[str, str]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Encodes ``N`` ``tf.train.Example`` protos at once.

    Args:
      features: ``{in-memory name: array [N, K]}``; int64 features must be non-negative integers.
      kinds: ``{name in the file: "int64" | "float"}`` (`feature_kinds`); the order of ``kinds`` is the
        order written.
    Returns:
      ``(matrix uint8 [N, W], valid bool [N, W])``: row ``r``'s serialized Example is ``matrix[r][valid[r]]``.
    """
    return _concat_parts(_example_parts(features, kinds))


_ARANGE = np.zeros((0,), dtype=np.int64)


def _arange(n: int) -> np.ndarray:
    """``np.arange(n)`` (int64) from a cache: the framing below needs one per batch."""
    global _ARANGE
    if _ARANGE.size < n:
        _ARANGE = np.arange(max(n, 2 * _ARANGE.size), dtype=np.int64)
    return _ARANGE[:n]


_ARANGE32 = np.zeros((0,), dtype=np.int32)


def _arange32(n: int) -> np.ndarray:
    """``256 * np.arange(n)`` as int32 (n * 256 < 2**31), cached."""
    global _ARANGE32
    if _ARANGE32.size < n:
        _ARANGE32 = 256 * np.arange(max(n, min(2 * _ARANGE32.size, (2**31 - 1) // 256)), dtype=np.int32)
    return _ARANGE32[:n]


def frame_records(matrix: np.ndarray, valid: np.ndarray) -> bytes:
    """TFRecord framing (length, masked CRCs) of the rows of :func:`serialize_examples`, concatenated:
    row ``r``'s record data is ``matrix[r][valid[r]]``."""
    n = matrix.shape[0]
    if n == 0:
        return b""
    return _frame_parts([(matrix, valid)], n)


def _frame_parts(parts, n: int, use_hw_crc: bool | None = None) -> bytes:
    """Frames the Examples given as byte columns (see :func:`_example_parts`). The CRCs come from
    google-crc32c when it has its native implementation (``use_hw_crc=None``), else from numpy."""
    lengths = np.zeros((n,), dtype=np.int64)
    for _, v in parts:
        lengths += v.sum(axis=1, dtype=np.int64)
    if np.any(lengths <= 0):
        raise ValueError("empty records cannot be framed")
    # One pass lays out every record as [8 length][4 crc][data][4 crc], the CRC slots still zero.
    slot = (np.zeros((n, 12), np.uint8), np.ones((n, 12), bool))
    tail = (np.zeros((n, 4), np.uint8), np.ones((n, 4), bool))
    out, out_valid = _concat_parts([slot, *parts, tail])
    flat = out[out_valid]
    rec_len = lengths + 16
    rec_end = np.cumsum(rec_len)
    rec_start = rec_end - rec_len
    len_bytes = lengths.astype("<u8").view(np.uint8).reshape(n, 8)
    if _hw_crc is not None and use_hw_crc is not False:
        value, view = _hw_crc.value, flat.tobytes()
        data_crc = np.fromiter((value(view[s + 12:e - 4]) for s, e in zip(rec_start.tolist(), rec_end.tolist())),
                               dtype=np.uint32, count=n)
        len_view = len_bytes.tobytes()
        len_crc = np.fromiter((value(len_view[8 * r:8 * r + 8]) for r in range(n)), dtype=np.uint32, count=n)
        for col, crc in ((8, len_crc), (-4, data_crc)):
            pos = (rec_start if col > 0 else rec_end) + col
            flat[pos[:, None] + np.arange(4)] = _mask_crc(crc).astype("<u4").view(np.uint8).reshape(n, 4)
        flat[rec_start[:, None] + np.arange(8)] = len_bytes
        return flat.tobytes()
    return _frame_numpy(flat, lengths, rec_start, rec_end, len_bytes, n)


def _frame_numpy(flat, lengths, rec_start, rec_end, len_bytes, n: int) -> bytes:
    """The CRCs of :func:`_frame_parts` with numpy (no native library): table lookups, XOR-reduced."""
    _ensure_tables(int(lengths.max()))
    rec_len = lengths + 16
    # CRC of each record's data: XOR of table entries indexed by (bytes to the end of the data, byte value).
    itype = np.int32 if 256 * (flat.size + _POS_TABLE.shape[0]) < 2**31 else np.int64
    index = np.repeat((256 * (rec_end - 5)).astype(itype), rec_len)
    index -= (256 * _arange(flat.size)).astype(itype, copy=False) if itype is np.int64 else _arange32(flat.size)
    index += flat
    zero_entry = 256 * (_POS_TABLE.shape[0] - 1)  # the head/tail slots contribute nothing
    head_tail = np.concatenate([rec_start[:, None] + np.arange(12), rec_end[:, None] - 4 + np.arange(4)], axis=1)
    index[head_tail.reshape(-1)] = zero_entry
    contrib = _POS_TABLE.reshape(-1)[index]
    data_crc = _mask_crc(np.bitwise_xor.reduceat(contrib, rec_start) ^ _ZERO_CRC[lengths])
    len_crc = _mask_crc(_crc32c_rows(len_bytes, np.full((n,), 8)))
    flat[head_tail.reshape(-1)] = np.concatenate([
        len_bytes, len_crc.astype("<u4").view(np.uint8).reshape(n, 4),
        data_crc.astype("<u4").view(np.uint8).reshape(n, 4)], axis=1).reshape(-1)
    return flat.tobytes()


def encode_records(features: Mapping[str, np.ndarray], kinds: Mapping[str, str]) -> bytes:
    """``N`` framed TFRecords (ready to append to a ``.tfrecord`` file) for a batch of instances."""
    parts = _example_parts(features, kinds)
    n = parts[0][0].shape[0]
    return _frame_parts(parts, n) if n else b""


# -------------------------------------------------------------------------------------------- writing
class RecordWriter:
    """Appends framed records to ``path`` atomically: data goes to a temporary file in the same
    directory, renamed to ``path`` by :meth:`close` (or leaving a ``with`` block normally). On an
    exception the temporary file is deleted and ``path`` is left untouched."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(self.path) + ".",
                                         suffix=".tmp")
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        self.num_records = 0
        self.num_bytes = 0

    def write_framed(self, blob: bytes, num_records: int) -> None:
        """Appends bytes from :func:`encode_records` holding ``num_records`` records."""
        self._file.write(blob)
        self.num_records += int(num_records)
        self.num_bytes += len(blob)

    def write(self, features: Mapping[str, np.ndarray], kinds: Mapping[str, str]) -> None:
        """Encodes and appends a batch of instances (``{in-memory name: array [N, K]}``)."""
        n = len(next(iter(features.values()))) if features else 0
        self.write_framed(encode_records(features, kinds), n)

    def close(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o666 & ~umask)
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_examples(path: str, features: Mapping[str, np.ndarray], kind: str = MASKED) -> int:
    """Writes one TFRecord file of a record kind atomically from ``{in-memory name: array [N, K]}``
    (other keys are ignored); returns the number of records."""
    kinds = feature_kinds(kind)
    missing = [k for k in batch_keys(kind) if k not in features]
    if missing:
        raise ValueError(f"{kind} records need features {missing}")
    with RecordWriter(path) as w:
        w.write(features, kinds)
        return w.num_records


# -------------------------------------------------------------------------------------------- reading
def read_raw_records(path: str, limit: int | None = None) -> list[bytes]:
    """Serialized records of a TFRecord file (checks both CRCs; pure Python, for tests and validation)."""
    out = []
    with open(path, "rb") as f:
        while limit is None or len(out) < limit:
            head = f.read(12)
            if not head:
                break
            if len(head) < 12:
                raise ValueError(f"{path}: truncated TFRecord header at record {len(out)}")
            (length,) = struct.unpack("<Q", head[:8])
            (len_crc,) = struct.unpack("<I", head[8:])
            if masked_crc32c(head[:8]) != len_crc:
                raise ValueError(f"{path}: corrupt TFRecord length CRC at record {len(out)}")
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise ValueError(f"{path}: truncated TFRecord at record {len(out)}")
            if masked_crc32c(data) != struct.unpack("<I", tail)[0]:
                raise ValueError(f"{path}: corrupt TFRecord data CRC at record {len(out)}")
            out.append(data)
    return out


def parse_example_bytes(serialized: bytes) -> dict[str, np.ndarray]:
    """``{name in the file: values}`` of one serialized ``tf.train.Example`` (via TensorFlow's proto class):
    the record as stored, untranslated (for tests and validation)."""
    import tensorflow as tf

    ex = tf.train.Example.FromString(serialized)
    out = {}
    for name, feat in ex.features.feature.items():
        which = feat.WhichOneof("kind")
        if which == "int64_list":
            out[name] = np.asarray(feat.int64_list.value, dtype=np.int64)
        elif which == "float_list":
            out[name] = np.asarray(feat.float_list.value, dtype=np.float32)
        elif which == "bytes_list":
            out[name] = np.asarray(feat.bytes_list.value, dtype=object)
        else:
            out[name] = np.zeros((0,), dtype=np.int64)
    return out


def read_examples(path: str, limit: int | None = None) -> dict[str, np.ndarray]:
    """``{in-memory name: array [N, K]}`` of a TFRecord file's Examples (int64 / float32), read with
    `read_raw_records` (pure Python, for tests and validation; the input pipeline uses `parse_fn`)."""
    rows = [parse_example_bytes(r) for r in read_raw_records(path, limit)]
    if not rows:
        return {}
    return _to_memory_names({name: np.stack([row[name] for row in rows]) for name in rows[0]})


def read_summaries(files) -> list[tuple[str, dict]]:
    """The summaries scripts/create_pretraining_data.py writes beside its records (``DIR/summary.json``
    with --output_dir, ``FILE.summary.json`` with --output_file): ``[(path, summary)]``, each summary
    once, in the order of ``files``; records without one contribute nothing. The only reader of them."""
    from bert_jax import fileio

    def exists(path):
        if fileio.is_remote(path):
            import tensorflow as tf
            return tf.io.gfile.exists(path)
        return os.path.isfile(path)

    out, seen = [], set()
    for f in files:
        for cand in (os.path.join(os.path.dirname(f), "summary.json"), f + ".summary.json"):
            if cand not in seen and exists(cand):
                seen.add(cand)
                out.append((cand, fileio.read_json(cand)))
    return out
