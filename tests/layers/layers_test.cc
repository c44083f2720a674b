// Unit tests of the layers: mask composition against hand-written masks, parameter paths and
// shapes, config dump paths, and error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"
#include "axlearn/layers/decoder.h"
#include "test_configs.h"

namespace axlearn::layers {
namespace {

TEST(AttentionBiasTest, CausalSlidingWindowAndSegmentsCompose) {
  const int64_t t = 6;
  Tensor pos = reshape(arange(t), {1, t});
  Tensor seg = array(std::vector<int32_t>{1, 1, 1, 1, 2, 2}, {1, t});
  MaskFn window =
      SlidingWindowCausalMask::default_config().set("sliding_window_size", 2)->instantiate();
  Tensor mask = logical_and(mask_from_positions(window, pos, pos), segment_mask(seg, seg));
  ASSERT_EQ(shape_str(mask.shape()), "(1, 1, 6, 6)");
  const std::vector<int> s{1, 1, 1, 1, 2, 2};
  auto got = mask.to_vector<bool>();
  for (int i = 0; i < t; ++i) {
    for (int j = 0; j < t; ++j) {
      const bool want = j <= i && i - j <= 2 && s[size_t(i)] == s[size_t(j)];
      EXPECT_EQ(got[size_t(i * t + j)], want) << i << "," << j;
    }
  }
  Tensor bias = bool_to_bias(mask, float32);
  auto b = bias.to_vector<float>();
  EXPECT_EQ(b[0], 0.0f);                           // (0, 0) attends
  EXPECT_FLOAT_EQ(b[1], float(neg_inf(float32)));  // (0, 1) is the future
  EXPECT_TRUE(std::isfinite(b[1]));
}

TEST(AttentionBiasTest, PaddingMaskHidesPaddedKeys) {
  Tensor valid = array(std::vector<bool>{true, true, false}, {1, 3});
  auto m = padding_mask(valid).to_vector<bool>();
  EXPECT_EQ(m, (std::vector<bool>{true, true, false}));
}

TEST(AttentionBiasTest, CausalAttentionIgnoresTheFuture) {
  auto cfg = MultiheadAttention::default_config();
  cfg->name = "attn";
  cfg->query_dim = 4;
  cfg->key_dim = 4;
  cfg->value_dim = 4;
  cfg->num_heads = 2;
  cfg->causal = true;
  auto layer = cfg->instantiate<MultiheadAttention>(nullptr);
  NestedTensor p = layer->initialize_parameters_recursively(random::key(0));
  Tensor x = random::normal(random::key(1), {1, 5, 4});
  Tensor x2 = concatenate({slice_axis(x, 1, 0, 3), random::normal(random::key(2), {1, 2, 4})}, 1);
  auto run = [&](const Tensor& in) {
    return functional_call(*layer, p, std::nullopt, false, [&] { return layer->forward(in).data; })
        .outputs;
  };
  Tensor d = max(abs(slice_axis(run(x), 1, 0, 3) - slice_axis(run(x2), 1, 0, 3)));
  EXPECT_LT(d.item<float>(), 1e-6f);
}

TEST(FeedForwardTest, GatedActivationMakesOneLinear1PerBranch) {
  auto cfg = TransformerFeedForwardLayer::default_config();
  cfg->name = "ffn";
  cfg->input_dim = 6;
  cfg->hidden_dim = ConfigPtr<HiddenDimFnConfig>(
      ScaleFn::default_config().set("scale", 8.0 / 3).set("round_up_to_multiples_of", 4));
  cfg->activation = std::vector<std::string>{"nn.silu", "linear"};
  cfg->linear1->bias = false;
  auto layer = cfg->instantiate<TransformerFeedForwardLayer>(nullptr);
  EXPECT_EQ(layer->hidden_dim(), 16);  // int(6 * 8/3) = 16, already a multiple of 4
  auto specs = layer->create_parameter_specs_recursively().flatten_with_paths();
  std::vector<std::string> paths;
  for (const auto& [path, spec] : specs) paths.push_back(path + shape_str(spec.shape));
  EXPECT_EQ(paths, (std::vector<std::string>{"linear1_0/weight(6, 16)", "linear1_1/weight(6, 16)",
                                             "linear2/bias(6,)", "linear2/weight(16, 6)",
                                             "norm/bias(6,)", "norm/scale(6,)"}));
}

TEST(FeedForwardTest, UnknownActivationIsAnError) {
  auto cfg = TransformerFeedForwardLayer::default_config();
  cfg->name = "ffn";
  cfg->input_dim = 4;
  cfg->hidden_dim = int64_t(8);
  cfg->activation = std::string("nn.nope");
  EXPECT_THROW(cfg->instantiate<TransformerFeedForwardLayer>(nullptr), Error);
}

ConfigPtr<Model::Config> fuji_like_config() { return llama_like_config(8, 32, 4, false); }

TEST(ConfigDumpTest, FujiPathsMatchAXLearnGoldens) {
  auto model = fuji_like_config();
  const std::string s = model->debug_string();
  const char* want[] = {
      "decoder.dim: 8",
      "decoder.vocab_size: 32",
      "decoder.transformer.num_layers: 4",
      "decoder.transformer.klass: 'axlearn.common.attention.RepeatedTransformerLayer'",
      "decoder.transformer.layer.self_attention.attention.num_heads: 4",
      "decoder.transformer.layer.self_attention.attention.input_linear.input_linear.num_kv_heads: "
      "2",
      "decoder.transformer.layer.self_attention.attention.input_linear.input_linear.klass: "
      "'axlearn.common.attention.FusedGroupedQKVLinear'",
      "decoder.transformer.layer.self_attention.attention.input_linear.rope_pos_emb_layer.theta: "
      "10000.0",
      "decoder.transformer.layer.feed_forward.hidden_dim.fn: "
      "'axlearn.experiments.text.gpt.common.scale_fn'",
      "decoder.transformer.layer.feed_forward.hidden_dim.round_up_to_multiples_of: 16",
      "decoder.transformer.layer.feed_forward.activation[0]: 'nn.silu'",
      "decoder.transformer.layer.feed_forward.activation[1]: 'linear'",
      "decoder.transformer.layer.feed_forward.structure: 'prenorm'",
      "decoder.output_norm.klass: 'axlearn.common.layers.RMSNorm'",
      "decoder.output_norm.eps: 1e-05",
  };
  for (const char* w : want) EXPECT_NE(s.find(std::string(w) + "\n"), std::string::npos) << w;
}

TEST(DecoderTest, RepeatedParametersAreStackedUnderRepeatLayer) {
  auto model = fuji_like_config()->instantiate<Model>(nullptr);
  auto specs = model->create_parameter_specs_recursively();
  EXPECT_EQ(shape_str(specs
                          .at_path("decoder/transformer/repeat/layer/self_attention/attention/"
                                   "input_linear/input_linear/qkv_proj/weight")
                          .shape),
            "(4, 8, 8, 2)");  // (layers, D, N + 2K, H)
  EXPECT_EQ(
      shape_str(
          specs.at_path("decoder/transformer/repeat/layer/feed_forward/linear1_1/weight").shape),
      "(4, 8, 32)");  // hidden 8 * 8/3 = 21 rounded up to 32
  NestedTensor p = model->initialize_parameters_recursively(random::key(0));
  EXPECT_EQ(shape_str(p.at_path("decoder/emb/token_emb/weight").tensor().shape()), "(32, 8)");
  EXPECT_FALSE(p.at("decoder").contains("lm_head"));  // tied by default
  // The model trains end to end: summaries are there and finite.
  Tensor ids = array(std::vector<int32_t>{3, 4, 5, 6, 7, 8}, {1, 6});
  auto out =
      functional_call(*model, p, random::key(1), true, [&] { return model->forward(ids, ids); });
  for (const char* name : {"loss", "accuracy", "perplexity", "num_tokens"}) {
    EXPECT_TRUE(std::isfinite(out.output_collection.summary(name).value().item<float>())) << name;
  }
}

TEST(LinearTest, WrongInputDimNamesThePath) {
  auto cfg = Linear::default_config();
  cfg->name = "proj";
  cfg->input_dim = 3;
  cfg->output_dim = 2;
  auto layer = cfg->instantiate<Linear>(nullptr);
  NestedTensor p = layer->initialize_parameters_recursively(random::key(0));
  try {
    functional_call(*layer, p, std::nullopt, false, [&] { return layer->forward(zeros({2, 4})); });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("proj"), std::string::npos) << e.what();
  }
}

TEST(DropoutTest, ScalesKeptValuesAndIsIdentityInEval) {
  auto cfg = Dropout::default_config();
  cfg->name = "drop";
  cfg->rate = std::optional<double>(0.5);
  auto layer = cfg->instantiate<Dropout>(nullptr);
  Tensor x = ones({1000});
  auto train = functional_call(*layer, {}, random::key(3), true, [&] { return layer->forward(x); });
  auto v = train.outputs.to_vector<float>();
  int kept = 0;
  for (float f : v) {
    EXPECT_TRUE(f == 0.0f || f == 2.0f);
    kept += f != 0;
  }
  EXPECT_GT(kept, 400);
  EXPECT_LT(kept, 600);
  auto eval = functional_call(*layer, {}, random::key(3), false, [&] { return layer->forward(x); });
  EXPECT_EQ(sum(eval.outputs).item<float>(), 1000.0f);
}

}  // namespace
}  // namespace axlearn::layers
