"""Hugging Face export parity, Python half (Debian's /usr/bin/python3 with python3-torch).

tests/parity/hf_export_dump writes, per case, <dir>/<case>/hf/ (an exported Hugging Face LLaMA
directory: config.json and model.safetensors or shards + model.safetensors.index.json) and
<dir>/<case>/ours.safetensors (input_ids and our logits). This script knows nothing of our
parameter layout: it reads only the Hugging Face files, builds LlamaForCausalLM's forward pass
in plain torch from config.json with HF's semantics (RMSNorm, rotate_half RoPE with rope_theta,
GQA by repeat_interleave of key/value heads, SwiGLU MLP, causal attention, tied or separate
lm_head) in float64 and float32, and compares the logits. The relative error of a tensor is
max|ours - ref| / max|ref|. Exits 1 on any failure or on a config.json field it does not
implement.

Usage: check_hf_export.py <dir> [--tol 1e-5]
"""
import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_lm_parity import read_safetensors  # noqa: E402  (the hand-written reader)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Unsupported(Exception):
    """A config.json setting this reference does not implement."""


def load_config(hf_dir):
    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "llama" or "LlamaForCausalLM" not in cfg.get("architectures", []):
        raise Unsupported(f"not a LlamaForCausalLM config: {cfg.get('architectures')}")
    for key, allowed in (("hidden_act", ["silu"]), ("attention_bias", [False]),
                         ("mlp_bias", [False]), ("rope_scaling", [None]),
                         ("pretraining_tp", [1])):
        if cfg.get(key, allowed[0]) not in allowed:
            raise Unsupported(f"config.json {key} = {cfg[key]!r} (supported: {allowed})")
    return cfg


def load_weights(hf_dir, cfg):
    """HF tensors by name, from model.safetensors or the index's shards (checked)."""
    index_path = os.path.join(hf_dir, "model.safetensors.index.json")
    single = os.path.join(hf_dir, "model.safetensors")
    if os.path.exists(index_path):
        assert not os.path.exists(single), "both model.safetensors and an index"
        with open(index_path) as f:
            index = json.load(f)
        weights, total = {}, 0
        for shard in sorted(set(index["weight_map"].values())):
            meta, tensors = read_safetensors(os.path.join(hf_dir, shard))
            assert meta.get("format") == "pt", f"{shard}: metadata {meta}"
            for name, t in tensors.items():
                assert index["weight_map"].get(name) == shard, f"{name} not mapped to {shard}"
                weights[name] = t
                total += t.numel() * t.element_size()
        assert set(weights) == set(index["weight_map"]), "weight_map names missing tensors"
        assert index["metadata"]["total_size"] == total, "total_size is not the tensor bytes"
    else:
        meta, weights = read_safetensors(single)
        assert meta.get("format") == "pt", f"model.safetensors: metadata {meta}"
    want = TORCH_DTYPES[cfg["torch_dtype"]]
    for name, t in weights.items():
        assert t.dtype == want, f"{name}: {t.dtype}, config.json says {cfg['torch_dtype']}"
    return weights


def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def llama_logits(cfg, W, input_ids, dtype):
    """LlamaForCausalLM.forward(input_ids).logits, position_ids 0..T-1, no padding."""
    w = {k: v.to(dtype) for k, v in W.items()}
    d, n, k = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    h = cfg.get("head_dim") or d // n
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    b, t = input_ids.shape
    inv_freq = 1.0 / (theta ** (torch.arange(0, h, 2, dtype=dtype) / h))
    freqs = torch.arange(t, dtype=dtype)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]  # (1, 1, T, H)
    causal = torch.ones(t, t, dtype=torch.bool).tril()

    x = w["model.embed_tokens.weight"][input_ids]  # (B, T, d)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        y = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (y @ w[p + "self_attn.q_proj.weight"].T).view(b, t, n, h).transpose(1, 2)
        kk = (y @ w[p + "self_attn.k_proj.weight"].T).view(b, t, k, h).transpose(1, 2)
        v = (y @ w[p + "self_attn.v_proj.weight"].T).view(b, t, k, h).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        kk = kk * cos + rotate_half(kk) * sin
        kk = kk.repeat_interleave(n // k, dim=1)  # HF's repeat_kv
        v = v.repeat_interleave(n // k, dim=1)
        scores = (q @ kk.transpose(-1, -2)) / math.sqrt(h)
        scores = scores.masked_fill(~causal, float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, n * h)
        x = x + out @ w[p + "self_attn.o_proj.weight"].T
        y = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = torch.nn.functional.silu(y @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (y @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def rel_error(ours, ref):
    ref = ref.double()
    return (ours.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args()
    cases = sorted(c for c in os.listdir(args.dir) if os.path.isdir(os.path.join(args.dir, c)))
    if not cases:
        print(f"FAIL: no cases under {args.dir}")
        return 1
    failed, seen = [], set()
    print(f"{'case':28s} {'layout':10s} {'tied':5s} {'rel err f64':>11s} {'rel err f32':>11s}")
    for case in cases:
        hf_dir = os.path.join(args.dir, case, "hf")
        try:
            cfg = load_config(hf_dir)
            weights = load_weights(hf_dir, cfg)
        except (Unsupported, AssertionError, KeyError) as e:
            print(f"{case:28s} FAIL: {e}")
            failed.append(case)
            continue
        _, ours = read_safetensors(os.path.join(args.dir, case, "ours.safetensors"))
        ids = ours["input_ids"].long()
        errs = [rel_error(ours["logits"], llama_logits(cfg, weights, ids, dt))
                for dt in (torch.float64, torch.float32)]
        sharded = os.path.exists(os.path.join(hf_dir, "model.safetensors.index.json"))
        tied = bool(cfg.get("tie_word_embeddings"))
        seen.update({"sharded" if sharded else "single", "tied" if tied else "untied",
                     "gqa" if cfg["num_key_value_heads"] < cfg["num_attention_heads"] else "mha"})
        ok = all(e < args.tol for e in errs)
        print(f"{case:28s} {'sharded' if sharded else 'single':10s} {str(tied):5s} "
              f"{errs[0]:11.2e} {errs[1]:11.2e}{'' if ok else '  <-- FAIL'}")
        if not ok:
            failed.append(case)
    missing = {"sharded", "single", "tied", "untied", "gqa"} - seen
    if missing:
        print(f"FAIL: no case covers {', '.join(sorted(missing))}")
        return 1
    if failed:
        print(f"FAIL: {', '.join(failed)} beyond {args.tol:g} relative error (or malformed)")
        return 1
    print(f"PASS: {len(cases)} Hugging Face exports give our logits within {args.tol:g} "
          "relative error in PyTorch (float64 and float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
