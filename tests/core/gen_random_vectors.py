#!/usr/bin/env python3
"""Writes tests/core/testdata/random_vectors.json: reference outputs of jax.random (default
threefry2x32 PRNG, jax_threefry_partitionable=True) for tests/core/random_test.cc.

Run with the python3 that has jax:  python3 tests/core/gen_random_vectors.py
Floats are stored as their bit patterns (uint16 / uint32 / uint64) so tests compare bitwise.
The first half runs in jax's default 32-bit mode (as AXLearn does); the float64 cases and the
64-bit seeds run after enabling jax_enable_x64.

Samplers run under jax.jit with their Python-float arguments closed over, as in AXLearn, where
everything is traced. That matters for truncated_normal only: under jit XLA folds
erf(lower / sqrt(2)) at compile time with the C library's erf, while an eager call evaluates it at
run time with XLA's vectorised erf (after rewriting the division as a multiplication by
1 / sqrt(2)), which can differ in the last bit for some bounds.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

assert jax.config.jax_threefry_partitionable, "vectors assume the partitionable threefry scheme"

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "random_vectors.json")

SHAPES = [(), (1,), (2,), (3,), (5,), (7,), (2, 3), (4, 6), (24,), (3, 1, 5), (2, 3, 4), (17, 19),
          (1000,)]
UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def key_list(k):
    return [int(v) for v in np.asarray(jax.random.key_data(k)).reshape(-1)]


def raw_key(data):
    return jax.random.wrap_key_data(np.asarray(data, np.uint32))


def float_bits(x):
    x = np.asarray(x)
    width = x.dtype.itemsize * 8
    return [int(v) for v in x.reshape(-1).view(UINT[width])]


def dtype_name(dt):
    return np.dtype(dt).name


def main():
    out = {"jax_version": jax.__version__}

    # ---- keys from seeds (32-bit mode: seeds below 2**32) ----
    out["key"] = [{"seed": s, "key": key_list(jax.random.key(s))}
                  for s in [0, 1, 42, 1234, 2**31 - 1, 2**31, 2**32 - 1]]

    base_keys = [key_list(jax.random.key(s)) for s in [0, 42, 2**32 - 1]]
    base_keys.append([0x13198A2E, 0x03707344])

    # ---- split / fold_in ----
    out["split"] = []
    for k in base_keys:
        for num in [1, 2, 3, 5, 8]:
            out["split"].append({"key": k, "num": num,
                                 "out": np.asarray(jax.random.key_data(
                                     jax.random.split(raw_key(k), num))).tolist()})
    out["fold_in"] = []
    for k in base_keys:
        for data in [0, 1, 7, 123456, 2**31, 2**32 - 1]:
            out["fold_in"].append({"key": k, "data": data,
                                   "out": key_list(jax.random.fold_in(raw_key(k), data))})

    # Chains of split (take element i of num) and fold_in applied to key(seed).
    chains = [
        [["split", 2, 0], ["split", 2, 1]],
        [["fold_in", 3], ["split", 4, 2], ["fold_in", 99]],
        [["split", 3, 2], ["fold_in", 0], ["fold_in", 1], ["split", 2, 0]],
        [["fold_in", 2**32 - 1], ["split", 7, 6]],
    ]
    out["chain"] = []
    for seed in [0, 7]:
        for ops in chains:
            k = jax.random.key(seed)
            for op in ops:
                if op[0] == "split":
                    k = jax.random.split(k, op[1])[op[2]]
                else:
                    k = jax.random.fold_in(k, op[1])
            out["chain"].append({"seed": seed, "ops": ops, "key": key_list(k)})

    # ---- random bits ----
    out["bits"] = []
    for k in base_keys[:2]:
        for shape in SHAPES:
            out["bits"].append({"key": k, "shape": list(shape), "bit_width": 32,
                                "bits": [int(v) for v in np.asarray(
                                    jax.random.bits(raw_key(k), shape, np.uint32)).reshape(-1)]})
    for shape in [(5,), (2, 3)]:
        out["bits"].append({"key": base_keys[0], "shape": list(shape), "bit_width": 8,
                            "bits": [int(v) for v in np.asarray(
                                jax.random.bits(raw_key(base_keys[0]), shape,
                                                np.uint8)).reshape(-1)]})

    # ---- samplers (32-bit mode) ----
    k0, k1 = base_keys[0], base_keys[1]
    out["uniform"] = []
    for k in [k0, k1]:
        for shape in [(), (1,), (7,), (2, 3), (3, 1, 5), (1000,)]:
            out["uniform"].append(sample_uniform(k, shape, np.float32, 0.0, 1.0))
    for lo, hi in [(-1.0, 1.0), (0.1, 0.7), (-1.3, 2.9), (5.0, 5.5), (-3.0, -2.0)]:
        out["uniform"].append(sample_uniform(k1, (500,), np.float32, lo, hi))
    for dt in [jnp.bfloat16, jnp.float16]:
        out["uniform"].append(sample_uniform(k0, (300,), dt, 0.0, 1.0))
        out["uniform"].append(sample_uniform(k0, (300,), dt, -1.5, 2.0))

    out["normal"] = []
    for k in [k0, k1]:
        for shape in [(), (1,), (7,), (2, 3), (3, 1, 5), (1000,)]:
            out["normal"].append(sample_normal(k, shape, np.float32))
    out["normal"].append(sample_normal(k0, (20000,), np.float32))
    for dt in [jnp.bfloat16, jnp.float16]:
        out["normal"].append(sample_normal(k0, (300,), dt))

    out["truncated_normal"] = []
    for lo, hi in [(-2.0, 2.0), (-1.0, 3.0), (0.5, 1.5), (-4.0, -3.5), (-0.1, 0.1)]:
        out["truncated_normal"].append(sample_truncated(k1, lo, hi, (500,), np.float32))
    out["truncated_normal"].append(sample_truncated(k0, -2.0, 2.0, (2, 3), np.float32))
    for dt in [jnp.bfloat16, jnp.float16]:
        for lo, hi in [(-2.0, 2.0), (0.5, 1.5)]:
            out["truncated_normal"].append(sample_truncated(k0, lo, hi, (300,), dt))

    out["bernoulli"] = []
    for k in [k0, k1]:
        for p, shape in [(0.5, (100,)), (0.1, (3, 7)), (0.9, (50,)), (0.0, (10,)), (1.0, (10,)),
                         (0.3, ())]:
            b = np.asarray(jax.jit(lambda key: jax.random.bernoulli(key, p, shape))(raw_key(k)))
            out["bernoulli"].append({"key": k, "p": p, "shape": list(shape),
                                     "out": [int(v) for v in b.reshape(-1)]})

    out["permutation"] = []
    for k in [k0, k1]:
        for n in [0, 1, 2, 3, 10, 100, 1625, 1626]:
            perm = np.asarray(jax.jit(lambda key: jax.random.permutation(key, n))(raw_key(k)))
            assert perm.dtype == np.int32
            out["permutation"].append({"key": k, "n": n, "out": perm.tolist()})

    # erfinv on its own, at the inputs normal() produces and at awkward points.
    rng = np.random.default_rng(0)
    x32 = np.concatenate([rng.uniform(-1, 1, 3000),
                          1 - np.exp(-rng.uniform(0, 16, 1000)),
                          [0.0, -0.0, 1e-30, 0.5, 0.9, 0.99999994, -0.99999994, 1.0, -1.0]])
    x32 = x32.astype(np.float32)
    out["erfinv_f32"] = {"x": float_bits(x32), "y": float_bits(lax.erf_inv(x32))}

    # ---- 64-bit mode: float64 samplers, 64-bit random bits, 64-bit seeds ----
    jax.config.update("jax_enable_x64", True)
    # Seeds at and above 2**63 are passed to jax as the int64 with the same bits.
    out["key_x64"] = [{"seed": s % 2**64, "key": key_list(jax.random.key(s))}
                      for s in [0, 2**32, 2**40 + 7, 2**63 - 1, -2**63, -1]]
    for shape in [(), (5,), (2, 3)]:
        out["bits"].append({"key": k0, "shape": list(shape), "bit_width": 64,
                            "bits": [int(v) for v in np.asarray(
                                jax.random.bits(raw_key(k0), shape, np.uint64)).reshape(-1)]})
    for shape in [(), (7,), (2, 3), (1000,)]:
        out["uniform"].append(sample_uniform(k0, shape, np.float64, 0.0, 1.0))
    for lo, hi in [(0.1, 0.35), (-1.3, 2.9)]:
        out["uniform"].append(sample_uniform(k1, (500,), np.float64, lo, hi))
    for shape in [(), (7,), (2, 3), (5000,)]:
        out["normal"].append(sample_normal(k0, shape, np.float64))
    for lo, hi in [(-2.0, 2.0), (0.5, 1.5), (-0.1, 0.1)]:
        out["truncated_normal"].append(sample_truncated(k1, lo, hi, (500,), np.float64))
    x64 = np.concatenate([rng.uniform(-1, 1, 2000),
                          1 - np.exp(-rng.uniform(0, 36, 1000)),
                          [0.0, 0.5, -0.7, 0.999, 1 - 2.0**-53, 1.0, -1.0]])
    out["erfinv_f64"] = {"x": float_bits(x64), "y": float_bits(lax.erf_inv(x64))}

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


def sample_uniform(k, shape, dt, lo, hi):
    x = jax.jit(lambda key: jax.random.uniform(key, shape, dt, lo, hi))(raw_key(k))
    return {"key": k, "shape": list(shape), "dtype": dtype_name(dt), "minval": lo, "maxval": hi,
            "bits": float_bits(x)}


def sample_normal(k, shape, dt):
    x = jax.jit(lambda key: jax.random.normal(key, shape, dt))(raw_key(k))
    return {"key": k, "shape": list(shape), "dtype": dtype_name(dt), "bits": float_bits(x)}


def sample_truncated(k, lo, hi, shape, dt):
    x = jax.jit(lambda key: jax.random.truncated_normal(key, lo, hi, shape, dt))(raw_key(k))
    return {"key": k, "shape": list(shape), "dtype": dtype_name(dt), "lower": lo, "upper": hi,
            "bits": float_bits(x)}


if __name__ == "__main__":
    assert ml_dtypes  # bfloat16 views need it registered with numpy
    main()
