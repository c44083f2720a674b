// TransformerLayer with cross-attention against a naive f64 reference written with loops, and
// the layout of RepeatedTransformerLayer: AXLearn's key order (split_prng_key, checked against
// JAX), initialisation equal to a stack of layers, and outputs / gradients equal to
// StackedTransformerLayer when the repeated weights are the stacked ones stacked on axis 0.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"
#include "axlearn/layers/decoder.h"

namespace axlearn::layers {
namespace {

// ---- a naive reference of the layer (prenorm LayerNorm, MHA with biases, ReLU FFN) ----

using Vec = std::vector<double>;

struct Params {
  const NestedTensor& p;
  Vec operator()(const std::string& path) const {
    return p.at_path(path).tensor().to_vector<double>();
  }
};

// x (T, D) row-major -> layer-normed (T, D).
Vec ref_layer_norm(const Vec& x, int64_t t, int64_t d, const Vec& scale, const Vec& bias,
                   double eps) {
  Vec y(x.size());
  for (int64_t i = 0; i < t; ++i) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < d; ++j) mu += x[size_t(i * d + j)];
    mu /= double(d);
    for (int64_t j = 0; j < d; ++j) var += std::pow(x[size_t(i * d + j)] - mu, 2);
    var /= double(d);
    for (int64_t j = 0; j < d; ++j) {
      y[size_t(i * d + j)] =
          (x[size_t(i * d + j)] - mu) / std::sqrt(var + eps) * scale[size_t(j)] + bias[size_t(j)];
    }
  }
  return y;
}

// One batch row. q_in (T, Dq), kv_in (S, Dk) -> (T, Dq); bias (T, S) added to the logits.
Vec ref_attention(const Params& P, const std::string& prefix, const Vec& q_in, const Vec& kv_in,
                  int64_t t, int64_t s, int64_t dq, int64_t dk, int64_t n, int64_t h,
                  const Vec& bias) {
  auto proj = [&](const std::string& name, const Vec& in, int64_t rows, int64_t din) {
    Vec w = P(prefix + "input_linear/" + name + "/weight"),
        b = P(prefix + "input_linear/" + name + "/bias");
    Vec out(size_t(rows * n * h));  // (rows, N, H)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < n * h; ++k) {
        double acc = b[size_t(k)];
        for (int64_t j = 0; j < din; ++j) acc += in[size_t(r * din + j)] * w[size_t(j * n * h + k)];
        out[size_t(r * n * h + k)] = acc;
      }
    }
    return out;
  };
  Vec q = proj("q_proj", q_in, t, dq), k = proj("k_proj", kv_in, s, dk),
      v = proj("v_proj", kv_in, s, dk);
  Vec ctx(size_t(t * n * h), 0.0);
  for (int64_t head = 0; head < n; ++head) {
    for (int64_t i = 0; i < t; ++i) {
      Vec logits(static_cast<size_t>(s));
      double mx = -INFINITY;
      for (int64_t j = 0; j < s; ++j) {
        double acc = 0;
        for (int64_t e = 0; e < h; ++e) {
          acc += q[size_t((i * n + head) * h + e)] * k[size_t((j * n + head) * h + e)];
        }
        logits[size_t(j)] = acc / std::sqrt(double(h)) + bias[size_t(i * s + j)];
        mx = std::max(mx, logits[size_t(j)]);
      }
      double z = 0;
      for (double& l : logits) z += (l = std::exp(l - mx));
      for (int64_t j = 0; j < s; ++j) {
        for (int64_t e = 0; e < h; ++e) {
          ctx[size_t((i * n + head) * h + e)] +=
              logits[size_t(j)] / z * v[size_t((j * n + head) * h + e)];
        }
      }
    }
  }
  Vec w = P(prefix + "output_linear/weight"), b = P(prefix + "output_linear/bias");  // (Dq, N, H)
  Vec out(size_t(t * dq));
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j < dq; ++j) {
      double acc = b[size_t(j)];
      for (int64_t k2 = 0; k2 < n * h; ++k2)
        acc += ctx[size_t(i * n * h + k2)] * w[size_t(j * n * h + k2)];
      out[size_t(i * dq + j)] = acc;
    }
  }
  return out;
}

// Prenorm attention sub-layer: x + attention(norm(x), source).
Vec ref_attention_layer(const Params& P, const std::string& prefix, const Vec& x, const Vec* source,
                        int64_t t, int64_t s, int64_t d, int64_t ds, int64_t n, const Vec& bias) {
  Vec normed = ref_layer_norm(x, t, d, P(prefix + "norm/scale"), P(prefix + "norm/bias"), 1e-8);
  Vec a = ref_attention(P, prefix + "attention/", normed, source ? *source : normed, t,
                        source ? s : t, d, source ? ds : d, n, d / n, bias);
  for (size_t i = 0; i < a.size(); ++i) a[i] += x[i];
  return a;
}

Vec ref_feed_forward(const Params& P, const Vec& x, int64_t t, int64_t d, int64_t hidden) {
  Vec normed =
      ref_layer_norm(x, t, d, P("feed_forward/norm/scale"), P("feed_forward/norm/bias"), 1e-8);
  Vec w1 = P("feed_forward/linear1/weight"), b1 = P("feed_forward/linear1/bias");
  Vec w2 = P("feed_forward/linear2/weight"), b2 = P("feed_forward/linear2/bias");
  Vec y(x);
  for (int64_t i = 0; i < t; ++i) {
    Vec hid(static_cast<size_t>(hidden));
    for (int64_t k = 0; k < hidden; ++k) {
      double acc = b1[size_t(k)];
      for (int64_t j = 0; j < d; ++j) acc += normed[size_t(i * d + j)] * w1[size_t(j * hidden + k)];
      hid[size_t(k)] = std::max(acc, 0.0);
    }
    for (int64_t j = 0; j < d; ++j) {
      double acc = b2[size_t(j)];
      for (int64_t k = 0; k < hidden; ++k) acc += hid[size_t(k)] * w2[size_t(k * d + j)];
      y[size_t(i * d + j)] += acc;
    }
  }
  return y;
}

constexpr int64_t kB = 2, kT = 3, kS = 5, kD = 8, kDs = 6, kN = 2, kHidden = 12;

ConfigPtr<TransformerLayer::Config> cross_layer_config() {
  auto cfg = TransformerLayer::default_config();
  cfg->name = "layer";
  cfg->input_dim = kD;
  cfg->dtype = float64;
  cfg->self_attention->attention->num_heads = kN;
  cfg->self_attention->attention->causal = true;
  cfg->feed_forward->hidden_dim = kHidden;
  auto cross = TransformerAttentionLayer::default_config();
  cross->source_dim = kDs;
  cross->attention->num_heads = kN;
  cfg->cross_attention = cross;
  return cfg;
}

// Every parameter redrawn from a normal distribution (biases and norm scales included).
NestedTensor randomized(const NestedTensor& params, uint64_t seed) {
  uint32_t i = 0;
  return params.map([&](const Tensor& p) {
    return astype(random::normal(random::fold_in(random::key(seed), i++), p.shape()) * 0.5,
                  p.dtype());
  });
}

void check_against_reference(bool with_biases) {
  auto layer = cross_layer_config()->instantiate<TransformerLayer>(nullptr);
  NestedTensor params = randomized(layer->initialize_parameters_recursively(random::key(0)), 1);
  Tensor x = astype(random::normal(random::key(2), {kB, kT, kD}), float64);
  Tensor src = astype(random::normal(random::key(3), {kB, kS, kDs}), float64);
  CrossAttentionInputs cross{src, Tensor()};
  Vec cross_bias(size_t(kB * kT * kS), 0.0);
  if (with_biases) {
    cross.logit_biases = astype(random::normal(random::key(4), {kB, 1, kT, kS}), float64);
    cross_bias = cross.logit_biases.to_vector<double>();
  }
  Tensor y = functional_call(*layer, params, std::nullopt, false, [&] {
               return layer->forward(x, {}, cross);
             }).outputs;
  ASSERT_EQ(y.shape(), (Shape{kB, kT, kD}));
  // The fused kernel runs the causal self-attention, and the cross-attention unless it has biases.
  int fused = 0;
  for (const Tensor& t : topological_order({y}))
    fused += std::string(t.primitive()->name()) == "attention";
  EXPECT_EQ(fused, with_biases ? 1 : 2);
  Params P{params};
  Vec xv = x.to_vector<double>(), sv = src.to_vector<double>(), got = y.to_vector<double>();
  Vec causal(size_t(kT * kT));
  for (int64_t i = 0; i < kT; ++i) {
    for (int64_t j = 0; j < kT; ++j) causal[size_t(i * kT + j)] = j <= i ? 0.0 : -INFINITY;
  }
  for (int64_t b = 0; b < kB; ++b) {
    Vec xb(xv.begin() + b * kT * kD, xv.begin() + (b + 1) * kT * kD);
    Vec sb(sv.begin() + b * kS * kDs, sv.begin() + (b + 1) * kS * kDs);
    Vec cb(cross_bias.begin() + b * kT * kS, cross_bias.begin() + (b + 1) * kT * kS);
    Vec h = ref_attention_layer(P, "self_attention/", xb, nullptr, kT, kT, kD, kD, kN, causal);
    h = ref_attention_layer(P, "cross_attention/", h, &sb, kT, kS, kD, kDs, kN, cb);
    h = ref_feed_forward(P, h, kT, kD, kHidden);
    for (size_t i = 0; i < h.size(); ++i) {
      EXPECT_NEAR(got[size_t(b * kT * kD) + i], h[i], 1e-10 * (1 + std::fabs(h[i])))
          << "batch " << b << " element " << i;
    }
  }
}

TEST(CrossAttentionTest, LayerMatchesNaiveReferenceOnTheFusedPath) {
  check_against_reference(false);
}

TEST(CrossAttentionTest, LayerMatchesNaiveReferenceWithLogitBiases) {
  check_against_reference(true);
}

TEST(CrossAttentionTest, ParametersFollowAXLearnsLayoutAndKeyOrder) {
  auto with = cross_layer_config()->instantiate<TransformerLayer>(nullptr);
  auto specs = with->create_parameter_specs_recursively();
  EXPECT_EQ(shape_str(specs.at_path("cross_attention/attention/input_linear/k_proj/weight").shape),
            "(6, 2, 4)");  // (source_dim, N, H)
  EXPECT_EQ(shape_str(specs.at_path("cross_attention/attention/input_linear/q_proj/weight").shape),
            "(8, 2, 4)");
  // cross_attention is added after feed_forward, so the keys of the other children do not move.
  auto no_cross_cfg = cross_layer_config();
  no_cross_cfg->cross_attention = nullptr;
  auto without = no_cross_cfg->instantiate<TransformerLayer>(nullptr);
  NestedTensor a = with->initialize_parameters_recursively(random::key(9));
  NestedTensor b = without->initialize_parameters_recursively(random::key(9));
  for (const auto& [path, t] : b.flatten_with_paths()) {
    EXPECT_EQ(a.at_path(path).tensor().to_vector<double>(), t.to_vector<double>()) << path;
  }
  EXPECT_TRUE(a.contains("cross_attention"));
}

TEST(CrossAttentionTest, MisuseIsAnErrorNamingTheLayer) {
  auto cfg = cross_layer_config();
  auto unsized = TransformerAttentionLayer::default_config();  // source_dim left unset
  unsized->attention->num_heads = kN;
  cfg->cross_attention = unsized;
  try {
    cfg->instantiate<TransformerLayer>(nullptr);
    ADD_FAILURE() << "expected an Error for the missing source_dim";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("source_dim"), std::string::npos) << e.what();
  }
  auto no_cross_cfg = cross_layer_config();
  no_cross_cfg->cross_attention = nullptr;
  auto layer = no_cross_cfg->instantiate<TransformerLayer>(nullptr);
  NestedTensor params = layer->initialize_parameters_recursively(random::key(0));
  Tensor x = zeros({1, 2, kD}, float64);
  try {
    functional_call(*layer, params, std::nullopt, false, [&] {
      return layer->forward(x, {}, {zeros({1, 3, kDs}, float64), Tensor()});
    });
    ADD_FAILURE() << "expected an Error for cross data without cross_attention";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cross_attention"), std::string::npos) << e.what();
  }
}

// ---- RepeatedTransformerLayer layout ----

TEST(RepeatLayoutTest, SplitPrngKeyDrawsKeysLikeAXLearn) {
  // AXLearn's utils.split_prng_key(key, 3): `key, k_i = jax.random.split(key)` three times,
  // computed with jax 0.10.2 (jax_threefry_partitionable=True) for jax.random.PRNGKey(7).
  Tensor keys = split_prng_key(random::key(7), 3);
  EXPECT_EQ(keys.to_vector<int64_t>(), (std::vector<int64_t>{195045567, 4062205631, 533473832,
                                                             2443621858, 2080299353, 3132841691}));
}

ConfigPtr<TransformerLayer::Config> small_layer() {
  auto layer = TransformerLayer::default_config();
  layer->self_attention->attention->num_heads = 2;
  layer->self_attention->attention->causal = true;
  layer->feed_forward->hidden_dim = 12;
  auto cross = TransformerAttentionLayer::default_config();
  cross->source_dim = kDs;
  cross->attention->num_heads = 2;
  layer->cross_attention = cross;
  return layer;
}

template <typename StackConfig>
std::unique_ptr<BaseStackedTransformerLayer> make_stack(ConfigPtr<StackConfig> cfg) {
  cfg->name = "stack";
  cfg->input_dim = kD;
  cfg->num_layers = 3;
  cfg->layer = small_layer();
  return cfg->template instantiate<BaseStackedTransformerLayer>(nullptr);
}

// {"repeat": {"layer": leaves stacked on axis 0}} from {"layer0": ..., "layer1": ..., ...}.
NestedTensor stacked_as_repeat(const NestedTensor& stacked_params, int64_t n) {
  std::vector<const NestedTensor*> layers;
  for (int64_t i = 0; i < n; ++i) layers.push_back(&stacked_params.at("layer" + std::to_string(i)));
  NestedTensor out;
  out["repeat"]["layer"] =
      NestedTensor::zip_map(layers, [](const std::vector<Tensor>& v) { return stack(v, 0); });
  return out;
}

TEST(RepeatLayoutTest, RepeatInitialisesLikeAStackOfLayers) {
  auto stacked = make_stack(StackedTransformerLayer::default_config());
  auto repeated = make_stack(RepeatedTransformerLayer::default_config());
  NestedTensor s = stacked->initialize_parameters_recursively(random::key(5));
  // The Repeat child given the key the stack got draws layer i exactly as the stack's child i.
  const auto& repeat = static_cast<const BaseLayer&>(repeated->child("repeat"));
  NestedTensor r = repeat.initialize_parameters_recursively(random::key(5));
  NestedTensor want = stacked_as_repeat(s, 3).at("repeat");
  auto got_leaves = r.flatten_with_paths(), want_leaves = want.flatten_with_paths();
  ASSERT_EQ(got_leaves.size(), want_leaves.size());
  for (size_t i = 0; i < got_leaves.size(); ++i) {
    ASSERT_EQ(got_leaves[i].first, want_leaves[i].first);
    EXPECT_EQ(shape_str(got_leaves[i].second.shape()).substr(0, 3), "(3,") << got_leaves[i].first;
    EXPECT_EQ(got_leaves[i].second.to_vector<double>(), want_leaves[i].second.to_vector<double>())
        << got_leaves[i].first;
  }
  // And the whole RepeatedTransformerLayer tree is repeat/layer/<layer's tree>.
  NestedTensor full = repeated->initialize_parameters_recursively(random::key(5));
  EXPECT_EQ(shape_str(full.at_path("repeat/layer/cross_attention/attention/input_linear/k_proj/"
                                   "weight")
                          .tensor()
                          .shape()),
            "(3, 6, 2, 4)");
}

TEST(RepeatLayoutTest, StackedAndRepeatedGiveIdenticalOutputsAndGradients) {
  auto stacked = make_stack(StackedTransformerLayer::default_config());
  auto repeated = make_stack(RepeatedTransformerLayer::default_config());
  NestedTensor s = randomized(stacked->initialize_parameters_recursively(random::key(6)), 2);
  NestedTensor r = stacked_as_repeat(s, 3);
  Tensor x = random::normal(random::key(7), {kB, kT, kD});
  Tensor src = random::normal(random::key(8), {kB, kS, kDs});
  Tensor w = random::normal(random::key(9), {kB, kT, kD});
  auto loss = [&](BaseStackedTransformerLayer& m) {
    return [&](const NestedTensor& p) {
      return functional_call(m, p, std::nullopt, false,
                             [&] {
                               return sum(m.forward(x, {}, {src, Tensor()}) * w);
                             })
          .outputs;
    };
  };
  NestedValueAndGrad gs = value_and_grad(loss(*stacked), s);
  NestedValueAndGrad gr = value_and_grad(loss(*repeated), r);
  EXPECT_EQ(gr.value.item<double>(), gs.value.item<double>());
  NestedTensor want = stacked_as_repeat(gs.grads, 3);
  for (const auto& [path, g] : want.flatten_with_paths()) {
    EXPECT_EQ(gr.grads.at_path(path).tensor().to_vector<double>(), g.to_vector<double>()) << path;
  }
}

}  // namespace
}  // namespace axlearn::layers
