"""Parity vectors for axlearn/layers against PyTorch (run with Debian's /usr/bin/python3 and
python3-torch). Every layer is written here in plain torch from the same weights, in float64, and
its outputs and gradients are stored with parameters keyed by our parameter paths. The C++ tests
(tests/layers/parity_test.cc) build the layers, load the weights and compare in f32.

Writes tests/parity/testdata/layers_vectors.json.
"""
import json
import math
import os

import torch

torch.manual_seed(0)
DT = torch.float64


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=DT) * scale).requires_grad_(True)


def enc(t):
    t = t.detach()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


def rms_norm(x, scale, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * scale


def layer_norm(x, scale, bias, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + eps) * scale + bias


def rope(x, pos, theta):
    # x (B, T, N, H); HF rotate_half convention.
    h = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, h, 2, dtype=DT) / h))
    f = pos.to(DT)[..., None] * inv  # (B|1, T, H/2)
    emb = torch.cat([f, f], -1)[:, :, None, :]
    x1, x2 = x[..., : h // 2], x[..., h // 2:]
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


def attention(x, p, n, k, theta, mask, cap=None):
    # x (B, T, D); p: wq (D,N,H), wk/wv (D,K,H), wo (D,N,H); mask bool (B|1, T, T).
    q = torch.einsum("btd,dnh->btnh", x, p["wq"])
    kk = torch.einsum("btd,dnh->btnh", x, p["wk"])
    v = torch.einsum("btd,dnh->btnh", x, p["wv"])
    t = x.shape[1]
    pos = torch.arange(t)[None]
    if theta is not None:
        q, kk = rope(q, pos, theta), rope(kk, pos, theta)
    h = q.shape[-1]
    kk = kk.repeat_interleave(n // k, dim=2)
    v = v.repeat_interleave(n // k, dim=2)
    logits = torch.einsum("btnh,bsnh->bnts", q * h ** -0.5, kk)
    if cap is not None:
        logits = cap * torch.tanh(logits / cap)
    logits = logits.masked_fill(~mask[:, None], -1e300)
    probs = torch.softmax(logits, -1)
    ctx = torch.einsum("bnts,bsnh->btnh", probs, v)
    return torch.einsum("btnh,dnh->btd", ctx, p["wo"])


def make_mask(b, t, causal=True, window=None, segments=None):
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    m = torch.ones(t, t, dtype=torch.bool)
    if causal:
        m &= j <= i
    if window is not None:
        m &= (i - j) <= window
    m = m[None].expand(b, t, t)
    if segments is not None:
        m = m & (segments[:, :, None] == segments[:, None, :])
    return m


def swiglu_ffn(x, p, eps):
    h = rms_norm(x, p["norm"], eps)
    a = torch.nn.functional.silu(h @ p["w10"]) * (h @ p["w11"])
    return x + a @ p["w2"]


def grads_of(out, cot, named):
    loss = (out * cot).sum()
    gs = torch.autograd.grad(loss, [t for _, t in named])
    return {k: enc(g) for (k, _), g in zip(named, gs)}


cases = {}

# ---- basic layers ----
x = rnd(2, 3, 8)
w, b = rnd(8, 5), rnd(5)
out = x @ w + b
cot = torch.randn(out.shape, dtype=DT)
cases["linear"] = {"inputs": {"x": enc(x)}, "params": {"weight": enc(w), "bias": enc(b)},
                   "outputs": {"y": enc(out)}, "cotangent": enc(cot),
                   "grads": grads_of(out, cot, [("weight", w), ("bias", b), ("x", x)])}
s = rnd(8)
out = rms_norm(x, s, 1e-5)
cases["rms_norm"] = {"inputs": {"x": enc(x)}, "params": {"scale": enc(s)},
                     "outputs": {"y": enc(out)}, "cotangent": enc(cot := torch.randn(out.shape, dtype=DT)),
                     "grads": grads_of(out, cot, [("scale", s), ("x", x)])}
lb = rnd(8)
out = layer_norm(x, s, lb, 1e-5)
cases["layer_norm"] = {"inputs": {"x": enc(x)}, "params": {"scale": enc(s), "bias": enc(lb)},
                       "outputs": {"y": enc(out)}, "cotangent": enc(cot := torch.randn(out.shape, dtype=DT)),
                       "grads": grads_of(out, cot, [("scale", s), ("bias", lb), ("x", x)])}
emb = rnd(11, 4)
ids = torch.tensor([[1, 5, 10], [0, 5, 3]])
out = emb[ids]
cases["embedding"] = {"inputs": {"ids": enc(ids.to(DT))}, "params": {"weight": enc(emb)},
                      "outputs": {"y": enc(out)}, "cotangent": enc(cot := torch.randn(out.shape, dtype=DT)),
                      "grads": grads_of(out, cot, [("weight", emb)])}

# ---- feed-forward: SwiGLU prenorm with RMSNorm ----
D, F = 8, 12
p = {"norm": rnd(8), "w10": rnd(D, F, scale=0.3), "w11": rnd(D, F, scale=0.3), "w2": rnd(F, D, scale=0.3)}
out = swiglu_ffn(x, p, 1e-5)
cot = torch.randn(out.shape, dtype=DT)
names = {"norm": "norm/scale", "w10": "linear1_0/weight", "w11": "linear1_1/weight", "w2": "linear2/weight"}
cases["ffn_swiglu"] = {"inputs": {"x": enc(x)}, "params": {names[k]: enc(v) for k, v in p.items()},
                       "outputs": {"y": enc(out)}, "cotangent": enc(cot),
                       "grads": grads_of(out, cot, [(names[k], v) for k, v in p.items()] + [("x", x)])}
# gelu (exact) postnorm with LayerNorm and biases.
p = {"w1": rnd(D, F, scale=0.3), "b1": rnd(F), "w2": rnd(F, D, scale=0.3), "b2": rnd(D), "s": rnd(D), "lb": rnd(D)}
out = layer_norm(x + torch.nn.functional.gelu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"], p["s"], p["lb"], 1e-6)
cot = torch.randn(out.shape, dtype=DT)
names = {"w1": "linear1/weight", "b1": "linear1/bias", "w2": "linear2/weight", "b2": "linear2/bias",
         "s": "norm/scale", "lb": "norm/bias"}
cases["ffn_gelu_postnorm"] = {"inputs": {"x": enc(x)}, "params": {names[k]: enc(v) for k, v in p.items()},
                              "outputs": {"y": enc(out)}, "cotangent": enc(cot),
                              "grads": grads_of(out, cot, [(names[k], v) for k, v in p.items()] + [("x", x)])}

# ---- attention ----
B, T, N, H = 2, 7, 4, 4


def attn_case(k, theta, mask, cap=None, layout="grouped"):
    xa = rnd(B, T, D)
    p = {"wq": rnd(D, N, H, scale=0.4), "wk": rnd(D, k, H, scale=0.4), "wv": rnd(D, k, H, scale=0.4),
         "wo": rnd(D, N, H, scale=0.4)}
    out = attention(xa, p, N, k, theta, mask, cap)
    cot = torch.randn(out.shape, dtype=DT)
    gs = torch.autograd.grad((out * cot).sum(), [p["wq"], p["wk"], p["wv"], p["wo"], xa])
    pre = "input_linear/input_linear/" if theta is not None else "input_linear/"
    params, grads = {}, {}
    if layout == "fused_grouped":
        params[pre + "qkv_proj/weight"] = enc(torch.cat([p["wq"], p["wk"], p["wv"]], 1))
        grads[pre + "qkv_proj/weight"] = enc(torch.cat(gs[:3], 1))
    elif layout == "fused":
        params[pre + "qkv_proj/weight"] = enc(torch.stack([p["wq"], p["wk"], p["wv"]], 0))
        grads[pre + "qkv_proj/weight"] = enc(torch.stack(gs[:3], 0))
    else:
        for i, nm in enumerate(["q_proj", "k_proj", "v_proj"]):
            params[pre + nm + "/weight"] = enc(p["w" + "qkv"[i]])
            grads[pre + nm + "/weight"] = enc(gs[i])
    params["output_linear/weight"] = enc(p["wo"])
    grads["output_linear/weight"] = enc(gs[3])
    grads["x"] = enc(gs[4])
    return {"inputs": {"x": enc(xa)}, "params": params, "outputs": {"y": enc(out)},
            "cotangent": enc(cot), "grads": grads}


seg = torch.tensor([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 3, 3]])
cases["mha_causal"] = attn_case(N, None, make_mask(B, T))
cases["mha_fused_causal_rope"] = attn_case(N, 10000.0, make_mask(B, T), layout="fused")
cases["gqa_rope_causal"] = attn_case(2, 10000.0, make_mask(B, T))
cases["gqa_fused_rope_sliding_window"] = attn_case(2, 500000.0, make_mask(B, T, window=2),
                                                   layout="fused_grouped")
c = attn_case(1, 10000.0, make_mask(B, T, segments=seg))
c["inputs"]["segment_ids"] = enc(seg.to(DT))
cases["mqa_rope_segments"] = c
cases["mha_logit_cap_noncausal"] = attn_case(N, None, make_mask(B, T, causal=False), cap=2.0)

# ---- decoder LM: LLaMA-style (RMSNorm, RoPE, GQA, SwiGLU, no biases) ----
V, L, K = 13, 2, 2


def lm_case(tied, k, window=None, segments=None, repeated=False):
    ids = torch.randint(1, V, (B, T))
    labels = torch.randint(1, V, (B, T))
    labels[0, -1] = -1
    weights = torch.rand(B, T, dtype=DT)
    P = {"emb": rnd(V, D, scale=0.5), "onorm": rnd(D)}
    if not tied:
        P["head"] = rnd(V, D, scale=0.5)
    layers = []
    for _ in range(L):
        layers.append({"anorm": rnd(D), "wq": rnd(D, N, H, scale=0.4), "wk": rnd(D, k, H, scale=0.4),
                       "wv": rnd(D, k, H, scale=0.4), "wo": rnd(D, N, H, scale=0.4), "fnorm": rnd(D),
                       "w10": rnd(D, F, scale=0.3), "w11": rnd(D, F, scale=0.3), "w2": rnd(F, D, scale=0.3)})
    mask = make_mask(B, T, window=window, segments=segments)
    h = P["emb"][ids]
    for lp in layers:
        h = h + attention(rms_norm(h, lp["anorm"], 1e-5), lp, N, k, 10000.0, mask)
        h = swiglu_ffn(h, {"norm": lp["fnorm"], "w10": lp["w10"], "w11": lp["w11"], "w2": lp["w2"]}, 1e-5)
    h = rms_norm(h, P["onorm"], 1e-5)
    logits = h @ (P["emb"] if tied else P["head"]).T
    live = labels >= 0
    wts = weights * live
    logp = torch.log_softmax(logits, -1)
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    loss = (nll * wts).sum() / wts.sum()
    leaves = {"decoder/emb/token_emb/weight": P["emb"], "decoder/output_norm/scale": P["onorm"]}
    if not tied:
        leaves["decoder/lm_head/weight"] = P["head"]
    names = {"anorm": "self_attention/norm/scale",
             "wq": "self_attention/attention/input_linear/input_linear/q_proj/weight",
             "wk": "self_attention/attention/input_linear/input_linear/k_proj/weight",
             "wv": "self_attention/attention/input_linear/input_linear/v_proj/weight",
             "wo": "self_attention/attention/output_linear/weight", "fnorm": "feed_forward/norm/scale",
             "w10": "feed_forward/linear1_0/weight", "w11": "feed_forward/linear1_1/weight",
             "w2": "feed_forward/linear2/weight"}
    flat = list(leaves.items())
    for i, lp in enumerate(layers):
        for key, nm in names.items():
            flat.append((f"decoder/transformer/layer{i}/{nm}", lp[key]))
    gs = torch.autograd.grad(loss, [t for _, t in flat])
    params = {n: t for n, t in flat}
    grads = {n: g for (n, _), g in zip(flat, gs)}
    if repeated:  # one stacked set of weights under repeat/layer
        def restack(d):
            out = {n: v for n, v in d.items() if "/transformer/" not in n}
            for nm in names.values():
                out["decoder/transformer/repeat/layer/" + nm] = torch.stack(
                    [d[f"decoder/transformer/layer{i}/{nm}"] for i in range(L)], 0)
            return out
        params, grads = restack(params), restack(grads)
    case = {"inputs": {"input_ids": enc(ids.to(DT)), "target_labels": enc(labels.to(DT)),
                       "target_weights": enc(weights)},
            "params": {n: enc(t) for n, t in params.items()},
            "outputs": {"logits": enc(logits), "loss": enc(loss.reshape(1))},
            "grads": {n: enc(g) for n, g in grads.items()}}
    if segments is not None:
        case["inputs"]["input_segment_ids"] = enc(segments.to(DT))
    return case


cases["lm_mha_causal_untied"] = lm_case(False, N)
cases["lm_gqa_causal_tied"] = lm_case(True, K)
cases["lm_gqa_sliding_window_untied"] = lm_case(False, K, window=3)
cases["lm_gqa_packed_segments_tied_repeated"] = lm_case(True, K, segments=seg, repeated=True)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "layers_vectors.json")
with open(path, "w") as f:
    json.dump({"cases": cases}, f)
print("wrote", path, len(cases), "cases")
