r"""Fine-tune BERT for sentence(-pair) classification / regression. See config.py for the commands.

Writes ``workdir/results.json``: ``metrics`` (dev metrics of the best learning rate, median over
seeds), ``runs`` (every lr x seed with its per-epoch history), data sizes, steps, the config; plus
TensorBoard summaries per run under ``workdir/tb/`` and, for GLUE test splits, submission files.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bert_jax import cli  # noqa: E402

cli.define_flags("experiments/classification/config.py:task=...",
                 "Output directory (results.json, TensorBoard, predictions).")


def train_and_evaluate(config, workdir: str) -> dict:
    import numpy as np

    from bert_jax.tasks import classification as cls
    from bert_jax.training import protocol as protocol_lib

    os.makedirs(workdir, exist_ok=True)
    spec, splits = cls.load_task(config, workdir)
    if "train" not in splits:
        raise ValueError(f"task {spec.name} has no training split (AX is scored with an MNLI model)")
    model_config, pretrained, tokenizer = protocol_lib.load_model_and_tokenizer(config)
    train_ex = splits["train"]
    if config.train_fraction < 1.0:
        n = max(1, int(round(config.train_fraction * len(train_ex))))
        train_ex = train_ex.subset(np.random.default_rng(config.data_seed).permutation(len(train_ex))[:n])
    encoded = {name: cls.encode_examples(tokenizer, ex, config.max_seq_length) for name, ex in splits.items()}
    encoded["train"] = cls.encode_examples(tokenizer, train_ex, config.max_seq_length)
    kind = "regression" if spec.is_regression else "classification"

    def evaluate(name):
        labels = encoded[name]["labels"]

        def fn(outputs):
            preds = outputs[:, 0] if kind == "regression" else outputs.argmax(-1)
            return spec.metrics(labels, preds)
        return fn

    protocol = protocol_lib.run_protocol(
        config, workdir, model_config, pretrained, kind, spec.num_labels, encoded["train"], encoded["dev"],
        evaluate("dev"), spec.main_metric, task=config.task)
    result = protocol.summary

    # Extra dev sets (MNLI mismatched), labelled local test files, GLUE submissions: with the best run.
    for name, arrays in encoded.items():
        if name in ("train", "dev"):
            continue
        outputs = protocol.best_finetuner.predict(protocol.best_params, arrays, int(config.eval_batch_size))
        preds = outputs[:, 0] if kind == "regression" else outputs.argmax(-1)
        if name.startswith("test:"):
            split = name.split(":", 1)[1]
            labels = np.asarray(arrays["labels"])
            if spec.is_glue:
                path = cls.write_glue_submission(spec, split, arrays["idx"], preds, os.path.join(workdir, "glue_test"))
                result.setdefault("glue_submission_files", []).append(path)
            elif (labels >= 0).all():
                result["test_metrics"] = spec.metrics(labels, preds)
        elif name == "test":
            if (np.asarray(arrays["labels"]) >= 0).all():
                result["test_metrics"] = spec.metrics(arrays["labels"], preds)
            else:
                result["test_predictions"] = [float(p) if kind == "regression" else int(p) for p in preds]
        else:
            result[f"{name}_metrics"] = spec.metrics(arrays["labels"], preds)
    result["data_sizes"] = {name: int(len(a["input_ids"])) for name, a in encoded.items()}
    protocol_lib.write_results(workdir, result)
    print(f"{config.task}: dev {spec.main_metric} {result['metrics'][spec.main_metric]:.4f} (median of "
          f"{len(result['seeds'])} seed(s), lr {result['best_learning_rate']:g})"
          + (f"; test {spec.main_metric} {result['test_metrics'][spec.main_metric]:.4f}"
             if "test_metrics" in result else "") + f" -> {os.path.join(workdir, 'results.json')}", flush=True)
    return result


if __name__ == "__main__":
    cli.run(train_and_evaluate, "classification")
