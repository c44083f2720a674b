// Fused attention: forward against naive f64 loops and against the ops-composed reference across
// MHA/GQA/MQA, causal, sliding window, segments, padding, logit cap, T != S and lengths that are
// not multiples of the tiles; gradients against the reference and finite differences; bf16;
// peak memory at T = S = 2048; errors naming the op and shapes.
#include "axlearn/core/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "axlearn/core/array.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"
#include "tests/core/test_util.h"

namespace axlearn {
namespace {

using testing::all_close;
using testing::check_vjp;
using testing::random_tensor;
using testing::values_of;
using Args = std::vector<Tensor>;

struct Case {
  const char* name;
  int64_t b, t, s, n, k, h;
  bool causal = false;
  std::optional<int64_t> window;
  bool segments = false, mask = false;
  std::optional<double> cap;

  Case(const char* name, int64_t b, int64_t t, int64_t s, int64_t n, int64_t k, int64_t h)
      : name(name), b(b), t(t), s(s), n(n), k(k), h(h) {}
  Case& with_causal() { return causal = true, *this; }
  Case& with_window(int64_t w) { return causal = true, window = w, *this; }
  Case& with_segments() { return segments = true, *this; }
  Case& with_mask() { return mask = true, *this; }
  Case& with_cap(double c) { return cap = c, *this; }
};

// Segment ids with a few packed sequences per row; query ids include one (7) absent from the keys
// so some rows see nothing. The padding mask hides the last keys of each row.
AttentionOptions options_for(const Case& c) {
  AttentionOptions o;
  o.causal = c.causal;
  o.sliding_window = c.window;
  o.logit_cap = c.cap;
  if (c.segments) {
    std::vector<int32_t> qs, ks;
    for (int64_t bi = 0; bi < c.b; ++bi) {
      for (int64_t t = 0; t < c.t; ++t) qs.push_back(t % 11 == 10 ? 7 : int32_t(1 + (t + bi) / 9));
      for (int64_t s = 0; s < c.s; ++s) ks.push_back(int32_t(1 + (s + bi) / 9));
    }
    o.q_segment_ids = array(qs, {c.b, c.t});
    o.kv_segment_ids = array(ks, {c.b, c.s});
  }
  if (c.mask) {
    std::vector<bool> m;
    for (int64_t bi = 0; bi < c.b; ++bi) {
      for (int64_t s = 0; s < c.s; ++s) m.push_back(s < c.s - 3 - bi);
    }
    o.kv_mask = array(m, {c.b, c.s});
  }
  return o;
}

// Naive f64 loops over every (b, t, n), from the (dtype-rounded) input values.
std::vector<double> naive_attention(const Case& c, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const AttentionOptions& o) {
  const auto qv = values_of(q), kv = values_of(k), vv = values_of(v);
  std::vector<double> qs, ks, m;
  if (o.q_segment_ids.defined()) qs = values_of(o.q_segment_ids), ks = values_of(o.kv_segment_ids);
  if (o.kv_mask.defined()) m = values_of(o.kv_mask);
  const double scale = 1 / std::sqrt(double(c.h));
  std::vector<double> out(size_t(c.b * c.t * c.n * c.h), 0.0);
  for (int64_t b = 0; b < c.b; ++b)
    for (int64_t t = 0; t < c.t; ++t)
      for (int64_t n = 0; n < c.n; ++n) {
        const int64_t kh = n / (c.n / c.k);
        std::vector<double> logit(size_t(c.s));
        std::vector<bool> vis(size_t(c.s));
        double mx = -INFINITY;
        for (int64_t s = 0; s < c.s; ++s) {
          bool ok = !(c.causal || c.window) || s <= t;
          if (c.window) ok = ok && t - s <= *c.window;
          if (!qs.empty()) ok = ok && qs[size_t(b * c.t + t)] == ks[size_t(b * c.s + s)];
          if (!m.empty()) ok = ok && m[size_t(b * c.s + s)] != 0;
          double z = 0;
          for (int64_t e = 0; e < c.h; ++e) {
            z += qv[size_t(((b * c.t + t) * c.n + n) * c.h + e)] *
                 kv[size_t(((b * c.s + s) * c.k + kh) * c.h + e)];
          }
          z *= scale;
          if (c.cap) z = *c.cap * std::tanh(z / *c.cap);
          logit[size_t(s)] = z;
          vis[size_t(s)] = ok;
          if (ok) mx = std::max(mx, z);
        }
        double sum = 0;
        for (int64_t s = 0; s < c.s; ++s)
          sum += vis[size_t(s)] ? std::exp(logit[size_t(s)] - mx) : 0;
        if (sum == 0) continue;
        for (int64_t s = 0; s < c.s; ++s) {
          if (!vis[size_t(s)]) continue;
          const double p = std::exp(logit[size_t(s)] - mx) / sum;
          for (int64_t e = 0; e < c.h; ++e) {
            out[size_t(((b * c.t + t) * c.n + n) * c.h + e)] +=
                p * vv[size_t(((b * c.s + s) * c.k + kh) * c.h + e)];
          }
        }
      }
  return out;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> cs = {
      Case("mha", 2, 37, 37, 2, 2, 8),
      Case("gqa", 1, 45, 45, 4, 2, 16),
      Case("mqa_causal", 2, 33, 33, 3, 1, 8).with_causal(),
      Case("causal_t_ne_s", 1, 19, 70, 2, 1, 8).with_causal(),
      Case("cross_t_gt_s", 1, 70, 19, 2, 2, 4),
      Case("sliding_window", 1, 100, 100, 2, 1, 8).with_window(5),
      Case("window_wider_than_block", 1, 150, 150, 2, 2, 4).with_window(70),
      Case("segments_mask", 2, 40, 40, 2, 1, 8).with_segments().with_mask(),
      Case("causal_segments", 2, 67, 67, 4, 2, 8).with_causal().with_segments(),
      Case("logit_cap", 1, 30, 50, 2, 2, 8).with_cap(0.7),
      Case("everything", 2, 71, 71, 4, 2, 8)
          .with_window(20)
          .with_segments()
          .with_mask()
          .with_cap(1.5),
  };
  return cs;
}

Args random_qkv(const Case& c, Dtype dt, uint32_t seed) {
  return {random_tensor({c.b, c.t, c.n, c.h}, dt, -2, 2, seed),
          random_tensor({c.b, c.s, c.k, c.h}, dt, -2, 2, seed + 1),
          random_tensor({c.b, c.s, c.k, c.h}, dt, -2, 2, seed + 2)};
}

TEST(AttentionTest, FusedAndReferenceMatchNaiveLoopsAcrossMasksAndHeadGroupings) {
  for (const Case& c : cases()) {
    for (Dtype dt : {float32, float64}) {
      const Args x = random_qkv(c, dt, 100);
      const AttentionOptions o = options_for(c);
      const std::vector<double> want = naive_attention(c, x[0], x[1], x[2], o);
      const double tol = dt == float64 ? 1e-12 : 2e-5;
      Tensor fused = attention(x[0], x[1], x[2], o);
      ASSERT_EQ(fused.shape(), x[0].shape());
      ASSERT_EQ(fused.dtype(), dt);
      EXPECT_TRUE(all_close(values_of(fused), want, tol, tol)) << c.name << " " << dtype_name(dt);
      EXPECT_TRUE(all_close(values_of(attention_reference(x[0], x[1], x[2], o)), want, tol, tol))
          << "reference " << c.name << " " << dtype_name(dt);
    }
  }
}

TEST(AttentionTest, CausalMaskHidesFuture) {
  const Case c = Case("causal", 1, 10, 10, 1, 1, 4).with_causal();
  Args x = random_qkv(c, float64, 7);
  Tensor a = attention(x[0], x[1], x[2], options_for(c));
  // Changing the last key and value must leave every earlier query's output unchanged.
  std::vector<double> kv = values_of(x[1]), vv = values_of(x[2]);
  for (int e = 0; e < 4; ++e) kv[size_t(9 * 4 + e)] += 3, vv[size_t(9 * 4 + e)] -= 2;
  Tensor b = attention(x[0], array(kv, x[1].shape()), array(vv, x[2].shape()), options_for(c));
  const auto av = values_of(a), bv = values_of(b);
  for (size_t i = 0; i < 9 * 4; ++i) EXPECT_EQ(av[i], bv[i]) << i;
  EXPECT_NE(av[9 * 4], bv[9 * 4]);
}

TEST(AttentionTest, FullyHiddenQueriesGiveZeroOutputAndZeroGradient) {
  const Case c = Case("segments", 1, 12, 12, 2, 1, 4).with_segments();
  const AttentionOptions o = options_for(c);  // query 10 has segment 7, absent from the keys
  const Args x = random_qkv(c, float64, 9);
  const auto out = values_of(attention(x[0], x[1], x[2], o));
  for (int64_t i = 0; i < 2 * 4; ++i) EXPECT_EQ(out[size_t(10 * 2 * 4 + i)], 0.0);
  auto fn = [&](const Args& a) { return sum(attention(a[0], a[1], a[2], o)); };
  const auto dq = values_of(grad(fn)(x)[0]);
  for (int64_t i = 0; i < 2 * 4; ++i) EXPECT_EQ(dq[size_t(10 * 2 * 4 + i)], 0.0);
}

TEST(AttentionTest, GradientsMatchReferenceAcrossCases) {
  for (const Case& c : cases()) {
    const Args x = random_qkv(c, float64, 200);
    const AttentionOptions o = options_for(c);
    Tensor w = random_tensor({c.b, c.t, c.n, c.h}, float64, -1, 1, 5);
    auto fused = [&](const Args& a) { return std::vector<Tensor>{attention(a[0], a[1], a[2], o)}; };
    auto ref = [&](const Args& a) {
      return std::vector<Tensor>{attention_reference(a[0], a[1], a[2], o)};
    };
    const auto gf = vjp(fused, x, {w}).cotangents, gr = vjp(ref, x, {w}).cotangents;
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(gf[size_t(i)].shape(), x[size_t(i)].shape());
      EXPECT_TRUE(all_close(values_of(gf[size_t(i)]), values_of(gr[size_t(i)]), 1e-10, 1e-10))
          << c.name << " d"
          << "qkv"[i];
    }
  }
}

TEST(AttentionTest, GradientsMatchFiniteDifferencesInF64) {
  const std::vector<Case> small = {
      Case("gqa_causal_cap", 1, 5, 5, 4, 2, 3).with_causal().with_cap(0.8),
      Case("window_segments_mask", 2, 6, 6, 2, 1, 3).with_window(2).with_segments().with_mask(),
      Case("cross", 1, 4, 7, 2, 2, 3),
  };
  for (const Case& c : small) {
    const AttentionOptions o = options_for(c);
    auto fn = [&](const Args& a) { return attention(a[0], a[1], a[2], o); };
    check_vjp(fn, random_qkv(c, float64, 300), {}, 1e-7);
  }
}

TEST(AttentionTest, SecondOrderMatchesFiniteDifferences) {
  const Case c = Case("tiny", 1, 3, 4, 2, 1, 2).with_causal();
  const AttentionOptions o = options_for(c);
  const Tensor w = random_tensor({1, 3, 2, 2}, float64, -1, 1, 17);
  auto fn = [&](const Args& a) {
    auto loss = [&](const Args& b) { return sum(attention(b[0], b[1], b[2], o) * w); };
    return grad(loss)(a)[1];  // dk, differentiated again with respect to q, k and v
  };
  check_vjp(fn, random_qkv(c, float64, 400), {}, 1e-6);
}

TEST(AttentionTest, Bf16InputsAccumulateInF32) {
  for (const Case& c : {cases()[1], cases().back()}) {
    const Args x = random_qkv(c, bfloat16, 500);
    const AttentionOptions o = options_for(c);
    Tensor fused = attention(x[0], x[1], x[2], o);
    ASSERT_EQ(fused.dtype(), bfloat16);
    const std::vector<double> want = naive_attention(c, x[0], x[1], x[2], o);
    EXPECT_TRUE(all_close(values_of(fused), want, 8e-3, 8e-3)) << c.name;

    auto fn = [&](const Args& a) { return sum(attention(a[0], a[1], a[2], o)); };
    const auto g = grad(fn)(x);
    Args x32 = {astype(x[0], float32), astype(x[1], float32), astype(x[2], float32)};
    auto fn_ref = [&](const Args& a) { return sum(attention_reference(a[0], a[1], a[2], o)); };
    const auto gr = grad(fn_ref)(x32);
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(g[size_t(i)].dtype(), bfloat16);
      EXPECT_TRUE(all_close(values_of(g[size_t(i)]), values_of(gr[size_t(i)]), 2e-2, 2e-2))
          << c.name << " d"
          << "qkv"[i];
    }
  }
}

TEST(AttentionTest, LongSequencePeakMemoryStaysFarBelowOneScoreMatrix) {
  const Case c = Case("long", 1, 2048, 2048, 2, 1, 32).with_causal();
  const Args x = random_qkv(c, float32, 600);
  const AttentionOptions o = options_for(c);
  Tensor w = random_tensor({1, 2048, 2, 32}, float32, -1, 1, 601);
  eval(x);
  eval(w);
  CpuAllocator& alloc = CpuAllocator::instance();
  alloc.reset_peak();
  const size_t base = alloc.bytes_in_use();
  auto fn = [&](const Args& a) { return std::vector<Tensor>{attention(a[0], a[1], a[2], o)}; };
  VjpResult r = vjp(fn, x, {w});
  eval(r.outputs);
  eval(r.cotangents);
  const size_t score_matrix = size_t(2048) * 2048 * sizeof(float);  // one head's (T, S) in f32
  EXPECT_LT(alloc.peak_bytes() - base, score_matrix / 4)
      << "peak " << alloc.peak_bytes() - base << " bytes above the inputs";
  // Spot check: the last query of head 1 against naive f64 loops (it sees every key).
  const auto out = values_of(r.outputs[0]);
  const auto qv = values_of(x[0]), kv = values_of(x[1]), vv = values_of(x[2]);
  const int64_t t = 2047, n = 1;
  std::vector<double> z(2048);
  double mx = -INFINITY, sum = 0;
  for (int64_t s = 0; s < 2048; ++s) {
    double d = 0;
    for (int e = 0; e < 32; ++e) d += qv[size_t((t * 2 + n) * 32 + e)] * kv[size_t(s * 32 + e)];
    z[size_t(s)] = d / std::sqrt(32.0);
    mx = std::max(mx, z[size_t(s)]);
  }
  for (double& d : z) sum += (d = std::exp(d - mx));
  for (int e = 0; e < 32; ++e) {
    double want = 0;
    for (int64_t s = 0; s < 2048; ++s) want += z[size_t(s)] / sum * vv[size_t(s * 32 + e)];
    EXPECT_NEAR(out[size_t((t * 2 + n) * 32 + e)], want, 1e-5);
  }
}

TEST(AttentionTest, ErrorsNameOpAndShapes) {
  const Tensor q = zeros({2, 5, 4, 8}), k = zeros({2, 6, 3, 8});
  try {
    attention(q, k, k);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("attention"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 5, 4, 8)"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 6, 3, 8)"), std::string::npos) << m;
  }
  const Tensor k2 = zeros({2, 6, 2, 8});
  EXPECT_THROW(attention(q, k2, zeros({2, 6, 2, 4})), Error);                   // v shape
  EXPECT_THROW(attention(q, zeros({2, 6, 2, 7}), zeros({2, 6, 2, 7})), Error);  // head dim
  EXPECT_THROW(attention(q, astype(k2, float64), k2), Error);                   // dtypes
  EXPECT_THROW(attention(zeros({5, 4, 8}), k2, k2), Error);                     // rank
  AttentionOptions o;
  o.q_segment_ids = zeros({2, 5}, int32);
  EXPECT_THROW(attention(q, k2, k2, o), Error);  // kv ids missing
  o.kv_segment_ids = zeros({2, 5}, int32);
  try {
    attention(q, k2, k2, o);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kv_segment_ids must be integer (2, 6)"),
              std::string::npos)
        << e.what();
  }
  AttentionOptions bad;
  bad.kv_mask = zeros({2, 6});  // float mask
  EXPECT_THROW(attention(q, k2, k2, bad), Error);
  bad = {};
  bad.sliding_window = -1;
  EXPECT_THROW(attention(q, k2, k2, bad), Error);
  bad = {};
  bad.logit_cap = 0.0;
  EXPECT_THROW(attention(q, k2, k2, bad), Error);
}

}  // namespace
}  // namespace axlearn
