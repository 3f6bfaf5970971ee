"""Fine-tuning: pure steps for the task heads and a small epoch loop with best-on-dev selection.

Shared by every experiment in ``experiments/`` (classification, regression, token classification,
question answering): the experiments own their data and metrics; this module owns the optimisation.
It runs under ``jax.jit`` over the same ``("data", "fsdp", "tensor")`` mesh as pre-training, so one
device or many use the same code.

Batches are dicts of numpy arrays: ``input_ids``, ``token_type_ids``, ``attention_mask`` [B, L],
``weights`` [B] (0 for padding rows, so every batch of a bucket has the same shape), and the labels of
the head: ``labels`` [B] (class id or float score) / [B, L] (token tags, -100 ignored), or
``start_positions`` / ``end_positions`` [B] for question answering. L is one of a few bucket lengths
(`bucket_lengths`): each shape compiles once per process, shared by every run of the lr x seed
protocol (the learning-rate schedule is an argument of the step, not a constant in it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax import modeling
from bert_jax.training import optim, parallel

KINDS = ("classification", "regression", "token", "qa")
INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
IGNORE_INDEX = -100


_PROGRESS_EVERY_S = 30.0   # fine-tuning prints a progress line at least this often within an epoch

def score(metrics: Mapping[str, float], name: str) -> float:
    """The selection score: higher is better; NaN (e.g. a correlation of constant predictions) is worst."""
    v = float(metrics[name])
    return v if math.isfinite(v) else -math.inf


def build_model(config: modeling.BertConfig, kind: str, num_labels: int):
    if kind in ("classification", "regression"):
        return modeling.BertForSequenceClassification(config, num_labels=1 if kind == "regression" else num_labels)
    if kind == "token":
        return modeling.BertForTokenClassification(config, num_labels=num_labels)
    if kind == "qa":
        return modeling.BertForQuestionAnswering(config)
    raise ValueError(f"kind={kind!r}: choose one of {KINDS}")


def init_params(model, rng, pretrained: Optional[Mapping] = None, source: str = ""):
    """Fresh parameters for ``model``; with ``pretrained`` (a `load_pretrained` tree), merged by
    `bert_jax.convert.merge.merge_pretrained`: its encoder replaces the fresh one, the pre-training heads
    are dropped, a fine-tuning head of the model's shape is kept (re-evaluating a fine-tuned checkpoint);
    a shape mismatch is an error."""
    from bert_jax.convert.merge import merge_pretrained

    fresh = modeling.init_params(model, rng)
    if pretrained is None:
        return fresh
    return merge_pretrained(fresh, pretrained, source=source, drop=("cls",))


# ----------------------------------------------------------------------------------------------
# Losses and steps
# ----------------------------------------------------------------------------------------------

def _forward(model, params, batch, deterministic, rng=None):
    return model.apply({"params": params}, batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"], deterministic=deterministic,
                       rngs=None if deterministic else {"dropout": rng})


def _weighted_ce(logits, labels, weights):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    safe = jnp.where(labels < 0, 0, labels).astype(jnp.int32)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * weights), jnp.sum(weights)


def loss_sums(kind: str, outputs, batch):
    """(sum of losses, sum of weights) for one batch."""
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
    raise ValueError(f"kind={kind!r}")


# ----------------------------------------------------------------------------------------------
# Batching: length buckets
# ----------------------------------------------------------------------------------------------
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
    not fill a batch moves up to the next bucket, so only the very last batch is short (as unbucketed)."""
    assigned = np.searchsorted(np.asarray(buckets), lengths[order])   # index of the smallest bucket >= length
    batches, carry = [], np.zeros(0, np.int64)
    for b, L in enumerate(buckets):
        idx = np.concatenate([carry, order[assigned == b]])
        full = len(idx) // batch_size * batch_size
        batches += [(L, idx[s:s + batch_size]) for s in range(0, full, batch_size)]
        carry = idx[full:]
    if len(carry):
        batches.append((buckets[-1], carry))
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
                    keys=None, buckets=(), with_index: bool = False):
    """Yields ``(batch, number of real rows)`` (``with_index``: and the rows' example indices): fixed-size
    batches (the last one padded with weight-0 rows), shuffled when ``rng`` is given. With ``buckets`` (see
    `bucket_lengths`) batches are formed within length buckets, cut to the bucket's length, and their order
    is shuffled too. Every example is in exactly one batch; the same rng state gives the same batches."""
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
    for L, idx in batches:
        batch = _make_batch(arrays, idx, batch_size, L, keys)
        yield (batch, len(idx), idx) if with_index else (batch, len(idx))


# ----------------------------------------------------------------------------------------------
# Compiled steps, shared across runs
# ----------------------------------------------------------------------------------------------

def schedule_values(opt_cfg) -> np.ndarray:
    """The learning-rate schedule of `optim.make_schedule` as data, ``[peak, warmup, total, end, power]``:
    the train step takes it as an argument, so runs with another learning rate or length do not compile."""
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


def make_train_step(model, kind: str, tx: optax.GradientTransformation):
    """``(params, opt_state, batch, rng, step, sched) -> (params, opt_state, loss)``; jit it (donate 0, 1).
    ``tx`` has a unit learning rate; the update is scaled by ``learning_rate_at(sched, step)``."""
    def train_step(params, opt_state, batch, rng, step, sched):
        rng = jax.random.fold_in(rng, step)

        def loss_fn(p):
            total, count = loss_sums(kind, _forward(model, p, batch, False, rng), batch)
            return total / jnp.maximum(count, 1e-6)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        lr = learning_rate_at(sched, step)
        updates = jax.tree_util.tree_map(lambda u: u * lr.astype(u.dtype), updates)
        return optax.apply_updates(params, updates), opt_state, loss
    return train_step


def make_predict_step(model):
    def predict_step(params, batch):
        out = _forward(model, params, batch, True)
        if isinstance(out, modeling.QuestionAnsweringOutput):
            return jnp.stack([out.start_logits, out.end_logits], axis=-1)
        return out
    return predict_step


_OPT_FIELDS = (("optimizer", "adamw"), ("adam_b1", 0.9), ("adam_b2", 0.999), ("adam_eps", 1e-6),
               ("weight_decay", 0.01), ("grad_clip_norm", 1.0))
_COMPILED: Dict[tuple, dict] = {}


def _compiled(model, kind: str, opt_cfg, mesh_shape) -> dict:
    """jitted train / predict / optimizer-init functions, one set per (model, kind, optimizer, mesh): jax
    caches compilations on the function object, so every run of a protocol reuses them."""
    structure = tuple((name, opt_cfg.get(name, default)) for name, default in _OPT_FIELDS)
    key = (type(model), model.config, getattr(model, "num_labels", None), kind, structure, tuple(mesh_shape))
    if key not in _COMPILED:
        # Unit learning rate: a constant schedule (from 1.0 to 1.0); the real one is applied in the step.
        unit = ml_collections.ConfigDict(dict(structure, learning_rate=1.0, end_learning_rate=1.0,
                                              num_train_steps=1, warmup_steps=0))
        tx = optim.make_optimizer(unit)
        mesh = parallel.make_mesh(tuple(mesh_shape))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        _COMPILED[key] = dict(
            tx=tx, mesh=mesh, replicated=replicated,
            train=jax.jit(make_train_step(model, kind, tx), donate_argnums=(0, 1)),
            predict=jax.jit(make_predict_step(model)),
            # Placed like the train step's outputs, so its second call does not compile a second time.
            init=jax.jit(tx.init, out_shardings=replicated))
    return _COMPILED[key]


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FinetuneResult:
    best_metrics: Dict[str, float]      # dev metrics of the best epoch (by main_metric)
    best_epoch: int
    history: list                       # per epoch: {"epoch", "train_loss", "dev": {...}}
    steps: int
    params: object                      # the best parameters (host numpy)
    seconds: float
    finetuner: "Finetuner" = None       # compiled predict for the best parameters


class Finetuner:
    """Compiled fine-tuning steps for one model + optimizer, on all devices (data parallel). Finetuners of
    the same model config, kind, optimizer structure and mesh share their compiled functions.

    ``buckets``: the length buckets of `predict` (and of `finetune`'s batches), see `bucket_lengths`;
    None: the defaults up to the arrays' length; ``()``: every batch at the full length."""

    def __init__(self, model, kind: str, opt_cfg: ml_collections.ConfigDict, mesh_shape=(-1, 1, 1), buckets=None):
        self.model, self.kind, self.buckets = model, kind, buckets
        self.schedule = optim.make_schedule(opt_cfg)          # host side, for the logs
        self.sched = schedule_values(opt_cfg)
        fns = _compiled(model, kind, opt_cfg, mesh_shape)
        self.tx, self.mesh, self.replicated = fns["tx"], fns["mesh"], fns["replicated"]
        self._train_fn, self._predict, self._init = fns["train"], fns["predict"], fns["init"]

    def _train(self, params, opt_state, batch, rng, step):
        return self._train_fn(params, opt_state, batch, rng, step, self.sched)

    def init_opt_state(self, params):
        return self._init(params)

    def put(self, batch):
        return parallel.global_batch_from_host(batch, self.mesh)

    def _buckets_for(self, arrays):
        return bucket_lengths(np.shape(arrays["input_ids"])[1], self.buckets)

    def predict(self, params, arrays, batch_size: int) -> np.ndarray:
        """Outputs for every row of ``arrays``, in order: logits [N, C], or [N, L, ...] per position (cut
        at a bucket's length, the positions past it hold `PAD_LOGIT`)."""
        n, full_L = np.shape(arrays["input_ids"])[:2]
        batch_size += (-batch_size) % jax.device_count()
        positional = kind_is_positional(self.kind)
        params = jax.device_put(params, self.replicated)   # host params: placed once, as training placed them
        pending = [(self._predict(params, self.put(batch)), k, idx)      # dispatch every batch, then fetch
                   for batch, k, idx in iterate_batches(arrays, batch_size, keys=list(INPUT_KEYS),
                                                        buckets=self._buckets_for(arrays), with_index=True)]
        out = None
        for y, k, idx in pending:
            y = np.asarray(jax.device_get(y))[:k]
            if out is None:
                shape = (n, full_L) + y.shape[2:] if positional else (n,) + y.shape[1:]
                out = np.full(shape, PAD_LOGIT if positional else 0, y.dtype)
            if positional:
                out[idx, :y.shape[1]] = y
            else:
                out[idx] = y
        return out


def kind_is_positional(kind: str) -> bool:
    """Whether the head's outputs have a length axis ([N, L, ...])."""
    return kind in ("token", "qa")


def finetune(model, kind: str, params, train: Mapping[str, np.ndarray], dev: Mapping[str, np.ndarray],
             evaluate: Callable[[np.ndarray], Dict[str, float]], main_metric: str, cfg, seed: int = 0,
             writer=None, label: str = "") -> FinetuneResult:
    """Trains for ``cfg.num_epochs`` epochs; after each, ``evaluate(dev_outputs)`` gives dev metrics; the
    best epoch by ``main_metric`` (higher is better) is kept; stops early after
    ``cfg.early_stopping_patience`` epochs without improvement (0: never).

    cfg: learning_rate, num_epochs, global_batch_size, warmup_proportion, weight_decay, eval_batch_size
    (default 256), [grad_clip_norm, adam_b1, adam_b2, adam_eps, mesh_shape, length_buckets (default
    `DEFAULT_BUCKETS` up to the arrays' length; "none": pad every batch to it)]."""
    n = len(train["input_ids"])
    if n == 0:
        raise ValueError("the training set is empty")
    bs = int(cfg.global_batch_size)
    if bs % jax.device_count():
        raise ValueError(f"global_batch_size={bs} must be divisible by the {jax.device_count()} devices")
    steps_per_epoch = math.ceil(n / bs)
    total = max(1, int(round(float(cfg.num_epochs) * steps_per_epoch)))
    opt_cfg = ml_collections.ConfigDict(dict(
        learning_rate=float(cfg.learning_rate), num_train_steps=total,
        warmup_steps=int(round(float(cfg.get("warmup_proportion", 0.1)) * total)),
        weight_decay=float(cfg.get("weight_decay", 0.01)), optimizer="adamw",
        adam_b1=float(cfg.get("adam_b1", 0.9)), adam_b2=float(cfg.get("adam_b2", 0.999)),
        adam_eps=float(cfg.get("adam_eps", 1e-6)), grad_clip_norm=float(cfg.get("grad_clip_norm", 1.0))))
    ft = Finetuner(model, kind, opt_cfg, cfg.get("mesh_shape", (-1, 1, 1)), buckets=cfg.get("length_buckets"))
    # The step donates its parameters: a copy of the caller's where they are already device arrays.
    params = jax.device_put(jax.tree_util.tree_map(
        lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, params), ft.replicated)
    opt_state = ft.init_opt_state(params)
    rng = jax.random.PRNGKey(seed)
    np_rng = np.random.default_rng(seed)
    eval_bs = int(cfg.get("eval_batch_size", 256))
    # QA's loss is a softmax over every position, padding included (as the original and HF): cutting
    # the padding would change it, so QA trains at the full length (SQuAD windows mostly fill it anyway).
    train_buckets = () if kind == "qa" else ft._buckets_for(train)
    patience = int(cfg.get("early_stopping_patience", 0))

    best, best_epoch, best_params, history, step = None, -1, None, [], 0
    t_start = last_report = time.time()
    epochs = math.ceil(float(cfg.num_epochs))
    for epoch in range(epochs):
        losses = []
        for batch, _ in iterate_batches(train, bs, np_rng, buckets=train_buckets):
            if step >= total:
                break
            # No host synchronisation: the losses stay on the device until the epoch's end (or a report).
            params, opt_state, loss = ft._train(params, opt_state, ft.put(batch), rng, step)
            losses.append(loss)
            step += 1
            now = time.time()
            if now - last_report >= _PROGRESS_EVERY_S and step < total:   # long epochs: progress between
                last_report = now
                rate = step / (now - t_start)
                print(f"{label} epoch {epoch + 1}/{epochs} step {step}/{total} train_loss "
                      f"{float(np.mean(jax.device_get(losses[-20:]))):.4f} (last 20) ({rate:.1f} steps/s, "
                      f"ETA {(total - step) / rate:.0f}s)", flush=True)
        train_loss = float(np.mean(jax.device_get(jnp.stack(losses)))) if losses else float("nan")
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"{label} train loss is {train_loss} in epoch {epoch + 1}; lower the "
                                     f"learning rate ({cfg.learning_rate})")
        dev_metrics = evaluate(ft.predict(params, dev, eval_bs))
        history.append({"epoch": epoch + 1, "step": step, "train_loss": train_loss, "dev": dev_metrics})
        elapsed = time.time() - t_start
        eta = elapsed / step * (total - step) if step else 0.0
        print(f"{label} epoch {epoch + 1}/{epochs} step {step}/{total} train_loss {train_loss:.4f} "
              f"dev {main_metric} {dev_metrics[main_metric]:.4f} ({step / elapsed:.1f} steps/s, ETA {eta:.0f}s)",
              flush=True)
        last_report = time.time()
        if writer is not None:
            writer.write_scalars(step, {"train/loss": train_loss, "train/learning_rate": float(ft.schedule(step - 1)),
                                        **{f"eval/{k}": v for k, v in dev_metrics.items()}})
        if best is None or score(dev_metrics, main_metric) > score(best, main_metric):
            best, best_epoch = dev_metrics, epoch + 1
            best_params = jax.device_get(params)
        elif patience and epoch + 1 - best_epoch >= patience:
            print(f"{label} early stop: no {main_metric} gain for {patience} epochs", flush=True)
            break
        if step >= total:
            break
    return FinetuneResult(best_metrics=best, best_epoch=best_epoch, history=history, steps=step,
                          params=best_params, seconds=time.time() - t_start, finetuner=ft)


# ----------------------------------------------------------------------------------------------
# The protocol shared by the experiments: checkpoint + tokenizer, lr x seed sweep, results.json
# ----------------------------------------------------------------------------------------------

def _tokenizer_path_for(checkpoint: str) -> str:
    """Where a checkpoint keeps its tokenizer: ``tokenizer/`` of a bert_jax workdir, else the dir."""
    import os
    for cand in (os.path.join(checkpoint, "tokenizer"), checkpoint):
        if os.path.isdir(cand):
            return cand
    return os.path.dirname(checkpoint)


def load_model_and_tokenizer(config):
    """(BertConfig, pretrained params or None, tokenizer) from ``init_checkpoint`` / ``tokenizer`` /
    ``model_size``; the tokenizer's vocab must match the checkpoint's."""
    from bert_jax.convert import load_pretrained
    from bert_jax.tokenization import check_vocab_size, load_tokenizer

    if config.init_checkpoint:
        model_config, pretrained = load_pretrained(config.init_checkpoint)
        tok_path = config.tokenizer or _tokenizer_path_for(config.init_checkpoint)
        tokenizer = load_tokenizer(tok_path)
        check_vocab_size(tokenizer, model_config.vocab_size, what=f"checkpoint {config.init_checkpoint}")
    else:
        if not config.tokenizer:
            raise ValueError("random init (empty init_checkpoint) needs --config.tokenizer (vocab.txt or "
                             "SentencePiece .model) to size the vocabulary")
        tokenizer = load_tokenizer(config.tokenizer)
        model_config, pretrained = modeling.BertConfig.named(config.model_size, vocab_size=tokenizer.vocab_size), None
    if config.max_seq_length > model_config.max_position_embeddings:
        raise ValueError(f"max_seq_length={config.max_seq_length} exceeds the model's max_position_embeddings="
                         f"{model_config.max_position_embeddings}")
    model_config = model_config.replace(hidden_dropout_prob=float(config.get("hidden_dropout_prob", 0.1)))
    return model_config, pretrained, tokenizer


def parse_list(value, cast):
    if isinstance(value, (list, tuple)):
        return [cast(v) for v in value]
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ValueError(f"empty list {value!r}")
    try:
        return [cast(v) for v in items]
    except ValueError:
        raise ValueError(f"cannot read {value!r} as comma-separated {cast.__name__}s") from None


def run_protocol(config, workdir, model_config, pretrained, kind, num_labels, train, dev, evaluate,
                 main_metric, task="") -> dict:
    """The fine-tuning protocol: every learning rate x seed; the lr with the best median dev
    ``main_metric`` wins; reported metrics are medians over seeds at that lr."""
    import os

    from clu import metric_writers

    lrs = parse_list(config.learning_rates, float) if config.get("learning_rates") else [float(config.learning_rate)]
    seeds = parse_list(config.seeds, int)
    runs, best = [], None
    for lr in lrs:
        for seed in seeds:
            run_cfg = ml_collections.ConfigDict(config.to_dict())
            run_cfg.learning_rate = lr
            model = build_model(model_config, kind, num_labels)
            params = init_params(model, jax.random.PRNGKey(seed), pretrained, config.get("init_checkpoint", ""))
            writer = metric_writers.create_default_writer(os.path.join(workdir, "tb", f"lr{lr:g}_seed{seed}"),
                                                          just_logging=jax.process_index() > 0)
            res = finetune(model, kind, params, train, dev, evaluate, main_metric, run_cfg, seed=seed,
                           writer=writer, label=f"[{task} lr={lr:g} seed={seed}]")
            writer.close()
            runs.append({"learning_rate": lr, "seed": seed, "dev_metrics": res.best_metrics,
                         "best_epoch": res.best_epoch, "steps": res.steps, "seconds": round(res.seconds, 1),
                         "history": res.history})
            if best is None or score(res.best_metrics, main_metric) > score(best["result"].best_metrics, main_metric):
                best = {"result": res, "lr": lr, "seed": seed}
            else:
                del res

    def median_at(lr):
        return float(np.median([score(r["dev_metrics"], main_metric) for r in runs if r["learning_rate"] == lr]))
    best_lr = max(lrs, key=median_at)
    at_best = [r for r in runs if r["learning_rate"] == best_lr]
    metrics = {k: float(np.median([r["dev_metrics"][k] for r in at_best])) for k in at_best[0]["dev_metrics"]}
    values = np.array([r["dev_metrics"][main_metric] for r in at_best])
    if best["lr"] != best_lr:  # predictions come from the best seed of the chosen lr
        best = None
    result = {
        "task": task, "main_metric": main_metric, "metrics": metrics,
        "spread": {"min": float(values.min()), "max": float(values.max()), "std": float(values.std()),
                   "n": int(len(values))},
        "best_learning_rate": best_lr, "seeds": seeds, "learning_rates": lrs,
        "init_checkpoint": config.get("init_checkpoint", "") or None,
        "model_config": model_config.to_hf_dict(), "steps": int(at_best[0]["steps"]),
        "config": config.to_dict(), "runs": runs,
    }
    if best is None:  # re-run the chosen lr's best seed to have its parameters (rare: sweep only)
        seed = max(at_best, key=lambda r: score(r["dev_metrics"], main_metric))["seed"]
        run_cfg = ml_collections.ConfigDict(config.to_dict())
        run_cfg.learning_rate = best_lr
        model = build_model(model_config, kind, num_labels)
        params = init_params(model, jax.random.PRNGKey(seed), pretrained, config.get("init_checkpoint", ""))
        res = finetune(model, kind, params, train, dev, evaluate, main_metric, run_cfg, seed=seed,
                       label=f"[{task} best lr={best_lr:g} seed={seed}]")
        best = {"result": res, "lr": best_lr, "seed": seed}
    if config.get("save_best_model", False) and jax.process_index() == 0:
        _save_model(os.path.join(workdir, "best_model"), model_config, best["result"].params)
        result["best_model"] = os.path.join(workdir, "best_model")
    result["_best"] = {"params": best["result"].params, "finetuner": best["result"].finetuner,
                       "seed": best["seed"]}
    return result


def _save_model(path, model_config, params):
    import os
    import shutil

    from bert_jax import checkpoint
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.save_params(tmp, model_config, params)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def write_results(workdir, result):
    import os

    from bert_jax import checkpoint
    if jax.process_index() == 0:
        checkpoint.write_json_atomic(os.path.join(workdir, "results.json"),
                                     {k: v for k, v in result.items() if not k.startswith("_")})
