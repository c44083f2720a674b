"""Shared by the training-step peers: command-line flags, the FLOP count and the JSON line.

The model is the Fuji decoder of `axlearn bench train-step` (see docs/performance.md,
"Training step"); the flags give its dimensions so both peers build the same network.
"""
import argparse
import json
import resource
import statistics


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--label", default="custom", help="Config name echoed in the JSON line")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=704)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rope_theta", type=float, default=1e4)
    p.add_argument("--steps", type=int, default=10, help="Timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="Untimed steps first")
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    return p.parse_args()


def param_shapes(a):
    """Parameter name -> shape, as in the Fuji decoder (fused QKV, two SwiGLU input weights)."""
    dh = a.dim // a.heads
    shapes = {"emb": (a.vocab, a.dim), "lm_head": (a.dim, a.vocab), "final_norm": (a.dim,)}
    for i in range(a.layers):
        shapes.update({
            f"l{i}.attn_norm": (a.dim,),
            f"l{i}.qkv": (a.dim, (a.heads + 2 * a.kv_heads) * dh),
            f"l{i}.o": (a.heads * dh, a.dim),
            f"l{i}.ffn_norm": (a.dim,),
            f"l{i}.w1_0": (a.dim, a.ffn),
            f"l{i}.w1_1": (a.dim, a.ffn),
            f"l{i}.w2": (a.ffn, a.dim),
        })
    return shapes


def flops_per_token(a):
    """Same count as SpmdTrainer::flops_per_token: 6 per matmul weight use plus attention."""
    weight_uses = sum(
        s[0] * s[1] for n, s in param_shapes(a).items() if len(s) == 2 and n != "emb")
    return 3.0 * (2.0 * weight_uses + 4.0 * a.layers * a.seq * a.dim)


def report(framework, a, step_s, first_step_s, loss_first, loss_last, extra=None):
    med = statistics.median(step_s)
    tokens = a.batch * a.seq
    n_params = 0
    for s in param_shapes(a).values():
        size = 1
        for d in s:
            size *= d
        n_params += size
    rec = {
        "framework": framework,
        "config": a.label,
        "dtype": a.dtype,
        "batch": a.batch,
        "seq": a.seq,
        "params": n_params,
        "steps": len(step_s),
        "tokens_per_s": tokens / med,
        "step_ms": med * 1e3,
        "step_ms_min": min(step_s) * 1e3,
        "first_step_ms": first_step_s * 1e3,
        "loss_first": loss_first,
        "loss_last": loss_last,
        "gflops": flops_per_token(a) * tokens / med / 1e9,
        "threads": a.threads,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    rec.update(extra or {})
    print(json.dumps(rec), flush=True)
