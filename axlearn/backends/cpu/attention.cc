// CPU kernels of the fused attention (core/attention.h), flash-attention style. Blocks of 32
// queries meet blocks of 64 keys; every product inside a block pair (logits q k^T, p v, do v^T,
// p^T do, ds^T q, ds k) is a small register-tiled matrix product read straight from the inputs
// (or from scratch padded to whole vectors), keys (and values, for the backward) are transposed
// once per call, and the exponentials run vectorised over a block's keys. Besides those transposed
// copies, nothing larger than a block lives in scratch.
//
// Forward: one task per (batch, head, query block) keeps a running max, sum and output per row
// (the online softmax). Backward: first, per query block, the row log-sum-exps (recomputed; a
// (B, N, T) scratch) and D = rowsum(dout * out); then one task per (batch, kv head) walks its key
// blocks in order, recomputing p and ds for every query of its head group, summing dk and dv per
// key block and adding ds k into dq rows only that task owns. Every sum runs in a fixed order, so
// results do not depend on the thread count.
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

// 64-byte vectors of C (GCC vector extensions: one AVX-512 register, or two or four narrower ones).
template <typename C>
struct Simd {
  static constexpr int64_t kLanes = int64_t(64 / sizeof(C));
  typedef C V __attribute__((vector_size(64)));
  static V load(const C* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static void store(C* p, V v) { std::memcpy(p, &v, sizeof(V)); }
};

template <typename C>
C exp_c(C x) {
  if constexpr (std::is_same_v<C, float>) {
    return cpu::exp_impl(x);
  } else {
    return std::exp(x);
  }
}

// One R x (NV vectors) tile of out (+)= x b: R rows of x (element (r, k) at x[r * xr + k * xk]),
// kdim rows of b from column c0 on, accumulators in registers.
template <typename C, int R, int NV>
inline void gemm_tile(const C* x, int64_t xr, int64_t xk, int64_t kdim, const C* b, int64_t ldb,
                      C* out, int64_t ldo, bool accumulate) {
  using S = Simd<C>;
  using V = typename S::V;
  V acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? S::load(out + r * ldo + v * S::kLanes) : V{};
  }
  for (int64_t k = 0; k < kdim; ++k) {
    V bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = S::load(b + k * ldb + v * S::kLanes);
    for (int r = 0; r < R; ++r) {
      const V xv = V{} + x[r * xr + k * xk];
      for (int v = 0; v < NV; ++v) acc[r][v] += xv * bv[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) S::store(out + r * ldo + v * S::kLanes, acc[r][v]);
  }
}

// out (rows x width, row stride ldo) = [out +] x b, with x (rows x kdim) read through strides
// (xr, xk) (so x may be a transposed block) and b (kdim x width, row stride ldb). width is a
// multiple of the vector lanes; the sum over k runs in order for every element.
template <typename C>
void gemm(const C* x, int64_t xr, int64_t xk, int64_t rows, int64_t kdim, const C* b, int64_t ldb,
          int64_t width, C* out, int64_t ldo, bool accumulate) {
  constexpr int64_t L = Simd<C>::kLanes;
  int64_t c0 = 0;
  for (; c0 + 4 * L <= width; c0 += 4 * L) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
      gemm_tile<C, 4, 4>(x + r * xr, xr, xk, kdim, b + c0, ldb, out + r * ldo + c0, ldo,
                         accumulate);
    for (; r < rows; ++r)
      gemm_tile<C, 1, 4>(x + r * xr, xr, xk, kdim, b + c0, ldb, out + r * ldo + c0, ldo,
                         accumulate);
  }
  for (; c0 < width; c0 += L) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
      gemm_tile<C, 4, 1>(x + r * xr, xr, xk, kdim, b + c0, ldb, out + r * ldo + c0, ldo,
                         accumulate);
    for (; r < rows; ++r)
      gemm_tile<C, 1, 1>(x + r * xr, xr, xk, kdim, b + c0, ldb, out + r * ldo + c0, ldo,
                         accumulate);
  }
}

template <typename C>
C dot(const C* a, const C* b, int64_t h) {
  C s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < h; ++i) s += a[i] * b[i];
  return s;
}

// Everything a task needs to know about one call, with inputs made dense.
template <typename C>
struct Problem {
  AttentionAttrs a;
  int64_t b, t, n, h, s, k, g;
  int64_t hp;  // h rounded up to whole vectors: the row length of padded scratch
  Array q, kk, v;
  std::vector<int64_t> q_seg, kv_seg;  // (B, T), (B, S) or empty
  std::vector<uint8_t> kv_keep;        // (B, S) or empty

  Problem(const AttentionAttrs& attrs, const std::vector<Array>& in) : a(attrs) {
    q = contiguous(in[0]);
    kk = contiguous(in[1]);
    v = contiguous(in[2]);
    b = q.shape[0], t = q.shape[1], n = q.shape[2], h = q.shape[3];
    s = kk.shape[1], k = kk.shape[2], g = n / k;
    constexpr int64_t L = Simd<C>::kLanes;
    hp = (h + L - 1) / L * L;
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

  // Rows [r0, r0 + rows) of head `head` of batch `bi` of x (B, L, heads, H) into dst (rows, hp);
  // columns h.. hp of dst are left as they are (zero in fresh scratch).
  void load(const Array& x, int64_t bi, int64_t r0, int64_t rows, int64_t head, C* dst) const {
    const int64_t len = x.shape[1], heads = x.shape[2];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t start = ((bi * len + r0 + r) * heads + head) * h;
      if (x.dtype == dtype_of<C>()) {
        std::memcpy(dst + r * hp, x.data<C>() + start, size_t(h) * sizeof(C));
      } else {
        cpu::load_chunk<C>(x, start, h, dst + r * hp);
      }
    }
  }

  // A block of rows as a matrix operand: (pointer, row stride). Read in place when x holds C and
  // its rows are whole vectors; otherwise loaded into `scratch` (rows, hp).
  struct Rows {
    const C* ptr;
    int64_t ld;
  };
  Rows rows_of(const Array& x, int64_t bi, int64_t r0, int64_t rows, int64_t head,
               C* scratch) const {
    if (x.dtype == dtype_of<C>() && h == hp) {
      const int64_t len = x.shape[1], heads = x.shape[2];
      return {x.data<C>() + ((bi * len + r0) * heads + head) * h, heads * h};
    }
    load(x, bi, r0, rows, head, scratch);
    return {scratch, hp};
  }

  // Row ti of the block's raw products z (keys s0 .. s0 + kBlockK) becomes logits: scaled,
  // capped (th = tanh(z / cap), for the cap's derivative), and -inf where the key is hidden or
  // past the block's nk keys.
  void logits_row(int64_t bi, int64_t ti, int64_t s0, int64_t nk, C* z, C* th) const {
    const C sc = C(a.scale), cap = C(a.cap);
    if (a.cap > 0) {
      for (int64_t j = 0; j < nk; ++j) {
        th[j] = std::tanh(z[j] * sc / cap);
        z[j] = cap * th[j];
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < kBlockK; ++j) z[j] *= sc;
    }
    constexpr C kNegInf = -std::numeric_limits<C>::infinity();
    const int64_t lo = std::clamp<int64_t>(key_lo(ti) - s0, 0, nk);
    const int64_t hi = std::clamp<int64_t>(key_hi(ti) - s0, lo, nk);
#pragma omp simd
    for (int64_t j = 0; j < kBlockK; ++j) z[j] = (j >= lo && j < hi) ? z[j] : kNegInf;
    if (!q_seg.empty() || !kv_keep.empty()) {
      for (int64_t j = lo; j < hi; ++j) {
        if (!visible(bi, ti, s0 + j)) z[j] = kNegInf;
      }
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

// x (B, S, K, H) transposed per (batch, kv head) into (B, K, hp, sp), sp = S rounded up to whole
// key blocks, zero-padded: a key block is then a (hp, kBlockK) operand with row stride sp, made
// once instead of once per query block that reads it.
template <typename C>
struct Transposed {
  int64_t hp, sp, k;
  std::vector<C> data;

  Transposed(const Problem<C>& p, const Array& x)
      : hp(p.hp), sp((p.s + kBlockK - 1) / kBlockK * kBlockK), k(p.k) {
    data.assign(size_t(p.b * p.k * hp * sp), C(0));
    const int64_t kblocks = sp / kBlockK;
    const int64_t tasks = p.b * p.k * kblocks;
#pragma omp parallel if (tasks > 1)
    {
      std::vector<C> buf(size_t(kBlockK * hp));
#pragma omp for schedule(static)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t bi = task / (p.k * kblocks), ki = task / kblocks % p.k;
        const int64_t s0 = task % kblocks * kBlockK, nk = std::min(p.s, s0 + kBlockK) - s0;
        const auto src = p.rows_of(x, bi, s0, nk, ki, buf.data());
        C* dst = block(bi, ki, s0);
        for (int64_t r = 0; r < nk; ++r)
          for (int64_t e = 0; e < p.h; ++e) dst[e * sp + r] = src.ptr[r * src.ld + e];
      }
    }
  }
  // The operand of keys s0 .. s0 + kBlockK of (batch bi, kv head ki); row stride sp.
  C* block(int64_t bi, int64_t ki, int64_t s0) {
    return data.data() + (bi * k + ki) * hp * sp + s0;
  }
  const C* block(int64_t bi, int64_t ki, int64_t s0) const {
    return data.data() + (bi * k + ki) * hp * sp + s0;
  }
};

// Visits the key blocks (aligned to kBlockK, as Transposed lays them out) that some query of
// [t0, t1) may see: fn(s0, s1).
template <typename C, typename Fn>
void for_key_blocks(const Problem<C>& p, int64_t t0, int64_t t1, Fn&& fn) {
  const int64_t lo = p.key_lo(t0) / kBlockK * kBlockK, hi = p.key_hi(t1 - 1);
  for (int64_t s0 = lo; s0 < hi; s0 += kBlockK) fn(s0, std::min(hi, s0 + kBlockK));
}

// Per-task scratch, zero-initialised so the padding of every row stays zero.
template <typename C>
struct Scratch {
  std::vector<C> qb, ob, db, acc, kb, vb, z, th, dp, m, l;
  explicit Scratch(int64_t hp)
      : qb(size_t(kBlockQ * hp)),
        ob(qb.size()),
        db(qb.size()),
        acc(qb.size()),
        kb(size_t(kBlockK * hp)),
        vb(kb.size()),
        z(size_t(kBlockQ * kBlockK)),
        th(z.size()),
        dp(z.size()),
        m(kBlockQ),
        l(kBlockQ) {}
};

template <typename C>
C row_max(const C* z) {
  C m = -std::numeric_limits<C>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < kBlockK; ++j) m = z[j] > m ? z[j] : m;
  return m;
}

// The block's probabilities against a running max: p_j = exp(z_j - m) (0 where z_j = -inf), in
// place; returns their sum.
template <typename C>
C exp_row(C* z, C m) {
  constexpr C kNegInf = -std::numeric_limits<C>::infinity();
  C sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < kBlockK; ++j) {
    const C e = exp_c<C>(z[j] - m);
    z[j] = z[j] == kNegInf ? C(0) : e;
    sum += z[j];
  }
  return sum;
}

// Logits of the query block q (rows t0 .. t0 + nq) against keys [s0, s0 + nk) of the transposed
// keys kt, into w.z (nq, kBlockK).
template <typename C>
void block_logits(const Problem<C>& p, Scratch<C>& w, typename Problem<C>::Rows q,
                  const Transposed<C>& kt, int64_t bi, int64_t ni, int64_t t0, int64_t nq,
                  int64_t s0, int64_t nk) {
  gemm<C>(q.ptr, q.ld, 1, nq, p.h, kt.block(bi, ni / p.g, s0), kt.sp, kBlockK, w.z.data(), kBlockK,
          false);
  for (int64_t i = 0; i < nq; ++i) {
    p.logits_row(bi, t0 + i, s0, nk, w.z.data() + i * kBlockK, w.th.data() + i * kBlockK);
  }
}

// Row log-sum-exps of queries [t0, t1) (q) against all their visible keys (+inf for rows with
// none, so that exp(logit - lse) is 0 there).
template <typename C>
void row_lse(const Problem<C>& p, typename Problem<C>::Rows q, const Transposed<C>& kt, int64_t bi,
             int64_t ni, int64_t t0, int64_t t1, Scratch<C>& w, C* lse) {
  const int64_t nq = t1 - t0;
  constexpr C kNegInf = -std::numeric_limits<C>::infinity();
  std::fill(w.m.begin(), w.m.end(), kNegInf);
  std::fill(w.l.begin(), w.l.end(), C(0));
  for_key_blocks(p, t0, t1, [&](int64_t s0, int64_t s1) {
    block_logits(p, w, q, kt, bi, ni, t0, nq, s0, s1 - s0);
    for (int64_t i = 0; i < nq; ++i) {
      C* z = w.z.data() + i * kBlockK;
      const C bmax = row_max(z);
      if (bmax == kNegInf) continue;
      const C m_new = std::max(w.m[size_t(i)], bmax);
      const C corr = w.m[size_t(i)] == kNegInf ? C(0) : exp_c<C>(w.m[size_t(i)] - m_new);
      w.l[size_t(i)] = w.l[size_t(i)] * corr + exp_row(z, m_new);
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
  const Transposed<C> kt(p, p.kk);
#pragma omp parallel if (tasks > 1)
  {
    Scratch<C> w(p.hp);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t bi = task / (p.n * qblocks), ni = task / qblocks % p.n;
      const int64_t t0 = task % qblocks * kBlockQ, t1 = std::min(p.t, t0 + kBlockQ), nq = t1 - t0;
      const auto q = p.rows_of(p.q, bi, t0, nq, ni, w.qb.data());
      std::fill(w.acc.begin(), w.acc.end(), C(0));
      std::fill(w.m.begin(), w.m.end(), kNegInf);
      std::fill(w.l.begin(), w.l.end(), C(0));
      for_key_blocks(p, t0, t1, [&](int64_t s0, int64_t s1) {
        const int64_t nk = s1 - s0;
        const auto v = p.rows_of(p.v, bi, s0, nk, ni / p.g, w.vb.data());
        block_logits(p, w, q, kt, bi, ni, t0, nq, s0, nk);
        for (int64_t i = 0; i < nq; ++i) {
          C* z = w.z.data() + i * kBlockK;
          const C bmax = row_max(z);
          if (bmax == kNegInf) {
            std::fill(z, z + kBlockK, C(0));
            continue;
          }
          const C m_new = std::max(w.m[size_t(i)], bmax);
          const C corr = w.m[size_t(i)] == kNegInf ? C(0) : exp_c<C>(w.m[size_t(i)] - m_new);
          if (corr != C(1)) {
            C* ai = w.acc.data() + i * p.hp;
#pragma omp simd
            for (int64_t e = 0; e < p.hp; ++e) ai[e] *= corr;
          }
          w.l[size_t(i)] = w.l[size_t(i)] * corr + exp_row(z, m_new);
          w.m[size_t(i)] = m_new;
        }
        // acc += p v over the block's keys.
        gemm<C>(w.z.data(), kBlockK, 1, nq, nk, v.ptr, v.ld, p.hp, w.acc.data(), p.hp, true);
      });
      for (int64_t i = 0; i < nq; ++i) {
        C* ai = w.acc.data() + i * p.hp;
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

template <typename C>
void backward(const Problem<C>& p, const Array& out_fwd, const Array& dout, Array& grads) {
  const Array o = contiguous(out_fwd), dO = contiguous(dout);
  // Packed (B, K, G*T*H + 2*S*H): per (batch, kv head) the group's dq, then dk, then dv.
  C* packed = grads.data<C>();
  const int64_t q_part = p.g * p.t * p.h, kv_part = p.s * p.h, row = q_part + 2 * kv_part;
  std::fill(packed, packed + grads.size(), C(0));  // dq is summed into by the key-block tasks
  const int64_t qblocks = (p.t + kBlockQ - 1) / kBlockQ;
  const int64_t kblocks = (p.s + kBlockK - 1) / kBlockK;
  std::vector<C> lse(size_t(p.b * p.n * p.t)), drow(size_t(p.b * p.n * p.t));
  const Transposed<C> kt(p, p.kk), vt(p, p.v);

  // Phase 1, per query block: lse and D = rowsum(dout * out).
  const int64_t tasks_q = p.b * p.n * qblocks;
#pragma omp parallel if (tasks_q > 1)
  {
    Scratch<C> w(p.hp);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks_q; ++task) {
      const int64_t bi = task / (p.n * qblocks), ni = task / qblocks % p.n;
      const int64_t t0 = task % qblocks * kBlockQ, t1 = std::min(p.t, t0 + kBlockQ), nq = t1 - t0;
      const int64_t row0 = (bi * p.n + ni) * p.t + t0;
      const auto q = p.rows_of(p.q, bi, t0, nq, ni, w.qb.data());
      const auto ob = p.rows_of(o, bi, t0, nq, ni, w.ob.data());
      const auto db = p.rows_of(dO, bi, t0, nq, ni, w.db.data());
      row_lse(p, q, kt, bi, ni, t0, t1, w, lse.data() + row0);
      for (int64_t i = 0; i < nq; ++i) {
        drow[size_t(row0 + i)] = dot(db.ptr + i * db.ld, ob.ptr + i * ob.ld, p.h);
      }
    }
  }

  // Phase 2, per (batch, kv head): for each key block, every query of the head group that may
  // see it: p = exp(logits - lse), dp = dout v^T, ds = scale p (dp - D) [(1 - tanh^2) under a
  // cap]; dv_blk += p^T dout, dk_blk += ds^T q, dq += ds k.
  const int64_t tasks_k = p.b * p.k;
  const C scale = C(p.a.scale);
#pragma omp parallel if (tasks_k > 1)
  {
    Scratch<C> w(p.hp);
    std::vector<C> dkb(size_t(kBlockK * p.hp)), dvb(dkb.size()), dqb(size_t(kBlockQ * p.hp));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks_k; ++task) {
      const int64_t bi = task / p.k, ki = task % p.k;
      for (int64_t kb = 0; kb < kblocks; ++kb) {
        const int64_t s0 = kb * kBlockK, s1 = std::min(p.s, s0 + kBlockK), nk = s1 - s0;
        const auto kr = p.rows_of(p.kk, bi, s0, nk, ki, w.kb.data());
        std::fill(dkb.begin(), dkb.end(), C(0));
        std::fill(dvb.begin(), dvb.end(), C(0));
        // Queries that may see some key of [s0, s1).
        const int64_t q_lo = p.a.causal ? s0 : 0;
        const int64_t q_hi = p.a.window >= 0 ? std::min(p.t, s1 + p.a.window) : p.t;
        for (int64_t ni = ki * p.g; ni < (ki + 1) * p.g; ++ni) {
          for (int64_t t0 = q_lo; t0 < q_hi; t0 += kBlockQ) {
            const int64_t nq = std::min(q_hi, t0 + kBlockQ) - t0;
            const int64_t row0 = (bi * p.n + ni) * p.t + t0;
            const auto q = p.rows_of(p.q, bi, t0, nq, ni, w.qb.data());
            const auto db = p.rows_of(dO, bi, t0, nq, ni, w.db.data());
            block_logits(p, w, q, kt, bi, ni, t0, nq, s0, nk);
            gemm<C>(db.ptr, db.ld, 1, nq, p.h, vt.block(bi, ki, s0), vt.sp, kBlockK, w.dp.data(),
                    kBlockK, false);
            bool any = false;
            for (int64_t i = 0; i < nq; ++i) {
              C* z = w.z.data() + i * kBlockK;
              C* d = w.dp.data() + i * kBlockK;
              const C* th = w.th.data() + i * kBlockK;
              const C l = lse[size_t(row0 + i)], dr = drow[size_t(row0 + i)];
              constexpr C kNegInf = -std::numeric_limits<C>::infinity();
              C alive = 0;
#pragma omp simd reduction(+ : alive)
              for (int64_t j = 0; j < kBlockK; ++j) {
                // Hidden keys (and the block's padding, whose dp is not meaningful) get 0.
                const bool hidden = z[j] == kNegInf;
                const C prob = hidden ? C(0) : exp_c<C>(z[j] - l);
                z[j] = prob;
                d[j] = hidden ? C(0) : scale * prob * (d[j] - dr);
                alive += prob;
              }
              if (p.a.cap > 0) {
                for (int64_t j = 0; j < nk; ++j) d[j] *= C(1) - th[j] * th[j];
              }
              any = any || alive > 0;
            }
            if (!any) continue;  // nothing of this query block sees these keys
            gemm<C>(w.z.data(), 1, kBlockK, nk, nq, db.ptr, db.ld, p.hp, dvb.data(), p.hp, true);
            gemm<C>(w.dp.data(), 1, kBlockK, nk, nq, q.ptr, q.ld, p.hp, dkb.data(), p.hp, true);
            gemm<C>(w.dp.data(), kBlockK, 1, nq, nk, kr.ptr, kr.ld, p.hp, dqb.data(), p.hp, false);
            for (int64_t i = 0; i < nq; ++i) {
              C* dst = packed + (bi * p.k + ki) * row + ((ni - ki * p.g) * p.t + t0 + i) * p.h;
              const C* src = dqb.data() + i * p.hp;
#pragma omp simd
              for (int64_t e = 0; e < p.h; ++e) dst[e] += src[e];
            }
          }
        }
        C* dk = packed + (bi * p.k + ki) * row + q_part;
        C* dv = dk + kv_part;
        for (int64_t sj = s0; sj < s1; ++sj) {
          std::memcpy(dk + sj * p.h, dkb.data() + (sj - s0) * p.hp, size_t(p.h) * sizeof(C));
          std::memcpy(dv + sj * p.h, dvb.data() + (sj - s0) * p.hp, size_t(p.h) * sizeof(C));
        }
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
