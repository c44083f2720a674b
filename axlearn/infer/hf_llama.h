// Hugging Face LLaMA interoperability: our causal LM's parameters as LlamaForCausalLM tensors and
// back, its config.json, and export / import of a Hugging Face model directory (config.json plus
// model.safetensors, or shards listed in model.safetensors.index.json). See docs/interop.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/config/format.h"
#include "axlearn/core/nested.h"
#include "axlearn/layers/decoder.h"

namespace axlearn::infer {

// What LlamaForCausalLM needs to know of a Model, read (and validated) from its config.
struct LlamaSpec {
  enum class Stack { kRepeated, kStacked };  // repeat/layer/... [L, ...] or layer{i}/...
  enum class Qkv { kFused, kSeparate };      // qkv_proj [d, N+2K, H] or q/k/v_proj [d, N|K, H]

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        // d
  int64_t intermediate_size = 0;  // F
  int64_t num_layers = 0;         // L
  int64_t num_heads = 0;          // N
  int64_t num_kv_heads = 0;       // K
  int64_t head_dim = 0;           // H
  double rms_norm_eps = 0;
  double rope_theta = 0;
  bool tie_word_embeddings = false;
  int64_t pad_token_id = 0;
  int64_t eos_token_id = 0;
  Stack stack = Stack::kRepeated;
  Qkv qkv = Qkv::kFused;
  Dtype param_dtype = float32;
};

// Reads the spec of `model` (a causal_lm.Model config; it is instantiated, not initialized).
// Throws Error naming the config path (e.g. "model.decoder.transformer.layer.feed_forward.
// activation") of every setting LLaMA cannot express: another stack, QKV projection, norm,
// activation, mask or query scale, biases, cross-attention, rotary values, a logit cap, ...
LlamaSpec llama_spec(const layers::Model::Config& model);

// One Hugging Face tensor: its name ("model.layers.0.self_attn.q_proj.weight") and value.
using HfTensors = std::vector<std::pair<std::string, Tensor>>;

// Whether `name` is a buffer that old transformers versions saved beside the weights
// (model.layers.{i}.self_attn.rotary_emb.inv_freq): derived, not a weight; imports skip it.
bool is_hf_derived_buffer(const std::string& name);

// The HF names and shapes of a spec, in the order LlamaForCausalLM's state_dict lists them.
std::vector<std::pair<std::string, Shape>> hf_tensor_shapes(const LlamaSpec& spec);

// params (the "model" subtree of the trainer state) -> HF tensors in hf_tensor_shapes order, in
// the parameters' dtype (lazy reshapes / transposes / slices). Error naming the parameter path
// on a missing or unexpected parameter or a wrong shape.
HfTensors to_hf_tensors(const LlamaSpec& spec, const NestedTensor& params);
// HF tensors (any order; f32, bf16, f16 or f64) -> params cast to spec.param_dtype. Error naming
// the tensor on a missing or unexpected name, a wrong shape or a non-float dtype.
NestedTensor from_hf_tensors(const LlamaSpec& spec, const HfTensors& tensors);

// HF's torch_dtype string of bf16 / f16 / f32 ("bfloat16", ...); Error for other dtypes.
std::string hf_torch_dtype(Dtype dtype);

// config.json of LlamaForCausalLM for this spec. bos_token_id is the EOS id: our packed inputs
// start each document after an EOS.
Json hf_config_json(const LlamaSpec& spec, Dtype torch_dtype, int64_t max_position_embeddings);
// Throws Error naming `where` (the file) and every field of `config` that disagrees with the
// spec (architecture, dims, heads, eps, rope_theta, tying, activation, biases, rope_scaling).
// Absent fields take LlamaConfig's defaults.
void check_hf_config(const LlamaSpec& spec, const Json& config, const std::string& where);

struct HfExportOptions {
  // Dtype of the written tensors: bfloat16, float16 or float32; None: the parameters' dtype.
  std::optional<Dtype> dtype;
  // Tensor bytes per shard file; above it the weights go to model-0000i-of-0000N.safetensors
  // and model.safetensors.index.json (HF's 5GB default). A larger tensor gets a shard alone.
  uint64_t max_shard_size = 5'000'000'000;
  int64_t max_position_embeddings = 4096;
};

// Writes config.json and the weights of `params` into `dir` (created; existing weight files of
// another layout there are removed so the directory holds one checkpoint). Each file is
// written atomically. Returns the weight file names written.
std::vector<std::string> export_hf(const std::string& dir, const layers::Model::Config& model,
                                   const NestedTensor& params, const HfExportOptions& options = {});

// Reads an HF LLaMA directory (either layout), checks its config.json against `model`, and
// returns the parameters in the model's layout and parameter dtype. Errors name the file and
// tensor: missing config or weights, a weight_map entry missing / pointing at a file without the
// tensor, missing or unexpected tensors, shapes, dtypes.
NestedTensor import_hf(const std::string& dir, const layers::Model::Config& model);

}  // namespace axlearn::infer
