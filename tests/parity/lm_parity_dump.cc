// Live PyTorch parity, C++ half: for each case, builds a LLaMA-style causal LM from our configs
// (as tests/layers/test_configs.h's llama_like_config, varied per case), initialises it with our
// initializer, draws inputs with our PRNG, and computes logits, loss and every parameter's
// gradient in f32. Each case goes to <out_dir>/<case>.safetensors:
//   params/<tree path>, inputs/<name>, outputs/logits, outputs/loss, grads/<tree path>
// with __metadata__ {"case": the case as JSON, "config": the model config's JSON}.
// tests/parity/check_lm_parity.py rebuilds each model in plain PyTorch from that config.
//
// Usage: lm_parity_dump <out_dir>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"
#include "axlearn/io/safetensors.h"
#include "axlearn/layers/decoder.h"

namespace axlearn::layers {
namespace {

constexpr int64_t kBatch = 2, kSeqLen = 9, kDim = 16, kVocab = 32, kLayers = 2;

enum class QkvLayout { kSeparate, kFused, kFusedGrouped };

struct LmCase {
  std::string name;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 2;
  QkvLayout layout = QkvLayout::kFusedGrouped;
  std::optional<int64_t> window = std::nullopt;  // sliding-window causal mask
  bool packed = false;  // explicit input_segment_ids with several segments per row
  bool padded = false;  // trailing pad tokens (id 0) and no segment ids
  bool tied = true;
  bool repeated = true;  // RepeatedTransformerLayer, else StackedTransformerLayer
  bool target_weights = false;
  double z_loss_scale = 0.0;
  bool random_norm_scales = false;  // norm scales drawn uniformly instead of ones
  uint64_t seed = 0;
};

const char* layout_name(QkvLayout l) {
  switch (l) {
    case QkvLayout::kSeparate:
      return "grouped";
    case QkvLayout::kFused:
      return "fused";
    case QkvLayout::kFusedGrouped:
      return "fused_grouped";
  }
  return "?";
}

ConfigPtr<BaseQKVLinear::Config> qkv_config(const LmCase& c) {
  ConfigPtr<BaseQKVLinear::Config> in;
  switch (c.layout) {
    case QkvLayout::kSeparate:
      in = GroupedQKVLinear::default_config().set("num_kv_heads", c.num_kv_heads);
      break;
    case QkvLayout::kFused:
      in = FusedQKVLinear::default_config();
      break;
    case QkvLayout::kFusedGrouped:
      in = FusedGroupedQKVLinear::default_config().set("num_kv_heads", c.num_kv_heads);
      break;
  }
  in->set("layer", MultiheadInputLinear::default_config().set("bias", false));
  auto rope = RoFormerQKVLinear::default_config();
  rope->input_linear = in;
  return rope;
}

// llama_like_config with the case's attention, mask, stack and head.
ConfigPtr<Model::Config> lm_config(const LmCase& c) {
  auto attn = GroupedQueryAttention::default_config();
  attn->num_heads = c.num_heads;
  attn->input_linear = qkv_config(c);
  attn->output_linear->bias = false;
  if (c.window) {
    attn->mask = SlidingWindowCausalMask::default_config().set("sliding_window_size", *c.window);
  } else {
    attn->causal = true;
  }
  auto layer = TransformerLayer::default_config();
  layer->self_attention->attention = attn;
  layer->self_attention->norm = RMSNorm::default_config().set("eps", 1e-5);
  layer->feed_forward->hidden_dim = ConfigPtr<HiddenDimFnConfig>(
      ScaleFn::default_config().set("scale", 8.0 / 3).set("round_up_to_multiples_of", 16));
  layer->feed_forward->activation = std::vector<std::string>{"nn.silu", "linear"};
  layer->feed_forward->norm = RMSNorm::default_config().set("eps", 1e-5);
  layer->feed_forward->linear1->bias = false;
  layer->feed_forward->linear2->bias = false;
  ConfigPtr<BaseStackedTransformerLayer::Config> stack;
  if (c.repeated) {
    stack = RepeatedTransformerLayer::default_config();
  } else {
    stack = StackedTransformerLayer::default_config();
  }
  stack->num_layers = kLayers;
  stack->layer = layer;
  auto dec = Decoder::default_config();
  dec->dim = kDim;
  dec->vocab_size = kVocab;
  dec->transformer = stack;
  dec->output_norm = RMSNorm::default_config().set("eps", 1e-5);
  if (!c.tied) dec->lm_head = LmHead::default_config();
  auto model = Model::default_config();
  model->name = "model";
  model->decoder = dec;
  model->z_loss_scale = c.z_loss_scale;
  if (c.random_norm_scales) {
    auto init = DefaultInitializer::default_config();
    init->init_by_param_name.mut().emplace_back(".*scale$",
                                                WeightInitializer::default_config()
                                                    .set("fan", std::optional<std::string>())
                                                    .set("scale", 2.0));
    model->param_init = init;
  }
  return model;
}

nlohmann::json case_json(const LmCase& c) {
  nlohmann::json j = {{"name", c.name},
                      {"num_heads", c.num_heads},
                      {"num_kv_heads", c.num_kv_heads},
                      {"qkv_layout", layout_name(c.layout)},
                      {"packed", c.packed},
                      {"padded", c.padded},
                      {"tied", c.tied},
                      {"repeated", c.repeated},
                      {"target_weights", c.target_weights},
                      {"z_loss_scale", c.z_loss_scale},
                      {"random_norm_scales", c.random_norm_scales},
                      {"batch", kBatch},
                      {"seq_len", kSeqLen}};
  j["window"] = c.window ? nlohmann::json(*c.window) : nlohmann::json(nullptr);
  return j;
}

// Row-major (B, T) ints from 32-bit draws: values in [lo, hi).
std::vector<int32_t> draw_ints(const Tensor& key, int64_t lo, int64_t hi) {
  std::vector<uint32_t> bits = random::random_bits(key, {kBatch, kSeqLen}).to_vector<uint32_t>();
  std::vector<int32_t> out;
  for (uint32_t b : bits) out.push_back(int32_t(lo + int64_t(b % uint32_t(hi - lo))));
  return out;
}

struct Inputs {
  Tensor ids, labels, weights, segment_ids;  // weights / segment_ids may be undefined
};

Inputs draw_inputs(const LmCase& c, const Tensor& key) {
  Tensor keys = random::split(key, 3);
  auto k = [&](int i) { return reshape(slice(keys, {i, 0}, {i + 1, 2}), {2}); };
  // Padding cases use id 0 (pad_token_id) only at the end of rows; elsewhere ids avoid it.
  std::vector<int32_t> ids = draw_ints(k(0), 1, kVocab);
  std::vector<int32_t> labels = draw_ints(k(1), 0, kVocab);
  labels[kSeqLen - 1] = -1;  // the last target of row 0 is not counted
  if (c.padded) {
    for (int64_t t = kSeqLen - 3; t < kSeqLen; ++t) {
      ids[size_t(kSeqLen + t)] = 0;
      labels[size_t(kSeqLen + t)] = -1;
    }
  }
  Inputs in;
  in.ids = array(ids, {kBatch, kSeqLen});
  in.labels = array(labels, {kBatch, kSeqLen});
  if (c.target_weights) in.weights = random::uniform(k(2), {kBatch, kSeqLen}, float32, 0.25, 1.0);
  if (c.packed) {
    in.segment_ids = array(std::vector<int32_t>{1, 1, 1, 2, 2, 2, 2, 3, 3,  //
                                                1, 1, 1, 1, 1, 2, 2, 2, 2},
                           {kBatch, kSeqLen});
  }
  return in;
}

void dump_case(const LmCase& c, const std::string& out_dir) {
  auto cfg = lm_config(c);
  const std::string config_json = cfg->to_json_string(-1);
  auto model = cfg->instantiate<Model>(nullptr);
  NestedTensor params = model->initialize_parameters_recursively(random::key(c.seed));
  Inputs in = draw_inputs(c, random::key(c.seed + 1000));

  Tensor logits;
  auto loss_fn = [&](const NestedTensor& p) {
    auto out = functional_call(*model, p, random::key(1), /*is_training=*/false, [&] {
      return model->forward(in.ids, in.labels, in.weights, in.segment_ids);
    });
    logits = out.outputs.logits;
    return out.outputs.loss;
  };
  NestedValueAndGrad vg = value_and_grad(loss_fn, params);
  eval(vg.grads);
  eval(vg.value, logits);

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [path, t] : params.flatten_with_paths())
    tensors.emplace_back("params/" + path, t);
  for (const auto& [path, t] : vg.grads.flatten_with_paths())
    tensors.emplace_back("grads/" + path, t);
  tensors.emplace_back("inputs/input_ids", in.ids);
  tensors.emplace_back("inputs/target_labels", in.labels);
  if (in.weights.defined()) tensors.emplace_back("inputs/target_weights", in.weights);
  if (in.segment_ids.defined()) tensors.emplace_back("inputs/input_segment_ids", in.segment_ids);
  tensors.emplace_back("outputs/logits", logits);
  tensors.emplace_back("outputs/loss", vg.value);
  const std::string path = out_dir + "/" + c.name + ".safetensors";
  io::save_safetensors(path, tensors, {{"case", case_json(c).dump()}, {"config", config_json}});
  std::cout << "wrote " << path << " (" << tensors.size() << " tensors, loss "
            << vg.value.item<double>() << ")\n";
}

std::vector<LmCase> cases() {
  std::vector<LmCase> v;
  auto add = [&](LmCase c) {
    c.seed = v.size();
    v.push_back(std::move(c));
  };
  add({.name = "mha_causal_untied_stacked",
       .num_heads = 4,
       .num_kv_heads = 4,
       .layout = QkvLayout::kFused,
       .tied = false,
       .repeated = false});
  add({.name = "mha_causal_tied_separate_qkv",
       .num_heads = 4,
       .num_kv_heads = 4,
       .layout = QkvLayout::kSeparate,
       .tied = true,
       .target_weights = true});
  add({.name = "gqa_causal_untied", .num_heads = 4, .num_kv_heads = 2, .tied = false});
  add({.name = "gqa_causal_tied",
       .num_heads = 4,
       .num_kv_heads = 2,
       .tied = true,
       .random_norm_scales = true});
  add({.name = "gqa_sliding_window_untied",
       .num_heads = 4,
       .num_kv_heads = 2,
       .window = 3,
       .tied = false,
       .target_weights = true});
  add({.name = "gqa_packed_segments_tied",
       .num_heads = 4,
       .num_kv_heads = 2,
       .packed = true,
       .tied = true,
       .repeated = false});
  add({.name = "mqa_sliding_window_packed_zloss_untied",
       .num_heads = 4,
       .num_kv_heads = 1,
       .layout = QkvLayout::kSeparate,
       .window = 2,
       .packed = true,
       .tied = false,
       .target_weights = true,
       .z_loss_scale = 0.1,
       .random_norm_scales = true});
  add({.name = "gqa_padded_tied", .num_heads = 4, .num_kv_heads = 2, .padded = true, .tied = true});
  return v;
}

}  // namespace
}  // namespace axlearn::layers

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: lm_parity_dump <out_dir>\n";
    return 2;
  }
  try {
    std::filesystem::create_directories(argv[1]);
    for (const auto& c : axlearn::layers::cases()) axlearn::layers::dump_case(c, argv[1]);
  } catch (const std::exception& e) {
    std::cerr << "lm_parity_dump: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
