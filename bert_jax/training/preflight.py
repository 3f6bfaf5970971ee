"""Checks that fail before anything compiles: config, data (files, shapes, the tokenizer that made
them) and the workdir (a checkpoint of another model). Each error says what to change."""

from __future__ import annotations

import dataclasses
from typing import List

import jax

from bert_jax import checkpoint as ckpt_lib
from bert_jax import modeling
from bert_jax.data import pipeline, records
from bert_jax.training import TrainingError, parallel, phases as phases_lib


def set_rng_impl(config) -> None:
    rng_impl = config.get("rng_impl", "threefry")
    if rng_impl not in ("threefry", "rbg", "unsafe_rbg"):
        raise TrainingError(f"rng_impl={rng_impl!r}: choose threefry, rbg or unsafe_rbg")
    jax.config.update("jax_default_prng_impl", rng_impl + ("2x32" if rng_impl == "threefry" else ""))


def check_tokenizer_given(config) -> None:
    if not config.tokenizer:
        raise TrainingError("config.tokenizer is empty: pass the vocab.txt / SentencePiece model that made "
                            "the data (--config.tokenizer=PATH)")


def check_run(config, workdir: str, phases: List[phases_lib.Phase], bert_config: modeling.BertConfig,
              tokenizer) -> None:
    """Batch layout, shapes and files of every phase; the workdir's model; then the records of every
    phase against its shapes and the tokenizer (each file's first record; no iterator is built)."""
    train_files = {}
    for ph in phases:
        train_files[ph.index] = phases_lib.data_files(ph.train_files, f"phase {ph.index} train_files")
        parallel.check_batch_layout(ph.global_batch_size, config.grad_accum_steps)
        if ph.seq_len > bert_config.max_position_embeddings:
            raise TrainingError(f"phase {ph.index} seq_len={ph.seq_len} exceeds max_position_embeddings="
                                f"{bert_config.max_position_embeddings}")
    eval_files = phases_lib.data_files(config.eval_files, "eval_files") if config.eval_files else []
    check_workdir_model(workdir, bert_config)
    for ph in phases:
        per_host, _ = parallel.check_batch_layout(ph.global_batch_size, config.grad_accum_steps)
        check_data_matches_tokenizer(train_files[ph.index], tokenizer, "train_files")
        pipeline.check_data(train_files[ph.index], pipeline.make_config(
            **phases_lib.pipeline_options(config, ph, tokenizer, per_host, train=True)))
        if eval_files:
            check_data_matches_tokenizer(eval_files, tokenizer, "eval_files")
            pipeline.check_data(eval_files, pipeline.make_config(
                **phases_lib.pipeline_options(config, ph, tokenizer, per_host, train=False)))


def check_data_matches_tokenizer(files: List[str], tokenizer, what: str) -> None:
    """summary.json beside the records (create_pretraining_data.py) names the tokenizer that made them."""
    for path, summary in records.read_summaries(files[:1])[:1]:
        vocab = summary.get("vocab_size")
        if vocab is not None and int(vocab) != tokenizer.vocab_size:
            raise TrainingError(
                f"{what} {files[0]} was made with a vocabulary of {vocab} tokens ({path}) but config.tokenizer "
                f"has {tokenizer.vocab_size}: pass the tokenizer that made the data")
        tok = summary.get("tokenizer")
        fp = tok.get("fingerprint") if isinstance(tok, dict) else summary.get("tokenizer_fingerprint")
        if fp and fp != tokenizer.fingerprint():
            raise TrainingError(f"{what} {files[0]} was made with a different tokenizer (fingerprint in {path}) "
                                f"than config.tokenizer: pass the tokenizer that made the data")


def check_workdir_model(workdir: str, bert_config: modeling.BertConfig) -> None:
    """A workdir that holds a checkpoint must hold one of this architecture."""
    if not ckpt_lib.is_bert_jax_dir(workdir):
        return
    saved, _ = ckpt_lib.read_marker(workdir)
    # How to compute (dtype, remat, attention and other kernels) may change between runs; the architecture may not.
    ours = bert_config.replace(dtype=saved.dtype, remat=saved.remat, attention_impl=saved.attention_impl,
                              kernels=saved.kernels)
    if saved != ours:
        diffs = [f"{f.name}: workdir {getattr(saved, f.name)!r} vs config {getattr(ours, f.name)!r}"
                 for f in dataclasses.fields(saved) if getattr(saved, f.name) != getattr(ours, f.name)]
        raise TrainingError(f"workdir {workdir} holds a checkpoint of a different model ({'; '.join(diffs)}). "
                            "Use a new --workdir, or the same size/tokenizer to resume.")
