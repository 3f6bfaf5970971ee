"""How long a run is and what each part of it reads.

Durations come in natural units -- ``num_train_steps``, ``num_train_examples`` or ``num_train_epochs``
-- and `train_steps` is the one function that turns them into steps. A run is one or more `Phase`s
(the BERT paper's 90% at sequence length 128, 10% at 512), each with its own shapes, batch and files.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from bert_jax import fileio
from bert_jax.data import records
from bert_jax.training import TrainingError


def data_files(spec: str, what: str) -> List[str]:
    """The TFRecords that a config field (comma-separated globs) names; TrainingError if a pattern
    matches nothing."""
    try:
        return fileio.expand_patterns(spec, what, hint="pass comma-separated globs of TFRecords made by "
                                                       "scripts/create_pretraining_data.py")
    except ValueError as e:
        raise TrainingError(str(e)) from None


def train_steps(config, train_files: Optional[List[str]] = None) -> int:
    """The one function that turns num_train_steps / num_train_examples / num_train_epochs into steps."""
    given = [n for n in ("num_train_steps", "num_train_examples", "num_train_epochs") if config.get(n)]
    if len(given) != 1:
        raise TrainingError(f"give exactly one of num_train_steps, num_train_examples, num_train_epochs "
                            f"(got {', '.join(given) or 'none'})")
    if config.num_train_steps:
        return int(config.num_train_steps)
    if config.num_train_examples:
        return max(1, int(config.num_train_examples) // int(config.global_batch_size))
    examples = sum(int(s.get("num_instances", s.get("instances", 0)))
                   for _, s in records.read_summaries(train_files or []))
    if not examples:
        raise TrainingError("num_train_epochs needs summary.json (from create_pretraining_data.py) beside "
                            "the train files to know the epoch size; give num_train_steps instead")
    return max(1, int(round(float(config.num_train_epochs) * examples / int(config.global_batch_size))))


@dataclasses.dataclass
class Phase:
    index: int
    start_step: int
    end_step: int
    seq_len: int
    max_predictions: int
    global_batch_size: int
    train_files: str


def make_phases(config, total_steps: int) -> List[Phase]:
    """``config.phases`` (fractions of ``total_steps``) as `Phase`s; none given: one phase from the
    config's top-level fields."""
    if not config.phases:
        return [Phase(0, 0, total_steps, config.seq_len, config.max_predictions,
                      config.global_batch_size, config.train_files)]
    fractions = [float(p.fraction) for p in config.phases]
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise TrainingError(f"phase fractions {fractions} must sum to 1")
    phases, start = [], 0
    for i, p in enumerate(config.phases):
        end = total_steps if i == len(config.phases) - 1 else start + int(round(p.fraction * total_steps))
        files = p.get("train_files") or (config.train_files_512 if p.seq_len == 512 and config.get("train_files_512")
                                         else config.train_files)
        phases.append(Phase(i, start, end, int(p.seq_len), int(p.max_predictions),
                            int(p.get("global_batch_size") or config.global_batch_size), files))
        start = end
    return [p for p in phases if p.end_step > p.start_step]


# ----------------------------------------------------------------------------------------------
# What a phase reads
# ----------------------------------------------------------------------------------------------

def pipeline_options(config, phase: Phase, tokenizer, per_host_batch: int, *, train: bool) -> dict:
    """`bert_jax.data.pipeline.make_config`'s arguments for the phase's train (shuffled, seed per
    phase) or eval (in order) data."""
    return dict(batch_size=per_host_batch, max_seq_length=phase.seq_len, max_predictions_per_seq=phase.max_predictions,
                seed=int(config.seed) + 1000 * phase.index if train else int(config.seed), shuffle=train,
                shuffle_buffer=int(config.shuffle_buffer), shuffle_files=train,
                dynamic_masking=bool(config.dynamic_masking), masked_lm_prob=float(config.masked_lm_prob),
                whole_word_mask=bool(config.whole_word_mask), tokenizer=tokenizer)


def train_iterator(config, phase: Phase, tokenizer, per_host_batch: int, data_state=None):
    """This host's slice of the phase's train batches, resumed at ``data_state`` when given."""
    return _iterator(data_files(phase.train_files, "train_files"), data_state,
                     **pipeline_options(config, phase, tokenizer, per_host_batch, train=True))


def eval_iterator(config, phase: Phase, tokenizer, per_host_batch: int):
    return _iterator(data_files(config.eval_files, "eval_files"), None,
                     **pipeline_options(config, phase, tokenizer, per_host_batch, train=False))


def _iterator(files, state, **options):
    import jax

    from bert_jax.data import pipeline
    return pipeline.make_iterator(files, process_index=jax.process_index(), process_count=jax.process_count(),
                                  state=state, **options)
