// The debug_string() dump of a small LLaMA-style causal LM config against the committed golden
// file tests/layers/testdata/small_decoder_config.txt (AXLearn's golden-config format), plus the
// JSON round trip and instantiation of that config.
// To regenerate after an intended change: AXLEARN_UPDATE_GOLDEN=1 ./layers_tests
//   --gtest_filter='GoldenConfig*', then review the diff before committing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/layers/decoder.h"
#include "test_configs.h"

namespace axlearn::layers {
namespace {

const char* kGoldenPath = AXLEARN_SOURCE_DIR "/tests/layers/testdata/small_decoder_config.txt";

// Decoder dim 16, vocab 32, 2 layers, GQA 4 heads / 2 kv heads with rotary (RoFormer) fused QKV,
// SwiGLU feed-forward with a scale_fn hidden dim, RMSNorm everywhere, an untied lm_head.
ConfigPtr<Model::Config> small_decoder_config() { return llama_like_config(16, 32, 2, true); }

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream is(s);
  for (std::string line; std::getline(is, line);) lines.push_back(line);
  return lines;
}

// A readable line diff: lines only in the golden (-) and only in the current dump (+), in order.
std::string line_diff(const std::vector<std::string>& want, const std::vector<std::string>& got) {
  // Longest common subsequence; the dumps are a few hundred lines at most.
  const size_t n = want.size(), m = got.size();
  std::vector<std::vector<int>> lcs(n + 1, std::vector<int>(m + 1, 0));
  for (size_t i = n; i-- > 0;) {
    for (size_t j = m; j-- > 0;) {
      lcs[i][j] =
          want[i] == got[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  std::ostringstream os;
  size_t i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && want[i] == got[j]) {
      ++i, ++j;
    } else if (i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1])) {
      os << "- " << want[i++] << "\n";
    } else {
      os << "+ " << got[j++] << "\n";
    }
  }
  return os.str();
}

TEST(GoldenConfigTest, SmallDecoderDumpMatchesCommittedFile) {
  const std::string dump = small_decoder_config()->debug_string();
  if (std::getenv("AXLEARN_UPDATE_GOLDEN")) {
    std::ofstream(kGoldenPath) << dump;
    GTEST_SKIP() << "rewrote " << kGoldenPath;
  }
  std::ifstream in(kGoldenPath);
  ASSERT_TRUE(in) << "missing " << kGoldenPath;
  std::stringstream golden;
  golden << in.rdbuf();
  const auto want = split_lines(golden.str());
  const auto got = split_lines(dump);
  EXPECT_TRUE(want == got) << "debug_string() differs from " << kGoldenPath
                           << " (- golden, + current):\n"
                           << line_diff(want, got);
}

TEST(GoldenConfigTest, SmallDecoderKeyLinesFollowAXLearnNaming) {
  const std::string s = small_decoder_config()->debug_string();
  const char* want[] = {
      "decoder.dim: 16",
      "decoder.vocab_size: 32",
      "decoder.transformer.num_layers: 2",
      "decoder.transformer.layer.self_attention.attention.num_heads: 4",
      "decoder.transformer.layer.self_attention.attention.klass: "
      "'axlearn.common.attention.GroupedQueryAttention'",
      "decoder.transformer.layer.self_attention.attention.input_linear.klass: "
      "'axlearn.common.attention.RoFormerQKVLinear'",
      "decoder.transformer.layer.self_attention.attention.input_linear.input_linear.num_kv_heads: "
      "2",
      "decoder.transformer.layer.feed_forward.hidden_dim.scale: 2.6666666666666665",
      "decoder.transformer.layer.feed_forward.norm.klass: 'axlearn.common.layers.RMSNorm'",
      "decoder.lm_head.klass: 'axlearn.common.decoder.LmHead'",
  };
  for (const char* w : want) EXPECT_NE(s.find(std::string(w) + "\n"), std::string::npos) << w;
}

TEST(GoldenConfigTest, SmallDecoderJsonRoundTripsAndInstantiates) {
  auto cfg = small_decoder_config();
  const std::string text = cfg->to_json_string();
  ConfigPtr<Model::Config> loaded = config_from_json_as<Model::Config>(Json::parse(text));
  EXPECT_EQ(loaded->debug_string(), cfg->debug_string());
  EXPECT_EQ(loaded->to_json_string(), text);

  auto model = loaded->instantiate<Model>(nullptr);
  auto specs = model->create_parameter_specs_recursively();
  EXPECT_EQ(shape_str(specs.at_path("decoder/lm_head/weight").shape), "(32, 16)");
  EXPECT_EQ(shape_str(specs
                          .at_path("decoder/transformer/repeat/layer/self_attention/attention/"
                                   "input_linear/input_linear/qkv_proj/weight")
                          .shape),
            "(2, 16, 8, 4)");  // (layers, D, N + 2K, H)
  EXPECT_EQ(shape_str(specs
                          .at_path("decoder/transformer/repeat/layer/feed_forward/linear1_0/"
                                   "weight")
                          .shape),
            "(2, 16, 48)");  // 16 * 8/3 = 42.7 rounded up to 48
  NestedTensor p = model->initialize_parameters_recursively(random::key(0));
  Tensor ids = array(std::vector<int32_t>{3, 4, 5, 6, 7, 8}, {1, 6});
  auto out = functional_call(*model, p, random::key(1), false,
                             [&] { return model->forward(ids, ids).loss; });
  const float loss = out.outputs.item<float>();
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, std::log(32.0f), 1.5f);  // near uniform at initialisation
}

}  // namespace
}  // namespace axlearn::layers
