"""Pure train/eval steps: MLM + NSP (or SOP) pre-training and the fine-tuning heads.

``train_step(state, batch, rng) -> (state, metrics)`` for both, over one `TrainState`. The pre-training
step runs under ``jax.pmap``
(``axis_name`` set: per-device batches, gradients ``psum``-ed) and under ``jax.jit`` over a Mesh
(``axis_name=None``: the batch is one global array; XLA inserts the collectives).

The loss is normalised by the *global* batch: the MLM loss is the sum of weighted negative
log-likelihoods over every masked position of the global batch divided by the sum of
``masked_lm_weights`` (the original's per-batch definition), the NSP loss the mean over all
examples. The normalisers depend only on the batch, so they are computed before the backward pass;
each micro-batch (gradient accumulation) and each device contributes ``grad(local_sum) / global_count``,
and the sum of those is exactly the gradient of the full-batch loss, on any number of devices and hosts.

Batch keys (the model's argument names; `bert_jax.data.records` maps them to the TFRecord feature names):
``input_ids``, ``attention_mask``, ``token_type_ids`` [B, L];
``masked_lm_positions``, ``masked_lm_ids``, ``masked_lm_weights`` [B, P]; ``next_sentence_labels``
[B] or [B, 1] (1 = random next sentence, as the original).

Fine-tuning (`make_finetune_step`, under ``jax.jit`` over a mesh) takes ``input_ids``,
``token_type_ids``, ``attention_mask`` [B, L], ``weights`` [B] (0 for padding rows) and the head's labels:
``labels`` [B] / [B, L] (token tags, `IGNORE_INDEX` ignored) or ``start_positions`` / ``end_positions``
[B]. Its learning-rate schedule is data (``TrainState.lr_schedule``), so runs of an lr x seed sweep
share one compiled step.

Shape letters: B batch, L sequence length, P masked positions per sequence, V vocabulary, C classes.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "masked_lm_positions", "masked_lm_ids",
              "masked_lm_weights", "next_sentence_labels")


@flax.struct.dataclass
class TrainState:
    """``lr_schedule``: None (pre-training: the schedule is inside ``tx``), or `schedule_values` -- then
    ``tx`` has a unit learning rate and each update is scaled by `learning_rate_at` (the schedule is an
    array, not a constant of the compiled step)."""
    step: jax.Array
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    lr_schedule: Optional[jax.Array] = None

    def learning_rate(self):
        return None if self.lr_schedule is None else learning_rate_at(self.lr_schedule, self.step)

    def apply_gradients(self, grads):
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        if self.lr_schedule is not None:
            lr = self.learning_rate()
            updates = jax.tree_util.tree_map(lambda u: u * lr.astype(u.dtype), updates)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            opt_state=opt_state)


def schedule_values(opt_cfg) -> np.ndarray:
    """`optim.make_schedule`'s schedule as data, ``[peak, warmup, total, end, power]`` (float32)."""
    return np.asarray([float(opt_cfg.learning_rate), int(opt_cfg.warmup_steps), int(opt_cfg.num_train_steps),
                       float(opt_cfg.get("end_learning_rate", 0.0)), float(opt_cfg.get("decay_power", 1.0))],
                      np.float32)


def learning_rate_at(sched, step):
    """`optim.make_schedule`'s value at ``step`` (linear warmup, then polynomial decay) from `schedule_values`."""
    peak, warmup, total, end, power = (sched[i] for i in range(5))
    s = jnp.asarray(step, jnp.float32)
    decay_steps = jnp.maximum(total - warmup, 1.0)
    frac = 1.0 - jnp.clip(s - warmup, 0.0, decay_steps) / decay_steps
    return jnp.where(s < warmup, peak * s / jnp.maximum(warmup, 1.0), (peak - end) * frac ** power + end)


def create_train_state(model, params, tx) -> TrainState:
    del model  # the step closes over the model; kept for a stable signature
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx)


def _labels(batch):
    nsp = batch["next_sentence_labels"]
    return nsp.reshape(nsp.shape[0]) if nsp.ndim > 1 else nsp


def _xent_forward(logits, ids):
    top = jnp.max(logits, axis=-1)
    lse = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
    label_logit = jnp.take_along_axis(logits, ids[..., None], axis=-1)[..., 0]
    return lse - label_logit, (label_logit >= top).astype(jnp.float32), lse


@jax.custom_vjp
def softmax_cross_entropy(logits, ids):
    """``(nll, correct)`` per row of ``logits`` [..., V] with integer labels ``ids`` [...]: the negative
    log-softmax at the label, and 1.0 where the label's logit is the largest (the argmax, ties counted as
    hits; no gradient). The backward pass is the closed form ``softmax - one_hot``, one fused pass over
    the [..., V] logits: autodiff of log_softmax + take_along_axis materialises a scattered one-hot and a
    second exp over the vocabulary, and an argmax is a third pass."""
    nll, correct, _ = _xent_forward(logits, ids)
    return nll, correct


def _xent_fwd(logits, ids):
    nll, correct, lse = _xent_forward(logits, ids)
    return (nll, correct), (logits, ids, lse)


def _xent_bwd(residuals, cotangents):
    logits, ids, lse = residuals
    d_nll, _ = cotangents
    one_hot = jnp.arange(logits.shape[-1], dtype=jnp.int32) == ids[..., None]
    d_logits = (jnp.exp(logits - lse[..., None]) - one_hot.astype(logits.dtype)) * d_nll[..., None]
    return d_logits, None


softmax_cross_entropy.defvjp(_xent_fwd, _xent_bwd)


def sums_from_logits(mlm_logits_BxPxV, nsp_logits_Bx2, batch):
    """Per-batch *sums* (not means) of the MLM and NSP losses, hits and counts, from the logits at the
    masked positions and the NSP logits."""
    ids = batch["masked_lm_ids"].astype(jnp.int32)
    weights = batch["masked_lm_weights"].astype(jnp.float32)
    nll, correct = softmax_cross_entropy(mlm_logits_BxPxV.astype(jnp.float32), ids)
    labels = _labels(batch).astype(jnp.int32)
    nsp_nll, nsp_correct = softmax_cross_entropy(nsp_logits_Bx2.astype(jnp.float32), labels)
    return {
        "mlm_nll": jnp.sum(nll * weights), "mlm_count": jnp.sum(weights),
        "mlm_correct": jnp.sum(correct * weights),
        "nsp_nll": jnp.sum(nsp_nll), "nsp_count": jnp.asarray(labels.shape[0], jnp.float32),
        "nsp_correct": jnp.sum(nsp_correct),
    }


def pretrain_sums(model, params, batch, rng=None, deterministic=True):
    """Forward pass (MLM logits only at the masked positions) -> `sums_from_logits`."""
    out = model.apply(
        {"params": params}, batch["input_ids"], attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"], masked_positions=batch["masked_lm_positions"],
        deterministic=deterministic, rngs=None if deterministic else {"dropout": rng})
    return sums_from_logits(out.mlm_logits, out.nsp_logits, batch)


def _sum(x, axis_name):
    return jax.lax.psum(x, axis_name) if axis_name else x


def _split_micro(batch, k):
    """[B, ...] -> [k, B/k, ...], taking every k-th example (keeps each device's rows local)."""
    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} is not divisible by grad_accum_steps={k}")
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
    return jax.tree_util.tree_map(split, batch)


def make_pretrain_step(model: nn.Module, axis_name: Optional[str] = None, grad_accum_steps: int = 1,
                       learning_rate_fn: Optional[Callable] = None):
    """Returns ``train_step(state, batch, rng) -> (state, metrics)``; jit/pmap it yourself (donate 0)."""
    k = int(grad_accum_steps)
    if k < 1:
        raise ValueError(f"grad_accum_steps={k} must be >= 1")

    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        if axis_name:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        weights = batch["masked_lm_weights"].astype(jnp.float32)
        mlm_total = jnp.maximum(_sum(jnp.sum(weights), axis_name), 1e-6)
        nsp_total = _sum(jnp.asarray(weights.shape[0], jnp.float32), axis_name)

        def loss_fn(params, micro, micro_rng):
            sums = pretrain_sums(model, params, micro, micro_rng, deterministic=False)
            return sums["mlm_nll"] / mlm_total + sums["nsp_nll"] / nsp_total, sums

        grad_fn = jax.grad(loss_fn, has_aux=True)
        if k == 1:
            grads, sums = grad_fn(state.params, batch, rng)
        else:
            def body(carry, xs):
                acc, i = carry
                g, s = grad_fn(state.params, xs, jax.random.fold_in(rng, i))
                return (jax.tree_util.tree_map(jnp.add, acc, g), i + 1), s
            zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            (grads, _), sums = jax.lax.scan(body, (zeros, 0), _split_micro(batch, k))
            sums = jax.tree_util.tree_map(lambda x: jnp.sum(x, 0), sums)
        grads = _sum(grads, axis_name)
        sums = _sum(sums, axis_name)
        new_state = state.apply_gradients(grads)
        metrics = summarize(sums)
        metrics["grad_norm"] = optax.global_norm(grads)
        if learning_rate_fn is not None:
            metrics["learning_rate"] = learning_rate_fn(state.step)
        return new_state, metrics

    return train_step


def summarize(sums):
    mlm = sums["mlm_nll"] / jnp.maximum(sums["mlm_count"], 1e-6)
    nsp = sums["nsp_nll"] / jnp.maximum(sums["nsp_count"], 1e-6)
    return {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp,
            "mlm_accuracy": sums["mlm_correct"] / jnp.maximum(sums["mlm_count"], 1e-6),
            "nsp_accuracy": sums["nsp_correct"] / jnp.maximum(sums["nsp_count"], 1e-6)}


def make_eval_step(model: nn.Module, axis_name: Optional[str] = None):
    """``eval_step(params, batch) -> sums`` (add them up over batches, then `summarize`)."""
    def eval_step(params, batch):
        return _sum(pretrain_sums(model, params, batch, deterministic=True), axis_name)
    return eval_step


# ----------------------------------------------------------------------------------------------
# Fine-tuning: a loss per head kind, one step
# ----------------------------------------------------------------------------------------------

FINETUNE_KINDS = ("classification", "regression", "token", "qa")
from bert_jax.data.batching import IGNORE_INDEX  # noqa: E402  (-100: token tags without a loss)


def finetune_forward(model, params, batch, deterministic, rng=None):
    """The head's outputs for a fine-tuning batch."""
    return model.apply({"params": params}, batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"], deterministic=deterministic,
                       rngs=None if deterministic else {"dropout": rng})


def _weighted_ce(logits, labels, weights):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    safe = jnp.where(labels < 0, 0, labels).astype(jnp.int32)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * weights), jnp.sum(weights)


def finetune_loss_sums(kind: str, outputs, batch):
    """(sum of losses, sum of weights) of one fine-tuning batch: cross-entropy (classification, token
    tags, the mean of the start and end softmaxes for QA) or squared error (regression)."""
    w = batch["weights"].astype(jnp.float32)
    if kind == "classification":
        return _weighted_ce(outputs, batch["labels"], w)
    if kind == "regression":
        err = (outputs[:, 0] - batch["labels"].astype(jnp.float32)) ** 2
        return jnp.sum(err * w), jnp.sum(w)
    if kind == "token":
        tok_w = (batch["labels"] != IGNORE_INDEX).astype(jnp.float32) * w[:, None]
        return _weighted_ce(outputs, batch["labels"], tok_w)
    if kind == "qa":
        s, n = _weighted_ce(outputs.start_logits, batch["start_positions"], w)
        e, _ = _weighted_ce(outputs.end_logits, batch["end_positions"], w)
        return (s + e) / 2.0, n
    raise ValueError(f"kind={kind!r}: choose one of {FINETUNE_KINDS}")


def make_finetune_step(model: nn.Module, kind: str):
    """Returns ``train_step(state, batch, rng) -> (state, {"loss", "learning_rate"})`` for a fine-tuning
    head; jit it yourself (donate 0). ``state.lr_schedule`` must be set (`schedule_values`)."""
    if kind not in FINETUNE_KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {FINETUNE_KINDS}")

    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)

        def loss_fn(params):
            total, count = finetune_loss_sums(kind, finetune_forward(model, params, batch, False, rng), batch)
            return total / jnp.maximum(count, 1e-6)
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads), {"loss": loss, "learning_rate": state.learning_rate()}

    return train_step
