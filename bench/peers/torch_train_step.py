#!/usr/bin/python3
"""PyTorch peer of `axlearn bench train-step`: the Fuji decoder trained with AdamW on
synthetic tokens; prints one JSON line (tokens_per_s, median step_ms, peak_rss_mb, ...).

Written for Debian's python3-torch 1.13 (no scaled_dot_product_attention, no torch.compile):
plain eager PyTorch, the way a user of that version writes a LLaMA-style model. bf16 runs under
torch.autocast("cpu", bfloat16) with f32 parameters (as our train_dtype). Run with
LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread so f32 matmuls use OpenBLAS rather
than Debian's default reference BLAS (bench/compare_cpu.sh does this).
"""
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * self.weight).to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    """GQA with a fused QKV projection, rotary embeddings on q and k, causal softmax."""

    def __init__(self, a):
        super().__init__()
        self.h, self.kv, self.dh = a.heads, a.kv_heads, a.dim // a.heads
        self.qkv = nn.Linear(a.dim, (self.h + 2 * self.kv) * self.dh, bias=False)
        self.o = nn.Linear(self.h * self.dh, a.dim, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, self.h + 2 * self.kv, self.dh)
        q, k, v = qkv.split([self.h, self.kv, self.kv], dim=2)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))  # (B, heads, T, dh)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.dh))
        scores = scores.float().masked_fill(mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(v.dtype)
        out = torch.matmul(probs, v)  # (B, H, T, dh)
        return self.o(out.transpose(1, 2).reshape(b, t, self.h * self.dh))


class Layer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.attn_norm = RMSNorm(a.dim)
        self.attn = Attention(a)
        self.ffn_norm = RMSNorm(a.dim)
        self.w1_0 = nn.Linear(a.dim, a.ffn, bias=False)
        self.w1_1 = nn.Linear(a.dim, a.ffn, bias=False)
        self.w2 = nn.Linear(a.ffn, a.dim, bias=False)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1_0(h)) * self.w1_1(h))


class Decoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.emb = nn.Embedding(a.vocab, a.dim)
        self.layers = nn.ModuleList([Layer(a) for _ in range(a.layers)])
        self.norm = RMSNorm(a.dim)
        self.lm_head = nn.Linear(a.dim, a.vocab, bias=False)
        dh = a.dim // a.heads
        inv = 1.0 / (a.rope_theta ** (torch.arange(0, dh, 2).float() / dh))
        freqs = torch.outer(torch.arange(a.seq).float(), inv)
        emb = torch.cat((freqs, freqs), dim=-1)  # (T, dh), HF layout
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.register_buffer(
            "mask", torch.ones(a.seq, a.seq, dtype=torch.bool).triu(1), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:  # fan-in scaled normal, as Fuji's initializer
                fan = p.shape[0] if name.startswith("emb") else p.shape[1]
                nn.init.normal_(p, std=1.0 / math.sqrt(fan))

    def forward(self, ids):
        x = self.emb(ids)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.lm_head(self.norm(x))


def main():
    a = common.parse_args(__doc__.splitlines()[0])
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Decoder(a)
    # foreach=True (the multi-tensor AdamW) is faster than 1.13's per-tensor default on CPU.
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, foreach=True)
    gen = torch.Generator().manual_seed(0)
    params = [p for p in model.parameters()]

    def step(ids, labels):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            logits = model(ids)
            loss = F.cross_entropy(logits.float().view(-1, a.vocab), labels.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    step_s, first_s, loss_first, loss = [], 0.0, 0.0, 0.0
    for i in range(a.warmup + a.steps):
        ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=gen)
        labels = torch.randint(0, a.vocab, (a.batch, a.seq), generator=gen)
        t0 = time.perf_counter()
        loss = step(ids, labels)
        s = time.perf_counter() - t0
        if i == 0:
            first_s, loss_first = s, loss
        if i >= a.warmup:
            step_s.append(s)
    blas = "openblas" if "openblas" in os.environ.get("LD_LIBRARY_PATH", "") else "system"
    common.report("torch", a, step_s, first_s, loss_first, loss,
                  {"version": torch.__version__, "blas": blas})


if __name__ == "__main__":
    main()
