r"""Creates BERT pretraining TFRecords: the original's flags and format, fast, parallel and streaming.

Same command line and output as google-research/bert's ``create_pretraining_data.py``::

    python scripts/create_pretraining_data.py \
      --input_file='data/wiki/*.txt' --output_file=data/wiki.tfrecord \
      --vocab_file=vocab.txt --do_lower_case=True --max_seq_length=128 \
      --max_predictions_per_seq=20 --masked_lm_prob=0.15 --random_seed=12345 --dupe_factor=5

plus ``--output_dir`` + ``--num_output_shards``; ``--tokenizer`` (a vocab.txt, a SentencePiece ``.model``
or a directory; ``--vocab_file`` is an alias); ``--num_workers``; ``--sentence_order`` (ALBERT's SOP);
``--dynamic_masking`` (write unmasked pairs, masked on the fly by ``bert_jax.data.pipeline``);
``--input_format=lines|documents`` (the original's one-sentence-per-line files, or raw text files with one
document each); ``--tfds_name/--tfds_split/--tfds_text_key`` (a tfds text dataset such as wikipedia).

How it runs: documents are read in batches of sentences that worker processes tokenise
(``tokenizer.encode_batch_flat``) into a flat token store; documents are shuffled and dealt to shards; each shard x dupe round is cut
into chunks of about ``--chunk_tokens`` tokens, and worker processes turn each chunk into instances
(``bert_jax.data.pretraining``), mask them (vectorised), and encode the TFRecords (``bert_jax.data.records``,
numpy, no TensorFlow). Memory holds the token store and a few chunks, not ``dupe_factor`` copies. Output is
deterministic for a given seed, shard count and chunk size, whatever ``--num_workers`` is. Each shard is
written to a temporary name and renamed when complete; ``summary.json`` (``<output_file>.summary.json``) is
written last, with counts, lengths, the tokenizer's fingerprint and all flags.

Differences from the original: instances are shuffled within each chunk (the input pipeline shuffles
again), not globally; different random streams; a whole word never spans a [SEP].
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from bert_jax import cli, fileio, memory  # noqa: E402
from bert_jax.data import pretraining, records, text  # noqa: E402

FLAGS = flags.FLAGS

def define_flags():
    """The command line (defined only when run as a script, so importing this module defines no flags)."""
    # The original's flags, same names and meanings.
    flags.DEFINE_string("input_file", None, "Input raw text file (or comma-separated list of files / globs; a "
                        "directory means every file below it).")
    flags.DEFINE_string("output_file", None, "Output TF example file (or comma-separated list of files, one shard "
                        "each).")
    flags.DEFINE_string("vocab_file", None, "The vocabulary file the BERT model was trained on (alias of "
                        "--tokenizer).")
    flags.DEFINE_bool("do_lower_case", None, "Whether to lower case the input text. Default: what the tokenizer "
                      "files say (tokenizer_config.json), else inferred from the vocab.")
    flags.DEFINE_bool("do_whole_word_mask", False, "Whether to use whole word masking rather than per-WordPiece "
                      "masking.")
    flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
    flags.DEFINE_integer("max_predictions_per_seq", 20, "Maximum number of masked LM predictions per sequence.")
    flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
    flags.DEFINE_integer("dupe_factor", 10, "Number of times to duplicate the input data (with different masks).")
    flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
    flags.DEFINE_float("short_seq_prob", 0.1, "Probability of creating sequences which are shorter than the "
                       "maximum length.")
    # Ours.
    flags.DEFINE_string("tokenizer", None, "Tokenizer: a WordPiece vocab.txt, a SentencePiece .model, or a "
                        "directory holding one.")
    flags.DEFINE_string("output_dir", None, "Write --num_output_shards shards pretraining-XXXXX-of-YYYYY.tfrecord "
                        "and summary.json here (instead of --output_file).")
    flags.DEFINE_integer("num_output_shards", 1, "Number of output shards with --output_dir.")
    flags.DEFINE_integer("num_workers", None, "Worker processes building instances (default: number of CPUs). "
                         "Does not change the output.")
    flags.DEFINE_bool("sentence_order", False, "ALBERT's sentence-order prediction instead of NSP: label 1 = A and "
                      "B swapped.")
    flags.DEFINE_bool("dynamic_masking", False, "Write unmasked pairs (input_ids, input_mask, segment_ids, "
                      "next_sentence_labels); the input pipeline masks them on the fly, fresh every epoch.")
    flags.DEFINE_enum("input_format", "lines", ["lines", "documents"], "lines: the original format (one sentence "
                      "per line, blank line between documents). documents: each file is one document of "
                      "paragraphs (blank-line separated; '.. ' directive lines dropped), split into sentences.")
    flags.DEFINE_string("tfds_name", None, "Read documents from this tfds dataset instead of --input_file "
                        "(e.g. wikipedia/20230601.en).")
    flags.DEFINE_string("tfds_split", "train", "tfds split.")
    flags.DEFINE_string("tfds_text_key", "text", "tfds feature holding the document text.")
    flags.DEFINE_string("tfds_data_dir", None, "tfds data_dir (default: tfds's).")
    flags.DEFINE_integer("chunk_tokens", 1 << 18, "Documents are processed in chunks of about this many tokens "
                         "(the unit of parallel work and of shuffling). Part of what determines the output.")


_OWN_FLAGS = ("input_file", "output_file", "vocab_file", "do_lower_case", "do_whole_word_mask", "max_seq_length",
              "max_predictions_per_seq", "random_seed", "dupe_factor", "masked_lm_prob", "short_seq_prob",
              "tokenizer", "output_dir", "num_output_shards", "num_workers", "sentence_order", "dynamic_masking",
              "input_format", "tfds_name", "tfds_split", "tfds_text_key", "tfds_data_dir", "chunk_tokens")

_SHUFFLE_DOCS = 0x646F6373  # entropy tags that keep the random streams apart
_SHUFFLE_ROUND = 0x726E6473
_INSTANCES = 0x696E7374
_ENCODE_BATCH = 8192         # sentences per tokenizer call


# --------------------------------------------------------------------------------------------- workers
_STORE_CACHE: dict = {}


def _store(path: str) -> pretraining.TokenStore:
    if path not in _STORE_CACHE:
        _STORE_CACHE.clear()
        _STORE_CACHE[path] = pretraining.TokenStore.load(path, mmap=True)
    return _STORE_CACHE[path]


def _run_task(task):
    """One chunk of one shard x dupe round -> (framed TFRecord bytes, counts)."""
    store_dir, config, seed, shard, round_, chunk, doc_ids = task
    store = _store(store_dir)
    rnd, rng = pretraining.derive_rngs(_INSTANCES, seed, shard, round_, chunk)
    feats = pretraining.create_instances(store, doc_ids, config, rnd, rng)
    kind = records.UNMASKED if config.dynamic_masking else records.MASKED
    n = len(feats["input_ids"])
    blob = records.encode_records(feats, records.feature_kinds(kind)) if n else b""
    counts = {
        "shard": shard, "round": round_,
        "input_tokens": int((store.sentence_starts[store.doc_starts[doc_ids + 1]]
                             - store.sentence_starts[store.doc_starts[doc_ids]]).sum()),
        "instances": n,
        "real_tokens": int(feats["attention_mask"].sum()),
        "masked_tokens": int(feats["masked_lm_weights"].sum()) if "masked_lm_weights" in feats else 0,
        "label_1": int(feats["next_sentence_labels"].sum()),
    }
    return blob, counts


# ------------------------------------------------------------------------------------------ read + tok
def _documents(input_file, input_format, tfds_name, tfds_split, tfds_text_key, tfds_data_dir, stats):
    if tfds_name:
        if input_file:
            raise ValueError("pass either --input_file or --tfds_name, not both")
        return text.read_tfds_documents(tfds_name, tfds_split, tfds_text_key, tfds_data_dir, stats)
    if not input_file:
        raise ValueError("no input: pass --input_file (comma-separated globs) or --tfds_name")
    files = fileio.expand_patterns(input_file, "--input_file",
                                   hint="check the path/glob (comma-separated globs; a directory stands for "
                                        "every file below it)")
    if input_format == "lines":
        return text.read_line_documents(files, stats)
    if input_format == "documents":
        return text.read_raw_documents(files, stats)
    raise ValueError(f"--input_format={input_format!r}; expected 'lines' or 'documents'")


class _Progress:
    def __init__(self, what: str, total: float | None = None, every_s: float = 5.0):
        self.what, self.total, self.every_s = what, total, every_s
        self.t0 = self.last = time.time()

    def update(self, done: float, extra: str = "", force: bool = False):
        now = time.time()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        msg = f"{self.what}: {done:,.0f}"
        if self.total:
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            msg += f"/{self.total:,.0f} ({100 * done / self.total:.0f}%), ETA {eta:.0f}s"
        logging.info("%s, %.0f/s%s", msg, rate, extra)


def _batches_of_sentences(documents, batch_sentences: int):
    """(sentences, sentences per document) batches of whole documents, about ``batch_sentences`` each."""
    sents: list[str] = []
    counts: list[int] = []
    for doc in documents:
        sents.extend(doc)
        counts.append(len(doc))
        if len(sents) >= batch_sentences:
            yield sents, counts
            sents, counts = [], []
    if counts:
        yield sents, counts


def _ordered_map(pool, fn, items, window: int):
    """``map(fn, items)`` on ``pool`` in order, with at most ``window`` items in flight: the input is read
    while the workers run, and never far ahead of them (memory stays flat on any corpus size)."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


_TOKENIZER = None   # the tokenizer of the current run; worker processes inherit it (or get it at start-up)


def _init_worker(tokenizer):
    global _TOKENIZER
    _TOKENIZER = tokenizer


def _tokenize_task(batch):
    """(sentences, sentences per document) -> (flat ids, tokens per sentence, sentences per document)."""
    sents, doc_counts = batch
    flat, lens = _TOKENIZER.encode_batch_flat(sents)
    return flat, lens, np.asarray(doc_counts, dtype=np.int64)


def tokenize_documents(documents, tokenizer, stats: dict, pool=None, num_workers: int = 1) -> pretraining.TokenStore:
    """Tokenises an iterator of documents (lists of sentences) in batches into a TokenStore, on ``pool``'s
    workers when given (they must hold ``tokenizer``: see ``_init_worker``), in document order.
    Sentences without tokens are dropped, and documents left without sentences are skipped; both counted."""
    global _TOKENIZER
    _TOKENIZER = tokenizer
    writer = pretraining.TokenStoreWriter()
    progress = _Progress("tokenised documents")
    n_docs = 0
    batches = _batches_of_sentences(documents, _ENCODE_BATCH)
    for flat, lens, doc_counts in _ordered_map(pool, _tokenize_task, batches, window=2 * num_workers):
        if flat.size and (flat.min() < 0 or flat.max() >= tokenizer.vocab_size):
            raise ValueError(f"tokenizer {tokenizer.path} produced ids outside [0, {tokenizer.vocab_size})")
        doc_of_sentence = np.repeat(np.arange(len(doc_counts)), doc_counts)
        keep = lens > 0
        kept_counts = np.bincount(doc_of_sentence[keep], minlength=len(doc_counts))
        stats["sentences_without_tokens"] += int((~keep).sum())
        stats["documents_without_tokens"] += int((kept_counts == 0).sum())
        writer.add_flat(flat, lens[keep], kept_counts[kept_counts > 0])
        n_docs += len(doc_counts)
        progress.update(n_docs)
    progress.update(n_docs, force=True)
    return writer.finish()


# ---------------------------------------------------------------------------------------------- plan
def plan_tasks(store: pretraining.TokenStore, num_shards: int, dupe_factor: int, seed: int, chunk_tokens: int):
    """Yields work items ``(shard, round, chunk, doc_ids)`` in output order (lazily: nothing here grows with
    ``dupe_factor``).

    Documents are shuffled once (as the original) and cut into ``num_shards`` consecutive runs of about equal
    token counts (so shards are balanced to within a document); each shard x round visits its documents in a
    fresh random order, cut into chunks of about ``chunk_tokens`` tokens.
    """
    _, rng = pretraining.derive_rngs(_SHUFFLE_DOCS, seed)
    order = rng.permutation(store.num_docs)
    doc_tokens = store.doc_num_tokens()
    cum = np.cumsum(doc_tokens[order])
    total = int(cum[-1]) if len(cum) else 0
    # shard of each document: where the middle of the document falls among num_shards equal token ranges
    shard_of = ((cum - doc_tokens[order] / 2) * num_shards // max(total, 1)).astype(np.int64)
    for shard in range(num_shards):
        shard_docs = order[shard_of == shard]
        if not len(shard_docs):
            continue
        for round_ in range(dupe_factor):
            _, rng = pretraining.derive_rngs(_SHUFFLE_ROUND, seed, shard, round_)
            docs = shard_docs[rng.permutation(len(shard_docs))]
            cum = np.cumsum(doc_tokens[docs])
            # chunk c holds the documents whose cumulative token count ends in (c * chunk, (c+1) * chunk]
            chunk_of = (cum - 1) // max(1, chunk_tokens)
            bounds = np.flatnonzero(np.diff(chunk_of)) + 1
            for c, ids in enumerate(np.split(docs, bounds)):
                if len(ids):
                    yield shard, round_, c, ids


def output_paths(output_file: str | None, output_dir: str | None, num_output_shards: int) -> tuple[list[str], str]:
    """Shard paths and the summary path."""
    if output_file and output_dir:
        raise ValueError("pass either --output_file or --output_dir (with --num_output_shards), not both")
    if output_file:
        paths = [p.strip() for p in output_file.split(",") if p.strip()]
        if not paths:
            raise ValueError(f"--output_file={output_file!r} names no file")
        if len(set(paths)) != len(paths):
            raise ValueError(f"--output_file lists a file twice: {output_file!r}")
        return paths, paths[0] + ".summary.json"
    if output_dir:
        if num_output_shards < 1:
            raise ValueError(f"--num_output_shards={num_output_shards} must be >= 1")
        paths = [os.path.join(output_dir, f"pretraining-{i:05d}-of-{num_output_shards:05d}.tfrecord")
                 for i in range(num_output_shards)]
        return paths, os.path.join(output_dir, "summary.json")
    raise ValueError("no output: pass --output_file or --output_dir")


# ---------------------------------------------------------------------------------------------- core
def create_pretraining_data(*, input_file=None, input_format="lines", tfds_name=None, tfds_split="train",
                            tfds_text_key="text", tfds_data_dir=None, tokenizer, output_file=None,
                            output_dir=None, num_output_shards=1, max_seq_length=128, max_predictions_per_seq=20,
                            masked_lm_prob=0.15, short_seq_prob=0.1, do_whole_word_mask=False,
                            sentence_order=False, dynamic_masking=False, random_seed=12345, dupe_factor=10,
                            num_workers=None, chunk_tokens=1 << 18, flag_values: dict | None = None,
                            tokenizer_path: str | None = None) -> dict:
    """Reads, tokenises and writes the shards; returns the summary (also written as JSON).

    ``tokenizer`` is a :class:`bert_jax.tokenization.Tokenizer` or a path for ``load_tokenizer``. Bad input
    raises one ValueError naming what to fix.
    """
    t_start = time.time()
    if dupe_factor < 1:
        raise ValueError(f"--dupe_factor={dupe_factor} must be >= 1")
    if random_seed < 0:
        raise ValueError(f"--random_seed={random_seed} must be >= 0")
    if chunk_tokens < 1:
        raise ValueError(f"--chunk_tokens={chunk_tokens} must be >= 1")
    paths, summary_path = output_paths(output_file, output_dir, num_output_shards)
    num_workers = int(num_workers or os.cpu_count() or 1)
    if num_workers < 1:
        raise ValueError(f"--num_workers={num_workers} must be >= 1")

    if isinstance(tokenizer, (str, os.PathLike)):
        from bert_jax.tokenization import load_tokenizer

        tokenizer_path = os.fspath(tokenizer)
        tokenizer = load_tokenizer(tokenizer_path)
    # Workers are forked now, while the parent is small; each holds the tokenizer (inherited when forked,
    # pickled once when spawned).
    pool = None
    if num_workers > 1:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = ctx.Pool(num_workers, initializer=_init_worker, initargs=(tokenizer,))
    tmp_dir = None
    try:
        config = pretraining.InstanceConfig.from_tokenizer(
            tokenizer, max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq,
            masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob, whole_word_mask=do_whole_word_mask,
            sentence_order=sentence_order, dynamic_masking=dynamic_masking)

        # 1. read + tokenise
        source_stats = text.SourceStats()
        token_stats = collections.Counter(sentences_without_tokens=0, documents_without_tokens=0)
        documents = _documents(input_file, input_format, tfds_name, tfds_split, tfds_text_key, tfds_data_dir,
                               source_stats)
        t0 = time.time()
        store = tokenize_documents(documents, tokenizer, token_stats, pool, num_workers)
        t_tok = time.time() - t0
        logging.info("read %d documents (%d sentences, %d tokens) in %.1fs", store.num_docs, store.num_sentences,
                     store.num_tokens, t_tok)
        if source_stats.invalid_utf8_warning():
            print(f"create_pretraining_data: {source_stats.invalid_utf8_warning()}", file=sys.stderr, flush=True)
        if store.num_docs == 0:
            where = f"tfds {tfds_name}:{tfds_split}" if tfds_name else f"--input_file={input_file!r}"
            raise ValueError(f"no text in {where}: {source_stats.files} file(s), {source_stats.documents} "
                             f"document(s), none with tokens. Input format {input_format!r} expects "
                             + ("one sentence per line and blank lines between documents"
                                if input_format == "lines" else "text files of paragraphs"))
        first_dir = os.path.dirname(os.path.abspath(paths[0]))
        os.makedirs(first_dir, exist_ok=True)
        tmp_dir = tempfile.mkdtemp(prefix=".token_store.", dir=first_dir)
        store.save(tmp_dir)
        del store
        store = pretraining.TokenStore.load(tmp_dir, mmap=True)

        # 2. instances, in parallel, written in a fixed order
        kind = records.UNMASKED if dynamic_masking else records.MASKED
        tasks = plan_tasks(store, len(paths), dupe_factor, random_seed, chunk_tokens)
        payloads = ((tmp_dir, config, random_seed, shard, round_, chunk, ids)
                    for shard, round_, chunk, ids in tasks)
        if pool is not None:
            results = pool.imap(_run_task, payloads, chunksize=1)  # in order; the pipe gives back-pressure
        else:
            results = map(_run_task, payloads)
        per_shard = [collections.Counter(instances=0, real_tokens=0, masked_tokens=0, label_1=0) for _ in paths]
        progress = _Progress("input tokens x dupe", total=float(store.num_tokens * dupe_factor))
        done_tokens = 0
        writer, writer_shard = None, -1
        t0 = time.time()
        try:
            for blob, counts in results:
                shard, round_ = counts.pop("shard"), counts.pop("round")
                if shard != writer_shard:   # tasks come shard by shard: the previous shard is complete
                    if writer is not None:
                        writer.close()
                    for empty in range(writer_shard + 1, shard):   # shards that got no document
                        records.RecordWriter(paths[empty]).close()
                    writer, writer_shard = records.RecordWriter(paths[shard]), shard
                writer.write_framed(blob, counts["instances"])
                done_tokens += counts.pop("input_tokens")
                per_shard[shard].update(counts)
                progress.update(done_tokens, f", shard {shard + 1}/{len(paths)}, dupe round {round_ + 1}/"
                                f"{dupe_factor}, {sum(c['instances'] for c in per_shard):,} instances")
            if writer is not None:
                writer.close()
                writer = None
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        for shard in range(writer_shard + 1, len(paths)):   # shards that got no documents: empty files
            records.RecordWriter(paths[shard]).close()
        t_write = time.time() - t0
        progress.update(done_tokens, force=True)

        total = collections.Counter()
        for c in per_shard:
            total.update(c)
        summary = {
            "format": "bert_jax.create_pretraining_data/1",
            "record_kind": kind,
            "features": records.feature_kinds(kind),
            "shards": [os.path.basename(p) for p in paths],
            "instances_per_shard": [c["instances"] for c in per_shard],
            "num_instances": total["instances"],
            "real_tokens": total["real_tokens"],
            "masked_tokens": total["masked_tokens"],
            "next_sentence_label_1_fraction": total["label_1"] / max(1, total["instances"]),
            "input_documents": int(store.num_docs),
            "input_sentences": int(store.num_sentences),
            "input_tokens": int(store.num_tokens),
            "max_seq_length": max_seq_length,
            "max_predictions_per_seq": max_predictions_per_seq,
            "vocab_size": tokenizer.vocab_size,
            "tokenizer": {"path": tokenizer_path or getattr(tokenizer, "path", None), "kind": tokenizer.kind,
                          "do_lower_case": tokenizer.do_lower_case, "fingerprint": tokenizer.fingerprint()},
            "source": source_stats.as_dict(),
            "skipped": {"empty_documents": source_stats.empty_documents_skipped,
                        "documents_without_tokens": token_stats["documents_without_tokens"],
                        "sentences_without_tokens": token_stats["sentences_without_tokens"],
                        "lines_with_invalid_utf8": source_stats.lines_with_invalid_utf8,
                        "directive_lines_dropped": source_stats.directive_lines_dropped},
            "settings": {"input_file": input_file, "input_format": input_format, "tfds_name": tfds_name,
                         "tfds_split": tfds_split, "tfds_text_key": tfds_text_key,
                         "masked_lm_prob": masked_lm_prob, "short_seq_prob": short_seq_prob,
                         "do_whole_word_mask": do_whole_word_mask, "sentence_order": sentence_order,
                         "dynamic_masking": dynamic_masking, "random_seed": random_seed,
                         "dupe_factor": dupe_factor, "num_output_shards": len(paths),
                         "chunk_tokens": chunk_tokens, "num_workers": num_workers},
            "flags": flag_values or {},
            "timing_s": {"read_and_tokenize": round(t_tok, 3), "instances_and_write": round(t_write, 3),
                         "total": round(time.time() - t_start, 3)},
        }
        del store
        fileio.atomic_write(summary_path, json.dumps(summary, indent=2, default=str) + "\n")
        logging.info("wrote %d instances to %d shard(s) in %.1fs; summary %s", total["instances"], len(paths),
                     time.time() - t_start, summary_path)
        return summary
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.normalize_flag_paths("input_file", "output_file", "output_dir", "vocab_file", "tokenizer", "tfds_data_dir")
    tok_path = FLAGS.tokenizer or FLAGS.vocab_file
    if FLAGS.tokenizer and FLAGS.vocab_file and FLAGS.tokenizer != FLAGS.vocab_file:
        raise SystemExit(f"--tokenizer={FLAGS.tokenizer!r} and --vocab_file={FLAGS.vocab_file!r} disagree; "
                         "pass one of them")
    if not tok_path:
        raise SystemExit("no tokenizer: pass --vocab_file (or --tokenizer): a WordPiece vocab.txt, a "
                         "SentencePiece .model, or a directory holding one")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    memory.keep_freed_memory(single_heap=False)   # numpy temporaries reused, not page-faulted in per batch
    flag_values = {name: FLAGS[name].value for name in _OWN_FLAGS}
    try:
        from bert_jax.tokenization import load_tokenizer

        tok = load_tokenizer(tok_path, do_lower_case=FLAGS.do_lower_case)
        create_pretraining_data(
            input_file=FLAGS.input_file, input_format=FLAGS.input_format, tfds_name=FLAGS.tfds_name,
            tfds_split=FLAGS.tfds_split, tfds_text_key=FLAGS.tfds_text_key, tfds_data_dir=FLAGS.tfds_data_dir,
            tokenizer=tok, tokenizer_path=tok_path, output_file=FLAGS.output_file, output_dir=FLAGS.output_dir,
            num_output_shards=FLAGS.num_output_shards, max_seq_length=FLAGS.max_seq_length,
            max_predictions_per_seq=FLAGS.max_predictions_per_seq, masked_lm_prob=FLAGS.masked_lm_prob,
            short_seq_prob=FLAGS.short_seq_prob, do_whole_word_mask=FLAGS.do_whole_word_mask,
            sentence_order=FLAGS.sentence_order, dynamic_masking=FLAGS.dynamic_masking,
            random_seed=FLAGS.random_seed, dupe_factor=FLAGS.dupe_factor, num_workers=FLAGS.num_workers,
            chunk_tokens=FLAGS.chunk_tokens, flag_values=flag_values)
    except ValueError as e:
        raise SystemExit(f"create_pretraining_data: {e}") from None


if __name__ == "__main__":
    define_flags()
    app.run(main)
