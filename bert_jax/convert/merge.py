"""Pretrained weights into a fresh parameter tree: one function, one rule set.

Used wherever a model starts from a checkpoint: continued pre-training (``init_checkpoint`` of
`bert_jax.training.loop`), fine-tuning (`bert_jax.training.finetune.init_params`) and
`bert_jax.modeling.add_missing_heads`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from absl import logging

from bert_jax.convert.mapping import flatten


class MergeError(ValueError):
    """The checkpoint does not fit the model (shapes, or no encoder)."""


def merge_pretrained(fresh: Any, pretrained: Mapping, *, source: str = "", drop: Sequence[str] = (),
                     fresh_on_mismatch: Sequence[str] = ()) -> Any:
    """``fresh`` (the model's parameters, e.g. `bert_jax.modeling.init_params`) with ``pretrained``'s
    values (a `bert_jax.load_pretrained` tree) where the rules take them. Returns a new tree of
    ``fresh``'s structure and dtypes; neither argument is changed.

    * taken: every leaf of ``pretrained`` whose path the model also has, cast to the model's dtype;
    * dropped: the leaves under a ``drop`` prefix (``"cls"``, ``"bert/pooler"``) and those the model does
      not have (the pre-training heads when fine-tuning, a pooler for a model without one, another task's
      head) -- logged;
    * kept fresh: the model's leaves that ``pretrained`` lacks or drops (a new task head; the pre-training
      heads of an encoder-only checkpoint), and, under a ``fresh_on_mismatch`` prefix, a leaf whose shape
      differs (another task's head: an MNLI classifier of 3 labels when fine-tuning RTE's 2) -- logged;
    * errors, all in one `MergeError` naming ``source``: a taken leaf whose shape differs from the
      model's (each mismatch listed), and a ``pretrained`` without the encoder (``bert``) the model has.
    """
    what = f"the parameters of {source}" if source else "the parameters"
    if "bert" in fresh and "bert" not in pretrained:
        raise MergeError(f"{what} hold no encoder at params['bert'] (they hold {sorted(pretrained)})")
    prefixes = [tuple(p.split("/")) for p in drop]
    refresh = [tuple(p.split("/")) for p in fresh_on_mismatch]
    flat_fresh = flatten(fresh)
    taken, dropped, mismatched = {}, [], []
    for path, value in flatten(pretrained).items():
        if path not in flat_fresh or any(path[:len(p)] == p for p in prefixes):
            dropped.append("/".join(path))
        elif tuple(value.shape) != tuple(flat_fresh[path].shape) and any(path[:len(p)] == p for p in refresh):
            dropped.append(f"{'/'.join(path)} (shape {tuple(value.shape)}, the model's is fresh)")
        elif tuple(value.shape) != tuple(flat_fresh[path].shape):
            mismatched.append(f"{'/'.join(path)}: checkpoint {tuple(value.shape)} vs model "
                              f"{tuple(flat_fresh[path].shape)}")
        else:
            taken[path] = value
    if mismatched:
        raise MergeError(f"{what} do not fit the model ({len(mismatched)} shape mismatch(es)):\n  "
                         + "\n  ".join(mismatched))
    if dropped:
        logging.info("%s: not used (the model has no such parameter, or drop=%s): %s", source or "merge",
                     tuple(drop), ", ".join(dropped))

    def pick(path, x):
        key = tuple(getattr(k, "key", str(k)) for k in path)
        return jnp.asarray(taken[key], x.dtype) if key in taken else x
    return jax.tree_util.tree_map_with_path(pick, fresh)
