// CPU kernels of the fused attention (core/attention.h), flash-attention style. Work is split
// over (batch, head, block of queries) on the OpenMP threads; each task walks the visible key
// blocks once, copying a block of k and v (converted to the compute type) into scratch, and keeps
// only a running max, sum and output per query row (the online softmax). Nothing larger than a
// block lives in scratch. The backward recomputes the probabilities block by block from the row
// log-sum-exps, which it recomputes first (a (B, N, T) scratch); dq is summed per query block and
// dk, dv per key block, each by one task, so results do not depend on the thread count.
#include "axlearn/core/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/backends/cpu/math.h"

namespace axlearn {

namespace {

constexpr int64_t kBlockQ = 32;
constexpr int64_t kBlockK = 64;

template <typename C>
C exp_c(C x) {
  if constexpr (std::is_same_v<C, float>) {
    return cpu::exp_impl(x);
  } else {
    return std::exp(x);
  }
}

template <typename C>
C dot(const C* a, const C* b, int64_t h) {
  C s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < h; ++i) s += a[i] * b[i];
  return s;
}

// y += a * x over h elements.
template <typename C>
void axpy(C a, const C* x, C* y, int64_t h) {
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) y[i] += a * x[i];
}

// Everything a task needs to know about one call, with inputs made dense.
template <typename C>
struct Problem {
  AttentionAttrs a;
  int64_t b, t, n, h, s, k, g;
  Array q, kk, v;
  std::vector<int64_t> q_seg, kv_seg;  // (B, T), (B, S) or empty
  std::vector<uint8_t> kv_keep;        // (B, S) or empty

  Problem(const AttentionAttrs& attrs, const std::vector<Array>& in) : a(attrs) {
    q = contiguous(in[0]);
    kk = contiguous(in[1]);
    v = contiguous(in[2]);
    b = q.shape[0], t = q.shape[1], n = q.shape[2], h = q.shape[3];
    s = kk.shape[1], k = kk.shape[2], g = n / k;
    size_t at = 3;
    if (a.has_segments) {
      q_seg.resize(size_t(b * t));
      kv_seg.resize(size_t(b * s));
      if (b * t > 0) cpu::load_chunk<int64_t>(in[at], 0, b * t, q_seg.data());
      if (b * s > 0) cpu::load_chunk<int64_t>(in[at + 1], 0, b * s, kv_seg.data());
      at += 2;
    }
    if (a.has_mask) {
      std::vector<int64_t> m(size_t(b * s));
      if (b * s > 0) cpu::load_chunk<int64_t>(in[at], 0, b * s, m.data());
      kv_keep.resize(m.size());
      for (size_t i = 0; i < m.size(); ++i) kv_keep[i] = m[i] != 0;
    }
  }

  // Rows [r0, r0 + rows) of head `head` of batch `bi` of x (B, L, heads, H) into dst (rows, H).
  void load(const Array& x, int64_t bi, int64_t r0, int64_t rows, int64_t head, C* dst) const {
    const int64_t len = x.shape[1], heads = x.shape[2];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t start = ((bi * len + r0 + r) * heads + head) * h;
      if (x.dtype == dtype_of<C>()) {
        std::memcpy(dst + r * h, x.data<C>() + start, size_t(h) * sizeof(C));
      } else {
        cpu::load_chunk<C>(x, start, h, dst + r * h);
      }
    }
  }

  // As load, transposed into dst (H, kBlockK): the layout whose inner loop runs over keys.
  void load_t(const Array& x, int64_t bi, int64_t r0, int64_t rows, int64_t head, C* row_buf,
              C* dst) const {
    load(x, bi, r0, rows, head, row_buf);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t e = 0; e < h; ++e) dst[e * kBlockK + r] = row_buf[r * h + e];
  }

  // Logits of query row ti (qi) against keys [s0, s0 + nk) held transposed in kt: z[j], -inf
  // where hidden, and th[j] = tanh(z / cap) for the cap's derivative.
  void block_logits(int64_t bi, int64_t ti, int64_t s0, int64_t nk, const C* qi, const C* kt, C* z,
                    C* th) const {
    row_dots(qi, kt, nk, z);
    const C sc = C(a.scale), cap = C(a.cap);
    for (int64_t j = 0; j < nk; ++j) {
      C v = z[j] * sc;
      if (a.cap > 0) {
        th[j] = std::tanh(v / cap);
        v = cap * th[j];
      }
      z[j] = visible(bi, ti, s0 + j) ? v : -std::numeric_limits<C>::infinity();
    }
  }

  // z[j] = x . column j of the transposed block yt (H, kBlockK), vectorised over j.
  void row_dots(const C* x, const C* yt, int64_t nk, C* z) const {
    for (int64_t j = 0; j < nk; ++j) z[j] = 0;
    for (int64_t e = 0; e < h; ++e) {
      const C xe = x[e];
      const C* yr = yt + e * kBlockK;
#pragma omp simd
      for (int64_t j = 0; j < nk; ++j) z[j] += xe * yr[j];
    }
  }

  // Keys [lo, hi) that query ti may see, before the per-key segment and padding tests.
  int64_t key_lo(int64_t ti) const {
    return a.window >= 0 ? std::max<int64_t>(0, ti - a.window) : 0;
  }
  int64_t key_hi(int64_t ti) const { return a.causal ? std::min(s, ti + 1) : s; }
  bool visible(int64_t bi, int64_t ti, int64_t si) const {
    if (si < key_lo(ti) || si >= key_hi(ti)) return false;
    if (!q_seg.empty() && q_seg[size_t(bi * t + ti)] != kv_seg[size_t(bi * s + si)]) return false;
    return kv_keep.empty() || kv_keep[size_t(bi * s + si)];
  }
};

// Visits the key blocks that some query of [t0, t1) may see: fn(s0, s1).
template <typename C, typename Fn>
void for_key_blocks(const Problem<C>& p, int64_t t0, int64_t t1, Fn&& fn) {
  const int64_t lo = p.key_lo(t0), hi = p.key_hi(t1 - 1);
  for (int64_t s0 = lo; s0 < hi; s0 += kBlockK) fn(s0, std::min(hi, s0 + kBlockK));
}

// Per-task scratch, all of block size.
template <typename C>
struct Scratch {
  std::vector<C> qb, ob, db, acc, kb, vb, kt, vt, tmp, z, th, dp, m, l;
  Scratch(int64_t h)
      : qb(size_t(kBlockQ * h)),
        ob(qb.size()),
        db(qb.size()),
        acc(qb.size()),
        kb(size_t(kBlockK * h)),
        vb(kb.size()),
        kt(kb.size()),
        vt(kb.size()),
        tmp(kb.size()),
        z(kBlockK),
        th(kBlockK),
        dp(kBlockK),
        m(kBlockQ),
        l(kBlockQ) {}
};

// Row log-sum-exps of queries [t0, t1) of head ni (in w.qb) against all their visible keys (+inf
// for rows with none, so that exp(logit - lse) is 0 there).
template <typename C>
void row_lse(const Problem<C>& p, int64_t bi, int64_t ni, int64_t t0, int64_t t1, Scratch<C>& w,
             C* lse) {
  const int64_t nq = t1 - t0;
  constexpr C kNegInf = -std::numeric_limits<C>::infinity();
  std::fill(w.m.begin(), w.m.end(), kNegInf);
  std::fill(w.l.begin(), w.l.end(), C(0));
  for_key_blocks(p, t0, t1, [&](int64_t s0, int64_t s1) {
    p.load_t(p.kk, bi, s0, s1 - s0, ni / p.g, w.tmp.data(), w.kt.data());
    for (int64_t i = 0; i < nq; ++i) {
      p.block_logits(bi, t0 + i, s0, s1 - s0, w.qb.data() + i * p.h, w.kt.data(), w.z.data(),
                     w.th.data());
      C bmax = kNegInf;
      for (int64_t j = 0; j < s1 - s0; ++j) bmax = std::max(bmax, w.z[size_t(j)]);
      if (bmax == kNegInf) continue;
      const C m_new = std::max(w.m[size_t(i)], bmax);
      C sum = 0;
      for (int64_t j = 0; j < s1 - s0; ++j) {
        if (w.z[size_t(j)] != kNegInf) sum += exp_c<C>(w.z[size_t(j)] - m_new);
      }
      const C corr = w.m[size_t(i)] == kNegInf ? C(0) : exp_c<C>(w.m[size_t(i)] - m_new);
      w.l[size_t(i)] = w.l[size_t(i)] * corr + sum;
      w.m[size_t(i)] = m_new;
    }
  });
  for (int64_t i = 0; i < nq; ++i) {
    lse[i] = w.l[size_t(i)] > 0 ? w.m[size_t(i)] + std::log(w.l[size_t(i)])
                                : std::numeric_limits<C>::infinity();
  }
}

template <typename C>
void forward(const Problem<C>& p, Array& out) {
  const int64_t qblocks = (p.t + kBlockQ - 1) / kBlockQ;
  const int64_t tasks = p.b * p.n * qblocks;
  const bool out_direct = out.dtype == dtype_of<C>();
  constexpr C kNegInf = -std::numeric_limits<C>::infinity();
#pragma omp parallel if (tasks > 1)
  {
    Scratch<C> w(p.h);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t bi = task / (p.n * qblocks), ni = task / qblocks % p.n;
      const int64_t t0 = task % qblocks * kBlockQ, t1 = std::min(p.t, t0 + kBlockQ), nq = t1 - t0;
      p.load(p.q, bi, t0, nq, ni, w.qb.data());
      std::fill(w.acc.begin(), w.acc.end(), C(0));
      std::fill(w.m.begin(), w.m.end(), kNegInf);
      std::fill(w.l.begin(), w.l.end(), C(0));
      for_key_blocks(p, t0, t1, [&](int64_t s0, int64_t s1) {
        p.load_t(p.kk, bi, s0, s1 - s0, ni / p.g, w.tmp.data(), w.kt.data());
        p.load(p.v, bi, s0, s1 - s0, ni / p.g, w.vb.data());
        for (int64_t i = 0; i < nq; ++i) {
          p.block_logits(bi, t0 + i, s0, s1 - s0, w.qb.data() + i * p.h, w.kt.data(), w.z.data(),
                         w.th.data());
          C bmax = kNegInf;
          for (int64_t j = 0; j < s1 - s0; ++j) bmax = std::max(bmax, w.z[size_t(j)]);
          if (bmax == kNegInf) continue;
          const C m_new = std::max(w.m[size_t(i)], bmax);
          const C corr = w.m[size_t(i)] == kNegInf ? C(0) : exp_c<C>(w.m[size_t(i)] - m_new);
          C* ai = w.acc.data() + i * p.h;
          if (corr != C(1)) {
#pragma omp simd
            for (int64_t e = 0; e < p.h; ++e) ai[e] *= corr;
          }
          C sum = 0;
          for (int64_t j = 0; j < s1 - s0; ++j) {
            if (w.z[size_t(j)] == kNegInf) continue;
            const C pj = exp_c<C>(w.z[size_t(j)] - m_new);
            sum += pj;
            axpy(pj, w.vb.data() + j * p.h, ai, p.h);
          }
          w.l[size_t(i)] = w.l[size_t(i)] * corr + sum;
          w.m[size_t(i)] = m_new;
        }
      });
      for (int64_t i = 0; i < nq; ++i) {
        C* ai = w.acc.data() + i * p.h;
        const C inv = w.l[size_t(i)] > 0 ? C(1) / w.l[size_t(i)] : C(0);
        for (int64_t e = 0; e < p.h; ++e) ai[e] *= inv;
        const int64_t start = ((bi * p.t + t0 + i) * p.n + ni) * p.h;
        if (out_direct) {
          std::memcpy(out.data<C>() + start, ai, size_t(p.h) * sizeof(C));
        } else {
          cpu::store_chunk<C>(ai, out.dtype, out.raw(), start, p.h);
        }
      }
    }
  }
}

// Probabilities and scaled dlogits of query row i against a key block, in place of w.z / w.dp:
// prob_j = exp(z_j - lse), ds_j = scale * prob_j * (dp_j - D) [* (1 - tanh^2) under a cap], with
// dp_j = dout_i . v_j and D = dout_i . out_i.
template <typename C>
void block_grads(const Problem<C>& p, Scratch<C>& w, int64_t nk, const C* di, C lse, C d_row) {
  p.row_dots(di, w.vt.data(), nk, w.dp.data());
  const C scale = C(p.a.scale);
  for (int64_t j = 0; j < nk; ++j) {
    const C z = w.z[size_t(j)];
    const C prob = z == -std::numeric_limits<C>::infinity() ? C(0) : exp_c<C>(z - lse);
    C ds = prob * (w.dp[size_t(j)] - d_row);
    if (p.a.cap > 0) ds *= C(1) - w.th[size_t(j)] * w.th[size_t(j)];
    w.z[size_t(j)] = prob;
    w.dp[size_t(j)] = scale * ds;
  }
}

template <typename C>
void backward(const Problem<C>& p, const Array& out_fwd, const Array& dout, Array& grads) {
  const Array o = contiguous(out_fwd), dO = contiguous(dout);
  C* dq = grads.data<C>();
  C* dk = dq + p.q.size();
  C* dv = dk + p.kk.size();
  const int64_t qblocks = (p.t + kBlockQ - 1) / kBlockQ;
  const int64_t kblocks = (p.s + kBlockK - 1) / kBlockK;
  std::vector<C> lse(size_t(p.b * p.n * p.t)), drow(size_t(p.b * p.n * p.t));

  // Phase 1, per query block: row statistics, then dq_i = sum_j ds_ij k_j.
  const int64_t tasks_q = p.b * p.n * qblocks;
#pragma omp parallel if (tasks_q > 1)
  {
    Scratch<C> w(p.h);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks_q; ++task) {
      const int64_t bi = task / (p.n * qblocks), ni = task / qblocks % p.n;
      const int64_t t0 = task % qblocks * kBlockQ, t1 = std::min(p.t, t0 + kBlockQ), nq = t1 - t0;
      const int64_t row0 = (bi * p.n + ni) * p.t + t0;
      p.load(p.q, bi, t0, nq, ni, w.qb.data());
      p.load(o, bi, t0, nq, ni, w.ob.data());
      p.load(dO, bi, t0, nq, ni, w.db.data());
      row_lse(p, bi, ni, t0, t1, w, lse.data() + row0);
      for (int64_t i = 0; i < nq; ++i) {
        drow[size_t(row0 + i)] = dot(w.db.data() + i * p.h, w.ob.data() + i * p.h, p.h);
      }
      std::fill(w.acc.begin(), w.acc.end(), C(0));
      for_key_blocks(p, t0, t1, [&](int64_t s0, int64_t s1) {
        p.load(p.kk, bi, s0, s1 - s0, ni / p.g, w.kb.data());
        p.load_t(p.kk, bi, s0, s1 - s0, ni / p.g, w.tmp.data(), w.kt.data());
        p.load_t(p.v, bi, s0, s1 - s0, ni / p.g, w.tmp.data(), w.vt.data());
        for (int64_t i = 0; i < nq; ++i) {
          p.block_logits(bi, t0 + i, s0, s1 - s0, w.qb.data() + i * p.h, w.kt.data(), w.z.data(),
                         w.th.data());
          block_grads(p, w, s1 - s0, w.db.data() + i * p.h, lse[size_t(row0 + i)],
                      drow[size_t(row0 + i)]);
          for (int64_t j = 0; j < s1 - s0; ++j) {
            if (w.dp[size_t(j)] != C(0)) {
              axpy(w.dp[size_t(j)], w.kb.data() + j * p.h, w.acc.data() + i * p.h, p.h);
            }
          }
        }
      });
      for (int64_t i = 0; i < nq; ++i) {
        std::memcpy(dq + ((bi * p.t + t0 + i) * p.n + ni) * p.h, w.acc.data() + i * p.h,
                    size_t(p.h) * sizeof(C));
      }
    }
  }

  // Phase 2, per key block of one kv head: dv_j = sum_i prob_ij dout_i and dk_j = sum_i ds_ij q_i
  // over the queries of every head in the group.
  const int64_t tasks_k = p.b * p.k * kblocks;
#pragma omp parallel if (tasks_k > 1)
  {
    Scratch<C> w(p.h);
    std::vector<C> dkb(size_t(kBlockK * p.h)), dvb(size_t(kBlockK * p.h));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks_k; ++task) {
      const int64_t bi = task / (p.k * kblocks), ki = task / kblocks % p.k;
      const int64_t s0 = task % kblocks * kBlockK, s1 = std::min(p.s, s0 + kBlockK), nk = s1 - s0;
      p.load_t(p.kk, bi, s0, nk, ki, w.tmp.data(), w.kt.data());
      p.load_t(p.v, bi, s0, nk, ki, w.tmp.data(), w.vt.data());
      std::fill(dkb.begin(), dkb.end(), C(0));
      std::fill(dvb.begin(), dvb.end(), C(0));
      // Queries that may see some key of [s0, s1).
      const int64_t q_lo = p.a.causal ? s0 : 0;
      const int64_t q_hi = p.a.window >= 0 ? std::min(p.t, s1 + p.a.window) : p.t;
      for (int64_t ni = ki * p.g; ni < (ki + 1) * p.g; ++ni) {
        for (int64_t t0 = q_lo; t0 < q_hi; t0 += kBlockQ) {
          const int64_t nq = std::min(q_hi, t0 + kBlockQ) - t0;
          const int64_t row0 = (bi * p.n + ni) * p.t + t0;
          p.load(p.q, bi, t0, nq, ni, w.qb.data());
          p.load(dO, bi, t0, nq, ni, w.db.data());
          for (int64_t i = 0; i < nq; ++i) {
            const C* qi = w.qb.data() + i * p.h;
            const C* di = w.db.data() + i * p.h;
            p.block_logits(bi, t0 + i, s0, nk, qi, w.kt.data(), w.z.data(), w.th.data());
            block_grads(p, w, nk, di, lse[size_t(row0 + i)], drow[size_t(row0 + i)]);
            for (int64_t j = 0; j < nk; ++j) {
              if (w.z[size_t(j)] == C(0)) continue;  // hidden
              axpy(w.z[size_t(j)], di, dvb.data() + j * p.h, p.h);
              axpy(w.dp[size_t(j)], qi, dkb.data() + j * p.h, p.h);
            }
          }
        }
      }
      for (int64_t sj = s0; sj < s1; ++sj) {
        const int64_t at = ((bi * p.s + sj) * p.k + ki) * p.h;
        std::memcpy(dk + at, dkb.data() + (sj - s0) * p.h, size_t(p.h) * sizeof(C));
        std::memcpy(dv + at, dvb.data() + (sj - s0) * p.h, size_t(p.h) * sizeof(C));
      }
    }
  }
}

template <typename Fn>
void dispatch_float(Dtype d, Fn&& fn) {
  if (compute_dtype(d) == float64) {
    fn(double{});
  } else {
    fn(float{});
  }
}

}  // namespace

void Attention::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  dispatch_float(in[0].dtype, [&](auto tag) {
    using C = decltype(tag);
    forward<C>(Problem<C>(attrs_, in), out);
  });
}

void AttentionGrad::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  const size_t n = in.size() - 2;
  dispatch_float(in[0].dtype, [&](auto tag) {
    using C = decltype(tag);
    backward<C>(Problem<C>(attrs_, in), in[n], in[n + 1], out);
  });
}

}  // namespace axlearn
