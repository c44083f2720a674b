"""Reference trajectories for tests/optim/optimizers_parity_test.cc.

Each case runs an optimizer for 50 steps on a small problem in float32 with optax (pip) and
records the parameters after every step. Where AXLearn's semantics differ from optax's, the
reference is AXLearn's, written here as small optax transformations:
  - clip_by_global_norm scales by min(1, max_norm / (norm + eps)) (optax: a hard switch);
  - adamw_decoupled_optimizer: -update_schedule * (lr * adam + weight_decay * param), i.e.
    decoupled decay not multiplied by the learning rate (arXiv:1711.05101, Algorithm 2);
  - schedules are AXLearn's (schedule.py) compositions, written with jnp.
Run: python3 tests/parity/gen_optim_vectors.py  (writes tests/parity/testdata/optim_vectors.json)
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

STEPS = 50

rng = np.random.RandomState(0)
W0 = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
B0 = rng.uniform(-1, 1, (3,)).astype(np.float32)
AW = rng.uniform(0.5, 2.0, (4, 3)).astype(np.float32)
AB = rng.uniform(0.5, 2.0, (3,)).astype(np.float32)
# Targets at least 1.5 away, so lion's signs never sit near zero in 50 steps.
CW = (W0 + np.where(rng.uniform(size=(4, 3)) < 0.5, -1, 1) * rng.uniform(1.5, 2.5, (4, 3))).astype(
    np.float32)
CB = (B0 + np.where(rng.uniform(size=(3,)) < 0.5, -1, 1) * rng.uniform(1.5, 2.5, (3,))).astype(
    np.float32)


def loss_fn(params):
    w, b = params["w"], params["b"]
    return (jnp.sum(AW * jnp.square(w - CW)) + jnp.sum(AB * jnp.square(b - CB))
            + 0.05 * jnp.sum(w * w * w * w))


def polynomial(begin_step, begin_value, end_step, end_value):
    def fn(step):
        frac = (step - begin_step) / (end_step - begin_step)
        frac = jnp.minimum(1.0, jnp.maximum(0.0, frac))
        return begin_value + frac * (end_value - begin_value)
    return fn


def stepwise(subs, start_steps):
    starts = [0] + start_steps
    limits = start_steps + [-1]

    def fn(step):
        out = 0.0
        for s, start, limit in zip(subs, starts, limits):
            active = jnp.logical_and(start <= step, jnp.logical_or(limit < 0, step < limit))
            out = out + s(jnp.maximum(0, step - start)) * active.astype(jnp.float32)
        return out
    return fn


def cosine_with_linear_warmup(peak_lr, max_step, warmup_steps, alpha):
    return stepwise([polynomial(0, 0.0, warmup_steps, peak_lr),
                     optax.cosine_decay_schedule(peak_lr, max_step - warmup_steps, alpha)],
                    [warmup_steps])


def linear_schedule_with_warmup(peak_lr, max_step, warmup_steps):
    return stepwise([polynomial(0, 0.0, warmup_steps, peak_lr),
                     polynomial(0, peak_lr, max_step - warmup_steps, 0.0)], [warmup_steps])


def axlearn_clip_by_global_norm(max_norm, eps=1e-8):
    def update(updates, state, params=None):
        del params
        g_norm = optax.global_norm(updates)
        g_scale = jnp.minimum(1.0, max_norm / (g_norm + eps))
        return jax.tree.map(lambda t: t * g_scale, updates), state
    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def add_decayed_weights_scaled(weight_decay, scales):
    """AXLearn's add_decayed_weights with per-parameter scales: g + weight_decay * p * s."""
    def update(updates, state, params):
        return jax.tree.map(lambda g, p, s: g + weight_decay * p * s, updates, params, scales), state
    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def adamw_decoupled(lr, b1, b2, eps, weight_decay, update_schedule, mu_dtype=None):
    return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype),
                       optax.scale(lr), optax.add_decayed_weights(weight_decay),
                       optax.scale_by_schedule(update_schedule), optax.scale(-1.0))


CASES = {
    "sgd_momentum": optax.sgd(0.05, momentum=0.9),
    "sgd_nesterov_coupled_decay": optax.chain(optax.add_decayed_weights(0.01),
                                              optax.sgd(0.05, momentum=0.9, nesterov=True)),
    "sgd_decoupled_decay": optax.chain(optax.trace(0.9), optax.add_decayed_weights(0.01),
                                       optax.scale(-0.05)),
    "adam": optax.adam(0.01, b1=0.9, b2=0.999, eps=1e-8),
    "adam_l2": optax.chain(optax.add_decayed_weights(0.01), optax.adam(0.01, 0.9, 0.999, 1e-8)),
    # adamw_optimizer with a warmup schedule; "b" has weight_decay_scale 0 via a path regex,
    # "w" scale 0.5 via its ParameterSpec.
    "adamw_per_param_decay": optax.chain(
        optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
        add_decayed_weights_scaled(0.1, {"w": 0.5, "b": 0.0}),
        optax.scale_by_learning_rate(linear_schedule_with_warmup(0.02, 50, 10))),
    # Fuji's learner: clip_by_global_norm(1) then adamw_decoupled with a cosine update schedule.
    "fuji_adamw_decoupled": optax.chain(
        axlearn_clip_by_global_norm(1.0),
        adamw_decoupled(0.01, 0.9, 0.95, 1e-8, 0.1, cosine_with_linear_warmup(1.0, 50, 5, 0.1))),
    "adamw_decoupled_bf16_mu": adamw_decoupled(0.01, 0.9, 0.95, 1e-8, 0.1,
                                               cosine_with_linear_warmup(1.0, 50, 5, 0.1),
                                               mu_dtype=jnp.bfloat16),
    "lion": optax.lion(0.01, b1=0.9, b2=0.99, weight_decay=0.1),
    "adafactor": optax.adafactor(0.05, min_dim_size_to_factor=2, decay_rate=0.8,
                                 multiply_by_parameter_scale=True, clipping_threshold=1.0),
    "adafactor_momentum_decay": optax.adafactor(0.05, min_dim_size_to_factor=2, decay_rate=0.8,
                                                multiply_by_parameter_scale=False,
                                                clipping_threshold=1.0, momentum=0.9,
                                                weight_decay_rate=0.01),
    "adafactor_unfactored": optax.adafactor(0.05, min_dim_size_to_factor=2, factored=False,
                                            multiply_by_parameter_scale=False,
                                            clipping_threshold=None),
}


def run(opt):
    params = {"w": jnp.asarray(W0), "b": jnp.asarray(B0)}
    state = opt.init(params)
    grad_fn = jax.jit(jax.grad(loss_fn))
    traj = {"w": [], "b": []}
    for _ in range(STEPS):
        grads = grad_fn(params)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for k in traj:
            traj[k].append(np.asarray(params[k], np.float32).reshape(-1).tolist())
    return traj


def main():
    out = {
        "problem": {"w0": W0.reshape(-1).tolist(), "b0": B0.tolist(), "aw": AW.reshape(-1).tolist(),
                    "ab": AB.tolist(), "cw": CW.reshape(-1).tolist(), "cb": CB.tolist()},
        "cases": {name: run(opt) for name, opt in CASES.items()},
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "optim_vectors.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", path)


if __name__ == "__main__":
    main()
