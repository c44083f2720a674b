"""Writes testdata/module_vectors.json: reference values from CPython's hashlib and from JAX
(jax.random, jax.nn.initializers) for the module tests, following AXLearn's module.py
(_generate_seed_from_name, fold_in for child keys), param_init.py and base_layer.py
(initialize_parameters_recursively). Run: python3 tests/module/gen_module_vectors.py
"""

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np


def seed_from_name(name):
    # AXLearn module._generate_seed_from_name.
    return int(hashlib.md5(name.encode("utf-8")).hexdigest(), 16) % (2**31 - 1)


def key_data(key):
    return [int(x) for x in np.asarray(key).tolist()]


def values(x):
    return [float(v) for v in np.asarray(x, dtype=np.float64).reshape(-1)]


def truncated_normal_init(stddev, dtype):
    # AXLearn param_init.truncated_normal.
    def init(key, shape):
        truncated_stddev = stddev / jnp.array(0.87962566103423978, dtype)
        return jax.random.truncated_normal(key, -2, 2, shape, dtype) * truncated_stddev

    return init


def weight_initializer(scale, fan, distribution, dtype):
    # AXLearn param_init.WeightInitializer.initialize with axes FanAxes(in_axis=-2, out_axis=-1).
    if fan is not None:
        return jax.nn.initializers.variance_scaling(
            scale, mode=fan, distribution=distribution, dtype=dtype, in_axis=-2, out_axis=-1
        )
    if distribution == "uniform":
        return lambda key, shape: jax.random.uniform(
            key, shape=shape, dtype=dtype, minval=-scale, maxval=scale
        )
    if distribution == "normal":
        return lambda key, shape: jax.nn.initializers.normal(scale, dtype=dtype)(key, shape)
    return truncated_normal_init(scale, dtype)


def main():
    out = {}
    md5_inputs = ["", "abc", "The quick brown fox jumps over the lazy dog", "a" * 1000, "linear"]
    out["md5"] = [[s, hashlib.md5(s.encode()).hexdigest()] for s in md5_inputs]
    names = ["linear", "decoder", "emb", "layer0", "a", "root", "feed_forward", "linear1"]
    out["seeds"] = [[n, seed_from_name(n)] for n in names]

    root = jax.random.PRNGKey(42)
    out["fold_in"] = {
        "root": key_data(root),
        "linear1": key_data(jax.random.fold_in(root, seed_from_name("linear1"))),
        "linear2": key_data(jax.random.fold_in(root, seed_from_name("linear2"))),
        "linear1/inner": key_data(
            jax.random.fold_in(
                jax.random.fold_in(root, seed_from_name("linear1")), seed_from_name("inner")
            )
        ),
    }

    cases = []
    key = jax.random.PRNGKey(7)
    shape = (4, 6)
    for scale, fan, dist, dtype in [
        (1.0, "fan_in", "normal", jnp.float32),
        (2.0, "fan_out", "uniform", jnp.float32),
        (0.5, "fan_avg", "truncated_normal", jnp.float32),
        (1.0, "fan_avg", "uniform", jnp.float32),
        (0.1, None, "uniform", jnp.float32),
        (0.02, None, "normal", jnp.float32),
        (0.02, None, "truncated_normal", jnp.float32),
        (1.0, "fan_in", "normal", jnp.bfloat16),
        (3.0, "fan_out", "truncated_normal", jnp.bfloat16),
    ]:
        x = weight_initializer(scale, fan, dist, dtype)(key, shape)
        cases.append(
            {
                "scale": scale,
                "fan": fan,
                "distribution": dist,
                "dtype": jnp.dtype(dtype).name,
                "key": key_data(key),
                "shape": list(shape),
                "values": values(x),
            }
        )
    out["weight_initializer"] = cases

    # initialize_parameters_recursively for the test tree:
    #   mlp: own param "scale" (2,), children linear1 (weight (3, 5), bias (5,)),
    #   linear2 (weight (5, 2), bias (2,)); default initializers.
    def default_init(name, key, shape):
        if name.endswith("bias"):
            return jnp.zeros(shape, jnp.float32)
        if name.endswith("scale"):
            return jnp.ones(shape, jnp.float32)
        return weight_initializer(1.0, "fan_avg", "uniform", jnp.float32)(key, shape)

    def init_layer(key, own, children):
        params = {}
        for name, shape in own:
            key, sub = jax.random.split(key)
            params[name] = default_init(name, sub, shape)
        for name, (child_own, child_children) in children:
            key, sub = jax.random.split(key)
            params[name] = init_layer(sub, child_own, child_children)
        return params

    tree = init_layer(
        jax.random.PRNGKey(3),
        [("scale", (2,))],
        [
            ("linear1", ([("weight", (3, 5)), ("bias", (5,))], [])),
            ("linear2", ([("weight", (5, 2)), ("bias", (2,))], [])),
        ],
    )
    out["init_tree"] = {
        "key": key_data(jax.random.PRNGKey(3)),
        "params": {
            "scale": values(tree["scale"]),
            "linear1/weight": values(tree["linear1"]["weight"]),
            "linear1/bias": values(tree["linear1"]["bias"]),
            "linear2/weight": values(tree["linear2"]["weight"]),
            "linear2/bias": values(tree["linear2"]["bias"]),
        },
    }

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "module_vectors.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
