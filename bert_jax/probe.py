"""Frozen features + logistic regression: the linear probe of an encoder (pretrained or random).

    feature_fn = probe.make_feature_fn(model_config, "mean")
    X_NxH = probe.extract_features(feature_fn, encoder_params, encoded_arrays, batch_size=128)
    clf, c, dev_score = probe.fit_best(X_train, y_train, X_dev, y_dev, c_grid, score_fn)

Used by experiments/linear_probe and experiments/pretrained_vs_scratch.
"""

from __future__ import annotations

FEATURES = ("pooled", "mean")


def make_feature_fn(model_config, features: str):
    """A jitted ``(encoder params, batch) -> [B, H]`` features function."""
    import jax
    import jax.numpy as jnp

    from bert_jax import modeling

    if features not in FEATURES:
        raise ValueError(f"features={features!r}: choose one of {FEATURES}")
    model = modeling.BertModel(model_config, add_pooling_layer=features == "pooled")

    def fn(params, batch):
        out = model.apply({"params": params}, batch["input_ids"], attention_mask=batch["attention_mask"],
                          token_type_ids=batch["token_type_ids"], deterministic=True)
        if features == "pooled":
            return out.pooled_output.astype(jnp.float32)
        mask_BxLx1 = batch["attention_mask"][..., None].astype(jnp.float32)
        summed_BxH = jnp.sum(out.sequence_output.astype(jnp.float32) * mask_BxLx1, axis=1)
        return summed_BxH / jnp.maximum(jnp.sum(mask_BxLx1, axis=1), 1.0)
    return jax.jit(fn)


def encoder_params(config, model_config, pretrained):
    """The encoder's parameters: the checkpoint's ``params["bert"]``, or a random init (``config.seed``).
    ``config``: ``seed``, ``features``, ``init_checkpoint`` (for messages)."""
    import jax

    from bert_jax import modeling

    if pretrained is None:
        model = modeling.BertModel(model_config, add_pooling_layer=True)
        return jax.device_get(modeling.init_params(model, jax.random.PRNGKey(int(config.seed))))
    if "bert" not in pretrained:
        raise ValueError(f"{config.init_checkpoint}: checkpoint has no encoder at params['bert']")
    params = dict(pretrained["bert"])
    if config.features == "pooled" and "pooler" not in params:
        raise ValueError(f"{config.init_checkpoint}: checkpoint has no pooler weights, so features=pooled would "
                         "use a random pooler; use features=mean")
    if config.features == "mean":
        params.pop("pooler", None)
    return params


def extract_features(feature_fn, params, arrays, batch_size: int, length_bucket: int = 16):
    """``[N, H]`` float32 features of the encoded ``arrays``. Examples go through in order of length, each
    batch cut to its longest example rounded up to ``length_bucket`` tokens (0: no cut) and padded to
    ``batch_size`` rows, so a few shapes compile and short texts cost little. Cutting trailing padding
    changes nothing: padded positions are masked out of attention and of the mean."""
    import math

    import jax
    import numpy as np

    from bert_jax.data.batching import INPUT_KEYS
    from bert_jax.training import parallel

    mesh = parallel.make_mesh((-1, 1, 1))
    params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    batch_size += (-batch_size) % jax.device_count()
    inputs = {k: np.asarray(arrays[k]) for k in INPUT_KEYS}
    n, max_len = inputs["input_ids"].shape
    lengths = inputs["attention_mask"].sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    out = None
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        cut = max_len
        if length_bucket:
            cut = min(max_len, max(1, math.ceil(int(lengths[idx].max()) / length_bucket)) * length_bucket)
        batch = {}
        for k, x in inputs.items():
            x = x[idx, :cut]
            batch[k] = np.concatenate([x, np.zeros((batch_size - len(idx), cut), x.dtype)])
        feats = parallel.fetch(feature_fn(params, parallel.global_batch_from_whole(batch, mesh)))
        if out is None:
            out = np.zeros((n, feats.shape[-1]), np.float32)
        out[idx] = feats[:len(idx)]
    return out if out is not None else np.zeros((0, 0), np.float32)


def make_probe(c: float, standardize: bool, max_iter: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=c, max_iter=max_iter)
    return make_pipeline(StandardScaler(), clf) if standardize else clf


def fit_best(train_X, train_y, dev_X, dev_y, c_grid, score_fn, standardize: bool = True, max_iter: int = 2000):
    """Fits `make_probe` for every C of ``c_grid`` on train; returns ``(probe, C, dev score, {C: dev score})``
    of the best dev ``score_fn(labels, predictions)`` (higher is better; ties go to the smaller C)."""
    import math

    scores, best = {}, None
    for c in sorted(float(x) for x in c_grid):
        clf = make_probe(c, standardize, max_iter).fit(train_X, train_y)
        s = float(score_fn(dev_y, clf.predict(dev_X)))
        scores[c] = s if math.isfinite(s) else -math.inf
        if best is None or scores[c] > best[2]:
            best = (clf, c, scores[c])
    return best + (scores,)
