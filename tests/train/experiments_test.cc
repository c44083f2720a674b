// The experiment registry: golden `configs show` output for every experiment, AXLearn's config
// paths, and parameter counts against the LLaMA formula.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "axlearn/experiments/experiments.h"

namespace axlearn::experiments {
namespace {

std::string golden_path(const std::string& name) {
  return std::string(AXLEARN_SOURCE_DIR) + "/tests/train/testdata/configs/" + name + ".txt";
}

// Set AXLEARN_UPDATE_GOLDEN=1 to rewrite the files after an intended change.
TEST(ExperimentsTest, ConfigsMatchTheirGoldenFiles) {
  const bool update = std::getenv("AXLEARN_UPDATE_GOLDEN") != nullptr;
  for (const Experiment& e : registered_experiments()) {
    const std::string text = e.make_config()->debug_string();
    const std::string path = golden_path(e.name);
    if (update) {
      std::ofstream(path) << text;
      continue;
    }
    std::ifstream in(path);
    ASSERT_TRUE(in) << "missing " << path << " (run with AXLEARN_UPDATE_GOLDEN=1)";
    std::stringstream want;
    want << in.rdbuf();
    EXPECT_EQ(text, want.str()) << e.name << " differs from " << path;
  }
}

TEST(ExperimentsTest, FujiConfigsUseAxlearnPaths) {
  const std::string text = trainer_config("fuji-7B")->debug_string();
  for (const char* line : {
           "model.decoder.dim: 4096\n",
           "model.decoder.vocab_size: 32768\n",
           "model.decoder.transformer.num_layers: 32\n",
           "model.decoder.transformer.layer.self_attention.attention.num_heads: 32\n",
           "model.decoder.transformer.layer.self_attention.attention.input_linear.input_linear."
           "num_kv_heads: 8\n",
           "model.decoder.transformer.layer.feed_forward.hidden_dim.scale: 2.6666666666666665\n",
           "model.decoder.transformer.layer.self_attention.attention.input_linear."
           "rope_pos_emb_layer.theta: 500000.0\n",
           "klass: 'axlearn.common.trainer.SpmdTrainer'\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line;
  }
}

// Embedding V*d, per layer q/k/v/o projections, three SwiGLU matrices and two norms, the
// output norm, and an untied head V*d.
int64_t llama_params(int64_t layers, int64_t d, int64_t heads, int64_t kv, int64_t ffn, int64_t v,
                     bool tied) {
  const int64_t h = d / heads;
  const int64_t per_layer = d * heads * h + 2 * d * kv * h + heads * h * d + 3 * d * ffn + 2 * d;
  return v * d + layers * per_layer + d + (tied ? 0 : v * d);
}

TEST(ExperimentsTest, ParameterCountsFollowTheLlamaFormula) {
  struct Case {
    const char* name;
    int64_t want;
  } cases[] = {
      {"fuji-1B", llama_params(16, 2048, 32, 8, 8192, 131072, true)},
      {"fuji-3B", llama_params(28, 3072, 24, 8, 8192, 131072, true)},
      {"fuji-7B", llama_params(32, 4096, 32, 8, 11008, 32768, false)},
      {"fuji-8B", llama_params(32, 4096, 32, 8, 14336, 131072, false)},
      {"fuji-70B", llama_params(80, 8192, 64, 8, 28672, 32768, false)},
      {"fuji-nano", llama_params(4, 256, 8, 4, 704, 4096, false)},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(count_parameters(*trainer_config(c.name)->model.get()), c.want) << c.name;
  }
}

TEST(ExperimentsTest, UnknownNameSuggestsTheClosest) {
  try {
    trainer_config("fuji-nanp");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fuji-nano"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace axlearn::experiments
