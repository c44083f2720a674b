// remat_spec on TransformerLayer: a small decoder trained with remat gives the same loss and
// gradients as without (Stacked and Repeated stacks), peaks lower in memory, keeps summaries
// added inside the rematted layer, recomputes dropout with the same mask (finite differences),
// and does nothing outside training.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/remat.h"
#include "axlearn/core/transforms.h"
#include "axlearn/layers/decoder.h"
#include "test_configs.h"

namespace axlearn::layers {
namespace {

// RMSNorm that also reports its input's mean and a module output: summaries from inside a layer.
class SummarizingRMSNorm : public RMSNorm {
 public:
  AXLEARN_CONFIGURABLE(SummarizingRMSNorm, "axlearn.test.SummarizingRMSNorm")
  SummarizingRMSNorm(const Config& cfg, Module* parent) : RMSNorm(cfg, parent) {}
  Tensor forward(const Tensor& x) const override {
    auto scope = enter_context();
    add_summary("input_mean", mean(x));
    add_module_output("input_max", max(x));
    return RMSNorm::forward(x);
  }
};

ConfigPtr<Model::Config> decoder_config(bool stacked, bool remat, int64_t dim = 16,
                                        int64_t vocab = 32, int64_t layers = 3) {
  auto cfg = llama_like_config(dim, vocab, layers, true);
  if (stacked) {
    auto stack = StackedTransformerLayer::default_config();
    stack->num_layers = layers;
    stack->layer = cfg->decoder->transformer->layer.get();
    cfg->decoder->transformer = stack;
  }
  if (remat) cfg->decoder->transformer->layer->remat_spec = make_config<RematSpec>();
  return cfg;
}

struct Batch {
  Tensor ids, labels;
};

Batch make_batch(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  auto ints = [&](uint64_t k) {
    return astype(floor(random::uniform(random::key(k), {b, t}, float32, 2, double(vocab))), int32);
  };
  Tensor ids = ints(seed), labels = ints(seed + 1);
  return {ids, labels};
}

NestedValueAndGrad train_grads(Model& model, const NestedTensor& params, const Batch& batch) {
  return value_and_grad(
      [&](const NestedTensor& p) {
        return functional_call(model, p, random::key(7), true,
                               [&] { return model.forward(batch.ids, batch.labels).loss; })
            .outputs;
      },
      params);
}

void expect_bitwise_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  auto g = got.to_vector<double>(), w = want.to_vector<double>();
  int bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (g[i] != w[i] && bad++ < 3)
      ADD_FAILURE() << what << "[" << i << "]: " << g[i] << " vs " << w[i];
  }
}

bool graph_has_remat(const std::vector<Tensor>& outs) {
  for (const Tensor& t : topological_order(outs)) {
    if (dynamic_cast<const detail::RematCall*>(t.primitive())) return true;
  }
  return false;
}

class RematDecoderTest : public ::testing::TestWithParam<bool> {};

TEST_P(RematDecoderTest, LossAndEveryGradientEqualTheRunWithoutRemat) {
  const bool stacked = GetParam();
  auto plain = decoder_config(stacked, false)->instantiate<Model>(nullptr);
  auto remat = decoder_config(stacked, true)->instantiate<Model>(nullptr);
  NestedTensor params = plain->initialize_parameters_recursively(random::key(3));
  Batch batch = make_batch(2, 8, 32, 11);
  NestedValueAndGrad want = train_grads(*plain, params, batch);
  NestedValueAndGrad got = train_grads(*remat, params, batch);
  EXPECT_TRUE(graph_has_remat({got.value})) << "remat_spec did not wrap the layers";
  EXPECT_FALSE(graph_has_remat({want.value}));
  expect_bitwise_equal(got.value, want.value, "loss");
  auto want_grads = want.grads.flatten_with_paths();
  auto got_grads = got.grads.flatten_with_paths();
  ASSERT_EQ(got_grads.size(), want_grads.size());
  for (size_t i = 0; i < got_grads.size(); ++i) {
    ASSERT_EQ(got_grads[i].first, want_grads[i].first);
    expect_bitwise_equal(got_grads[i].second, want_grads[i].second, got_grads[i].first);
  }
}

INSTANTIATE_TEST_SUITE_P(Stacks, RematDecoderTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Stacked" : "Repeated"; });

// Bytes allocated beyond what was in use before fn ran, at the peak.
template <typename Fn>
size_t peak_extra_bytes(Fn&& fn) {
  CpuAllocator& a = CpuAllocator::instance();
  const size_t before = a.bytes_in_use();
  a.reset_peak();
  fn();
  return a.peak_bytes() - before;
}

TEST(RematTransformerTest, TrainingStepPeaksLowerWithRemat) {
  // Activations dominate: (B, T, D) = 128 KiB each, several dozen per layer; params ~50 KiB.
  const int64_t dim = 32, vocab = 64, layers = 4;
  auto plain = decoder_config(false, false, dim, vocab, layers)->instantiate<Model>(nullptr);
  auto remat = decoder_config(false, true, dim, vocab, layers)->instantiate<Model>(nullptr);
  NestedTensor params = plain->initialize_parameters_recursively(random::key(5));
  eval(params);
  Batch batch = make_batch(8, 128, vocab, 21);
  eval(batch.ids, batch.labels);
  auto step = [&](Model& m) {
    NestedValueAndGrad vg = train_grads(m, params, batch);
    std::vector<Tensor> outs = vg.grads.leaves();
    outs.push_back(vg.value);
    eval(outs);
    return vg;
  };
  NestedValueAndGrad a, b;
  const size_t plain_peak = peak_extra_bytes([&] { a = step(*plain); });
  const size_t remat_peak = peak_extra_bytes([&] { b = step(*remat); });
  EXPECT_LT(double(remat_peak), 0.7 * double(plain_peak))
      << "peak with remat " << remat_peak << " bytes, without " << plain_peak;
  expect_bitwise_equal(b.value, a.value, "loss");
}

ConfigPtr<TransformerLayer::Config> summarizing_layer_config(bool remat, double dropout) {
  auto layer = llama_like_config(8, 16, 1, true)->decoder->transformer->layer.get();
  layer->name = "layer";
  layer->input_dim = 8;
  layer->feed_forward->norm = SummarizingRMSNorm::default_config().set("eps", 1e-5);
  layer->feed_forward->dropout->rate = dropout;
  if (remat) layer->remat_spec = make_config<RematSpec>();
  return layer;
}

TEST(RematTransformerTest, SummariesAndModuleOutputsInsideTheLayerAreKept) {
  auto plain = summarizing_layer_config(false, 0.0)->instantiate<TransformerLayer>(nullptr);
  auto remat = summarizing_layer_config(true, 0.0)->instantiate<TransformerLayer>(nullptr);
  NestedTensor params = plain->initialize_parameters_recursively(random::key(1));
  Tensor x = random::normal(random::key(2), {2, 5, 8});
  auto run = [&](TransformerLayer& l) {
    return functional_call(l, params, random::key(3), true, [&] { return l.forward(x); });
  };
  auto want = run(*plain);
  auto got = run(*remat);
  EXPECT_TRUE(graph_has_remat({got.outputs}));
  expect_bitwise_equal(got.outputs, want.outputs, "output");
  auto ws = want.output_collection.summaries();
  auto gs = got.output_collection.summaries();
  ASSERT_EQ(gs.size(), 1u);
  ASSERT_EQ(ws.size(), 1u);
  EXPECT_EQ(gs[0].first, "feed_forward/norm/input_mean") << "same path as without remat";
  EXPECT_EQ(gs[0].first, ws[0].first);
  EXPECT_EQ(gs[0].second.kind(), Summary::Kind::kScalar);
  expect_bitwise_equal(gs[0].second.value(), ws[0].second.value(), "summary");
  const NestedTensor& mo = got.output_collection.module_outputs();
  expect_bitwise_equal(
      mo.at_path("feed_forward/norm/input_max").tensor(),
      want.output_collection.module_outputs().at_path("feed_forward/norm/input_max").tensor(),
      "module output");
}

TEST(RematTransformerTest, DropoutGradientsMatchFiniteDifferences) {
  // In f64, with dropout 0.5 in the feed-forward: the recomputation must redraw the same mask, or
  // the analytic gradient would not match central differences of the (fixed-key) function.
  auto cfg = summarizing_layer_config(true, 0.5);
  cfg->dtype = float64;
  auto layer = cfg->instantiate<TransformerLayer>(nullptr);
  NestedTensor params = layer->initialize_parameters_recursively(random::key(4));
  Tensor x = astype(random::normal(random::key(5), {1, 4, 8}), float64);
  Tensor w = astype(random::normal(random::key(6), {1, 4, 8}), float64);
  auto f = [&](const Tensor& in) {
    return functional_call(*layer, params, random::key(8), true,
                           [&] { return sum(layer->forward(in) * w); })
        .outputs;
  };
  auto g = grad([&](const std::vector<Tensor>& p) { return f(p[0]); })({x})[0];
  EXPECT_TRUE(graph_has_remat({f(x)}));
  auto gv = g.to_vector<double>();
  auto xv = x.to_vector<double>();
  const double h = 1e-6;
  for (size_t i = 0; i < xv.size(); i += 3) {
    auto up = xv, down = xv;
    up[i] += h;
    down[i] -= h;
    const double fd =
        (f(array(up, x.shape())).item<double>() - f(array(down, x.shape())).item<double>()) /
        (2 * h);
    EXPECT_NEAR(gv[i], fd, 1e-6 * (1 + std::fabs(fd))) << "element " << i;
  }
}

TEST(RematTransformerTest, EvaluationDoesNotRemat) {
  auto layer = summarizing_layer_config(true, 0.0)->instantiate<TransformerLayer>(nullptr);
  NestedTensor params = layer->initialize_parameters_recursively(random::key(1));
  Tensor x = random::normal(random::key(2), {1, 3, 8});
  auto out =
      functional_call(*layer, params, std::nullopt, false, [&] { return layer->forward(x); });
  EXPECT_FALSE(graph_has_remat({out.outputs}));
}

}  // namespace
}  // namespace axlearn::layers
