r"""Pre-training train step: bert_jax against HF transformers' `FlaxBertForPreTraining`, in one process.

    python benchmarks/bench_train_step.py                      # BERT-Mini (batch 32) and BERT-base (batch 8)
    python benchmarks/bench_train_step.py --configs=mini --json=/tmp/bench.json
    python benchmarks/bench_train_step.py --quick --configs=tiny:64:8   # smoke test, seconds
    python benchmarks/bench_train_step.py --configs=mini --profile      # + where the time goes, by XLA op kind

Both steps do the same work on the same batch from the same weights: MLM cross-entropy over the
masked positions weighted by ``masked_lm_weights`` plus NSP cross-entropy, normalised as in
`bert_jax.training.step`, gradients, global-norm clipping at 1.0 and AdamW with the BERT weight-decay
mask (`bert_jax.training.optim.make_optimizer`), dropout 0.1 on. bert_jax's step is
`bert_jax.training.step.make_pretrain_step` as the trainer uses it; HF's is the same loss around
`FlaxBertForPreTraining.__call__(..., params=, dropout_rng=, train=True)` (how HF's
`run_mlm_flax.py` drives it), which computes vocabulary logits at every position and is then
gathered at the masked positions. Before timing, the two deterministic losses from the shared
weights are compared (``--check_parity``), so the ratio is between two implementations of one function.

What it prints per config: tokens/s (median over interleaved rounds of timed steps, after warm-up),
the bert_jax/HF ratio, compile time, XLA's temporary buffers for each step, XLA's FLOP count, and
model FLOPs utilisation (`bert_jax.flops`: the matmul FLOPs the step needs, sparse MLM head, for
both implementations; HF's own dense-head FLOP/s beside it) against a jitted matmul peak measured in
this process (the best of measurements at the start, before each config and at the end), and on
GPUs/TPUs against the chip's published bf16 peak. Then the input pipeline (when
`bert_jax.data.pipeline` is importable): bert_jax's step fed by it against the step on a fixed batch,
and the pipeline's batches/s alone (static masks and dynamic masking, on synthetic TFRecords in a
temporary directory) against the step's consumption. Last the process's peak RSS, and a summary.
``--json=PATH`` writes everything, every step time included.

Noise: on a shared CPU machine other processes steal cycles. The two implementations are timed in
alternating rounds (so a busy period hurts both, and the ratio is the most robust figure), each step
is timed separately, and the median is reported with its interquartile range. Each round starts
with a short matmul timing: the "load-matched" MFU divides each round's model FLOP/s by that round's
matmul FLOP/s (median over rounds), an estimate that a busy machine distorts less than the one
against the best peak. The load average at start and end goes into the JSON.

Page faults: XLA:CPU allocates its buffers afresh every step (a 1 GiB temporary allocation at BERT-base
batch 8), and glibc serves large blocks with fresh ``mmap``s and threads from their own arenas, so all
of that memory is page-faulted in again every step (~20% of the CPU time of a step on this VM).
``--keep_freed_memory`` (on by default, as in bert_jax's scripts: `bert_jax.memory.keep_freed_memory`)
makes glibc serve everything from one heap and keep it, so both implementations' steps reuse their
buffers without faults. Huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` on the command line) are
the alternative when it is off; the JSON records both settings.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # tf.data's start-up chatter
# transformers imports PyTorch whenever it is installed (~300 MiB of RSS); the Flax model needs none.
os.environ.setdefault("USE_TORCH", "0")

import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

PRESETS = {
    # name -> (bert_jax size, seq_len, batch_size)
    "mini": ("mini", 128, 32),
    "base": ("base", 128, 8),
}

flags.DEFINE_list("configs", ["mini", "base"],
                  "Configs to run: preset names (mini, base) or SIZE:SEQ_LEN:BATCH with SIZE one of "
                  "tiny/mini/small/medium/base/large, e.g. tiny:64:8.")
flags.DEFINE_integer("vocab_size", 30522, "Vocabulary size.")
flags.DEFINE_integer("max_predictions", 20, "Masked positions per sequence (P) of the sparse MLM head.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of both models.")
flags.DEFINE_boolean("dropout", True, "Dropout 0.1 (the BERT recipe) in both models.")
flags.DEFINE_integer("steps", 10, "Timed steps per implementation and config.")
flags.DEFINE_integer("rounds", 5, "The timed steps are split into this many alternating rounds.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_boolean("hf", True, "Also run HF transformers' FlaxBertForPreTraining.")
flags.DEFINE_boolean("bf16_vs_fp32", False, "Instead of HF: bert_jax in fp32 against bert_jax in bf16 (fp32 "
                     "parameters), alternating, with MFU against a bf16 x bf16 -> fp32 matmul peak measured here.")
flags.DEFINE_boolean("check_parity", True, "Check that both deterministic losses agree before timing.")
flags.DEFINE_list("matmul_sizes", None, "Square matmul sizes for the measured peak "
                  "(default 1024,2048 on CPU, 4096,8192 on accelerators).")
flags.DEFINE_boolean("pipeline", True, "Measure the input pipeline's batches/s when it is importable.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and the synthetic batch.")
flags.DEFINE_enum("rng_impl", "threefry2x32", ["threefry2x32", "rbg", "unsafe_rbg"],
                  "PRNG of both models' dropout (bert_jax's config.rng_impl).")
flags.DEFINE_boolean("keep_freed_memory", True, "bert_jax.memory.keep_freed_memory() at start, as bert_jax's "
                     "trainers do: glibc reuses freed buffers instead of page-faulting fresh ones each step "
                     "(process-wide, so HF's step gets it too).")
flags.DEFINE_boolean("profile", False, "Trace 2 steps of each implementation with jax.profiler and print where "
                     "the step's time goes by XLA op kind (fusion names without their number).")
flags.DEFINE_string("json", None, "Write the results to this JSON file.")
flags.DEFINE_boolean("quick", False, "Smoke test: 2 timed steps in 1 round, 1 warm-up step, short matmul timing.")
FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def parse_configs(items):
    from bert_jax.modeling import NAMED_SIZES
    out = []
    for item in items:
        item = item.strip()
        if item in PRESETS:
            size, seq_len, batch = PRESETS[item]
            out.append((item, size, seq_len, batch))
            continue
        parts = item.split(":")
        try:
            size, seq_len, batch = parts[0], int(parts[1]), int(parts[2])
            if len(parts) != 3 or size not in NAMED_SIZES or seq_len <= 0 or batch <= 0:
                raise ValueError
        except (ValueError, IndexError):
            raise SystemExit(f"--configs: {item!r} is neither a preset ({', '.join(PRESETS)}) nor "
                             f"SIZE:SEQ_LEN:BATCH with SIZE in {', '.join(NAMED_SIZES)} (e.g. tiny:64:8)")
        out.append((f"{size}:{seq_len}:{batch}", size, seq_len, batch))
    return out


def synthetic_batch(rng, batch_size, seq_len, max_predictions, vocab_size):
    """A batch with the TFRecord feature names and the pipeline's shapes: variable lengths (half to
    full), two segments, 15% of the real tokens masked (at most ``max_predictions``), NSP labels 0/1."""
    import numpy as np
    ids = np.zeros((batch_size, seq_len), np.int32)
    mask = np.zeros_like(ids)
    seg = np.zeros_like(ids)
    pos = np.zeros((batch_size, max_predictions), np.int32)
    lm_ids = np.zeros_like(pos)
    lm_w = np.zeros((batch_size, max_predictions), np.float32)
    for b in range(batch_size):
        n = int(rng.integers(max(seq_len // 2, 2), seq_len + 1))
        ids[b, :n] = rng.integers(999, vocab_size, n) if vocab_size > 1000 else rng.integers(1, vocab_size, n)
        mask[b, :n] = 1
        seg[b, n // 2:n] = 1
        k = min(max_predictions, max(1, round(0.15 * n)), n - 1)
        p = np.sort(rng.choice(np.arange(1, n), size=k, replace=False))
        pos[b, :k] = p
        lm_ids[b, :k] = ids[b, p]
        lm_w[b, :k] = 1.0
    nsp = rng.integers(0, 2, (batch_size, 1)).astype(np.int32)  # [B, 1], as the pipeline yields them
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": seg, "masked_lm_positions": pos,
            "masked_lm_ids": lm_ids, "masked_lm_weights": lm_w, "next_sentence_labels": nsp}


def optimizer_config():
    import ml_collections
    return ml_collections.ConfigDict(dict(
        optimizer="adamw", learning_rate=1e-4, warmup_steps=10, num_train_steps=1000,
        weight_decay=0.01, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6, grad_clip_norm=1.0))


class MatmulProbe:
    """A jitted square matmul of one size, ready to time."""

    def __init__(self, n, dtype):
        import jax
        import jax.numpy as jnp
        self.n = n
        self.f = jax.jit(lambda a, b: a @ b)
        if isinstance(dtype, str) and dtype == "bf16_f32":   # what bert_jax's bf16 dense layers run (bert_jax.ops.dense.dot_f32)
            from bert_jax.ops.dense import dot_f32
            self.f = jax.jit(lambda a, b: dot_f32(a, b, (((1,), (0,)), ((), ()))))
            dtype = jnp.bfloat16
        ka, kb = jax.random.split(jax.random.PRNGKey(n))
        self.a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
        self.b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
        self.f(self.a, self.b).block_until_ready()

    def rate(self, min_seconds, min_reps=5):
        """Median FLOP/s over at least ``min_reps`` calls and ``min_seconds``."""
        times, t_end = [], time.perf_counter() + min_seconds
        while len(times) < min_reps or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            self.f(self.a, self.b).block_until_ready()
            times.append(time.perf_counter() - t0)
        return 2.0 * self.n ** 3 / statistics.median(times)


def measure_matmul_peak(sizes, dtype, min_seconds):
    """Median FLOP/s of a jitted square matmul at each size; the peak is the best size."""
    per_size = {n: MatmulProbe(n, dtype).rate(min_seconds) for n in sizes}
    return max(per_size.values()), per_size


def measure_matmul_floor(cfg, batch_size, seq_len, max_predictions, dtype, min_seconds):
    """The step's matmuls (`bert_jax.flops.pretrain_step_matmuls`) timed one shape at a time, jitted,
    median of repeats: the time the step would take if it did nothing but its matmuls, each at the speed
    this backend reaches for that shape. Returns (seconds per step, {shape: seconds})."""
    import jax
    import jax.numpy as jnp

    from bert_jax import flops
    mm = flops.pretrain_step_matmuls(cfg, batch_size, seq_len, max_predictions)
    per_shape = {}
    total = 0.0
    for part, pass_, bt, m, k, n, count in mm:
        key = (bt, m, k, n)
        if key not in per_shape:
            ka, kb = jax.random.split(jax.random.PRNGKey(0))
            a = jax.random.normal(ka, (bt, m, k) if bt > 1 else (m, k), dtype)
            b = jax.random.normal(kb, (bt, k, n) if bt > 1 else (k, n), dtype)
            f = jax.jit(jnp.matmul)
            f(a, b).block_until_ready()
            times, t_end = [], time.perf_counter() + min_seconds
            while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 200):
                t0 = time.perf_counter()
                f(a, b).block_until_ready()
                times.append(time.perf_counter() - t0)
            per_shape[key] = statistics.median(times)
        total += count * per_shape[key]
    return total, {f"{bt}x[{m},{k}]x[{k},{n}]": t for (bt, m, k, n), t in per_shape.items()}


def profile_by_kind(runner, steps=2, top=12):
    """Runs ``steps`` steps under jax.profiler and sums the traced XLA ops by kind (``ynn_fusion``,
    ``copy_bitcast_fusion``, ...: the op name without its number): ``{kind: ms per step}``, largest first.
    Ops that run concurrently on the host's threads overlap, so the kinds can add up to more than a step."""
    import collections
    import glob
    import gzip
    import re
    import shutil

    import jax
    trace_dir = tempfile.mkdtemp(prefix="bench_trace_")
    try:
        jax.profiler.start_trace(trace_dir)
        try:
            runner.run(steps, record=False)
        finally:
            jax.profiler.stop_trace()
        paths = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
        if not paths:
            return {}
        with gzip.open(paths[0]) as f:
            events = json.load(f).get("traceEvents", [])
    finally:
        shutil.rmtree(trace_dir, ignore_errors=True)
    kinds = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or "dur" not in e or name.startswith("$") or "Thunk" in name or "Slinky" in name \
                or "PjitFunction" in name:
            continue
        kinds[re.sub(r"\.\d+$", "", name)] += e["dur"] / 1e3 / steps
    return dict(kinds.most_common(top))


def hf_pretrain_sums(hf_model, params, batch, rng=None, deterministic=True):
    """HF's forward (logits at all L positions, as its API returns them), gathered at the masked positions."""
    from bert_jax.modeling import gather_positions
    from bert_jax.training.step import sums_from_logits
    out = hf_model(batch["input_ids"], attention_mask=batch["attention_mask"],
                   token_type_ids=batch["token_type_ids"], params=params,
                   dropout_rng=None if deterministic else rng, train=not deterministic)
    mlm = gather_positions(out.prediction_logits, batch["masked_lm_positions"])
    return sums_from_logits(mlm, out.seq_relationship_logits, batch)


def make_hf_pretrain_step(hf_model):
    """HF's model inside a step with the structure of `bert_jax.training.step.make_pretrain_step`."""
    import jax
    import jax.numpy as jnp
    import optax

    from bert_jax.training import step as step_lib

    def train_step(state, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        weights = batch["masked_lm_weights"].astype(jnp.float32)
        mlm_total = jnp.maximum(jnp.sum(weights), 1e-6)
        nsp_total = jnp.asarray(weights.shape[0], jnp.float32)

        def loss_fn(params):
            sums = hf_pretrain_sums(hf_model, params, batch, rng, deterministic=False)
            return sums["mlm_nll"] / mlm_total + sums["nsp_nll"] / nsp_total, sums

        grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads)
        metrics = step_lib.summarize(sums)
        metrics["grad_norm"] = optax.global_norm(grads)
        return new_state, metrics

    return train_step


def bert_jax_params_to_hf_flax(params, config, hf_shapes):
    """bert_jax params -> the HF Flax tree, through the HF (PyTorch-name) table of `bert_jax.convert`,
    checked key-for-key and shape-for-shape against HF's own parameter tree."""
    import numpy as np
    from flax.traverse_util import flatten_dict, unflatten_dict

    from bert_jax.convert import mapping
    tensors = mapping.from_bert_jax(params, config, mapping.HF)
    want = {k: tuple(v.shape) for k, v in flatten_dict(hf_shapes).items()}
    out = {}
    for name, value in tensors.items():
        parts = name.split(".")
        leaf = parts[-1]
        if leaf == "weight":
            if "LayerNorm" in parts[-2]:
                leaf = "scale"
            elif parts[-2].endswith("_embeddings"):
                leaf = "embedding"
            else:
                leaf, value = "kernel", np.asarray(value).T
        key = tuple(parts[:-1]) + (leaf,)
        if key not in want:
            if name == "cls.predictions.decoder.weight":
                continue  # tied to the word embeddings in both models
            raise ValueError(f"bert_jax tensor {name} has no counterpart in HF's FlaxBertForPreTraining")
        if tuple(value.shape) != want[key]:
            raise ValueError(f"{name}: shape {value.shape} != HF's {want[key]}")
        out[key] = np.asarray(value, np.float32)
    missing = sorted("/".join(k) for k in set(want) - set(out))
    if missing:
        raise ValueError(f"HF parameters not set from bert_jax: {', '.join(missing)}")
    return unflatten_dict(out)


def memory_stats(compiled):
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 (not every backend implements it)
        return None
    if m is None:
        return None
    return {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                            "alias_size_in_bytes", "temp_size_in_bytes",
                                            "generated_code_size_in_bytes") if hasattr(m, k)}


def xla_flops(compiled):
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    return float(ca["flops"]) if ca and "flops" in ca else None


class Runner:
    """One implementation's compiled step, its state, and its per-step timings."""

    def __init__(self, name, step_fn, state, batch, rng):
        import jax
        self.name = name
        t0 = time.perf_counter()
        jitted = jax.jit(step_fn, donate_argnums=0)
        lowered = jitted.lower(state, batch, rng)
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t0
        self.state, self.batch, self.rng = state, batch, rng
        self.times, self.rounds = [], []
        self.first_metrics = None
        self.rss_after_compile_mib = peak_rss_mib()

    def run(self, n, record, round_index=None):
        import jax
        for _ in range(n):
            t0 = time.perf_counter()
            self.state, metrics = self.compiled(self.state, self.batch, self.rng)
            jax.block_until_ready(metrics)
            dt = time.perf_counter() - t0
            if self.first_metrics is None:
                self.first_metrics = {k: float(v) for k, v in metrics.items()}
            if record:
                self.times.append(dt)
                self.rounds.append(round_index)
        self.last_metrics = {k: float(v) for k, v in metrics.items()}

    def load_matched_mfu(self, model_flops_per_step, round_rates):
        """Median over rounds of (model FLOP/s in the round) / (matmul FLOP/s measured in the same round)."""
        per_round = []
        for r, rate in enumerate(round_rates):
            ts = [t for t, i in zip(self.times, self.rounds) if i == r]
            if ts:
                per_round.append(model_flops_per_step / statistics.median(ts) / rate)
        return statistics.median(per_round), per_round

    def summary(self, tokens_per_step, model_flops_per_step, matmul_peak, chip_peak, round_rates):
        import numpy as np
        med = statistics.median(self.times)
        matched, matched_rounds = self.load_matched_mfu(model_flops_per_step, round_rates)
        q1, q3 = np.percentile(self.times, [25, 75])
        out = {
            "step_seconds_median": med, "step_seconds_iqr": [float(q1), float(q3)],
            "step_seconds_all": self.times, "tokens_per_second": tokens_per_step / med,
            "compile_seconds": self.compile_s, "xla_flops_per_step": xla_flops(self.compiled),
            "xla_memory": memory_stats(self.compiled),
            "model_flops_per_step": model_flops_per_step,
            "model_flops_per_second": model_flops_per_step / med,
            "mfu_vs_measured_matmul_peak": model_flops_per_step / med / matmul_peak,
            "mfu_load_matched": matched, "mfu_load_matched_per_round": matched_rounds,
            "first_step_metrics": self.first_metrics, "last_step_metrics": self.last_metrics,
            "peak_rss_mib_after_compile": self.rss_after_compile_mib,
        }
        if chip_peak:
            out["mfu_vs_chip_peak"] = model_flops_per_step / med / chip_peak
        return out


def fmt_bytes(n):
    return "n/a" if n is None else f"{n / 2 ** 20:,.0f} MiB"


# ----------------------------------------------------------------------------------------------
# the benchmark of one config
# ----------------------------------------------------------------------------------------------

def bench_config(label, size, seq_len, batch_size, matmul_peak, chip_peak, n_steps, n_rounds, n_warmup,
                 probe, probe_seconds):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bert_jax import flops, modeling
    from bert_jax.training import optim
    from bert_jax.training import step as step_lib

    P = FLAGS.max_predictions
    if P > seq_len:
        raise SystemExit(f"--max_predictions={P} exceeds seq_len={seq_len} of config {label}")
    drop = 0.1 if FLAGS.dropout else 0.0
    dtype = "float32" if FLAGS.bf16_vs_fp32 else FLAGS.dtype
    cfg = modeling.BertConfig.named(size, vocab_size=FLAGS.vocab_size, dtype=dtype,
                                    max_position_embeddings=max(512, seq_len),
                                    hidden_dropout_prob=drop, attention_probs_dropout_prob=drop)
    tokens = batch_size * seq_len
    step_flops = flops.pretrain_step_flops(cfg, batch_size, seq_len, P)
    dense_flops = flops.pretrain_step_flops(cfg, batch_size, seq_len, None)
    print(f"\n[{label}] BERT-{size} ({cfg.num_hidden_layers}L/{cfg.hidden_size}H/{cfg.intermediate_size}I, "
          f"vocab {cfg.vocab_size}), seq {seq_len}, batch {batch_size}, P={P}, {FLAGS.dtype}, dropout {drop}; "
          f"model FLOPs/step {step_flops / 1e9:,.1f} G (sparse head; dense head {dense_flops / 1e9:,.1f} G)",
          flush=True)

    rng_np = np.random.default_rng(FLAGS.seed)
    batch = jax.device_put(synthetic_batch(rng_np, batch_size, seq_len, P, cfg.vocab_size))
    rng = jax.random.PRNGKey(FLAGS.seed + 1)
    model = modeling.BertForPreTraining(cfg)
    params = modeling.init_params(model, jax.random.PRNGKey(FLAGS.seed), seq_len=min(seq_len, 8))
    tx = optim.make_optimizer(optimizer_config())
    result = {"label": label, "size": size, "seq_len": seq_len, "batch_size": batch_size,
              "max_predictions": P, "dtype": FLAGS.dtype, "dropout": drop,
              "model_flops_per_step_sparse": step_flops, "model_flops_per_step_dense": dense_flops}

    runners = []
    hf_model = hf_params = None
    if FLAGS.hf and not FLAGS.bf16_vs_fp32:
        import transformers
        hf_config = transformers.BertConfig(**cfg.to_hf_dict())
        hf_model = transformers.FlaxBertForPreTraining(
            hf_config, input_shape=(1, seq_len), seed=FLAGS.seed, dtype=jnp.dtype(FLAGS.dtype), _do_init=False)
        hf_shapes = jax.eval_shape(lambda r: hf_model.init_weights(r, (1, seq_len)), jax.random.PRNGKey(0))
        hf_params = jax.device_put(bert_jax_params_to_hf_flax(params, cfg, hf_shapes))

    if FLAGS.check_parity and hf_model is not None:
        # On perturbed weights: at init (std 0.02) attention is nearly uniform and a wrong mapping of
        # the query/key kernels would hide below the tolerance; with the noise it cannot.
        leaves, treedef = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(FLAGS.seed + 7), len(leaves))
        check = jax.tree_util.tree_unflatten(
            treedef, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
        ours = jax.jit(lambda p, b: step_lib.pretrain_sums(model, p, b))(check, batch)
        theirs = jax.jit(lambda p, b: hf_pretrain_sums(hf_model, p, b))(
            bert_jax_params_to_hf_flax(check, cfg, hf_shapes), batch)
        del check
        parity = {}
        for k in ("mlm_nll", "nsp_nll"):
            a, b = float(ours[k]), float(theirs[k])
            parity[k] = {"bert_jax": a, "hf": b, "rel_diff": abs(a - b) / max(abs(b), 1e-12)}
        tol = 1e-4 if FLAGS.dtype == "float32" else 2e-2
        worst = max(v["rel_diff"] for v in parity.values())
        print(f"  parity (dropout off, same perturbed weights): MLM sum {parity['mlm_nll']['bert_jax']:.5f} vs "
              f"{parity['mlm_nll']['hf']:.5f}, NSP sum {parity['nsp_nll']['bert_jax']:.5f} vs "
              f"{parity['nsp_nll']['hf']:.5f}; worst relative difference {worst:.1e} (tolerance {tol:g})",
              flush=True)
        result["parity"] = parity
        if worst > tol:
            raise SystemExit(f"[{label}] the two deterministic losses differ by {worst:.2e} > {tol}: the "
                             "benchmark would not compare the same function; fix the weight mapping first")

    t0 = time.perf_counter()
    ours_state = step_lib.create_train_state(model, params, tx)
    runners.append(Runner("bert_jax", step_lib.make_pretrain_step(model, axis_name=None),
                          ours_state, batch, rng))
    print(f"  bert_jax: compiled in {runners[-1].compile_s:.1f} s", flush=True)
    if FLAGS.bf16_vs_fp32:
        bf16_model = modeling.BertForPreTraining(cfg.replace(dtype="bfloat16"))
        runners.append(Runner("bert_jax_bf16", step_lib.make_pretrain_step(bf16_model, axis_name=None),
                              step_lib.create_train_state(bf16_model, jax.tree_util.tree_map(jnp.copy, params), tx),
                              batch, rng))
        print(f"  bert_jax bf16: compiled in {runners[-1].compile_s:.1f} s", flush=True)
    if hf_model is not None:
        hf_state = step_lib.create_train_state(None, hf_params, tx)
        runners.append(Runner("hf", make_hf_pretrain_step(hf_model), hf_state, batch, rng))
        print(f"  HF Flax : compiled in {runners[-1].compile_s:.1f} s", flush=True)
    del params, hf_params
    setup_s = time.perf_counter() - t0

    for r in runners:
        r.run(n_warmup, record=False)
    # Alternating rounds; each starts with a short matmul timing, so that each round's step times
    # can also be set against what the matmul reaches under the same machine load.
    per_round = [n_steps // n_rounds + (1 if i < n_steps % n_rounds else 0) for i in range(n_rounds)]
    round_rates = []
    for i, n in enumerate(per_round):
        round_rates.append(probe.rate(probe_seconds, min_reps=3))
        order = runners if i % 2 == 0 else runners[::-1]  # alternate who goes first
        for r in order:
            r.run(n, record=True, round_index=i)
    result["round_matmul_flops"] = round_rates

    for r in runners:
        s = r.summary(tokens, step_flops, matmul_peak, chip_peak, round_rates)
        if r.name == "hf":
            s["own_dense_flops_per_second"] = dense_flops / s["step_seconds_median"]
            s["own_dense_mfu_vs_measured_matmul_peak"] = s["own_dense_flops_per_second"] / matmul_peak
        result[r.name] = s
        mem = s["xla_memory"] or {}
        name = {"bert_jax": "bert_jax", "hf": "HF Flax ", "bert_jax_bf16": "bert_jax bf16"}[r.name]
        line = (f"  {name}: {s['tokens_per_second']:,.0f} tokens/s (step {s['step_seconds_median'] * 1e3:,.0f} ms "
                f"median, IQR {s['step_seconds_iqr'][0] * 1e3:,.0f}-{s['step_seconds_iqr'][1] * 1e3:,.0f} ms, "
                f"{len(s['step_seconds_all'])} steps), compile {s['compile_seconds']:.1f} s, "
                f"XLA temp {fmt_bytes(mem.get('temp_size_in_bytes'))}, "
                f"MFU {100 * s['mfu_vs_measured_matmul_peak']:.1f}% of the matmul peak "
                f"({100 * s['mfu_load_matched']:.1f}% load-matched; "
                f"{s['model_flops_per_second'] / 1e9:,.1f} model GFLOP/s")
        if r.name == "hf":
            line += (f"; {s['own_dense_flops_per_second'] / 1e9:,.1f} GFLOP/s = "
                     f"{100 * s['own_dense_mfu_vs_measured_matmul_peak']:.1f}% counting its dense head")
        line += ")"
        if chip_peak:
            line += f", MFU {100 * s['mfu_vs_chip_peak']:.1f}% of the chip's bf16 peak"
        xf = s["xla_flops_per_step"]
        if xf:
            line += f"; XLA counts {xf / 1e9:,.1f} GFLOP/step"
        line += f"; loss {s['first_step_metrics']['loss']:.3f} -> {s['last_step_metrics']['loss']:.3f}"
        print(line, flush=True)
    if "hf" in result:
        result["ratio_tokens_per_second"] = (result["bert_jax"]["tokens_per_second"]
                                             / result["hf"]["tokens_per_second"])
        print(f"  ratio bert_jax / HF: {result['ratio_tokens_per_second']:.2f}x tokens/s", flush=True)
    if "bert_jax_bf16" in result:
        bf = result["bert_jax_bf16"]
        result["bf16_speedup"] = result["bert_jax"]["step_seconds_median"] / bf["step_seconds_median"]
        bf_peak, bf_sizes = measure_matmul_peak(FLAGS.matmul_sizes and [int(n) for n in FLAGS.matmul_sizes]
                                                or [1024, 2048], "bf16_f32", 0.3 if FLAGS.quick else 1.0)
        bf["bf16_matmul_peak"] = bf_peak
        bf["mfu_vs_bf16_matmul_peak"] = bf["model_flops_per_second"] / bf_peak
        first, last = result["bert_jax"]["last_step_metrics"]["loss"], bf["last_step_metrics"]["loss"]
        print(f"  bf16 / fp32: step {result['bf16_speedup']:.2f}x faster; bf16 x bf16 -> fp32 matmul peak here "
              f"{bf_peak / 1e9:,.1f} GFLOP/s ({', '.join(f'{n}²: {v / 1e9:,.1f}' for n, v in bf_sizes.items())}), "
              f"bf16 MFU against it {100 * bf['mfu_vs_bf16_matmul_peak']:.1f}%; last loss fp32 {first:.4f}, "
              f"bf16 {last:.4f}", flush=True)
    if FLAGS.profile:
        for r in runners:
            kinds = profile_by_kind(r)
            result.setdefault("profile_ms_per_step_by_kind", {})[r.name] = kinds
            print(f"  {r.name} profile, ms/step by XLA op kind (concurrent ops overlap): "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in kinds.items()), flush=True)
    # The distance to the hardware: the same matmuls alone, each at the speed this backend gets for its shape.
    floor_s, floor_shapes = measure_matmul_floor(cfg, batch_size, seq_len, P, jnp.dtype(FLAGS.dtype),
                                                 0.05 if FLAGS.quick else 0.3)
    step_s = result["bert_jax"]["step_seconds_median"]
    result["matmul_floor"] = {"seconds_per_step": floor_s, "per_shape_seconds": floor_shapes,
                              "step_over_floor": step_s / floor_s,
                              "floor_flops_per_second": step_flops / floor_s,
                              "mfu_ceiling_vs_matmul_peak": step_flops / floor_s / matmul_peak}
    print(f"  matmul floor: the step's {len(floor_shapes)} matmul shapes alone take {floor_s * 1e3:,.0f} ms/step "
          f"({step_flops / floor_s / 1e9:,.1f} GFLOP/s, {100 * step_flops / floor_s / matmul_peak:.1f}% of the "
          f"matmul peak: the MFU ceiling of any implementation of these shapes); bert_jax's step takes "
          f"{step_s / floor_s:.2f}x that, {100 * (1 - floor_s / step_s):.0f}% of it outside the matmuls", flush=True)
    result["setup_seconds"] = setup_s
    return result, runners[0]


# ----------------------------------------------------------------------------------------------
# input pipeline
# ----------------------------------------------------------------------------------------------

def bench_pipeline(config_runs, quick, workdir):
    """`bert_jax.data.pipeline` at each config's shapes: batches/s on its own (static masks from the
    records, and dynamic masking), then bert_jax's step fed by it against the step on a fixed batch."""
    try:
        from bert_jax.data import pipeline, records
    except ImportError as e:
        msg = f"input pipeline: skipped (bert_jax.data.pipeline is not importable: {e})"
        print("\n" + msg)
        return {"skipped": msg}
    import jax
    import numpy as np

    print("\ninput pipeline (bert_jax.data.pipeline, tf.data; synthetic records on local disk):", flush=True)
    min_seconds = 0.5 if quick else 3.0
    written = {}
    out = {}
    for label, result, runner in config_runs:
        L, P, B = result["seq_len"], result["max_predictions"], result["batch_size"]
        if (L, P) not in written:
            n_records = max(8 * B, 2048)
            feats = synthetic_batch(np.random.default_rng(1), n_records, L, P, FLAGS.vocab_size)
            files = {}
            for kind in (records.MASKED, records.UNMASKED):
                names = records.batch_keys(kind)
                paths = []
                for shard in range(4):
                    path = os.path.join(workdir, f"{kind}-L{L}-P{P}-{shard}.tfrecord")
                    records.write_examples(path, {k: v[shard::4] for k, v in feats.items() if k in names}, kind)
                    paths.append(path)
                files[kind] = paths
            written[(L, P)] = files
        files = written[(L, P)]
        res = {}
        # 1. The step fed by the pipeline (its tf.data threads share the CPU with XLA) and the step on
        # the fixed batch, alternating so that both see the same machine load.
        it = pipeline.make_iterator(files[records.MASKED], batch_size=B, max_seq_length=L,
                                    max_predictions_per_seq=P, seed=0, shuffle_buffer=1000,
                                    process_index=0, process_count=1)
        fed_times, fixed_times = [], []
        n_fed = 2 if quick else max(FLAGS.steps // 2, 3)
        for i in range(n_fed + 1):
            for times, fed_step in ((fixed_times, False), (fed_times, True)):
                t0 = time.perf_counter()
                batch = jax.device_put(next(it)) if fed_step else runner.batch
                runner.state, metrics = runner.compiled(runner.state, batch, runner.rng)
                jax.block_until_ready(metrics)
                if i:  # the first round waits for tf.data to start
                    times.append(time.perf_counter() - t0)
        del it
        fed, fixed = statistics.median(fed_times), statistics.median(fixed_times)
        res.update(fed_step_seconds_median=fed, fixed_step_seconds_median=fixed,
                   fed_tokens_per_second=B * L / fed, fed_vs_fixed_batch=fixed / fed)
        print(f"  [{label}] bert_jax step fed by the pipeline (next() + device_put + step): "
              f"{B * L / fed:,.0f} tokens/s, {100 * fixed / fed:.0f}% of the fixed-batch step's "
              f"{B * L / fixed:,.0f} tokens/s in the same period", flush=True)
        # 2. The pipeline alone, against the step's consumption just measured.
        step_bps = 1.0 / fixed
        for mode, kind, extra in (("static_masks", records.MASKED, {}),
                                  ("dynamic_masking", records.UNMASKED,
                                   dict(dynamic_masking=True, vocab_size=FLAGS.vocab_size,
                                        mask_id=min(103, FLAGS.vocab_size - 1)))):
            it = pipeline.make_iterator(files[kind], batch_size=B, max_seq_length=L, max_predictions_per_seq=P,
                                        seed=0, shuffle_buffer=1000, process_index=0, process_count=1, **extra)
            for _ in range(5):
                next(it)
            n, t0 = 0, time.perf_counter()
            while n < 10 or time.perf_counter() - t0 < min_seconds:
                next(it)
                n += 1
            bps = n / (time.perf_counter() - t0)
            del it
            res[mode] = {"batches_per_second": bps, "step_batches_per_second": step_bps,
                         "ratio_to_step": bps / step_bps}
            print(f"  [{label}] pipeline alone, {mode.replace('_', ' ')}: {bps:,.1f} batches/s of {B} "
                  f"({bps * B * L:,.0f} tokens/s); the step consumes {step_bps:,.2f} batches/s: "
                  f"pipeline/step {bps / step_bps:,.0f}x", flush=True)
        out[label] = res
    return out


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

def write_json_atomic(path, obj):
    from bert_jax import fileio
    fileio.atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def main(argv):
    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {' '.join(argv[1:])}")
    configs = parse_configs(FLAGS.configs)
    n_steps, n_rounds, n_warmup = FLAGS.steps, FLAGS.rounds, FLAGS.warmup
    if FLAGS.quick:
        n_steps, n_rounds, n_warmup = 2, 1, 1
    if n_steps < 1 or n_rounds < 1 or n_warmup < 0:
        raise SystemExit(f"--steps={n_steps} and --rounds={n_rounds} must be >= 1, --warmup={n_warmup} >= 0")
    n_rounds = min(n_rounds, n_steps)

    load_start = os.getloadavg()
    from bert_jax import memory
    kept = memory.keep_freed_memory() if FLAGS.keep_freed_memory else False
    import jax
    jax.config.update("jax_default_prng_impl", FLAGS.rng_impl)
    import jax.numpy as jnp

    from bert_jax import flops
    device = jax.devices()[0]
    chip_peak = flops.detect_peak_flops(device)
    sizes = FLAGS.matmul_sizes or (["1024", "2048"] if device.platform == "cpu" else ["4096", "8192"])
    try:
        sizes = [int(s) for s in sizes]
    except ValueError:
        raise SystemExit(f"--matmul_sizes={','.join(sizes)} must be integers") from None
    mm_dtype = jnp.float32 if device.platform == "cpu" else jnp.dtype(FLAGS.dtype)
    env = {
        "jax": jax.__version__, "platform": device.platform, "device_kind": device.device_kind,
        "num_devices": jax.device_count(), "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(), "machine": platform.machine(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"), "keep_freed_memory": kept, "xla_flags": os.environ.get("XLA_FLAGS"),
        "loadavg_start": load_start, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import flax
        env["flax"] = flax.__version__
    except ImportError:
        pass
    if FLAGS.hf:
        try:
            import transformers
            from transformers import FlaxBertForPreTraining  # noqa: F401
            env["transformers"] = transformers.__version__
        except Exception as e:  # noqa: BLE001 (report why HF cannot run, then stop)
            raise SystemExit(f"HF transformers' FlaxBertForPreTraining cannot be imported ({type(e).__name__}: "
                             f"{e}); install transformers 4.x with Flax support or pass --nohf") from None
    print(f"jax {env['jax']} on {env['platform']} ({env['device_kind']}), {env['cpu_affinity']} CPU cores, "
          f"flax {env.get('flax')}, transformers {env.get('transformers', 'not used')}, "
          f"GLIBC_TUNABLES={env['glibc_tunables']}, keep_freed_memory={kept}, load average {load_start[0]:.2f}", flush=True)

    mm_time = 0.3 if FLAGS.quick else 1.5
    peak, per_size = measure_matmul_peak(sizes, mm_dtype, mm_time)
    print(f"matmul peak ({jnp.dtype(mm_dtype).name}, jitted): {peak / 1e9:,.1f} GFLOP/s "
          f"({', '.join(f'{n}²: {v / 1e9:,.1f}' for n, v in per_size.items())})"
          + (f"; published chip peak (bf16) {chip_peak / 1e12:,.0f} TFLOP/s" if chip_peak else ""), flush=True)

    # The peak is the best of several measurements (start, before each config, end): on a shared
    # machine a single one can land in a busy moment and flatter every MFU.
    peaks = [{"when": "start", "best": peak, "per_size": per_size}]
    probe = MatmulProbe(max(per_size, key=per_size.get), mm_dtype)
    results, config_runs = [], []
    for label, size, seq_len, batch in configs:
        p, ps = measure_matmul_peak(sizes, mm_dtype, mm_time / 2)
        peaks.append({"when": f"before {label}", "best": p, "per_size": ps})
        best = max(x["best"] for x in peaks)
        print(f"\nmatmul peak before [{label}]: {p / 1e9:,.1f} GFLOP/s; MFU below is against the best so far, "
              f"{best / 1e9:,.1f} GFLOP/s", flush=True)
        res, ours = bench_config(label, size, seq_len, batch, best, chip_peak, n_steps, n_rounds, n_warmup,
                                 probe, mm_time / 3)
        results.append(res)
        config_runs.append((label, res, ours))

    peak_end, per_size_end = measure_matmul_peak(sizes, mm_dtype, mm_time)
    peaks.append({"when": "end", "best": peak_end, "per_size": per_size_end})
    best_peak = max(x["best"] for x in peaks)
    print(f"\nmatmul peak at the end: {peak_end / 1e9:,.1f} GFLOP/s; best of {len(peaks)} measurements "
          f"{best_peak / 1e9:,.1f} GFLOP/s (the summary's MFU uses it)", flush=True)
    for r in results:
        for name in ("bert_jax", "hf"):
            if name in r:
                r[name]["mfu_vs_best_matmul_peak"] = r[name]["model_flops_per_second"] / best_peak
    del probe

    pipeline = None
    if FLAGS.pipeline:
        with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as workdir:
            pipeline = bench_pipeline(config_runs, FLAGS.quick, workdir)
    del config_runs
    env["loadavg_end"] = os.getloadavg()
    rss = peak_rss_mib()
    device_peak = None
    if device.platform != "cpu":
        try:
            device_peak = (device.memory_stats() or {}).get("peak_bytes_in_use")
        except Exception:  # noqa: BLE001 (not every backend reports it)
            device_peak = None
    env["device_peak_bytes_in_use"] = device_peak
    print(f"\npeak RSS of this process: {rss:,.0f} MiB"
          + (f"; device memory peak {fmt_bytes(device_peak)}" if device_peak else "")
          + f"; load average {env['loadavg_start'][0]:.2f} at start, {env['loadavg_end'][0]:.2f} at end")
    print("\nsummary:")
    for r in results:
        line = f"  {r['label']}: bert_jax {r['bert_jax']['tokens_per_second']:,.0f} tokens/s"
        if "hf" in r:
            line += (f", HF {r['hf']['tokens_per_second']:,.0f} tokens/s, ratio {r['ratio_tokens_per_second']:.2f}x")
        line += (f"; MFU (sparse-head FLOPs, best matmul peak {best_peak / 1e9:,.1f} GFLOP/s): bert_jax "
                 f"{100 * r['bert_jax']['mfu_vs_best_matmul_peak']:.1f}%")
        if "hf" in r:
            line += f", HF {100 * r['hf']['mfu_vs_best_matmul_peak']:.1f}%"
        line += f" (load-matched: bert_jax {100 * r['bert_jax']['mfu_load_matched']:.1f}%"
        line += f", HF {100 * r['hf']['mfu_load_matched']:.1f}%)" if "hf" in r else ")"
        if chip_peak:
            line += f"; bert_jax {100 * r['bert_jax']['mfu_vs_chip_peak']:.1f}% of the chip's bf16 peak"
        f = r.get("matmul_floor")
        if f:
            line += (f"; matmul-only ceiling {100 * f['mfu_ceiling_vs_matmul_peak']:.1f}%, step "
                     f"{f['step_over_floor']:.2f}x its matmul floor")
        print(line)
    if FLAGS.json:
        out = {"env": env, "matmul_peak_flops": best_peak, "matmul_peak_measurements": peaks,
               "matmul_dtype": jnp.dtype(mm_dtype).name,
               "chip_peak_bf16_flops": chip_peak, "peak_rss_mib": rss, "configs": results,
               "pipeline": pipeline,
               "settings": {"steps": n_steps, "rounds": n_rounds, "warmup": n_warmup,
                            "max_predictions": FLAGS.max_predictions, "dtype": FLAGS.dtype,
                            "dropout": FLAGS.dropout, "vocab_size": FLAGS.vocab_size, "quick": FLAGS.quick}}
        write_json_atomic(FLAGS.json, out)
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
