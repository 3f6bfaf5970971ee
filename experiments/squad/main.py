r"""Fine-tune BERT on SQuAD v1.1 / v2.0. See config.py for the commands.

Writes into ``workdir``: ``results.json`` (``metrics``: ``exact_match``, ``f1`` and, for v2.0, the
HasAns/NoAns split and ``best_exact`` / ``best_f1`` with the null-score thresholds that reach them on
dev; ``runs``: every lr x seed with its per-epoch history; data sizes, steps, the config),
``predictions.json`` (question id -> answer text, "" = no answer) and ``nbest_predictions.json`` of the
best run, ``null_odds.json`` for v2.0 (question id -> null score minus best span score: the official
evaluation script's ``--na-prob-file``), and TensorBoard summaries per run under ``workdir/tb/``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bert_jax import cli  # noqa: E402

cli.define_flags("experiments/squad/config.py:task=squad1|squad2",
                 "Output directory (results.json, predictions.json, TensorBoard).")

VERSIONS = {"squad1": "v1.1", "squad2": "v2.0"}
# A null-odds value with no span candidate at all is +inf; JSON has no infinity, so files get this.
_JSON_INF = 1e30


def load_examples(config):
    """(train examples, dev examples): the official JSON files when given, else tfds squad/<version>."""
    from bert_jax.tasks import squad

    if config.task not in VERSIONS:
        raise ValueError(f"task={config.task!r}: choose one of {', '.join(VERSIONS)}")
    version = VERSIONS[config.task]

    def load(path, split):
        if path:
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                raise ValueError(f"SQuAD file {path} is empty; expected an official SQuAD JSON file "
                                 '({"version": ..., "data": [{"title", "paragraphs": [...]}]})')
            return squad.load_squad_json(path)
        return squad.load_squad_tfds(version, split, data_dir=config.data_dir or None)
    train, dev = load(config.train_file, "train"), load(config.eval_file, "validation")
    if version == "v1.1":
        for path, examples in ((config.train_file, train), (config.eval_file, dev)):
            impossible = [ex.qid for ex in examples if ex.is_impossible]
            if impossible:
                raise ValueError(f"{path or 'tfds'} has {len(impossible)} unanswerable questions (e.g. "
                                 f"{impossible[0]!r}): that is SQuAD 2.0 data; use task=squad2")
    return train, dev


def span_predictions(out) -> dict:
    """qid -> the best non-null answer of the n-best list ("" when there is none)."""
    return {qid: next((n["text"] for n in nbest if n["text"]), "") for qid, nbest in out.nbest.items()}


def evaluate_outputs(config, examples, features, outputs_FxLx2):
    """(metrics, SquadPredictions) of start/end logits ``[F, L, 2]`` on ``examples``.

    v2.0: ``exact_match`` / ``f1`` at ``null_score_diff_threshold`` (identical to scoring
    ``predictions``), and ``best_exact`` / ``best_f1`` over all thresholds (the official script's
    ``find_best_thresh``, run on the best non-null spans so every threshold is reachable)."""
    from bert_jax.tasks import metrics as metrics_lib
    from bert_jax.tasks import squad

    v2 = config.task == "squad2"
    out = squad.postprocess(examples, features, outputs_FxLx2[..., 0], outputs_FxLx2[..., 1],
                            n_best_size=int(config.n_best_size), max_answer_length=int(config.max_answer_length),
                            version_2=v2, null_score_diff_threshold=float(config.null_score_diff_threshold))
    gold = squad.gold_answers(examples)
    if not v2:
        return metrics_lib.squad_evaluate(gold, out.predictions), out
    m = metrics_lib.squad_evaluate(gold, span_predictions(out), version_2=True, na_probs=out.null_odds,
                                   na_prob_thresh=float(config.null_score_diff_threshold))
    m["exact_match"] = m.pop("exact")
    return {k: _finite(float(v)) for k, v in m.items()}, out


def _finite(x: float) -> float:
    return x if abs(x) < _JSON_INF else (_JSON_INF if x > 0 else -_JSON_INF)


def train_and_evaluate(config, workdir: str) -> dict:
    import jax
    import numpy as np

    from bert_jax import fileio
    from bert_jax.tasks import squad
    from bert_jax.training import protocol as protocol_lib

    os.makedirs(workdir, exist_ok=True)
    train_ex, dev_ex = load_examples(config)
    if config.train_fraction < 1.0:
        n = max(1, int(round(config.train_fraction * len(train_ex))))
        keep = np.sort(np.random.default_rng(config.data_seed).permutation(len(train_ex))[:n])
        train_ex = [train_ex[i] for i in keep]
    model_config, pretrained, tokenizer = protocol_lib.load_model_and_tokenizer(config)
    shape = dict(max_seq_length=int(config.max_seq_length), doc_stride=int(config.doc_stride),
                 max_query_length=int(config.max_query_length))
    train_feats = squad.make_features(train_ex, tokenizer, is_training=True, **shape)
    if not len(train_feats):
        raise ValueError(f"no training features: all {len(train_ex)} answerable training questions were skipped "
                         "because their answer text is not at its answer_start in the context")
    dev_feats = squad.make_features(dev_ex, tokenizer, is_training=False, **shape)
    print(f"{config.task}: {len(train_ex)} train questions -> {len(train_feats)} windows "
          f"({train_feats.num_skipped} skipped: answer not at answer_start); {len(dev_ex)} dev questions -> "
          f"{len(dev_feats)} windows", flush=True)

    def evaluate(outputs):
        return evaluate_outputs(config, dev_ex, dev_feats, outputs)[0]

    protocol = protocol_lib.run_protocol(config, workdir, model_config, pretrained, "qa", 2, train_feats.arrays,
                                     dev_feats.arrays, evaluate, "f1", task=config.task)
    result = protocol.summary
    # The best parameters come back on the host; placed as in training, predict does not recompile.
    params = jax.device_put(protocol.best_params, protocol.best_finetuner.replicated)
    outputs = protocol.best_finetuner.predict(params, dev_feats.arrays, int(config.eval_batch_size))
    best_metrics, out = evaluate_outputs(config, dev_ex, dev_feats, outputs)
    result["best_run_metrics"] = best_metrics
    result["data_sizes"] = {"train_questions": len(train_ex), "train_windows": len(train_feats),
                            "train_skipped": int(train_feats.num_skipped), "dev_questions": len(dev_ex),
                            "dev_windows": len(dev_feats)}
    files = {"predictions": os.path.join(workdir, "predictions.json"),
             "nbest_predictions": os.path.join(workdir, "nbest_predictions.json")}
    if jax.process_index() == 0:
        fileio.write_json(files["predictions"], out.predictions)
        fileio.write_json(files["nbest_predictions"], {
            q: [{**n, "start_logit": _finite(n["start_logit"]), "end_logit": _finite(n["end_logit"])} for n in nb]
            for q, nb in out.nbest.items()})
        if config.task == "squad2":
            files["null_odds"] = os.path.join(workdir, "null_odds.json")
            fileio.write_json(files["null_odds"], {q: _finite(v) for q, v in out.null_odds.items()})
    result["prediction_files"] = files
    protocol_lib.write_results(workdir, result)
    m = result["metrics"]
    extra = (f"; best threshold on dev {m['best_f1_thresh']:.3f} -> F1 {m['best_f1']:.2f}"
             if "best_f1" in m else "")
    print(f"{config.task}: dev EM {m['exact_match']:.2f} F1 {m['f1']:.2f} (median of {len(result['seeds'])} "
          f"seed(s), lr {result['best_learning_rate']:g}){extra} -> {os.path.join(workdir, 'results.json')}",
          flush=True)
    return result


if __name__ == "__main__":
    cli.run(train_and_evaluate, "squad")
