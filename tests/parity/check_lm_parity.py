"""Live PyTorch parity, Python half (run with Debian's /usr/bin/python3 and python3-torch).

Reads every <case>.safetensors that tests/parity/lm_parity_dump wrote into a directory, rebuilds
the causal LM in plain PyTorch from the config JSON in the file's metadata (refusing any setting
it does not implement), loads our parameters, and recomputes logits, loss and every parameter's
gradient in float64 and in float32. Each of ours must be within --tol relative error of both,
where the relative error of a tensor is max|ours - ref| / max(max|ref|, tiny). Prints the largest
error per case and quantity; exits 1 on any failure.

Usage: check_lm_parity.py <dir> [--tol 1e-5]
"""
import argparse
import glob
import json
import math
import os
import struct
import sys

import torch

TINY = 1e-30
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8,
          "BOOL": torch.bool}


class Unsupported(Exception):
    """A config setting this reference model does not implement."""


# ---- safetensors, by hand (the safetensors package is not a Debian dependency) ----

def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: truncated")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: header length {n} beyond the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        shape = info["shape"]
        if end > len(data) or begin > end:
            raise ValueError(f"{path}: tensor {name} offsets [{begin}, {end}] out of range")
        if begin == end:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(shape)
        tensors[name] = t
    return metadata, tensors


# ---- the model, from our config JSON ----

def expect(cfg, key, allowed, where):
    value = cfg.get(key)
    if value not in allowed:
        raise Unsupported(f"{where}.{key} = {value!r} (supported: {allowed})")


def expect_klass(cfg, klasses, where):
    if cfg is None or cfg.get("klass", cfg.get("fn")) not in klasses:
        got = None if cfg is None else cfg.get("klass", cfg.get("fn"))
        raise Unsupported(f"{where}: {got} (supported: {klasses})")
    return cfg.get("klass", cfg.get("fn"))


def check_common(cfg, where):
    """Settings every layer must leave at their defaults: f32 params, no dropout."""
    expect(cfg, "dtype", [None, "float32"], where)
    for key in ("dropout", "output_dropout"):
        if key in cfg and cfg[key] is not None:
            expect(cfg[key], "rate", [None, 0.0], f"{where}.{key}")
    if "stochastic_depth" in cfg and cfg["stochastic_depth"] is not None:
        expect(cfg["stochastic_depth"], "rate", [None, 0.0], f"{where}.stochastic_depth")


class Params:
    """Our parameters (converted to `dtype`, requiring grad), tracking which were used."""

    def __init__(self, flat, dtype):
        self.leaves = {k: v.to(dtype).requires_grad_(True) for k, v in flat.items()}
        self.used = set()

    def get(self, name, shape=None):
        if name not in self.leaves:
            raise KeyError(f"missing parameter {name}")
        self.used.add(name)
        t = self.leaves[name]
        if shape is not None and list(t.shape) != list(shape):
            raise ValueError(f"parameter {name}: shape {list(t.shape)}, expected {list(shape)}")
        return t


def rms_norm(x, cfg, scale, where):
    expect_klass(cfg, ["axlearn.common.layers.RMSNorm"], where)
    expect(cfg, "forward_dtype", [None], where)
    check_common(cfg, where)
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + cfg["eps"]) * scale


def rope_tables(t, h, theta, dtype):
    inv = 1.0 / (theta ** (torch.arange(0, h, 2, dtype=dtype) / h))
    f = torch.arange(t, dtype=dtype)[:, None] * inv  # (T, H/2)
    emb = torch.cat([f, f], -1)[None, :, None, :]  # (1, T, 1, H)
    return emb.sin(), emb.cos()


def rotate(x, sin, cos):
    h = x.shape[-1]
    x1, x2 = x[..., : h // 2], x[..., h // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def mask_of(acfg, b, t, segment_ids, where):
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    m = torch.ones(t, t, dtype=torch.bool)
    if acfg.get("causal"):
        m &= j <= i
    mask = acfg.get("mask")
    if mask is not None:
        fn = expect_klass(mask, ["axlearn.common.attention_bias.causal_mask",
                                 "axlearn.common.attention_bias.sliding_window_causal_mask"],
                          where + ".mask")
        m &= j <= i
        if fn.endswith("sliding_window_causal_mask"):
            m &= (i - j) <= mask["sliding_window_size"]
    m = m[None].expand(b, t, t)
    return m & (segment_ids[:, :, None] == segment_ids[:, None, :])


def qkv_projection(cfg, x, P, pre, n, h, dtype, where):
    """x (B, T, D) -> q (B, T, N, H), k, v (B, T, K, H), rotated when RoFormerQKVLinear."""
    d = x.shape[-1]
    klass = expect_klass(cfg, ["axlearn.common.attention.RoFormerQKVLinear",
                               "axlearn.common.attention.QKVLinear",
                               "axlearn.common.attention.GroupedQKVLinear",
                               "axlearn.common.attention.FusedQKVLinear",
                               "axlearn.common.attention.FusedGroupedQKVLinear"], where)
    check_common(cfg, where)
    if klass.endswith("RoFormerQKVLinear"):
        expect(cfg, "rotary_value", [False], where)
        rope = cfg["rope_pos_emb_layer"]
        expect_klass(rope, ["axlearn.common.attention.RoFormerSinusoidalPositionalEmbedding"],
                     where + ".rope_pos_emb_layer")
        q, k, v = qkv_projection(cfg["input_linear"], x, P, pre + "input_linear/", n, h, dtype,
                                 where + ".input_linear")
        sin, cos = rope_tables(x.shape[1], h, rope["theta"], dtype)
        return rotate(q, sin, cos), rotate(k, sin, cos), v
    expect_klass(cfg["layer"], ["axlearn.common.attention.MultiheadInputLinear"], where + ".layer")
    expect(cfg["layer"], "bias", [False], where + ".layer")
    kv = cfg.get("num_kv_heads", n)
    if klass.endswith("FusedGroupedQKVLinear"):
        w = P.get(pre + "qkv_proj/weight", [d, n + 2 * kv, h])
        wq, wk, wv = w[:, :n], w[:, n:n + kv], w[:, n + kv:]
    elif klass.endswith("FusedQKVLinear"):
        w = P.get(pre + "qkv_proj/weight", [3, d, n, h])
        wq, wk, wv = w[0], w[1], w[2]
    else:
        wq = P.get(pre + "q_proj/weight", [d, n, h])
        wk = P.get(pre + "k_proj/weight", [d, kv, h])
        wv = P.get(pre + "v_proj/weight", [d, kv, h])
    proj = lambda w: torch.einsum("btd,dnh->btnh", x, w)  # noqa: E731
    return proj(wq), proj(wk), proj(wv)


def attention(cfg, x, P, pre, segment_ids, dtype, where):
    expect_klass(cfg, ["axlearn.common.attention.GroupedQueryAttention",
                       "axlearn.common.attention.MultiheadAttention"], where)
    check_common(cfg, where)
    expect(cfg, "atten_logit_cap", [None], where)
    expect(cfg, "output_dim", [None], where)
    expect(cfg["query_scale"], "scale_factor", [None], where + ".query_scale")
    expect(cfg["key_scale"], "scale_factor", [None], where + ".key_scale")
    expect(cfg["output_linear"], "bias", [False], where + ".output_linear")
    b, t, d = x.shape
    n = cfg["num_heads"]
    h = cfg["per_head_dim"] or d // n
    q, k, v = qkv_projection(cfg["input_linear"], x, P, pre + "input_linear/", n, h, dtype,
                             where + ".input_linear")
    rep = n // k.shape[2]
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    logits = torch.einsum("btnh,bsnh->bnts", q * h ** -0.5, k)
    mask = mask_of(cfg, b, t, segment_ids, where)
    logits = logits.masked_fill(~mask[:, None], torch.finfo(dtype).min)
    probs = torch.softmax(logits, -1)
    ctx = torch.einsum("bnts,bsnh->btnh", probs, v)
    return torch.einsum("btnh,dnh->btd", ctx, P.get(pre + "output_linear/weight", [d, n, h]))


def hidden_dim(cfg, d, where):
    hd = cfg["hidden_dim"]
    if isinstance(hd, int):
        return hd
    expect_klass(hd, ["axlearn.experiments.text.gpt.common.scale_fn"], where + ".hidden_dim")
    m = hd["round_up_to_multiples_of"]
    return int(math.ceil(d * hd["scale"] / m) * m)


ACTIVATIONS = {"nn.silu": torch.nn.functional.silu, "linear": lambda a: a,
               "nn.gelu": lambda a: torch.nn.functional.gelu(a, approximate="tanh"),
               "exact_gelu": torch.nn.functional.gelu}


def feed_forward(cfg, x, P, pre, dtype, where):
    expect_klass(cfg, ["axlearn.common.attention.TransformerFeedForwardLayer"], where)
    check_common(cfg, where)
    expect(cfg, "structure", ["prenorm"], where)
    expect(cfg, "residual_weight", [1.0], where)
    expect(cfg, "postnorm", [None], where)
    for lin in ("linear1", "linear2"):
        expect(cfg[lin], "bias", [False], f"{where}.{lin}")
    d = x.shape[-1]
    f = hidden_dim(cfg, d, where)
    hn = rms_norm(x, cfg["norm"], P.get(pre + "norm/scale", [d]), where + ".norm")
    acts = cfg["activation"]
    if isinstance(acts, list):
        if len(acts) != 2 or any(a not in ACTIVATIONS for a in acts):
            raise Unsupported(f"{where}.activation = {acts}")
        a0 = ACTIVATIONS[acts[0]](hn @ P.get(pre + "linear1_0/weight", [d, f]))
        a1 = ACTIVATIONS[acts[1]](hn @ P.get(pre + "linear1_1/weight", [d, f]))
        a = a0 * a1
    else:
        if acts not in ACTIVATIONS:
            raise Unsupported(f"{where}.activation = {acts}")
        a = ACTIVATIONS[acts](hn @ P.get(pre + "linear1/weight", [d, f]))
    return x + a @ P.get(pre + "linear2/weight", [f, d])


def transformer_layer(cfg, x, P, pre, segment_ids, dtype, where):
    expect_klass(cfg, ["axlearn.common.attention.TransformerLayer"], where)
    check_common(cfg, where)
    sa = cfg["self_attention"]
    expect_klass(sa, ["axlearn.common.attention.TransformerAttentionLayer"],
                 where + ".self_attention")
    check_common(sa, where + ".self_attention")
    expect(sa, "structure", ["prenorm"], where + ".self_attention")
    d = x.shape[-1]
    hn = rms_norm(x, sa["norm"], P.get(pre + "self_attention/norm/scale", [d]),
                  where + ".self_attention.norm")
    x = x + attention(sa["attention"], hn, P, pre + "self_attention/attention/", segment_ids,
                      dtype, where + ".self_attention.attention")
    return feed_forward(cfg["feed_forward"], x, P, pre + "feed_forward/", dtype,
                        where + ".feed_forward")


class LayerSlice:
    """One layer's view of RepeatedTransformerLayer's stacked parameters."""

    def __init__(self, P, stacked_prefix, index):
        self.P, self.prefix, self.index = P, stacked_prefix, index

    def get(self, name, shape=None):
        t = self.P.get(self.prefix + name)[self.index]
        if shape is not None and list(t.shape) != list(shape):
            raise ValueError(f"parameter {self.prefix + name}[{self.index}]: shape "
                             f"{list(t.shape)}, expected {list(shape)}")
        return t


def lm_loss(cfg, P, inputs, dtype):
    """(logits, loss) of our causal_lm.Model config on `inputs`."""
    expect_klass(cfg, ["axlearn.common.causal_lm.Model"], "model")
    check_common(cfg, "model")
    dec = cfg["decoder"]
    expect_klass(dec, ["axlearn.common.decoder.Decoder"], "model.decoder")
    check_common(dec, "model.decoder")
    expect(dec, "dropout_rate", [0.0], "model.decoder")
    check_common(dec["emb"], "model.decoder.emb")
    d, vocab = dec["dim"], dec["vocab_size"]
    ids = inputs["input_ids"].long()
    segment_ids = inputs.get("input_segment_ids")
    if segment_ids is None:  # padding attends only to padding
        segment_ids = (ids != dec["pad_token_id"]).long()
    emb = P.get("decoder/emb/token_emb/weight", [vocab, d])
    x = emb[ids]
    tr = dec["transformer"]
    klass = expect_klass(tr, ["axlearn.common.attention.RepeatedTransformerLayer",
                              "axlearn.common.attention.StackedTransformerLayer"],
                         "model.decoder.transformer")
    for i in range(tr["num_layers"]):
        if klass.endswith("RepeatedTransformerLayer"):
            lp, pre = LayerSlice(P, "decoder/transformer/repeat/layer/", i), ""
        else:
            lp, pre = P, f"decoder/transformer/layer{i}/"
        x = transformer_layer(tr["layer"], x, lp, pre, segment_ids, dtype,
                              f"model.decoder.transformer.layer[{i}]")
    x = rms_norm(x, dec["output_norm"], P.get("decoder/output_norm/scale", [d]),
                 "model.decoder.output_norm")
    if dec["lm_head"] is None:
        w = emb
    else:
        expect_klass(dec["lm_head"], ["axlearn.common.decoder.LmHead"], "model.decoder.lm_head")
        w = P.get("decoder/lm_head/weight", [vocab, d])
    logits = x @ w.T

    labels = inputs["target_labels"].long()
    live = labels >= 0
    weights = live.to(dtype)
    if "target_weights" in inputs:
        weights = weights * inputs["target_weights"].to(dtype)
    lse = torch.logsumexp(logits, -1)
    picked = logits.gather(-1, torch.where(live, labels, 0)[..., None])[..., 0]
    denom = torch.clamp(weights.sum(), min=1e-9)
    loss = ((lse - picked) * weights).sum() / denom
    if cfg["z_loss_scale"] > 0:
        loss = loss + cfg["z_loss_scale"] * (lse * lse * weights).sum() / denom
    return logits, loss


def reference(cfg, params, inputs, dtype):
    P = Params(params, dtype)
    logits, loss = lm_loss(cfg, P, inputs, dtype)
    unused = set(P.leaves) - P.used
    if unused:
        raise ValueError(f"parameters the reference model does not use: {sorted(unused)}")
    names = sorted(P.leaves)
    grads = torch.autograd.grad(loss, [P.leaves[n] for n in names])
    return {"logits": logits.detach(), "loss": loss.detach(),
            "grads": {n: g for n, g in zip(names, grads)}}


def rel_error(ours, ref):
    if list(ours.shape) != list(ref.shape):
        return math.inf
    ref = ref.double()
    err = (ours.double() - ref).abs().max().item() if ref.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 0.0
    return err / max(scale, TINY)


def check_case(path, tol):
    meta, tensors = read_safetensors(path)
    case = json.loads(meta["case"])
    cfg = json.loads(meta["config"])
    params = {k[len("params/"):]: v for k, v in tensors.items() if k.startswith("params/")}
    grads = {k[len("grads/"):]: v for k, v in tensors.items() if k.startswith("grads/")}
    inputs = {k[len("inputs/"):]: v for k, v in tensors.items() if k.startswith("inputs/")}
    if set(grads) != set(params):
        raise ValueError(f"{path}: grads and params name different trees")
    refs = {dt: reference(cfg, params, inputs, dt) for dt in (torch.float64, torch.float32)}
    rows = []
    ours = {"logits": tensors["outputs/logits"], "loss": tensors["outputs/loss"]}
    for q in ("logits", "loss"):
        rows.append((q, rel_error(ours[q], refs[torch.float64][q]),
                     rel_error(ours[q], refs[torch.float32][q]),
                     rel_error(refs[torch.float32][q], refs[torch.float64][q]), ""))
    worst = max(grads, key=lambda n: rel_error(grads[n], refs[torch.float64]["grads"][n]))
    rows.append(("grads",
                 max(rel_error(grads[n], refs[torch.float64]["grads"][n]) for n in grads),
                 max(rel_error(grads[n], refs[torch.float32]["grads"][n]) for n in grads),
                 max(rel_error(refs[torch.float32]["grads"][n], refs[torch.float64]["grads"][n])
                     for n in grads),
                 f"{len(grads)} tensors, worst {worst}"))
    ok = all(r[1] < tol and r[2] < tol for r in rows)
    return case, rows, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    paths = sorted(glob.glob(os.path.join(args.dir, "*.safetensors")))
    if len(paths) < 6:
        print(f"FAIL: expected at least 6 cases in {args.dir}, found {len(paths)}")
        return 1
    failed = []
    cases = []
    print(f"{'case':40s} {'quantity':8s} {'vs f64':>9s} {'vs f32':>9s} {'f32-f64':>9s}")
    for path in paths:
        name = os.path.basename(path)[: -len(".safetensors")]
        try:
            case, rows, ok = check_case(path, args.tol)
        except (Unsupported, KeyError, ValueError) as e:
            print(f"{name:40s} ERROR: {e}")
            failed.append(name)
            continue
        cases.append(case)
        for i, (q, e64, e32, base, note) in enumerate(rows):
            flag = "" if e64 < args.tol and e32 < args.tol else "  <-- FAIL"
            print(f"{name if i == 0 else '':40s} {q:8s} {e64:9.2e} {e32:9.2e} {base:9.2e}"
                  f"  {note}{flag}")
        if not ok:
            failed.append(name)
    # The cases must span what the test promises.
    need = {"MHA": lambda c: c["num_kv_heads"] == c["num_heads"],
            "GQA": lambda c: c["num_kv_heads"] < c["num_heads"],
            "causal": lambda c: c["window"] is None,
            "sliding window": lambda c: c["window"] is not None,
            "packed segments": lambda c: c["packed"],
            "tied head": lambda c: c["tied"], "untied head": lambda c: not c["tied"]}
    missing = [k for k, pred in need.items() if not any(pred(c) for c in cases)]
    if missing:
        print(f"FAIL: no case covers {', '.join(missing)}")
        return 1
    if failed:
        print(f"FAIL: {len(failed)} of {len(paths)} cases exceed {args.tol:g} relative error: "
              f"{', '.join(failed)}")
        return 1
    print(f"PASS: {len(paths)} cases within {args.tol:g} relative error of PyTorch "
          "(float64 and float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
