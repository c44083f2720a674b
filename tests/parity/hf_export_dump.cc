// Hugging Face export parity, C++ half: builds fuji-test-sized models (several layouts) with
// random parameters, exports each as a Hugging Face LLaMA directory (f32) and writes our logits
// for fixed input ids beside it. check_hf_export.py rebuilds LlamaForCausalLM from the exported
// files alone and compares.
//
//   hf_export_dump OUT_DIR  ->  OUT_DIR/<case>/hf/{config.json, weights}
//                               OUT_DIR/<case>/ours.safetensors: input_ids (B, T), logits
//                               (B, T, V)
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"
#include "axlearn/experiments/experiments.h"
#include "axlearn/infer/hf_llama.h"
#include "axlearn/io/safetensors.h"

namespace {

using namespace axlearn;

struct Case {
  std::string name;
  std::vector<std::string> overrides;  // on fuji-test's model config
  uint64_t max_shard_size;
};

const std::string kQkv = "decoder.transformer.layer.self_attention.attention.input_linear.";

void dump(const Case& c, const std::string& out_dir, uint64_t seed) {
  ConfigPtr<layers::Model::Config> cfg = experiments::trainer_config("fuji-test")->model.get();
  apply_overrides(*cfg, c.overrides);
  auto named = cfg.clone();
  named->name = "model";
  std::unique_ptr<layers::Model> model = named->instantiate<layers::Model>(nullptr);

  // Fuji's initialization plus noise, so norm scales are not all ones.
  NestedTensor params = model->initialize_parameters_recursively(random::key(seed));
  uint32_t i = 0;
  params = params.map([&](const Tensor& t) {
    return t + random::normal(random::fold_in(random::key(seed + 1), i++), t.shape()) * 0.05;
  });
  eval(params);

  const std::string dir = out_dir + "/" + c.name;
  infer::HfExportOptions opts;
  opts.dtype = float32;
  opts.max_shard_size = c.max_shard_size;
  opts.max_position_embeddings = 32;
  infer::export_hf(dir + "/hf", *cfg, params, opts);

  // Ids in [1, vocab): id 0 is our pad token, which the decoder would mask as padding.
  const int64_t b = 2, t = 16, vocab = 4096;
  std::vector<int32_t> ids;
  uint64_t state = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (int64_t k = 0; k < b * t; ++k) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    ids.push_back(int32_t(1 + (state >> 33) % (vocab - 1)));
  }
  const Tensor input_ids = array(ids, {b, t});
  Tensor logits = functional_call(*model, params, std::nullopt, /*is_training=*/false, [&] {
                    return model->forward(input_ids, input_ids).logits;
                  }).outputs;
  io::save_safetensors(dir + "/ours.safetensors",
                       {{"input_ids", input_ids}, {"logits", astype(logits, float32)}});
  std::printf("%s: wrote %s\n", c.name.c_str(), dir.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::vector<Case> cases{
      // Repeated layers, fused GQA projection (4 heads, 2 kv heads), separate lm_head.
      {"fuji_test", {}, 5'000'000'000},
      // Stacked layers, separate GQA projections, tied embeddings, other theta and eps; sharded.
      {"stacked_tied_grouped",
       {"decoder.transformer.klass=axlearn.common.attention.StackedTransformerLayer",
        "decoder.lm_head=None",
        kQkv + "input_linear.klass=axlearn.common.attention.GroupedQKVLinear",
        kQkv + "rope_pos_emb_layer.theta=10000.0", "decoder.output_norm.eps=1e-6",
        "decoder.transformer.layer.self_attention.norm.eps=1e-6",
        "decoder.transformer.layer.feed_forward.norm.eps=1e-6"},
       100'000},
      // Multi-head attention (QKVLinear, 4 kv heads), repeated layers; sharded.
      {"mha_qkv", {kQkv + "input_linear.klass=axlearn.common.attention.QKVLinear"}, 300'000},
  };
  try {
    std::filesystem::create_directories(argv[1]);
    uint64_t seed = 100;
    for (const Case& c : cases) dump(c, argv[1], seed++);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hf_export_dump: %s\n", e.what());
    return 1;
  }
  return 0;
}
