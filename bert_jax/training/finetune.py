"""Fine-tuning: the task heads' compiled steps and the epoch loop with best-on-dev selection (the lr x
seed protocol around it is `protocol`).

Shared by every experiment in ``experiments/`` (classification, regression, token classification,
question answering): the experiments own their data and metrics; this module owns the optimisation.
The step is `step.make_finetune_step` -- ``(state, batch, rng) -> (state, metrics)`` over the same
`step.TrainState` as pre-training -- under ``jax.jit`` over the ``("data", "fsdp", "tensor")`` mesh, so
one device or many use the same code.

Batches are dicts of numpy arrays: ``input_ids``, ``token_type_ids``, ``attention_mask`` [B, L],
``weights`` [B] (0 for padding rows, so every batch of a bucket has the same shape), and the labels of
the head: ``labels`` [B] (class id or float score) / [B, L] (token tags, -100 ignored), or
``start_positions`` / ``end_positions`` [B] for question answering. L is one of a few bucket lengths
(`bucket_lengths`): each shape compiles once per process, shared by every run of the lr x seed
protocol (the learning-rate schedule is data in the state, not a constant in the step).

Checkpoints, as in pre-training (`resume`): a run given a ``run_dir`` (every run of `protocol.run_protocol`)
saves there every ``checkpoint_every_steps`` and on SIGTERM, and resumes from the newest checkpoint,
bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax import modeling
from bert_jax.cli import parse_list
from bert_jax.data.batching import INPUT_KEYS, PAD_LOGIT, bucket_lengths, iterate_batches
from bert_jax.training import optim, parallel, preemption, resume, step as step_lib

KINDS = step_lib.FINETUNE_KINDS
IGNORE_INDEX = step_lib.IGNORE_INDEX


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
    are dropped, a fine-tuning head of the model's shape is kept (re-evaluating a fine-tuned checkpoint),
    one of another shape (another task's labels) starts fresh; an encoder shape mismatch is an error."""
    from bert_jax.convert.merge import merge_pretrained

    fresh = modeling.init_params(model, rng)
    if pretrained is None:
        return fresh
    return merge_pretrained(fresh, pretrained, source=source, drop=("cls",),
                            fresh_on_mismatch=("classifier", "qa_outputs"))


# ----------------------------------------------------------------------------------------------
# Compiled steps, shared across runs
# ----------------------------------------------------------------------------------------------

def make_predict_step(model):
    def predict_step(params, batch):
        out = step_lib.finetune_forward(model, params, batch, True)
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
        # Unit learning rate: a constant schedule (from 1.0 to 1.0); the state's lr_schedule scales the update.
        unit = ml_collections.ConfigDict(dict(structure, learning_rate=1.0, end_learning_rate=1.0,
                                              num_train_steps=1, warmup_steps=0))
        tx = optim.make_optimizer(unit)
        mesh = parallel.make_mesh(tuple(mesh_shape))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        _COMPILED[key] = dict(
            tx=tx, mesh=mesh, replicated=replicated,
            train=jax.jit(step_lib.make_finetune_step(model, kind), donate_argnums=(0,)),
            # Outputs replicated: every process reads them whole (the batch is sharded over every process).
            predict=jax.jit(make_predict_step(model), out_shardings=replicated),
            # Placed like the train step's outputs, so its second call does not compile a second time.
            init=jax.jit(tx.init, out_shardings=replicated))
    return _COMPILED[key]


# ----------------------------------------------------------------------------------------------
# Options: what fine-tuning and the protocol read from an experiment's config
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    """Every field `finetune` and `run_protocol` read; `from_config` takes them from any experiment's
    config (missing fields keep these defaults), so no experiment needs fields it does not use."""
    learning_rate: float = 5e-5
    num_epochs: float = 3.0             # fractional: the last epoch stops early
    global_batch_size: int = 32
    eval_batch_size: int = 256
    warmup_proportion: float = 0.1
    optimizer: str = "adamw"            # or "lamb" (`optim.make_optimizer`)
    weight_decay: float = 0.01
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-6
    grad_clip_norm: float = 1.0         # 0 disables clipping
    early_stopping_patience: int = 0    # epochs without dev gain before stopping (0: never)
    mesh_shape: tuple = (-1, 1, 1)
    length_buckets: Any = None          # see `bucket_lengths`
    # The protocol
    learning_rates: tuple = ()          # the sweep; empty: (learning_rate,)
    seeds: tuple = (0,)
    init_checkpoint: str = ""           # recorded (and named in errors); the weights come as an argument
    save_best_model: bool = False       # best run's params -> workdir/best_model
    # Checkpoints
    checkpoint_every_steps: int = 1000  # 0: only on SIGTERM / max_steps_this_run
    max_steps_this_run: int = 0         # >0: stop (saving) after this many steps in this process; 0: no limit

    @classmethod
    def from_config(cls, config, **overrides) -> "FinetuneOptions":
        """From an experiment's ConfigDict (or a dict, or options); ``learning_rates`` / ``seeds`` may be
        comma-separated strings."""
        if isinstance(config, cls):
            return dataclasses.replace(config, **overrides)
        values = {}
        for f in dataclasses.fields(cls):
            v = config.get(f.name, None)
            if v is None or (f.name in ("learning_rates", "seeds") and not str(v).strip(" ,()[]")):
                continue
            default = f.default
            if f.name in ("learning_rates", "seeds"):
                v = tuple(parse_list(v, float if f.name == "learning_rates" else int))
            elif f.name == "mesh_shape":
                v = tuple(int(x) for x in v)
            elif f.name == "length_buckets":
                v = tuple(v) if isinstance(v, list) else v
            elif isinstance(default, bool):
                v = bool(v)
            elif isinstance(default, (int, float, str)):
                v = type(default)(v)
            values[f.name] = v
        values.update(overrides)
        return cls(**values)


def optimizer_config(opts: FinetuneOptions, num_examples: int) -> ml_collections.ConfigDict:
    """The `optim` config of a run over ``num_examples``: ``num_epochs`` of steps, ``warmup_proportion``
    of them warming up, the options' optimizer (AdamW by default) and fields."""
    steps_per_epoch = math.ceil(num_examples / int(opts.global_batch_size))
    total = max(1, int(round(float(opts.num_epochs) * steps_per_epoch)))
    return ml_collections.ConfigDict(dict(
        learning_rate=float(opts.learning_rate), num_train_steps=total,
        warmup_steps=int(round(float(opts.warmup_proportion) * total)),
        weight_decay=float(opts.weight_decay), optimizer=str(opts.optimizer), adam_b1=float(opts.adam_b1),
        adam_b2=float(opts.adam_b2), adam_eps=float(opts.adam_eps), grad_clip_norm=float(opts.grad_clip_norm)))


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FinetuneResult:
    best_metrics: Dict[str, float]      # dev metrics of the best epoch (by main_metric)
    best_epoch: int
    history: list                       # per epoch: {"epoch", "step", "train_loss", "dev": {...}}
    steps: int
    params: object                      # the best parameters (host numpy)
    seconds: float
    finetuner: "Finetuner" = None       # compiled predict for the best parameters
    steps_run: int = 0                  # steps trained in this call (fewer than ``steps`` after a resume)


class Finetuner:
    """Compiled fine-tuning steps for one model + optimizer, on all devices (data parallel). Finetuners of
    the same model config, kind, optimizer structure and mesh share their compiled functions.

    ``train_step(state, batch, rng) -> (state, {"loss", "learning_rate"})`` (jitted, the state donated);
    `init_state` makes the state. ``buckets``: the length buckets of `predict` (and of `finetune`'s
    batches), see `bucket_lengths`; None: the defaults up to the arrays' length; ``()``: every batch at
    the full length."""

    def __init__(self, model, kind: str, opt_cfg: ml_collections.ConfigDict, mesh_shape=(-1, 1, 1), buckets=None):
        self.model, self.kind, self.buckets = model, kind, buckets
        self.schedule = optim.make_schedule(opt_cfg)          # host side, for the logs
        self.lr_schedule = step_lib.schedule_values(opt_cfg)
        fns = _compiled(model, kind, opt_cfg, mesh_shape)
        self.tx, self.mesh, self.replicated = fns["tx"], fns["mesh"], fns["replicated"]
        self.train_step, self._predict, self._init = fns["train"], fns["predict"], fns["init"]

    def init_state(self, params) -> step_lib.TrainState:
        """Step 0 with ``params`` (host or device arrays; the step donates the state, so device arrays are
        copied, never given away), replicated over the mesh."""
        params = jax.device_put(jax.tree_util.tree_map(
            lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, params), self.replicated)
        return step_lib.TrainState(step=jax.device_put(np.zeros((), np.int32), self.replicated), params=params,
                                   opt_state=self._init(params), tx=self.tx,
                                   lr_schedule=jax.device_put(self.lr_schedule, self.replicated))

    def put(self, batch):
        return parallel.global_batch_from_whole(batch, self.mesh)

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
             writer=None, label: str = "", run_dir: Optional[str] = None, max_steps: Optional[int] = None,
             fingerprint: Optional[dict] = None, preempt: Optional[preemption.PreemptionFlag] = None
             ) -> FinetuneResult:
    """Trains for ``cfg.num_epochs`` epochs; after each, ``evaluate(dev_outputs)`` gives dev metrics; the
    best epoch by ``main_metric`` (higher is better) is kept; stops early after
    ``cfg.early_stopping_patience`` epochs without improvement (0: never).

    ``cfg``: `FinetuneOptions` or a config with its fields (learning_rate, num_epochs, global_batch_size,
    warmup_proportion, weight_decay, adam_b1, adam_b2, adam_eps, grad_clip_norm, eval_batch_size,
    early_stopping_patience, mesh_shape, length_buckets, checkpoint_every_steps).

    ``run_dir``: checkpoints in ``run_dir/checkpoints`` (`checkpointing.Checkpoints`); a checkpoint found there is
    resumed (its ``fingerprint``, when given, must match). SIGTERM, or ``max_steps`` steps in this call,
    saves at the next step boundary and raises `Preempted` (``preempt``: a SIGTERM flag the caller holds
    over several runs; default: one for this run). The caller removes ``run_dir/checkpoints`` once it has
    kept the result."""
    opts = FinetuneOptions.from_config(cfg)
    n = len(train["input_ids"])
    if n == 0:
        raise ValueError("the training set is empty")
    bs = int(opts.global_batch_size)
    if bs % jax.device_count():
        raise ValueError(f"global_batch_size={bs} must be divisible by the {jax.device_count()} devices")
    opt_cfg = optimizer_config(opts, n)
    total = int(opt_cfg.num_train_steps)
    ft = Finetuner(model, kind, opt_cfg, opts.mesh_shape, buckets=opts.length_buckets)
    state = ft.init_state(params)
    rng = jax.random.PRNGKey(seed)
    np_rng = np.random.default_rng(seed)
    eval_bs = int(opts.eval_batch_size)
    # QA's loss is a softmax over every position, padding included (as the original and HF): cutting
    # the padding would change it, so QA trains at the full length (SQuAD windows mostly fill it anyway).
    train_buckets = () if kind == "qa" else ft._buckets_for(train)
    patience = int(opts.early_stopping_patience)
    progress, best_params, step = resume.Progress(), None, 0
    ckpt = resume.RunCheckpoints(run_dir, fingerprint, opts.checkpoint_every_steps, max_steps, preempt, label)
    with ckpt:
        restored = ckpt.restore(state)
        if restored is not None:
            state, progress, best_params, step = restored
        history, best, best_epoch = progress.history, progress.best, progress.best_epoch
        start_step, steps_run, seconds_before = step, 0, progress.seconds
        t_start = last_report = time.time()
        epochs = math.ceil(float(opts.num_epochs))
        for epoch in range(progress.epoch, epochs):
            if progress.epoch_rng is not None:   # resuming within this epoch: the same batches, in order
                np_rng.bit_generator.state = progress.epoch_rng
            epoch_rng, done, done_losses = np_rng.bit_generator.state, progress.batch, progress.epoch_losses
            losses = []
            for batch, _ in iterate_batches(train, bs, np_rng, buckets=train_buckets, skip=done):
                if step >= total:
                    break
                # No host synchronisation: the losses stay on the device until the epoch's end (or a report).
                state, metrics = ft.train_step(state, ft.put(batch), rng)
                losses.append(metrics["loss"])
                step += 1
                steps_run += 1
                now = time.time()
                if now - last_report >= _PROGRESS_EVERY_S and step < total:   # long epochs: progress between
                    last_report = now
                    rate = (step - start_step) / (now - t_start)
                    print(f"{label} epoch {epoch + 1}/{epochs} step {step}/{total} train_loss "
                          f"{float(np.mean(jax.device_get(losses[-20:]))):.4f} (last 20) ({rate:.1f} steps/s, "
                          f"ETA {(total - step) / rate:.0f}s)", flush=True)
                ckpt.after_step(step, steps_run, total, state, best_params, lambda: dataclasses.replace(
                    progress, epoch=epoch, batch=done + len(losses), epoch_rng=epoch_rng,
                    epoch_losses=done_losses + resume.host_losses(losses), history=history, best=best,
                    best_epoch=best_epoch, seconds=seconds_before + time.time() - t_start))
            progress = dataclasses.replace(progress, epoch_rng=None, batch=0, epoch_losses=[])
            all_losses = np.asarray(done_losses, np.float32)
            if losses:
                all_losses = np.concatenate([all_losses, np.asarray(jax.device_get(jnp.stack(losses)))])
            train_loss = float(np.mean(all_losses)) if len(all_losses) else float("nan")
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"{label} train loss is {train_loss} in epoch {epoch + 1}; lower the "
                                         f"learning rate ({opts.learning_rate})")
            dev_metrics = resume.plain_json(evaluate(ft.predict(state.params, dev, eval_bs)))
            history.append({"epoch": epoch + 1, "step": step, "train_loss": train_loss, "dev": dev_metrics})
            elapsed = time.time() - t_start
            eta = elapsed / (step - start_step) * (total - step) if step > start_step else 0.0
            print(f"{label} epoch {epoch + 1}/{epochs} step {step}/{total} train_loss {train_loss:.4f} "
                  f"dev {main_metric} {dev_metrics[main_metric]:.4f} "
                  f"({(step - start_step) / max(elapsed, 1e-9):.1f} steps/s, ETA {eta:.0f}s)", flush=True)
            last_report = time.time()
            if writer is not None:
                writer.write_scalars(step, {"train/loss": train_loss,
                                            "train/learning_rate": float(ft.schedule(step - 1)),
                                            **{f"eval/{k}": v for k, v in dev_metrics.items()}})
            if best is None or score(dev_metrics, main_metric) > score(best, main_metric):
                best, best_epoch = dev_metrics, epoch + 1
                best_params = jax.device_get(state.params)
            elif patience and epoch + 1 - best_epoch >= patience:
                print(f"{label} early stop: no {main_metric} gain for {patience} epochs", flush=True)
                break
            if step >= total:
                break
    return FinetuneResult(best_metrics=best, best_epoch=best_epoch, history=history, steps=step,
                          params=best_params, seconds=seconds_before + time.time() - t_start, finetuner=ft,
                          steps_run=steps_run)

