"""The fine-tuning protocol the experiments share: checkpoint + tokenizer, every learning rate x seed
(`bert_jax.training.finetune.finetune`), the lr with the best median dev metric, results.json.

Each run trains in ``workdir/runs/lr<lr>_seed<seed>/`` with checkpoints; a finished run leaves
``result.json`` there and is read back, not trained again, when the same command runs again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Dict, Optional

import jax
import numpy as np

from bert_jax import modeling
from bert_jax.training import parallel, preemption
from bert_jax.training.finetune import (FinetuneOptions, Finetuner, build_model, finetune, init_params,
                                        optimizer_config, score)
from bert_jax.training.resume import Preempted, check_fingerprint, plain_json, run_fingerprint


def _tokenizer_path_for(checkpoint: str) -> str:
    """Where a checkpoint keeps its tokenizer: ``tokenizer/`` of a bert_jax workdir, else the dir."""
    for cand in (os.path.join(checkpoint, "tokenizer"), checkpoint):
        if os.path.isdir(cand):
            return cand
    return os.path.dirname(checkpoint)


def load_model_and_tokenizer(config):
    """(BertConfig, pretrained params or None, tokenizer) from ``init_checkpoint`` / ``tokenizer`` /
    ``model_size`` (random init only); the tokenizer's vocab must match the checkpoint's."""
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
        if not config.get("model_size"):
            raise ValueError("random init (empty init_checkpoint) needs --config.model_size (tiny, mini, small, "
                             "medium, base or large)")
        tokenizer = load_tokenizer(config.tokenizer)
        model_config, pretrained = modeling.BertConfig.named(config.model_size, vocab_size=tokenizer.vocab_size), None
    if config.max_seq_length > model_config.max_position_embeddings:
        raise ValueError(f"max_seq_length={config.max_seq_length} exceeds the model's max_position_embeddings="
                         f"{model_config.max_position_embeddings}")
    model_config = model_config.replace(hidden_dropout_prob=float(config.get("hidden_dropout_prob", 0.1)),
                                        dtype=str(config.get("dtype", None) or model_config.dtype),
                                        kernels=str(config.get("kernels", None) or model_config.kernels))
    return model_config, pretrained, tokenizer



@dataclasses.dataclass
class ProtocolResult:
    """What `run_protocol` returns: ``summary`` (the protocol's part of results.json) and the model of the
    best seed at the chosen learning rate, to predict other splits with."""
    summary: Dict[str, Any]
    best_params: Any                    # host numpy
    best_finetuner: Finetuner           # `Finetuner.predict` with ``best_params``
    best_seed: int
    best_learning_rate: float


def run_dir_for(workdir: str, learning_rate: float, seed: int) -> str:
    return os.path.join(workdir, "runs", f"lr{learning_rate:g}_seed{seed}")


RESULT_FILE = "result.json"        # a finished run, in its run dir
BEST_PARAMS_DIR = "best_params"    # its best parameters (bert_jax export), kept for the best seed of each lr


def _finished_run(run_dir: str, fingerprint: dict) -> Optional[dict]:
    path = os.path.join(run_dir, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    check_fingerprint(saved.pop("fingerprint", None), fingerprint, run_dir)
    return saved


def run_protocol(config, workdir, model_config, pretrained, kind, num_labels, train, dev, evaluate,
                 main_metric, task="") -> ProtocolResult:
    """The fine-tuning protocol: every learning rate x seed; the lr with the best median dev
    ``main_metric`` wins; reported metrics are medians over seeds at that lr.

    ``config``: an experiment's config, read through `FinetuneOptions.from_config` (or the options).
    Each run trains in ``workdir/runs/lr<lr>_seed<seed>/`` (`finetune` with checkpoints); a finished run
    leaves ``result.json`` there and is read, not trained again, when the same command runs again; the
    best seed of each lr so far keeps its parameters in ``best_params/``. ``max_steps_this_run`` counts
    the steps of every run of this call."""
    from clu import metric_writers

    from bert_jax import checkpoint

    opts = FinetuneOptions.from_config(config)
    lrs = list(opts.learning_rates) or [float(opts.learning_rate)]
    seeds = list(opts.seeds)
    fingerprint = run_fingerprint(opts, kind, num_labels, model_config, train, dev)
    budget = int(opts.max_steps_this_run) or None
    main = jax.process_index() == 0
    runs, best_at, in_memory = [], {}, None   # best_at[lr]: (record, run dir); in_memory: (run dir, FinetuneResult)
    with preemption.PreemptionFlag() as preempt:   # a SIGTERM between two runs stops before the next
        for lr in lrs:
            for seed in seeds:
                run_dir, label = run_dir_for(workdir, lr, seed), f"[{task} lr={lr:g} seed={seed}]"
                record = _finished_run(run_dir, fingerprint)
                res = None
                if record is not None:
                    print(f"{label} finished earlier: dev {main_metric} {score(record['dev_metrics'], main_metric):.4f}"
                          f" ({os.path.join(run_dir, RESULT_FILE)})", flush=True)
                else:
                    sigterm = parallel.any_process(preempt.requested)
                    if sigterm or (budget is not None and budget <= 0):
                        why = "SIGTERM" if sigterm else "max_steps_this_run reached"
                        message = f"{label} {why} before this run; exiting (the same command resumes)"
                        print(message, flush=True)
                        raise Preempted(message)
                    model = build_model(model_config, kind, num_labels)
                    params = init_params(model, jax.random.PRNGKey(seed), pretrained, opts.init_checkpoint)
                    writer = metric_writers.create_default_writer(os.path.join(workdir, "tb", f"lr{lr:g}_seed{seed}"),
                                                                  just_logging=jax.process_index() > 0)
                    try:
                        res = finetune(model, kind, params, train, dev, evaluate, main_metric,
                                       dataclasses.replace(opts, learning_rate=lr), seed=seed, writer=writer,
                                       label=label, run_dir=run_dir, max_steps=budget, fingerprint=fingerprint,
                                       preempt=preempt)
                    finally:
                        writer.close()
                    if budget is not None:
                        budget -= res.steps_run
                    record = {"learning_rate": lr, "seed": seed, "dev_metrics": res.best_metrics,
                              "best_epoch": res.best_epoch, "steps": res.steps, "seconds": round(res.seconds, 1),
                              "history": res.history}
                previous = best_at.get(lr)
                best_so_far = previous is None or score(record["dev_metrics"], main_metric) > score(
                    previous[0]["dev_metrics"], main_metric)
                if res is not None and main:   # keep the result, then let go of the checkpoints
                    if best_so_far:
                        _save_model(os.path.join(run_dir, BEST_PARAMS_DIR), model_config, res.params)
                    checkpoint.write_json_atomic(os.path.join(run_dir, RESULT_FILE),
                                                 {**record, "fingerprint": fingerprint})
                    shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)
                if best_so_far:
                    if previous is not None and main:
                        shutil.rmtree(os.path.join(previous[1], BEST_PARAMS_DIR), ignore_errors=True)
                    best_at[lr] = (record, run_dir)
                elif main:   # a leftover of an interrupted earlier call
                    shutil.rmtree(os.path.join(run_dir, BEST_PARAMS_DIR), ignore_errors=True)
                if res is not None and (in_memory is None or score(res.best_metrics, main_metric) > score(
                        in_memory[1].best_metrics, main_metric)):
                    in_memory = (run_dir, res)
                runs.append(record)

    def median_at(lr):
        return float(np.median([score(r["dev_metrics"], main_metric) for r in runs if r["learning_rate"] == lr]))
    best_lr = max(lrs, key=median_at)
    at_best = [r for r in runs if r["learning_rate"] == best_lr]
    metrics = {k: float(np.median([r["dev_metrics"][k] for r in at_best])) for k in at_best[0]["dev_metrics"]}
    values = np.array([r["dev_metrics"][main_metric] for r in at_best])
    summary = {
        "task": task, "main_metric": main_metric, "metrics": metrics,
        "spread": {"min": float(values.min()), "max": float(values.max()), "std": float(values.std()),
                   "n": int(len(values))},
        "best_learning_rate": best_lr, "seeds": seeds, "learning_rates": lrs,
        "init_checkpoint": opts.init_checkpoint or None,
        "model_config": model_config.to_hf_dict(), "steps": int(at_best[0]["steps"]),
        "config": config.to_dict() if hasattr(config, "to_dict") else plain_json(dataclasses.asdict(opts)),
        "runs": runs,
    }
    # The best seed at the chosen lr: from memory when this call trained it, else from its run dir.
    record, run_dir = best_at[best_lr]
    if in_memory is not None and in_memory[0] == run_dir:
        params, finetuner = in_memory[1].params, in_memory[1].finetuner
    else:
        _, params = checkpoint.load_params(os.path.join(run_dir, BEST_PARAMS_DIR))
        finetuner = Finetuner(build_model(model_config, kind, num_labels), kind,
                              optimizer_config(dataclasses.replace(opts, learning_rate=best_lr),
                                               len(train["input_ids"])),
                              opts.mesh_shape, buckets=opts.length_buckets)
    if opts.save_best_model and main:
        _save_model(os.path.join(workdir, "best_model"), model_config, params)
        summary["best_model"] = os.path.join(workdir, "best_model")
    return ProtocolResult(summary=summary, best_params=params, best_finetuner=finetuner,
                          best_seed=int(record["seed"]), best_learning_rate=best_lr)


def drop_saved_params(workdir: str) -> None:
    """Deletes the runs' ``best_params/`` of a protocol in ``workdir`` (keeping their result.json), for a
    caller that has kept what it needs from the `ProtocolResult` and records the protocol's result itself
    (experiments/pretrained_vs_scratch): a later call then trains nothing but cannot return the model."""
    import glob
    if jax.process_index() == 0:
        for path in glob.glob(os.path.join(workdir, "runs", "*", BEST_PARAMS_DIR)):
            shutil.rmtree(path, ignore_errors=True)


def _save_model(path, model_config, params):
    from bert_jax import checkpoint
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.save_params(tmp, model_config, params)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def write_results(workdir, result):
    from bert_jax import checkpoint
    if jax.process_index() == 0:
        checkpoint.write_json_atomic(os.path.join(workdir, "results.json"),
                                     {k: v for k, v in result.items() if not k.startswith("_")})
