// The partitioner's invariant: a sharded computation equals the unsharded one. Each op runs on
// inputs placed with random shardings on a 2x2 mesh of virtual devices; its gathered result, and
// the gradients of a weighted sum of it, are compared with the same op on ordinary tensors.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "axlearn/core/attention.h"
#include "axlearn/core/compile.h"
#include "axlearn/core/conv.h"
#include "axlearn/core/cross_entropy.h"
#include "axlearn/core/norm.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/remat.h"
#include "axlearn/core/transforms.h"
#include "axlearn/dist/collectives.h"
#include "axlearn/dist/communicator.h"
#include "axlearn/dist/sharding.h"

namespace axlearn::dist {
namespace {

const Mesh kMesh{{2, 2}, {"data", "model"}};

// A random sharding of `shape` on kMesh: each axis goes to a random dimension it divides (or
// none); sometimes both axes land on one dimension.
Sharding random_sharding(const Shape& shape, std::mt19937& gen) {
  Sharding s = Sharding::replicated(kMesh, int(shape.size()));
  for (int a = 0; a < 2; ++a) {
    std::uniform_int_distribution<int> pick(-1, int(shape.size()) - 1);
    const int d = pick(gen);
    if (d < 0) continue;
    const int64_t n = s.num_shards(d) * 2;
    if (shape[size_t(d)] % n == 0) s.dims[size_t(d)].push_back(a);
  }
  return s;
}

struct OpCase {
  std::string name;
  std::vector<Shape> shapes;
  std::vector<Dtype> dtypes;  // default f64
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  bool differentiable = true;
  double tol = 1e-12;
};

void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

Tensor make_input(const Shape& shape, Dtype dtype, uint64_t seed) {
  Tensor k = random::key(seed);
  if (dtype == int32) return astype(floor(random::uniform(k, shape, float32, 0, 6)), int32);
  if (dtype == bool_) return random::bernoulli(k, 0.7, shape);
  return random::normal(k, shape, dtype);
}

std::vector<double> values(const Tensor& t) { return astype(t, float64).to_vector<double>(); }

bool close(const std::vector<double>& a, const std::vector<double>& b, double tol,
           std::string* why) {
  if (a.size() != b.size()) {
    *why = "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::abs(a[i] - b[i]) > tol * std::max(1.0, std::abs(b[i]))) {
      *why = "element " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " +
             std::to_string(b[i]);
      return false;
    }
  }
  return true;
}

void check_case(const OpCase& c, int trials) {
  ThreadWorld world(4);
  world.set_timeout(std::chrono::seconds(20));
  std::atomic<int> bad{0};
  world.run([&](int64_t rank) {
    std::mt19937 gen(1234);  // the same shardings on every device
    for (int trial = 0; trial < trials; ++trial) {
      std::vector<Tensor> plain, sharded;
      std::vector<std::string> layouts;
      for (size_t i = 0; i < c.shapes.size(); ++i) {
        const Dtype dt = i < c.dtypes.size() ? c.dtypes[i] : float64;
        Tensor x = make_input(c.shapes[i], dt, 100 * uint64_t(trial) + i);
        x.eval();
        Sharding s = random_sharding(c.shapes[i], gen);
        layouts.push_back(s.str());
        plain.push_back(x);
        sharded.push_back(device_put(x, s));
      }
      auto where = [&] {
        std::string w = c.name + " trial " + std::to_string(trial) + " device " +
                        std::to_string(rank) + " inputs";
        for (const auto& l : layouts) w += " " + l;
        return w;
      };
      std::string why;
      const Tensor want = c.fn(plain);
      const Tensor got = c.fn(sharded);
      // Every device runs the same ops whatever it finds, so none is left waiting.
      if (got.shape() != want.shape() || !close(values(got), values(want), c.tol, &why)) {
        ++bad;
        ADD_FAILURE() << where() << ": forward " << why;
      }
      if (!c.differentiable) continue;
      std::vector<int> argnums;
      for (size_t i = 0; i < c.shapes.size(); ++i) {
        if (is_floating(plain[i].dtype())) argnums.push_back(int(i));
      }
      const Tensor w = make_input(want.shape(), float64, 999);
      auto loss = [&](const std::vector<Tensor>& a) { return sum(astype(c.fn(a), float64) * w); };
      auto g_want = value_and_grad(loss, plain, argnums);
      auto g_got = value_and_grad(loss, sharded, argnums);
      for (size_t k = 0; k < argnums.size(); ++k) {
        if (!close(values(g_got.grads[k]), values(g_want.grads[k]), c.tol * 10, &why)) {
          ++bad;
          ADD_FAILURE() << where() << ": gradient of input " << argnums[k] << " " << why;
        }
      }
    }
  });
  EXPECT_EQ(bad.load(), 0) << c.name;
}

std::vector<OpCase> cases() {
  using V = std::vector<Tensor>;
  std::vector<OpCase> out;
  out.push_back({"add_mul_exp", {{4, 8}, {4, 8}}, {}, [](const V& a) {
                   return exp(a[0] * 0.1) * a[1] + a[0];
                 }});
  out.push_back({"where_max", {{4, 6}, {4, 6}}, {}, [](const V& a) {
                   return where(greater(a[0], a[1]), tanh(a[0]), maximum(a[0], a[1] * 2.0));
                 }});
  out.push_back({"astype_f32", {{8, 4}}, {}, [](const V& a) {
                   return astype(astype(a[0], float32) * 3.0, float64);
                 }});
  out.push_back({"broadcast", {{4, 1}, {4, 6}}, {}, [](const V& a) {
                   return broadcast_to(a[0], {4, 6}) + a[1];
                 }});
  out.push_back({"reshape_split_merge", {{4, 8}}, {}, [](const V& a) {
                   return reshape(reshape(a[0], {4, 2, 4}) * 2.0, {8, 4});
                 }});
  out.push_back({"reshape_regroup", {{4, 6}}, {}, [](const V& a) {
                   return reshape(a[0], {6, 4}) * 2.0;
                 }});
  out.push_back({"reshape_unit_dims", {{4, 1, 8}}, {}, [](const V& a) {
                   return reshape(reshape(a[0], {4, 8}), {1, 4, 2, 4});
                 }});
  out.push_back({"transpose", {{4, 6, 2}}, {}, [](const V& a) {
                   return transpose(a[0], {2, 0, 1});
                 }});
  out.push_back({"sum_axes", {{4, 6, 4}}, {}, [](const V& a) { return sum(a[0], {0, 2}); }});
  out.push_back({"sum_all", {{4, 8}}, {}, [](const V& a) { return sum(a[0]); }});
  out.push_back(
      {"max_min", {{4, 8}}, {}, [](const V& a) { return max(a[0], {1}) - sum(min(a[0], {0})); }});
  out.push_back({"argmax", {{4, 8}}, {}, [](const V& a) { return argmax(a[0], 1); }, false});
  out.push_back(
      {"argmin_ties_nan",
       {{8, 8}},
       {},
       [](const V& a) {
         // Rounded values tie; a NaN in row 2 wins wherever it is.
         Tensor x = round(a[0]);
         Tensor nan_at = equal(iota({8, 8}, 0) * 8 + iota({8, 8}, 1), full({8, 8}, 21, int32));
         x = where(nan_at, full_like(x, std::nan("")), x);
         return argmin(x, 1) + argmax(x, 0) * 100;
       },
       false});
  out.push_back({"matmul", {{4, 6}, {6, 8}}, {}, [](const V& a) { return matmul(a[0], a[1]); }});
  out.push_back({"einsum_batched", {{2, 4, 6}, {2, 6, 4}}, {}, [](const V& a) {
                   return einsum("bij,bjk->bik", a[0], a[1]);
                 }});
  out.push_back({"mlp", {{4, 8}, {8, 4}, {4, 8}}, {}, [](const V& a) {
                   return matmul(tanh(matmul(a[0], a[1])), a[2]) + a[0];
                 }});
  out.push_back({"softmax", {{4, 8}}, {}, [](const V& a) { return softmax(a[0], 1); }});
  out.push_back({"slice", {{4, 8}}, {}, [](const V& a) { return slice_axis(a[0], 1, 2, 6); }});
  out.push_back({"concatenate", {{4, 2}, {4, 6}}, {}, [](const V& a) {
                   return concatenate({a[0], a[1]}, 1);
                 }});
  out.push_back({"pad", {{4, 4}}, {}, [](const V& a) { return pad(a[0], {{0, 0}, {1, 2}}); }});
  out.push_back(
      {"take", {{8, 4}, {2, 4}}, {float64, int32}, [](const V& a) { return take(a[0], a[1], 0); }});
  out.push_back(
      {"scatter_add", {{8, 4}, {4, 2}, {4, 2, 4}}, {float64, int32, float64}, [](const V& a) {
         return scatter_add(a[0], a[1], a[2], 0);
       }});
  out.push_back(
      {"rms_norm", {{4, 2, 8}, {8}}, {}, [](const V& a) { return rms_norm(a[0], a[1], 1e-6); }});
  out.push_back({"layer_norm", {{4, 2, 8}, {8}, {8}}, {}, [](const V& a) {
                   return layer_norm(a[0], a[1], a[2], 1e-5);
                 }});
  out.push_back({"cross_entropy", {{4, 2, 8}, {4, 2}}, {float64, int32}, [](const V& a) {
                   return cross_entropy_loss(a[0], a[1]);
                 }});
  out.push_back({"cross_entropy_smoothed_zloss_ignored",
                 {{4, 2, 8}, {4, 2}},
                 {float64, int32},
                 [](const V& a) {
                   CrossEntropyOptions o;
                   o.label_smoothing = 0.1;
                   o.z_loss_scale = 1e-3;
                   return cross_entropy_loss(a[0], subtract(a[1], ones_like(a[1])), o);
                 }});
  out.push_back({"attention_gqa", {{2, 4, 4, 8}, {2, 4, 2, 8}, {2, 4, 2, 8}}, {}, [](const V& a) {
                   AttentionOptions o;
                   o.causal = true;
                   return attention(a[0], a[1], a[2], o);
                 }});
  out.push_back(
      {"stop_gradient", {{4, 8}}, {}, [](const V& a) { return stop_gradient(a[0]) * a[0]; }});
  out.push_back({"bitcast",
                 {{4, 8}},
                 {},
                 [](const V& a) { return bitcast(bitcast(a[0], int64), float64); },
                 false});
  out.push_back({"log_softmax", {{4, 8}}, {}, [](const V& a) { return log_softmax(a[0], 0); }});
  out.push_back({"dynamic_slice_update", {{4, 8}, {2, 3}}, {}, [](const V& a) {
                   Tensor starts = array(std::vector<int32_t>{1, 2}, {2});
                   return dynamic_update_slice(a[0], dynamic_slice(a[0], starts, {2, 3}) + a[1],
                                               array(std::vector<int32_t>{2, 4}, {2}));
                 }});
  out.push_back({"conv", {{2, 8, 4}, {3, 4, 4}}, {}, [](const V& a) {
                   return conv(a[0], a[1], {1}, "SAME");
                 }});
  out.push_back({"remat", {{4, 8}, {8, 8}}, {}, [](const V& a) {
                   VectorFn f = checkpoint([](const std::vector<Tensor>& x) {
                     return std::vector<Tensor>{tanh(matmul(x[0], x[1]))};
                   });
                   return f({a[0], a[1]})[0];
                 }});
  out.push_back(
      {"top_k_replicated", {{4, 8}}, {}, [](const V& a) { return top_k(a[0], 3).values; }, false});
  out.push_back({"cumsum_replicated", {{4, 8}}, {}, [](const V& a) { return cumsum(a[0], 1); }});
  out.push_back({"sort_replicated", {{4, 8}}, {}, [](const V& a) { return sort(a[0], 0); }, false});
  return out;
}

class ShardedEqualsUnsharded : public ::testing::TestWithParam<OpCase> {};

TEST_P(ShardedEqualsUnsharded, OnRandomShardings) { check_case(GetParam(), 6); }

INSTANTIATE_TEST_SUITE_P(Ops, ShardedEqualsUnsharded, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(PartitionerTest, MeshInfersOneAxisAndRejectsBadShapes) {
  Mesh m = make_mesh({1, -1, 2}, {"pipeline", "data", "model"}, 8);
  EXPECT_EQ(m.shape, (std::vector<int64_t>{1, 4, 2}));
  EXPECT_THROW(make_mesh({-1, -1}, {"a", "b"}, 4), Error);
  EXPECT_THROW(make_mesh({3, -1}, {"a", "b"}, 4), Error);
  EXPECT_THROW(make_mesh({2, 2}, {"a", "b"}, 8), Error);
  EXPECT_THROW(make_mesh({2, 2}, {"a", "a"}, 4), Error);
  EXPECT_THROW(make_mesh({2}, {"a", "b"}, 2), Error);
}

TEST(PartitionerTest, NamedShardingChecksAxesAndDropsSizeOneAxes) {
  Mesh m{{1, 2, 2}, {"pipeline", "data", "model"}};
  Sharding s = named_sharding(m, {{"data", "pipeline"}, {}, {"model"}}, 3);
  EXPECT_EQ(s.dims, (std::vector<std::vector<int>>{{1}, {}, {2}}));
  EXPECT_EQ(s.local_shape({4, 3, 8}), (Shape{2, 3, 4}));
  EXPECT_THROW(s.local_shape({3, 3, 8}), Error);
  EXPECT_THROW(named_sharding(m, {{"fsdp"}}, 2), Error);
  EXPECT_THROW(named_sharding(m, {{"data"}, {"data"}}, 2), Error);
  EXPECT_THROW(named_sharding(m, {{}, {}, {}}, 2), Error);
}

TEST(PartitionerTest, DevicePutKeepsOnlyTheBlock) {
  ThreadWorld world(4);
  std::atomic<int> bad{0};
  world.run([&](int64_t rank) {
    Tensor x = reshape(astype(arange(32), float32), {4, 8});
    Tensor s = device_put(x, named_sharding(kMesh, {{"data"}, {"model"}}, 2));
    const auto c = kMesh.coords(rank);
    std::vector<float> block = s.local().to_vector<float>();
    std::vector<float> want;
    for (int64_t i = 0; i < 2; ++i) {
      for (int64_t j = 0; j < 4; ++j) want.push_back(float((c[0] * 2 + i) * 8 + c[1] * 4 + j));
    }
    if (block != want || s.local().shape() != Shape{2, 4}) ++bad;
    if (s.to_vector<float>() != x.to_vector<float>()) ++bad;
  });
  EXPECT_EQ(bad.load(), 0);
}

// A data-parallel x FSDP linear layer: the weight's gradient comes out reduce-scattered to the
// weight's own sharding, equal to the single-device gradient.
TEST(PartitionerTest, FsdpGradientIsReduceScatteredAndCorrect) {
  ThreadWorld world(4);
  std::atomic<int> bad{0};
  const Mesh mesh{{2, 2}, {"data", "fsdp"}};
  world.run([&](int64_t) {
    Tensor x = random::normal(random::key(1), {8, 6}, float64);
    Tensor w = random::normal(random::key(2), {6, 4}, float64);
    auto loss = [](const std::vector<Tensor>& a) { return sum(tanh(matmul(a[0], a[1]))); };
    auto want = value_and_grad(loss, {x, w}, {1});
    const Sharding ws = named_sharding(mesh, {{"fsdp"}}, 2);
    Tensor xs = device_put(x, named_sharding(mesh, {{"data", "fsdp"}}, 2));
    Tensor wsh = device_put(w, ws);
    auto got = value_and_grad(loss, {xs, wsh}, {1});
    Tensor g = with_sharding_constraint(got.grads[0], ws);
    std::string why;
    if (!close(values(g), values(want.grads[0]), 1e-12, &why)) ++bad;
    if (g.local().shape() != Shape{3, 4} || !(*g.sharding() == ws)) ++bad;
    if (std::abs(got.value.item<double>() - want.value.item<double>()) > 1e-12) ++bad;
  });
  EXPECT_EQ(bad.load(), 0);
}

TEST(PartitionerTest, CompiledShardedFunctionMatchesEager) {
  ThreadWorld world(4);
  std::atomic<int> bad{0};
  world.run([&](int64_t) {
    Tensor x = random::normal(random::key(3), {8, 8}, float64);
    Tensor w = random::normal(random::key(4), {8, 8}, float64);
    Tensor xs = device_put(x, named_sharding(kMesh, {{"data"}}, 2));
    Tensor wsh = device_put(w, named_sharding(kMesh, {{}, {"model"}}, 2));
    auto fn = [](const std::vector<Tensor>& a) {
      return std::vector<Tensor>{sum(exp(matmul(a[0], a[1]) * 0.1), {1})};
    };
    CompiledFunction f(fn);
    std::vector<double> eager = values(fn({xs, wsh})[0]);
    for (int call = 0; call < 2; ++call) {
      Tensor out = f({xs, wsh})[0];
      if (!out.is_sharded() || values(out) != eager) ++bad;
    }
    if (f.num_traces() != 1) ++bad;
  });
  EXPECT_EQ(bad.load(), 0);
}

// The vocabulary-parallel cross-entropy's graph (reductions across devices between elementwise
// ops) through compile's fusion: the same values and gradients as eager.
TEST(PartitionerTest, CompiledVocabParallelCrossEntropyMatchesEager) {
  ThreadWorld world(4);
  std::atomic<int> bad{0};
  world.run([&](int64_t) {
    Tensor logits = random::normal(random::key(5), {4, 6, 16}, float32);
    Tensor labels = astype(floor(random::uniform(random::key(6), {4, 6}, float32, 0, 16)), int32);
    Tensor ls = device_put(logits, named_sharding(kMesh, {{"data"}, {}, {"model"}}, 3));
    Tensor lb = device_put(labels, named_sharding(kMesh, {{"data"}}, 2));
    auto fn = [](const std::vector<Tensor>& a) {
      auto vg = value_and_grad(
          [&](const std::vector<Tensor>& x) { return sum(cross_entropy_loss(x[0], a[1])); },
          {a[0]});
      return std::vector<Tensor>{vg.value, vg.grads[0]};
    };
    std::vector<Tensor> eager = fn({ls, lb});
    std::vector<Tensor> plain = fn({logits, labels});
    CompiledFunction f(fn);
    std::vector<Tensor> compiled = f({ls, lb});
    for (size_t i = 0; i < 2; ++i) {
      std::string why;
      if (!close(values(compiled[i]), values(eager[i]), 1e-6, &why)) ++bad;
      if (!close(values(eager[i]), values(plain[i]), 1e-5, &why)) ++bad;
    }
  });
  EXPECT_EQ(bad.load(), 0);
}

TEST(PartitionerTest, MixingMeshesIsAnError) {
  ThreadWorld world(2);
  world.run([&](int64_t) {
    Mesh a{{2}, {"data"}}, b{{2}, {"model"}};
    Tensor x = device_put(zeros({4}), named_sharding(a, {{"data"}}, 1));
    Tensor y = device_put(zeros({4}), named_sharding(b, {{"model"}}, 1));
    EXPECT_THROW(x + y, Error);
  });
}

}  // namespace
}  // namespace axlearn::dist
