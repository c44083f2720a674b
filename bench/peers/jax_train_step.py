#!/usr/bin/env python3
"""JAX peer of `axlearn bench train-step`: the Fuji decoder trained with optax AdamW on
synthetic tokens, the whole step under one jax.jit; prints one JSON line.

Threads: XLA:CPU sizes its thread pool from the CPUs the process may run on, so
bench/compare_cpu.sh pins the process with `taskset` to --threads CPUs (on a 2-core machine
with --threads 2 that is every CPU, i.e. the default). bf16 keeps f32 master parameters and
casts them to bfloat16 inside the step; norms, softmax and the loss compute in f32.
"""
import functools
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


def init_params(a, key):
    params = {}
    for i, (name, shape) in enumerate(sorted(common.param_shapes(a).items())):
        if len(shape) == 1:
            params[name] = jnp.ones(shape, jnp.float32)
        else:  # fan-in scaled normal (the embedding: fan_out), as Fuji's initializer
            fan = shape[1] if name == "emb" else shape[0]
            k = jax.random.fold_in(key, i)
            params[name] = jax.random.normal(k, shape, jnp.float32) / math.sqrt(fan)
    return params


def rms_norm(x, w, eps=1e-5):
    h = x.astype(jnp.float32)
    h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + eps)
    return (h * w).astype(x.dtype)


def rotate_half(x):
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def loss_fn(params, ids, labels, a, cdtype):
    p = jax.tree_util.tree_map(lambda w: w.astype(cdtype), params)
    b, t = ids.shape
    h, kv, dh = a.heads, a.kv_heads, a.dim // a.heads
    inv = 1.0 / (a.rope_theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
    freqs = jnp.outer(jnp.arange(t, dtype=jnp.float32), inv)
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # (T, dh), HF layout
    cos, sin = jnp.cos(emb).astype(cdtype), jnp.sin(emb).astype(cdtype)
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))

    x = p["emb"][ids]  # (B, T, D)
    for i in range(a.layers):
        y = rms_norm(x, p[f"l{i}.attn_norm"])
        qkv = (y @ p[f"l{i}.qkv"]).reshape(b, t, h + 2 * kv, dh)
        q, k, v = qkv[:, :, :h], qkv[:, :, h:h + kv], qkv[:, :, h + kv:]
        q = q * cos[:, None] + rotate_half(q) * sin[:, None]
        k = k * cos[:, None] + rotate_half(k) * sin[:, None]
        q = q.reshape(b, t, kv, h // kv, dh)  # query heads grouped by their kv head
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k) * (1.0 / math.sqrt(dh))
        scores = jnp.where(causal, scores.astype(jnp.float32), -jnp.inf)
        probs = jax.nn.softmax(scores, axis=-1).astype(cdtype)
        out = jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, h * dh)
        x = x + out @ p[f"l{i}.o"]
        y = rms_norm(x, p[f"l{i}.ffn_norm"])
        x = x + (jax.nn.silu(y @ p[f"l{i}.w1_0"]) * (y @ p[f"l{i}.w1_1"])) @ p[f"l{i}.w2"]
    logits = (rms_norm(x, p["final_norm"]) @ p["lm_head"]).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def main():
    a = common.parse_args(__doc__.splitlines()[0])
    cdtype = jnp.bfloat16 if a.dtype == "bf16" else jnp.float32
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(a.lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1))
    params = init_params(a, jax.random.PRNGKey(0))
    opt_state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, ids, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, ids, labels, a, cdtype)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(0)
    step_s, first_s, loss_first, loss = [], 0.0, 0.0, 0.0
    for i in range(a.warmup + a.steps):
        ids = jnp.asarray(rng.integers(0, a.vocab, (a.batch, a.seq), dtype=np.int32))
        labels = jnp.asarray(rng.integers(0, a.vocab, (a.batch, a.seq), dtype=np.int32))
        t0 = time.perf_counter()
        params, opt_state, l = train_step(params, opt_state, ids, labels)
        loss = float(l)
        s = time.perf_counter() - t0
        if i == 0:
            first_s, loss_first = s, loss
        if i >= a.warmup:
            step_s.append(s)
    common.report("jax", a, step_s, first_s, loss_first, loss,
                  {"version": jax.__version__, "cpus": len(os.sched_getaffinity(0))})


if __name__ == "__main__":
    main()
