"""The model, optimizer and compiled steps of a pre-training run, for one parallelism mode.

`Trainer` hides the difference between ``pmap`` (state replicated on the local devices) and ``jit``
over a Mesh (state created already sharded) from the loop: the same calls build, restore, step and
read the state in both. "Initialise from pretrained weights" is the explicit `init_checkpoint` path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from bert_jax import modeling
from bert_jax.training import TrainingError, optim, parallel, step as step_lib


def model_config(config, vocab_size: int) -> modeling.BertConfig:
    """The named size with the config's ``model`` overrides, long enough for every phase."""
    overrides = {k: v for k, v in (config.model.to_dict() if config.get("model") else {}).items()
                 if v is not None}
    max_len = max([config.seq_len] + [int(p.seq_len) for p in config.phases])
    overrides.setdefault("max_position_embeddings", max(512, max_len))
    return modeling.BertConfig.named(config.size, vocab_size=vocab_size, dtype=config.dtype,
                                     remat=bool(config.get("remat", False)), **overrides)


def init_checkpoint(config, bert_config: modeling.BertConfig):
    """``(params, source)`` of ``config.init_checkpoint`` (``(None, "")`` when empty): the pretrained
    weights a fresh run starts from; the vocabulary must be the tokenizer's."""
    if not config.init_checkpoint:
        return None, ""
    from bert_jax.convert import load_pretrained
    init_cfg, pretrained = load_pretrained(config.init_checkpoint)
    source = config.init_checkpoint
    if init_cfg.vocab_size != bert_config.vocab_size:
        raise TrainingError(f"init_checkpoint {source} has vocab_size={init_cfg.vocab_size} but the "
                            f"tokenizer {config.tokenizer} has {bert_config.vocab_size}")
    return pretrained, source


def _merge_pretrained(params, pretrained, source):
    """`bert_jax.convert.merge.merge_pretrained` (heads the checkpoint lacks keep their random init)."""
    from bert_jax.convert.merge import MergeError, merge_pretrained
    try:
        return merge_pretrained(params, pretrained, source=f"init_checkpoint {source}")
    except MergeError as e:
        raise TrainingError(str(e)) from None


class Trainer:
    """Holds the compiled steps and the state layout for one parallelism mode."""

    def __init__(self, config, bert_config: modeling.BertConfig, total_steps: int):
        self.config = config
        self.bert_config = bert_config
        self.model = modeling.BertForPreTraining(bert_config)
        opt_cfg = dict(config)
        opt_cfg["num_train_steps"] = total_steps
        self.opt_cfg = ml_collections.ConfigDict(opt_cfg)
        self.schedule = optim.make_schedule(self.opt_cfg)
        self.tx = optim.make_optimizer(self.opt_cfg)
        self.mode = config.parallelism
        if self.mode not in ("pmap", "jit"):
            raise TrainingError(f"parallelism={self.mode!r}: choose 'pmap' or 'jit'")
        k = int(config.grad_accum_steps)
        if self.mode == "pmap":
            fn = step_lib.make_pretrain_step(self.model, parallel.PMAP_AXIS, k, self.schedule)
            self.train_step = jax.pmap(fn, axis_name=parallel.PMAP_AXIS, donate_argnums=(0,),
                                       in_axes=(0, 0, None))
            self.eval_step = jax.pmap(step_lib.make_eval_step(self.model, parallel.PMAP_AXIS),
                                      axis_name=parallel.PMAP_AXIS)
            self.mesh = None
        else:
            self.mesh = parallel.make_mesh(tuple(config.mesh_shape))
            self.state_shardings = parallel.shardings_of(
                self._init_boxed, jax.random.PRNGKey(0), self.mesh, config.logical_axis_rules)
            self.train_step = jax.jit(step_lib.make_pretrain_step(self.model, None, k, self.schedule),
                                      donate_argnums=(0,))
            self.eval_step = jax.jit(step_lib.make_eval_step(self.model, None))

    def _init_boxed(self, rng):
        ids = jnp.zeros((1, 8), jnp.int32)
        params = self.model.init(rng, ids, deterministic=True)["params"]
        return step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                   opt_state=self.tx.init(params), tx=self.tx)

    def init_state(self, rng, pretrained=None, source=""):
        """Fresh state (optionally with pretrained params), laid out for the mode."""
        if self.mode == "jit":
            state, _ = parallel.create_sharded(self._init_boxed, rng, self.mesh,
                                               self.config.logical_axis_rules)
            if pretrained is not None:
                params = _merge_pretrained(state.params, pretrained, source)
                params = jax.device_put(params, self.state_shardings.params)
                state = state.replace(params=params, opt_state=jax.jit(
                    self.tx.init, out_shardings=self.state_shardings.opt_state)(params))
            return state
        state = jax.jit(lambda r: nn.meta.unbox(self._init_boxed(r)))(rng)
        if pretrained is not None:
            params = _merge_pretrained(state.params, pretrained, source)
            state = state.replace(params=params, opt_state=self.tx.init(params))
        return parallel.replicate(state)

    def abstract_state(self):
        """ShapeDtypeStructs (with shardings in jit mode) of the *saved* (unreplicated) state."""
        shapes = jax.eval_shape(lambda r: nn.meta.unbox(self._init_boxed(r)), jax.random.PRNGKey(0))
        if self.mode == "jit":
            return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                          shapes, self.state_shardings)
        return shapes

    def num_params(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.abstract_state().params))

    # -- host <-> device layout of batches and state --------------------------------------------
    def put_batch(self, host_batch):
        if self.mode == "pmap":
            return parallel.put_pmap_batch(host_batch)
        return parallel.global_batch_from_host(host_batch, self.mesh)

    # Nothing here runs a computation: in a multi-process run every process must run the same
    # computations in the same order, and these are called around Orbax's cross-process barriers.
    def savable(self, state):
        """What `Checkpoints.save` takes: pmap -> this process's host copy (numpy; Orbax writes numpy
        from process 0 and syncs the others); jit -> the global sharded arrays."""
        if self.mode == "pmap":
            return parallel.unreplicate(state)
        return state

    def from_saved(self, state):
        return parallel.replicate(state) if self.mode == "pmap" else state

    def host_values(self, tree):
        """Device metrics (psum-ed / replicated, so equal on every process) -> numpy, read locally."""
        if self.mode == "pmap":
            return parallel.unreplicate(tree)
        return parallel.read_replicated(tree)

    def host_metrics(self, metrics):
        return {k: float(v) for k, v in self.host_values(metrics).items()}

    def device_values(self, tree):
        """numpy -> the layout the train step's metrics have (to continue a running sum after a restart)."""
        if self.mode == "pmap":
            return parallel.replicate(tree)
        return parallel.replicate_on_mesh(tree, self.mesh)
