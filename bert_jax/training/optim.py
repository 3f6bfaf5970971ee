"""Optimizers and learning-rate schedules (optax).

The BERT recipe: AdamW (β = 0.9, 0.999, ε = 1e-6, weight decay 0.01 on everything except LayerNorm
parameters and biases), linear warmup then linear decay to zero, global-norm clipping at 1.0. LAMB
(You et al., 2019) for large batches. Gradient accumulation lives in the train step (`step.py`),
where the global-batch normalisation can be made exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

_NO_DECAY_NAMES = ("bias", "scale")  # LayerNorm scale/bias and every Dense bias


def weight_decay_mask(params):
    """True for weights that decay: kernels and embedding tables; False for biases and LayerNorm."""
    def decays(path, _):
        names = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
        last = str(names[-1])
        return not (last in _NO_DECAY_NAMES or any("LayerNorm" in str(n) for n in names))
    return jax.tree_util.tree_map_with_path(decays, params)


def make_schedule(cfg) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then polynomial decay (power
    ``decay_power``; 1.0 = linear, the BERT default) to ``end_learning_rate`` at ``num_train_steps``."""
    lr = float(cfg.learning_rate)
    warmup = int(cfg.warmup_steps)
    total = int(cfg.num_train_steps)
    if total <= 0:
        raise ValueError(f"num_train_steps={total} must be positive")
    if not 0 <= warmup <= total:
        raise ValueError(f"warmup_steps={warmup} must be between 0 and num_train_steps={total}")
    end = float(cfg.get("end_learning_rate", 0.0))
    power = float(cfg.get("decay_power", 1.0))
    decay = optax.polynomial_schedule(lr, end, power, max(total - warmup, 1))
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` with the rescale as one multiply by a scalar.

    Same maths and same (empty) state as optax's, so optimizer states and checkpoints are interchangeable;
    results differ by at most an ulp when clipping (``g * (max / norm)`` instead of ``g / norm * max``).
    optax's per-element divide-and-select is not duplicated into the two Adam moment updates that read the
    clipped gradient, so XLA materialises a clipped copy of every gradient; a multiply fuses into both.
    Measurements in benchmarks/README.md.
    """
    max_norm = float(max_norm)

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        norm = optax.global_norm(updates)
        scale = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg) -> optax.GradientTransformation:
    """cfg fields: optimizer ("adamw"|"lamb"), learning_rate, warmup_steps, num_train_steps,
    weight_decay, adam_b1, adam_b2, adam_eps, grad_clip_norm (0 disables), [end_learning_rate,
    decay_power]."""
    schedule = make_schedule(cfg)
    name = cfg.get("optimizer", "adamw")
    kw = dict(b1=cfg.get("adam_b1", 0.9), b2=cfg.get("adam_b2", 0.999), eps=cfg.get("adam_eps", 1e-6),
              weight_decay=cfg.get("weight_decay", 0.01), mask=weight_decay_mask)
    if name == "adamw":
        opt = optax.adamw(schedule, **kw)
    elif name == "lamb":
        opt = optax.lamb(schedule, **kw)
    else:
        raise ValueError(f"optimizer={name!r}: choose 'adamw' or 'lamb'")
    clip = float(cfg.get("grad_clip_norm", 1.0))
    return optax.chain(clip_by_global_norm(clip), opt) if clip > 0 else opt
