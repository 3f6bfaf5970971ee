"""Matmul FLOP accounting for BERT, and model FLOPs utilisation (MFU).

What is counted: the FLOPs of the matrix multiplications a BERT step *needs* (2 FLOPs per
multiply-add), the convention of Kaplan et al. (2020) and of the PaLM paper's MFU. Element-wise
work (biases, GELU, softmax, LayerNorm, dropout), embedding gathers and the optimizer update are
left out; on a matmul-dominated config they are a few per cent of what XLA's cost analysis reports
(`tests/test_flops.py` checks the two against each other).

Forward FLOPs of one sequence of length L, with hidden H, intermediate I, vocab V, N layers:

==========================  ==================================  ===========================
part                         FLOPs                               notes
==========================  ==================================  ===========================
embeddings                   0                                   gathers, not matmuls
QKV projection (fused)       N · 2·L·H·3H
attention scores QKᵀ         N · 2·L·L·H                         all heads together
attention context PV         N · 2·L·L·H
attention output             N · 2·L·H·H
FFN (intermediate + out)     N · 2·2·L·H·I
pooler                       2·H·H                               the [CLS] position only
NSP classifier               2·H·2
MLM transform                T · 2·H·H                           T = P masked positions
MLM vocab projection         T · 2·H·V                           (sparse) or L (dense head)
==========================  ==================================  ===========================

Training counts 3 × forward (the backward pass has two matmuls per forward matmul: gradients with
respect to the activations and to the weights). Remat (``config.remat``) recomputes the forward but
is *not* counted: MFU measures useful model FLOPs, not hardware FLOPs.

MFU = (model FLOPs per step × steps per second) / (peak FLOP/s per chip × chips).
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, Optional

# Published dense bf16 peak FLOP/s per chip (vendor data sheets). A "Cloud TPU v2/v3" device of the
# BERT paper is 4 chips (8 cores); the numbers here are per chip, which is what jax.devices() lists
# on v4 and later (one device per chip) -- on v2/v3 jax lists one device per *core* (half a chip).
PEAK_BF16_FLOPS: Dict[str, float] = {
    "tpu-v2": 45e12,
    "tpu-v3": 123e12,
    "tpu-v4": 275e12,
    "tpu-v5e": 197e12,
    "tpu-v5p": 459e12,
    "tpu-v6e": 918e12,
    "a100": 312e12,
    "h100": 989e12,       # SXM; the PCIe card is lower (below)
    "h100-pcie": 756e12,
    "h200": 989e12,
}

# Memory per chip (bytes) and its bandwidth (bytes/s), from the same data sheets (Cloud TPU "system
# architecture" pages; v2/v3 from Jouppi et al. 2020). Per chip: a v2/v3 jax device (a core) has half. The
# GPU rows are the SXM parts (A100 80 GB). `bert_jax.aot` divides FLOPs and bytes by these for its roofline.
HBM_BYTES: Dict[str, float] = {
    "tpu-v2": 16 * 2**30,
    "tpu-v3": 32 * 2**30,
    "tpu-v4": 32 * 2**30,
    "tpu-v5e": 16 * 2**30,
    "tpu-v5p": 95 * 2**30,
    "tpu-v6e": 32 * 2**30,
    "a100": 80 * 2**30,
    "h100": 80 * 2**30,
    "h100-pcie": 80 * 2**30,
    "h200": 141e9,
}
HBM_BANDWIDTH: Dict[str, float] = {
    "tpu-v2": 700e9,
    "tpu-v3": 900e9,
    "tpu-v4": 1200e9,
    "tpu-v5e": 819e9,
    "tpu-v5p": 2765e9,
    "tpu-v6e": 1640e9,
    "a100": 2039e9,
    "h100": 3350e9,
    "h100-pcie": 2000e9,
    "h200": 4800e9,
}

# jax `device_kind` (lower-cased) substrings -> PEAK_BF16_FLOPS key. Checked in order.
_DEVICE_KIND_PATTERNS = (
    ("h100 pcie", "h100-pcie"),
    ("h100", "h100"),
    ("h200", "h200"),
    ("a100", "a100"),
    ("tpu v6 lite", "tpu-v6e"),
    ("tpu v6e", "tpu-v6e"),
    ("tpu v5 lite", "tpu-v5e"),
    ("tpu v5e", "tpu-v5e"),
    ("tpu v5p", "tpu-v5p"),
    ("tpu v5", "tpu-v5p"),   # "TPU v5" is how jax names a v5p chip
    ("tpu v4", "tpu-v4"),
    ("tpu v3", "tpu-v3"),
    ("tpu v2", "tpu-v2"),
)


def _dims(config):
    return (config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.vocab_size)


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check(seq_len, num_predictions=None, batch_size=None):
    if not _is_int(seq_len) or seq_len <= 0:
        raise ValueError(f"seq_len={seq_len!r} must be a positive integer")
    if num_predictions is not None and (not _is_int(num_predictions) or not 0 < num_predictions <= seq_len):
        raise ValueError(f"max_predictions={num_predictions!r} must be an integer in [1, seq_len={seq_len}] "
                         "(or None for the dense MLM head over all positions)")
    if batch_size is not None and (not _is_int(batch_size) or batch_size <= 0):
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")


def num_parameters(config, pretraining_heads: bool = True) -> int:
    """Parameters of `BertForPreTraining` (with ``pretraining_heads``) or `BertModel` with its pooler;
    the MLM decoder is tied to the word embeddings, so only its bias counts."""
    n, h, i, v = _dims(config)
    emb = (v + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
    layer = (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    pooler = h * h + h
    heads = (h * h + h) + 2 * h + v + (2 * h + 2) if pretraining_heads else 0
    return emb + n * layer + pooler + heads


def forward_flops_breakdown(config, seq_len: int, max_predictions: Optional[int] = None) -> Dict[str, int]:
    """Forward matmul FLOPs of ONE sequence, by part (see the module docstring).

    ``max_predictions=None`` counts the dense MLM head (logits at all ``seq_len`` positions, as HF's
    `BertForPreTraining`); an integer P counts the sparse head (``masked_positions`` of shape [B, P]).
    """
    _check(seq_len, max_predictions)
    n, h, i, v = _dims(config)
    L = int(seq_len)
    t = L if max_predictions is None else int(max_predictions)
    return {
        "embeddings": 0,
        "qkv": n * 2 * L * h * 3 * h,
        "attention_scores": n * 2 * L * L * h,
        "attention_context": n * 2 * L * L * h,
        "attention_output": n * 2 * L * h * h,
        "ffn": n * 2 * 2 * L * h * i,
        "pooler": 2 * h * h,
        "nsp": 2 * h * 2,
        "mlm_transform": t * 2 * h * h,
        "mlm_vocab": t * 2 * h * v,
    }


def forward_flops_per_sequence(config, seq_len: int, max_predictions: Optional[int] = None) -> int:
    return sum(forward_flops_breakdown(config, seq_len, max_predictions).values())


def encoder_flops_per_sequence(config, seq_len: int) -> int:
    """Forward FLOPs of the encoder alone (no pooler, no heads): what a fine-tuning step is mostly."""
    b = forward_flops_breakdown(config, seq_len, 1)
    return sum(b[k] for k in ("qkv", "attention_scores", "attention_context", "attention_output", "ffn"))


def forward_flops_per_token(config, seq_len: int, max_predictions: Optional[int] = None) -> float:
    return forward_flops_per_sequence(config, seq_len, max_predictions) / seq_len


def train_flops(forward_flops):
    """Training FLOPs = 3 × forward (forward + backward with respect to activations and weights)."""
    return 3 * forward_flops


def train_flops_per_sequence(config, seq_len: int, max_predictions: Optional[int] = None) -> int:
    return train_flops(forward_flops_per_sequence(config, seq_len, max_predictions))


def train_flops_per_token(config, seq_len: int, max_predictions: Optional[int] = None) -> float:
    return train_flops_per_sequence(config, seq_len, max_predictions) / seq_len


def hardware_train_flops_per_sequence(config, seq_len: int, max_predictions: Optional[int] = None) -> int:
    """What the chip actually multiplies in a training step: the model FLOPs plus, with
    ``config.remat`` (each encoder layer rematerialised), one more forward pass of the encoder."""
    extra = encoder_flops_per_sequence(config, seq_len) if getattr(config, "remat", False) else 0
    return train_flops_per_sequence(config, seq_len, max_predictions) + extra


def pretrain_step_flops(config, batch_size: int, seq_len: int, max_predictions: Optional[int] = None) -> int:
    """Model FLOPs of one MLM+NSP pre-training step over a (global) batch of ``batch_size`` sequences."""
    _check(seq_len, max_predictions, batch_size)
    return int(batch_size) * train_flops_per_sequence(config, seq_len, max_predictions)


def pretrain_step_matmuls(config, batch_size: int, seq_len: int,
                          max_predictions: Optional[int] = None) -> list:
    """The matmuls of one pre-training step as ``(part, pass, batch, M, K, N, count)``: ``count`` products of
    ``batch`` independent ``[M, K] x [K, N]``. Each forward ``[M, K] x [K, N]`` has two backward products
    of the same FLOPs, ``[M, N] x [N, K]`` (gradient to the input) and ``[K, M] x [M, N]`` (to the weight,
    or to the second operand). Their FLOPs add up to :func:`pretrain_step_flops`; timing each shape gives
    the step's matmul floor (``benchmarks/bench_train_step.py``)."""
    _check(seq_len, max_predictions, batch_size)
    n, h, i, v = _dims(config)
    B, L = int(batch_size), int(seq_len)
    heads = config.num_attention_heads
    d = h // heads
    P = L if max_predictions is None else int(max_predictions)
    T = B * L
    forward = [  # part, batch, M, K, N, count
        ("qkv", 1, T, h, 3 * h, n),
        ("attention_scores", B * heads, L, d, L, n),
        ("attention_context", B * heads, L, L, d, n),
        ("attention_output", 1, T, h, h, n),
        ("ffn_in", 1, T, h, i, n),
        ("ffn_out", 1, T, i, h, n),
        ("pooler", 1, B, h, h, 1),
        ("nsp", 1, B, h, 2, 1),
        ("mlm_transform", 1, B * P, h, h, 1),
        ("mlm_vocab", 1, B * P, h, v, 1),
    ]
    out = []
    for part, bt, m, k, nn_, c in forward:
        out.append((part, "forward", bt, m, k, nn_, c))
        out.append((part, "grad_input", bt, m, nn_, k, c))
        out.append((part, "grad_weight", bt, k, m, nn_, c))
    return out


def matmul_flops(matmuls) -> int:
    """Total FLOPs of :func:`pretrain_step_matmuls` entries."""
    return sum(2 * bt * m * k * nn_ * c for _, _, bt, m, k, nn_, c in matmuls)


def mfu(flops_per_second: float, peak_flops_per_chip: float, num_chips: int = 1) -> float:
    """Achieved model FLOP/s as a fraction of the peak of ``num_chips`` chips."""
    if not peak_flops_per_chip or peak_flops_per_chip <= 0:
        raise ValueError(f"peak_flops_per_chip={peak_flops_per_chip!r} must be positive")
    if num_chips <= 0:
        raise ValueError(f"num_chips={num_chips!r} must be positive")
    return flops_per_second / (peak_flops_per_chip * num_chips)


def mfu_from_tokens_per_second(tokens_per_second: float, config, seq_len: int, peak_flops_per_chip: float,
                               max_predictions: Optional[int] = None, num_chips: int = 1) -> float:
    """MFU of a pre-training run that processes ``tokens_per_second`` (batch × seq_len per step time)."""
    per_token = train_flops_per_token(config, seq_len, max_predictions)
    return mfu(tokens_per_second * per_token, peak_flops_per_chip, num_chips)


def training_run_flops(config, phases) -> Dict[str, object]:
    """Model FLOPs of a whole pre-training run.

    ``phases``: iterable of ``(seq_len, num_steps, batch_size, max_predictions)`` (``max_predictions``
    None = dense MLM head). Returns ``{"phases": [per-phase dicts], "total_flops", "total_tokens",
    "hardware_flops"}`` (hardware adds the remat recomputation when ``config.remat``).
    """
    out, total, tokens, hardware = [], 0, 0, 0
    for seq_len, num_steps, batch_size, max_predictions in phases:
        if not _is_int(num_steps) or num_steps < 0:
            raise ValueError(f"num_steps={num_steps!r} must be a non-negative integer")
        _check(seq_len, max_predictions, batch_size)
        # Python ints: a numpy int64 would overflow at ~1e19 FLOPs.
        seq_len, num_steps, batch_size = int(seq_len), int(num_steps), int(batch_size)
        max_predictions = None if max_predictions is None else int(max_predictions)
        step = pretrain_step_flops(config, batch_size, seq_len, max_predictions)
        hw = batch_size * hardware_train_flops_per_sequence(config, seq_len, max_predictions)
        out.append({"seq_len": seq_len, "num_steps": num_steps, "batch_size": batch_size,
                    "max_predictions": max_predictions, "tokens": num_steps * batch_size * seq_len,
                    "train_flops_per_token": train_flops_per_token(config, seq_len, max_predictions),
                    "step_flops": step, "flops": step * num_steps})
        total += step * num_steps
        hardware += hw * num_steps
        tokens += num_steps * batch_size * seq_len
    if not out:
        raise ValueError("no training phases given")
    return {"phases": out, "total_flops": total, "total_tokens": tokens, "hardware_flops": hardware}


def wall_seconds(total_flops: float, peak_flops_per_chip: float, num_chips: int, mfu_fraction: float) -> float:
    """Wall time of ``total_flops`` on ``num_chips`` chips running at ``mfu_fraction`` of their peak."""
    if not 0 < mfu_fraction <= 1:
        raise ValueError(f"mfu={mfu_fraction!r} must be in (0, 1]")
    if not peak_flops_per_chip or peak_flops_per_chip <= 0 or num_chips <= 0:
        raise ValueError(f"peak_flops_per_chip={peak_flops_per_chip!r} and num_chips={num_chips!r} must be "
                         "positive")
    return total_flops / (peak_flops_per_chip * num_chips * mfu_fraction)


def peak_flops_for_device_kind(device_kind: str) -> Optional[float]:
    """The published bf16 peak of a jax ``device_kind`` ("TPU v4", "NVIDIA H100 80GB HBM3", ...)."""
    kind = device_kind.lower()
    for pattern, key in _DEVICE_KIND_PATTERNS:
        if pattern in kind:
            return PEAK_BF16_FLOPS[key]
    return None


def chip_for_device_kind(device_kind: str) -> Optional[str]:
    """The table key ("tpu-v5e", "h100", ...) of a jax ``device_kind``; None when unknown."""
    kind = device_kind.lower()
    for pattern, key in _DEVICE_KIND_PATTERNS:
        if pattern in kind:
            return key
    return None


def detect_peak_flops(device=None) -> Optional[float]:
    """bf16 peak FLOP/s of one jax device (default: the first); None for CPUs and unknown chips.

    Per *jax device*, so that ``peak × jax.device_count()`` is the machine's peak: a chip on GPUs and
    TPU v4 and later (one device per chip), half a chip on TPU v2/v3 (one device per core).
    """
    if device is None:
        import jax
        device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    peak = peak_flops_for_device_kind(device.device_kind)
    if peak is not None and device.platform == "tpu" and any(
            v in device.device_kind.lower() for v in ("tpu v2", "tpu v3")):
        peak /= 2
    return peak


def chip_peak_flops(chip: str) -> float:
    """``PEAK_BF16_FLOPS[chip]`` with a clear error for unknown names."""
    key = chip.lower()
    if key not in PEAK_BF16_FLOPS:
        raise ValueError(f"Unknown chip {chip!r}; choose one of {', '.join(PEAK_BF16_FLOPS)} "
                         "(or give the peak FLOP/s per chip explicitly)")
    return PEAK_BF16_FLOPS[key]


def format_flops(x: float) -> str:
    """1.23e18 -> '1.23 EFLOP' style human units (no '/s')."""
    if x == 0:
        return "0 FLOP"
    units = ["", "K", "M", "G", "T", "P", "E", "Z", "Y"]
    k = min(int(math.log10(abs(x)) // 3), len(units) - 1)
    return f"{x / 10 ** (3 * k):.3g} {units[k]}FLOP"
