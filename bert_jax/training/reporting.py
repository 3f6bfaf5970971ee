"""What a run reports: TensorBoard scalars (clu metric writers; process 0 writes, the others only
log) and one stdout line per log / eval step on process 0, with throughput, MFU and ETA."""

from __future__ import annotations

import math
import os
import time
from typing import Dict, Optional

import jax

from bert_jax import checkpoint as ckpt_lib


def print0(message: str) -> None:
    """One line on process 0's stdout."""
    if jax.process_index() == 0:
        print(message, flush=True)


def make_writer(workdir: str):
    from clu import metric_writers
    return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0,
                                                asynchronous=True)


def flops_per_step(bert_config, batch, seq_len, max_predictions) -> Optional[float]:
    try:
        from bert_jax import flops
        return flops.pretrain_step_flops(bert_config, batch, seq_len, max_predictions)
    except Exception:  # FLOP accounting is informative only
        return None


def peak_flops(config) -> Optional[float]:
    """All devices' peak FLOP/s: ``config.peak_flops`` per device, else the detected chip's, else None."""
    if config.get("peak_flops"):
        return float(config.peak_flops) * jax.device_count()
    try:
        from bert_jax import flops
        peak = flops.detect_peak_flops()
        return peak * jax.device_count() if peak else None
    except Exception:
        return None


def fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Throughput:
    """Steps/s, tokens/s and MFU since the last log step (``reset`` there)."""

    def __init__(self, step: int, global_batch_size: int, seq_len: int, step_flops, peak):
        self.global_batch_size, self.seq_len = global_batch_size, seq_len
        self.step_flops, self.peak = step_flops, peak
        self.reset(step)

    def reset(self, step: int) -> None:
        self.t0, self.step0 = time.time(), step

    def measure(self, step: int) -> Dict[str, float]:
        steps_per_s = (step - self.step0) / max(time.time() - self.t0, 1e-9)
        out = {"steps_per_sec": steps_per_s, "tokens_per_sec": steps_per_s * self.global_batch_size * self.seq_len}
        if self.step_flops and self.peak:
            out["mfu"] = steps_per_s * self.step_flops / self.peak
        return out


def log_train(writer, step: int, total_steps: int, m: Dict[str, float]) -> None:
    """``m``: the averaged train metrics, learning rate and `Throughput.measure`'s figures."""
    writer.write_scalars(step, {f"train/{k}": v for k, v in m.items()})
    steps_per_s = m["steps_per_sec"]
    eta = (total_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
    print0(f"step {step}/{total_steps} loss {m['loss']:.4f} mlm {m['mlm_loss']:.4f} "
           f"nsp {m['nsp_loss']:.4f} mlm_acc {m['mlm_accuracy']:.3f} "
           f"nsp_acc {m['nsp_accuracy']:.3f} lr {m['learning_rate']:.2e} "
           f"{m['tokens_per_sec']:,.0f} tok/s" + (f" MFU {m['mfu']:.1%}" if "mfu" in m else "")
           + f" ETA {fmt_eta(eta)}")


def log_eval(writer, step: int, m: Dict[str, float]) -> None:
    writer.write_scalars(step, {f"eval/{k}": v for k, v in m.items()})
    print0(f"eval step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in m.items()))


def write_results(workdir: str, result: dict) -> None:
    if jax.process_index() == 0:
        ckpt_lib.write_json_atomic(os.path.join(workdir, "results.json"), result)
