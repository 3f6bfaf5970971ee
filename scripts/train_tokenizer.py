r"""Trains a SentencePiece (unigram / BPE) model or a WordPiece vocab.txt with the BERT special tokens.

SentencePiece (default) writes ``<output_prefix>.model``, ``<output_prefix>.vocab`` (piece<TAB>score) and
``<output_prefix>.json`` (the settings and corpus this was trained on); ids ``[PAD]``=0, ``[UNK]``=1,
``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4 come first. ``--lowercase`` uses the case-folding normalizer
``nmt_nfkc_cf``, so the model itself records it and ``load_tokenizer`` restores it::

  python scripts/train_tokenizer.py --input_file='/usr/share/doc/python3.11/html/_sources/**/*.rst.txt' \
      --output_prefix=/tmp/spm/pydocs --model_type=unigram --vocab_size=8000 --lowercase

``--wordpiece`` trains a BERT WordPiece vocabulary instead (``tokenizers.trainers.WordPieceTrainer``, the
same normalizer and pre-tokenizer as BERT) and writes ``<output_prefix>/vocab.txt`` plus
``<output_prefix>/tokenizer_config.json`` -- a directory both ``load_tokenizer`` and
``transformers.BertTokenizerFast.from_pretrained`` read::

  python scripts/train_tokenizer.py --wordpiece --input_file=corpus/*.txt --output_prefix=/tmp/wp \
      --vocab_size=30522 --lowercase

Input: text files, one sentence (or paragraph) per line; blank lines are skipped. When the files hold more
than ``--max_sentences`` lines, a uniform random sample of that many (fixed ``--seed``) is used.
"""

import io
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bert_jax import cli, fileio, tokenization  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("input_file", None, "Comma-separated files or globs (** allowed) of text, one sentence a line.")
flags.DEFINE_string("output_prefix", None, "SentencePiece: writes <prefix>.model/.vocab/.json. "
                    "With --wordpiece: the output directory (vocab.txt + tokenizer_config.json).")
flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe"], "SentencePiece algorithm.")
flags.DEFINE_integer("vocab_size", 30000, "Total vocabulary size including the 5 special tokens.")
flags.DEFINE_bool("lowercase", False, "Lower-case text (uncased model). Recorded in the output.")
flags.DEFINE_integer("max_sentences", 5_000_000, "Train on at most this many lines (uniform sample if more).")
flags.DEFINE_bool("wordpiece", False, "Train a BERT WordPiece vocab.txt instead of a SentencePiece model.")
flags.DEFINE_float("character_coverage", 0.9995, "SentencePiece: share of characters the vocabulary covers.")
flags.DEFINE_integer("min_frequency", 2, "WordPiece: minimum pair frequency for a merge.")
flags.DEFINE_integer("limit_alphabet", 1000, "WordPiece: maximum number of initial characters kept.")
flags.DEFINE_integer("seed", 0, "Seed of the line sample when the corpus exceeds --max_sentences.")
flags.DEFINE_integer("num_threads", 0, "Trainer threads; 0 = all CPUs.")


def read_sentences(files: list[str], max_sentences: int, seed: int) -> tuple[list[str], int]:
    """Non-blank stripped lines of ``files``: all of them, or a uniform reservoir sample of ``max_sentences``."""
    if max_sentences <= 0:
        raise SystemExit(f"--max_sentences must be positive, got {max_sentences}")
    rng = random.Random(seed)
    sample: list[str] = []
    seen = 0
    start = time.time()
    for n_file, path in enumerate(files):
        try:
            f = open(path, "r", encoding="utf-8", errors="strict")
            with f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    seen += 1
                    if len(sample) < max_sentences:
                        sample.append(line)
                    else:  # Algorithm R: every line ends up in the sample with probability max/seen.
                        j = rng.randrange(seen)
                        if j < max_sentences:
                            sample[j] = line
        except UnicodeDecodeError as e:
            raise SystemExit(f"{path} is not UTF-8 text ({e}); convert it or leave it out of --input_file") from e
        except OSError as e:
            raise SystemExit(f"cannot read {path}: {e}") from e
        if (n_file + 1) % 100 == 0 or n_file + 1 == len(files):
            print(f"read {n_file + 1}/{len(files)} files, {seen:,} lines ({time.time() - start:.1f}s)", flush=True)
    if not sample:
        raise SystemExit(f"the {len(files)} input file(s) hold no non-blank lines: {files[:3]}")
    return sample, seen


def train_sentencepiece(sentences: list[str], prefix: str, *, model_type: str, vocab_size: int, lowercase: bool,
                        character_coverage: float, num_threads: int) -> bytes:
    """The serialized SentencePiece model trained on ``sentences`` with [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4."""
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, model_type=model_type, vocab_size=vocab_size,
            character_coverage=character_coverage, input_sentence_size=len(sentences),
            pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece=tokenization.PAD, unk_piece=tokenization.UNK,
            # Control symbols: reserved ids that raw text can never produce (a literal "[MASK]" in the corpus
            # stays text), exactly what [CLS]/[SEP]/[MASK] are for.
            control_symbols=[tokenization.CLS, tokenization.SEP, tokenization.MASK],
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            num_threads=num_threads or os.cpu_count() or 1, max_sentence_length=1 << 16, minloglevel=1)
    except RuntimeError as e:
        msg = str(e)
        hint = " Lower --vocab_size or give more text." if "vocab" in msg.lower() else ""
        raise SystemExit(f"SentencePiece training failed for {prefix}: {msg.strip()}{hint}") from e
    return model.getvalue()


def train_wordpiece(sentences: list[str], *, vocab_size: int, lowercase: bool, min_frequency: int,
                    limit_alphabet: int) -> list[str]:
    """A BERT WordPiece vocabulary (special tokens first: [PAD]=0 ... [MASK]=4) trained on ``sentences``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token=tokenization.UNK, continuing_subword_prefix="##",
                                     max_input_chars_per_word=tokenization.MAX_INPUT_CHARS_PER_WORD))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=True,
                                        special_tokens=list(tokenization.SPECIAL_TOKENS),
                                        limit_alphabet=limit_alphabet, continuing_subword_prefix="##")
    tok.train_from_iterator(sentences, trainer=trainer, length=len(sentences))
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    if any(t is None for t in tokens) or tuple(tokens[:5]) != tokenization.SPECIAL_TOKENS:
        raise SystemExit(f"WordPiece training produced an unexpected vocabulary head {tokens[:5]}")
    return tokens


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.normalize_flag_paths("input_file", "output_prefix")
    if not FLAGS.input_file:
        raise SystemExit("--input_file is required (comma-separated files or globs of text)")
    if not FLAGS.output_prefix:
        raise SystemExit("--output_prefix is required")
    if FLAGS.vocab_size <= len(tokenization.SPECIAL_TOKENS):
        raise SystemExit(f"--vocab_size must exceed the {len(tokenization.SPECIAL_TOKENS)} special tokens, "
                         f"got {FLAGS.vocab_size}")
    try:
        files = fileio.expand_patterns(FLAGS.input_file, "--input_file")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(f"{len(files)} input file(s); training {'WordPiece' if FLAGS.wordpiece else FLAGS.model_type} "
          f"vocab_size={FLAGS.vocab_size} lowercase={FLAGS.lowercase}", flush=True)
    sentences, n_lines = read_sentences(files, FLAGS.max_sentences, FLAGS.seed)
    print(f"training on {len(sentences):,} of {n_lines:,} lines", flush=True)
    start = time.time()
    info = {"vocab_size": FLAGS.vocab_size, "do_lower_case": FLAGS.lowercase, "input_files": len(files),
            "input_file": FLAGS.input_file, "lines_seen": n_lines, "lines_used": len(sentences), "seed": FLAGS.seed}

    if FLAGS.wordpiece:
        tokens = train_wordpiece(sentences, vocab_size=FLAGS.vocab_size, lowercase=FLAGS.lowercase,
                                 min_frequency=FLAGS.min_frequency, limit_alphabet=FLAGS.limit_alphabet)
        tok = tokenization.WordPieceTokenizer(tokens, FLAGS.lowercase, path=FLAGS.output_prefix)
        out = tok.save(FLAGS.output_prefix)
        written = [out, os.path.join(FLAGS.output_prefix, tokenization.CONFIG_NAME)]
    else:
        prefix = FLAGS.output_prefix
        model_bytes = train_sentencepiece(sentences, prefix, model_type=FLAGS.model_type,
                                          vocab_size=FLAGS.vocab_size, lowercase=FLAGS.lowercase,
                                          character_coverage=FLAGS.character_coverage, num_threads=FLAGS.num_threads)
        fileio.atomic_write(prefix + ".model", model_bytes)
        tok = tokenization.SentencePieceTokenizer(prefix + ".model", FLAGS.lowercase)
        sp = tok._sp
        vocab_lines = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))
        fileio.atomic_write(prefix + ".vocab", vocab_lines.encode("utf-8"))
        info.update(kind="sentencepiece", model_type=FLAGS.model_type, character_coverage=FLAGS.character_coverage,
                    fingerprint=tok.fingerprint())
        fileio.atomic_write(prefix + ".json", (json.dumps(info, indent=2) + "\n").encode())
        written = [prefix + ".model", prefix + ".vocab", prefix + ".json"]

    ids = [tok.token_to_id(t) for t in tokenization.SPECIAL_TOKENS]
    if ids != [0, 1, 2, 3, 4]:
        raise SystemExit(f"special token ids came out {ids}, expected [0, 1, 2, 3, 4]")
    sample = tok.encode_batch(sentences[:10_000])
    n_tokens = sum(map(len, sample))
    n_words = sum(len(s.split()) for s in sentences[:10_000])
    print(f"trained in {time.time() - start:.1f}s: vocab_size={tok.vocab_size}, {n_tokens / max(n_words, 1):.3f} "
          f"tokens per whitespace word on {len(sample)} training lines, fingerprint {tok.fingerprint()[:16]}",
          flush=True)
    if tok.vocab_size != FLAGS.vocab_size:
        print(f"note: the corpus supports only {tok.vocab_size} tokens (asked {FLAGS.vocab_size})", flush=True)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
