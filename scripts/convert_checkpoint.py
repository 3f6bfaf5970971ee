r"""Convert a BERT checkpoint between formats.

    python scripts/convert_checkpoint.py --input=PATH --output=DIR [--output_format=hf|bert_jax|google]

--input is any format `bert_jax.load_pretrained` reads (HF directory with model.safetensors or
pytorch_model.bin, Google TF-1 directory with bert_config.json + bert_model.ckpt.*, bert_jax
directory or training workdir). Every tensor must be used and every shape must match the config,
otherwise the conversion stops with one error listing the unused/missing tensors and bad shapes.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("input", None, "Checkpoint to read (HF dir, Google TF-1 dir/prefix, bert_jax dir).")
flags.DEFINE_string("output", None, "Directory to write.")
flags.DEFINE_enum("output_format", "hf", ["hf", "bert_jax", "google"], "Format to write.")
flags.DEFINE_string("input_format", None, "Force the input format instead of detecting it.")
flags.DEFINE_string("tokenizer", None, "Optional vocab.txt / SentencePiece model to copy beside the weights.")
flags.mark_flags_as_required(["input", "output"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax

    from bert_jax import cli
    cli.normalize_flag_paths("input", "output", "tokenizer")

    import bert_jax
    from bert_jax.convert import mapping

    try:
        config, params = bert_jax.load_pretrained(FLAGS.input, format=FLAGS.input_format)
        if FLAGS.tokenizer:
            from bert_jax.tokenization import check_vocab_size, load_tokenizer
            tok = load_tokenizer(FLAGS.tokenizer)
            check_vocab_size(tok, config.vocab_size)
        out = bert_jax.save_pretrained(FLAGS.output, config, params, format=FLAGS.output_format)
        if FLAGS.tokenizer:
            tok.save(FLAGS.output)
    except ValueError as e:
        raise SystemExit(f"convert_checkpoint: {e}") from None
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    groups = sorted({"/".join(k[:2]) for k in mapping.flatten(params)})
    print(f"Converted {FLAGS.input} -> {out} ({FLAGS.output_format}): {n:,} parameters; "
          f"{len(groups)} groups: {', '.join(groups)}")


if __name__ == "__main__":
    app.run(main)
