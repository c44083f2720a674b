// Parity of the layers with PyTorch: tests/parity/gen_layers_vectors.py writes each layer in
// plain torch (f64) from fixed weights; here the same layer is built from its config, loaded with
// those weights and run in f32. Outputs and every gradient must agree to 1e-5 relative (the
// largest |error| over the largest |reference| of each tensor); the worst error is printed.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"
#include "axlearn/layers/decoder.h"

namespace axlearn::layers {
namespace {

const nlohmann::json& vectors() {
  static const nlohmann::json j = [] {
    std::ifstream f(std::string(AXLEARN_SOURCE_DIR) + "/tests/parity/testdata/layers_vectors.json");
    if (!f) throw std::runtime_error("missing tests/parity/testdata/layers_vectors.json");
    return nlohmann::json::parse(f);
  }();
  return j;
}

const nlohmann::json& kase(const std::string& name) { return vectors()["cases"][name]; }

Tensor load(const nlohmann::json& t, Dtype dtype = float32) {
  Shape shape = t["shape"].get<std::vector<int64_t>>();
  Tensor x = array(t["data"].get<std::vector<double>>(), shape, float64);
  return astype(x, dtype);
}

double rel_error(const Tensor& got, const nlohmann::json& ref) {
  Tensor r = load(ref, float64);
  EXPECT_EQ(shape_str(got.shape()), shape_str(r.shape()));
  if (got.shape() != r.shape()) return 1e9;
  const double err = max(abs(astype(got, float64) - r)).item<double>();
  const double scale = max(abs(r)).item<double>();
  return err / std::max(scale, 1e-30);
}

// Sets leaf `path` ("a/b/c") of tree.
void set_path(NestedTensor& tree, const std::string& path, const Tensor& value) {
  NestedTensor* node = &tree;
  std::stringstream ss(path);
  std::string part, next;
  std::getline(ss, part, '/');
  while (std::getline(ss, next, '/')) {
    node = &(*node)[part];
    part = next;
  }
  (*node)[part] = value;
}

// The layer's initial parameters with every parameter of the case replaced; the case must name
// exactly the layer's parameters.
NestedTensor load_params(const BaseLayer& layer, const nlohmann::json& c) {
  NestedTensor params = layer.initialize_parameters_recursively(random::key(0));
  auto flat = params.flatten_with_paths();
  EXPECT_EQ(flat.size(), c["params"].size());
  for (const auto& [path, leaf] : flat) {
    if (!c["params"].contains(path)) {
      ADD_FAILURE() << "case has no parameter " << path;
      continue;
    }
    Tensor v = load(c["params"][path]);
    EXPECT_EQ(shape_str(v.shape()), shape_str(leaf.shape())) << path;
    set_path(params, path, v);
  }
  return params;
}

// Runs y = fn(x, params) and checks y and the gradients of sum(y * cotangent) against the case.
double check_layer(BaseLayer& layer, const nlohmann::json& c,
                   const std::function<Tensor(const Tensor&)>& fn, const std::string& input = "x",
                   bool grad_input = true) {
  NestedTensor tree = load_params(layer, c);
  Tensor x = load(c["inputs"][input], grad_input ? float32 : int32);
  if (grad_input) tree["x"] = x;
  Tensor cot = load(c["cotangent"]);
  Tensor y;
  auto loss = [&](const NestedTensor& p) {
    auto out = functional_call(layer, p, random::key(1), false,
                               [&] { return fn(grad_input ? p.at("x").tensor() : x); });
    y = out.outputs;
    return sum(out.outputs * cot);
  };
  NestedValueAndGrad vg = value_and_grad(loss, tree);
  double worst = rel_error(y, c["outputs"]["y"]);
  for (const auto& [path, ref] : c["grads"].items()) {
    const double e = rel_error(vg.grads.at_path(path).tensor(), ref);
    EXPECT_LT(e, 1e-5) << "gradient of " << path;
    worst = std::max(worst, e);
  }
  EXPECT_LT(worst, 1e-5);
  return worst;
}

void report(const std::string& name, double err) {
  std::cout << "[parity] " << name << ": largest relative error " << err << "\n";
}

TEST(LayersParityTest, LinearMatchesTorch) {
  auto cfg = Linear::default_config();
  cfg->name = "linear";
  cfg->input_dim = 8;
  cfg->output_dim = 5;
  auto layer = cfg->instantiate<Linear>(nullptr);
  report("linear",
         check_layer(*layer, kase("linear"), [&](const Tensor& x) { return layer->forward(x); }));
}

TEST(LayersParityTest, RMSNormMatchesTorch) {
  auto cfg = RMSNorm::default_config();
  cfg->name = "norm";
  cfg->input_dim = 8;
  cfg->eps = 1e-5;
  auto layer = cfg->instantiate<RMSNorm>(nullptr);
  report("rms_norm",
         check_layer(*layer, kase("rms_norm"), [&](const Tensor& x) { return layer->forward(x); }));
}

TEST(LayersParityTest, LayerNormMatchesTorch) {
  auto cfg = LayerNorm::default_config();
  cfg->name = "norm";
  cfg->input_dim = 8;
  cfg->eps = 1e-5;
  auto layer = cfg->instantiate<LayerNorm>(nullptr);
  report("layer_norm", check_layer(*layer, kase("layer_norm"),
                                   [&](const Tensor& x) { return layer->forward(x); }));
}

TEST(LayersParityTest, EmbeddingMatchesTorch) {
  auto cfg = Embedding::default_config();
  cfg->name = "emb";
  cfg->num_embeddings = 11;
  cfg->dim = 4;
  auto layer = cfg->instantiate<Embedding>(nullptr);
  report("embedding", check_layer(
                          *layer, kase("embedding"),
                          [&](const Tensor& ids) { return layer->forward(ids); }, "ids",
                          /*grad_input=*/false));
}

ConfigPtr<TransformerFeedForwardLayer::Config> swiglu_ffn_config() {
  auto cfg = TransformerFeedForwardLayer::default_config();
  cfg->input_dim = 8;
  cfg->hidden_dim = int64_t(12);
  cfg->activation = std::vector<std::string>{"nn.silu", "linear"};
  cfg->norm = RMSNorm::default_config().set("eps", 1e-5);
  cfg->linear1->bias = false;
  cfg->linear2->bias = false;
  return cfg;
}

TEST(LayersParityTest, SwiGLUFeedForwardMatchesTorch) {
  auto cfg = swiglu_ffn_config();
  cfg->name = "ffn";
  auto layer = cfg->instantiate<TransformerFeedForwardLayer>(nullptr);
  report("ffn_swiglu", check_layer(*layer, kase("ffn_swiglu"),
                                   [&](const Tensor& x) { return layer->forward(x); }));
}

TEST(LayersParityTest, GeluPostnormFeedForwardMatchesTorch) {
  auto cfg = TransformerFeedForwardLayer::default_config();
  cfg->name = "ffn";
  cfg->input_dim = 8;
  cfg->hidden_dim = int64_t(12);
  cfg->activation = std::string("gelu");
  cfg->structure = NormStructure::kPostnorm;
  cfg->norm = LayerNorm::default_config().set("eps", 1e-6);
  auto layer = cfg->instantiate<TransformerFeedForwardLayer>(nullptr);
  report("ffn_gelu_postnorm", check_layer(*layer, kase("ffn_gelu_postnorm"),
                                          [&](const Tensor& x) { return layer->forward(x); }));
}

struct AttentionCase {
  std::string name;
  int64_t num_kv_heads;
  std::optional<double> theta;  // rotary when set
  std::string layout;           // "grouped", "fused", "fused_grouped"
  bool causal = true;
  std::optional<int64_t> window;
  std::optional<double> cap;
};

ConfigPtr<BaseQKVLinear::Config> qkv_config(const AttentionCase& a) {
  ConfigPtr<BaseQKVLinear::Config> in;
  if (a.layout == "fused") {
    in = FusedQKVLinear::default_config();
  } else if (a.layout == "fused_grouped") {
    in = FusedGroupedQKVLinear::default_config().set("num_kv_heads", a.num_kv_heads);
  } else {
    in = GroupedQKVLinear::default_config().set("num_kv_heads", a.num_kv_heads);
  }
  in->set("layer", MultiheadInputLinear::default_config().set("bias", false));
  if (!a.theta) return in;
  auto rope = RoFormerQKVLinear::default_config();
  rope->input_linear = in;
  rope->rope_pos_emb_layer->theta = *a.theta;
  return rope;
}

ConfigPtr<MultiheadAttention::Config> attention_config(const AttentionCase& a) {
  auto cfg = GroupedQueryAttention::default_config();
  cfg->query_dim = 8;
  cfg->key_dim = 8;
  cfg->value_dim = 8;
  cfg->num_heads = 4;
  cfg->per_head_dim = int64_t(4);
  cfg->input_linear = qkv_config(a);
  cfg->output_linear->bias = false;
  cfg->causal = a.causal && !a.window;
  if (a.window) {
    cfg->mask = SlidingWindowCausalMask::default_config().set("sliding_window_size", *a.window);
  }
  cfg->atten_logit_cap = a.cap;
  return cfg;
}

class AttentionParityTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionParityTest, MatchesTorch) {
  const AttentionCase& a = GetParam();
  auto cfg = attention_config(a);
  cfg->name = "attention";
  auto layer = cfg->instantiate<MultiheadAttention>(nullptr);
  const auto& c = kase(a.name);
  Tensor seg;
  if (c["inputs"].contains("segment_ids")) seg = load(c["inputs"]["segment_ids"], int32);
  report(a.name, check_layer(*layer, c, [&](const Tensor& x) {
           AttentionInputs in;
           in.segment_ids = seg;
           return layer->forward(x, in).data;
         }));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AttentionParityTest,
    ::testing::Values(
        AttentionCase{"mha_causal", 4, std::nullopt, "grouped", true, std::nullopt, std::nullopt},
        AttentionCase{"mha_fused_causal_rope", 4, 10000.0, "fused", true, std::nullopt,
                      std::nullopt},
        AttentionCase{"gqa_rope_causal", 2, 10000.0, "grouped", true, std::nullopt, std::nullopt},
        AttentionCase{"gqa_fused_rope_sliding_window", 2, 500000.0, "fused_grouped", true, 2,
                      std::nullopt},
        AttentionCase{"mqa_rope_segments", 1, 10000.0, "grouped", true, std::nullopt, std::nullopt},
        AttentionCase{"mha_logit_cap_noncausal", 4, std::nullopt, "grouped", false, std::nullopt,
                      2.0}),
    [](const auto& info) { return info.param.name; });

struct LmCase {
  std::string name;
  int64_t num_kv_heads;
  bool tied;
  std::optional<int64_t> window;
  bool repeated;
};

ConfigPtr<Model::Config> lm_config(const LmCase& l) {
  auto layer = TransformerLayer::default_config();
  AttentionCase a{l.name, l.num_kv_heads, 10000.0, "grouped", true, l.window, std::nullopt};
  layer->self_attention->attention = attention_config(a);
  layer->self_attention->norm = RMSNorm::default_config().set("eps", 1e-5);
  layer->feed_forward = swiglu_ffn_config();
  ConfigPtr<BaseStackedTransformerLayer::Config> stack;
  if (l.repeated) {
    stack = RepeatedTransformerLayer::default_config();
  } else {
    stack = StackedTransformerLayer::default_config();
  }
  stack->num_layers = 2;
  stack->layer = layer;
  auto dec = Decoder::default_config();
  dec->dim = 8;
  dec->vocab_size = 13;
  dec->transformer = stack;
  dec->output_norm = RMSNorm::default_config().set("eps", 1e-5);
  if (!l.tied) dec->lm_head = LmHead::default_config();
  auto model = Model::default_config();
  model->name = "model";
  model->decoder = dec;
  return model;
}

class LmParityTest : public ::testing::TestWithParam<LmCase> {};

TEST_P(LmParityTest, LogitsLossAndEveryGradientMatchTorch) {
  const LmCase& l = GetParam();
  auto model = lm_config(l)->instantiate<Model>(nullptr);
  const auto& c = kase(l.name);
  NestedTensor params = load_params(*model, c);
  Tensor ids = load(c["inputs"]["input_ids"], int32);
  Tensor labels = load(c["inputs"]["target_labels"], int32);
  Tensor weights = load(c["inputs"]["target_weights"]);
  Tensor seg;
  if (c["inputs"].contains("input_segment_ids"))
    seg = load(c["inputs"]["input_segment_ids"], int32);
  Tensor logits;
  auto loss_fn = [&](const NestedTensor& p) {
    auto out = functional_call(*model, p, random::key(1), false,
                               [&] { return model->forward(ids, labels, weights, seg); });
    logits = out.outputs.logits;
    return out.outputs.loss;
  };
  NestedValueAndGrad vg = value_and_grad(loss_fn, params);
  double worst = rel_error(logits, c["outputs"]["logits"]);
  worst = std::max(worst, rel_error(reshape(vg.value, {1}), c["outputs"]["loss"]));
  EXPECT_LT(worst, 1e-5) << "logits / loss";
  for (const auto& [path, ref] : c["grads"].items()) {
    const double e = rel_error(vg.grads.at_path(path).tensor(), ref);
    EXPECT_LT(e, 1e-5) << "gradient of " << path;
    worst = std::max(worst, e);
  }
  report(l.name, worst);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LmParityTest,
    ::testing::Values(LmCase{"lm_mha_causal_untied", 4, false, std::nullopt, false},
                      LmCase{"lm_gqa_causal_tied", 2, true, std::nullopt, false},
                      LmCase{"lm_gqa_sliding_window_untied", 2, false, 3, false},
                      LmCase{"lm_gqa_packed_segments_tied_repeated", 2, true, std::nullopt, true}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace axlearn::layers
