#include "axlearn/infer/hf_llama.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/layers/attention.h"
#include "axlearn/layers/transformer.h"

namespace axlearn::infer {

namespace {

// ---------------------------------------------------------------------------------------------
// Reading the spec from an instantiated Model.

// Config paths of the pieces, as `axlearn configs show` prints them.
const std::string kDecoder = "model.decoder";
const std::string kLayer = "model.decoder.transformer.layer";
const std::string kAttention = kLayer + ".self_attention.attention";
const std::string kRope = kAttention + ".input_linear";
const std::string kQkv = kRope + ".input_linear";
const std::string kFeedForward = kLayer + ".feed_forward";

const std::string& klass_of(const Module& m) { return m.config_base().klass.get(); }

template <typename T>
const T* as(const Module& m) {
  return dynamic_cast<const T*>(&m);
}

// Collects every unsupported setting, so that one error lists them all.
class Problems {
 public:
  void add(const std::string& path, const std::string& what) {
    items_.push_back(path + ": " + what);
  }
  // Adds a problem unless m's class is one of `allowed`; returns whether it is.
  bool expect_klass(const Module& m, const std::string& path,
                    std::initializer_list<const char*> allowed) {
    for (const char* a : allowed) {
      if (klass_of(m) == a) return true;
    }
    std::string names;
    for (const char* a : allowed) names += std::string(names.empty() ? "" : " or ") + a;
    add(path, "'" + klass_of(m) + "' is not supported by Hugging Face LLaMA (needs " + names + ")");
    return false;
  }
  void expect_no_bias(const Module& m, const std::string& config_path) {
    if (m.config_base().get<bool>("bias")) {
      add(config_path + ".bias", "must be False (LLaMA's projections have no bias)");
    }
  }
  bool empty() const { return items_.empty(); }
  // Throws the collected problems (if any).
  void raise() const {
    if (items_.empty()) return;
    std::string msg = "the model config cannot be expressed as a Hugging Face LlamaForCausalLM:";
    for (const auto& s : items_) msg += "\n  " + s;
    fail(msg);
  }

 private:
  std::vector<std::string> items_;
};

// The eps of an RMSNorm (after checking its class), or nullopt.
std::optional<double> rms_eps(const Module& norm, const std::string& path, Problems& problems) {
  if (!problems.expect_klass(norm, path + ".klass", {layers::RMSNorm::kRegisteredName})) {
    return std::nullopt;
  }
  return as<layers::RMSNorm>(norm)->config().eps.get();
}

// Attention: class, mask, scales, logit cap, output bias; fills heads and head_dim.
void read_attention(const layers::MultiheadAttention& attn, LlamaSpec& spec, Problems& problems) {
  const auto& cfg = attn.config();
  spec.num_heads = cfg.num_heads;
  spec.head_dim = attn.per_head_dim();
  const layers::MaskFnConfig* mask = cfg.mask.get().get();
  const bool causal_mask = mask && dynamic_cast<const layers::CausalMask*>(mask);
  if (mask && !causal_mask) {
    problems.add(kAttention + ".mask",
                 "'" + mask->key() + "' is not supported (LLaMA attention is causal only)");
  }
  if (!cfg.causal.get() && !causal_mask) {
    problems.add(kAttention + ".causal", "must be True (or mask causal_mask) for a causal LM");
  }
  if (cfg.atten_logit_cap.get()) {
    problems.add(kAttention + ".atten_logit_cap", "must be None (LLaMA does not cap logits)");
  }
  const Module& qs = attn.child("query_scale");
  if (problems.expect_klass(qs, kAttention + ".query_scale.klass",
                            {layers::ScaleQuery::kRegisteredName})) {
    const auto& f = as<layers::ScaleQuery>(qs)->config().scale_factor.get();
    const double expected = 1.0 / std::sqrt(double(spec.head_dim));
    if (f && std::abs(*f - expected) > 1e-12 * expected) {
      problems.add(kAttention + ".query_scale.scale_factor",
                   "must be None (per_head_dim ** -0.5, as LLaMA), got " + std::to_string(*f));
    }
  }
  const Module& ks = attn.child("key_scale");
  if (problems.expect_klass(ks, kAttention + ".key_scale.klass",
                            {layers::ScaleKey::kRegisteredName})) {
    const auto& f = as<layers::ScaleKey>(ks)->config().scale_factor.get();
    if (f && *f != 1.0) {
      problems.add(kAttention + ".key_scale.scale_factor",
                   "must be None or 1 (LLaMA does not scale keys), got " + std::to_string(*f));
    }
  }
  problems.expect_no_bias(attn.child("output_linear"), kAttention + ".output_linear");

  const Module& rope = attn.child("input_linear");
  if (!problems.expect_klass(rope, kRope + ".klass",
                             {layers::RoFormerQKVLinear::kRegisteredName})) {
    return;
  }
  const auto& rope_cfg = as<layers::RoFormerQKVLinear>(rope)->config();
  if (rope_cfg.rotary_value.get()) {
    problems.add(kRope + ".rotary_value", "must be False (LLaMA rotates queries and keys only)");
  }
  spec.rope_theta =
      as<layers::RoFormerSinusoidalPositionalEmbedding>(rope.child("rope_pos_emb_layer"))
          ->config()
          .theta;
  const Module& qkv = rope.child("input_linear");
  if (!problems.expect_klass(
          qkv, kQkv + ".klass",
          {layers::FusedGroupedQKVLinear::kRegisteredName,
           layers::GroupedQKVLinear::kRegisteredName, layers::QKVLinear::kRegisteredName})) {
    return;
  }
  spec.num_kv_heads = as<layers::BaseQKVLinear>(qkv)->num_kv_heads();
  if (klass_of(qkv) == layers::FusedGroupedQKVLinear::kRegisteredName) {
    spec.qkv = LlamaSpec::Qkv::kFused;
    problems.expect_no_bias(qkv.child("qkv_proj"), kQkv + ".layer");
  } else {
    spec.qkv = LlamaSpec::Qkv::kSeparate;
    problems.expect_no_bias(qkv.child("q_proj"), kQkv + ".layer");
  }
}

// Feed-forward: SwiGLU (silu gate times a linear "up"), prenorm, no biases; fills F.
void read_feed_forward(const layers::TransformerFeedForwardLayer& ff, LlamaSpec& spec,
                       std::optional<double>& eps, Problems& problems) {
  const auto& cfg = ff.config();
  spec.intermediate_size = ff.hidden_dim();
  if (cfg.structure.get() != layers::NormStructure::kPrenorm) {
    problems.add(kFeedForward + ".structure", "must be 'prenorm' (LLaMA normalizes inputs)");
  }
  if (cfg.residual_weight.get() != 1.0) {
    problems.add(kFeedForward + ".residual_weight", "must be 1");
  }
  const auto* acts = std::get_if<std::vector<std::string>>(&cfg.activation.get());
  const std::set<std::string> silu{"nn.silu", "nn.swish", "silu"};
  if (!acts || acts->size() != 2 || !silu.count((*acts)[0]) || (*acts)[1] != "linear") {
    problems.add(kFeedForward + ".activation",
                 "must be ('nn.silu', 'linear') (LLaMA's SwiGLU: silu(gate) * up)");
  }
  eps = rms_eps(ff.child("norm"), kFeedForward + ".norm", problems);
  problems.expect_no_bias(ff.child(ff.has_child("linear1_0") ? "linear1_0" : "linear1"),
                          kFeedForward + ".linear1");
  problems.expect_no_bias(ff.child("linear2"), kFeedForward + ".linear2");
}

// One transformer layer: self-attention and feed-forward, prenorm RMSNorms, no cross-attention.
// output_eps: the output norm's eps, which every norm must share (nullopt: not an RMSNorm).
void read_layer(const Module& layer, std::optional<double> output_eps, LlamaSpec& spec,
                Problems& problems) {
  if (!problems.expect_klass(layer, kLayer + ".klass",
                             {layers::TransformerLayer::kRegisteredName})) {
    return;
  }
  if (as<layers::TransformerLayer>(layer)->config().cross_attention.get()) {
    problems.add(kLayer + ".cross_attention", "must be None (LLaMA is decoder-only)");
  }
  const Module& sa = layer.child("self_attention");
  if (!problems.expect_klass(sa, kLayer + ".self_attention.klass",
                             {layers::TransformerAttentionLayer::kRegisteredName})) {
    return;
  }
  if (as<layers::TransformerAttentionLayer>(sa)->config().structure.get() !=
      layers::NormStructure::kPrenorm) {
    problems.add(kLayer + ".self_attention.structure", "must be 'prenorm'");
  }
  std::optional<double> attn_eps =
      rms_eps(sa.child("norm"), kLayer + ".self_attention.norm", problems);
  const Module& attn = sa.child("attention");
  if (problems.expect_klass(attn, kAttention + ".klass",
                            {layers::GroupedQueryAttention::kRegisteredName,
                             layers::MultiheadAttention::kRegisteredName})) {
    read_attention(*as<layers::MultiheadAttention>(attn), spec, problems);
  }
  const Module& ff = layer.child("feed_forward");
  std::optional<double> ff_eps;
  if (problems.expect_klass(ff, kFeedForward + ".klass",
                            {layers::TransformerFeedForwardLayer::kRegisteredName})) {
    read_feed_forward(*as<layers::TransformerFeedForwardLayer>(ff), spec, ff_eps, problems);
  }
  // LLaMA has one rms_norm_eps.
  for (const auto& [eps, path] : {std::pair{attn_eps, kLayer + ".self_attention.norm.eps"},
                                  std::pair{ff_eps, kFeedForward + ".norm.eps"}}) {
    if (eps && output_eps && *eps != *output_eps) {
      std::ostringstream os;
      os << "is " << *eps << " but model.decoder.output_norm.eps is " << spec.rms_norm_eps
         << " (LLaMA has one rms_norm_eps)";
      problems.add(path, os.str());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The name mapping.

// How one of our tensors becomes an HF tensor. Ours per layer (without the leading L axis).
enum class Map {
  kCopy,       // same shape
  kTranspose,  // ours (in, out) -> HF (out, in)
  kHeadsIn,    // ours (d, n, H) -> HF (n*H, d): hf[n*H + j, i] = ours[i, n, j]
  kHeadsOut,   // ours (d, n, H) -> HF (d, n*H): hf[i, n*H + j] = ours[i, n, j]
};

struct LayerEntry {
  std::string hf;                          // suffix after "model.layers.{i}."
  std::string ours;                        // path inside one layer's parameters
  int64_t head_begin = -1, head_end = -1;  // a range of axis 1 of ours (fused qkv); -1: all
  Map map;
};

const char* kQkvPath = "self_attention/attention/input_linear/input_linear/";

// In LlamaDecoderLayer's state_dict order.
std::vector<LayerEntry> layer_entries(const LlamaSpec& s) {
  const std::string qkv = kQkvPath;
  std::vector<LayerEntry> e;
  if (s.qkv == LlamaSpec::Qkv::kFused) {
    const std::string fused = qkv + "qkv_proj/weight";
    const int64_t n = s.num_heads, k = s.num_kv_heads;
    e.push_back({"self_attn.q_proj.weight", fused, 0, n, Map::kHeadsIn});
    e.push_back({"self_attn.k_proj.weight", fused, n, n + k, Map::kHeadsIn});
    e.push_back({"self_attn.v_proj.weight", fused, n + k, n + 2 * k, Map::kHeadsIn});
  } else {
    for (const char* p : {"q", "k", "v"}) {
      e.push_back({std::string("self_attn.") + p + "_proj.weight", qkv + p + "_proj/weight", -1, -1,
                   Map::kHeadsIn});
    }
  }
  e.push_back({"self_attn.o_proj.weight", "self_attention/attention/output_linear/weight", -1, -1,
               Map::kHeadsOut});
  e.push_back({"mlp.gate_proj.weight", "feed_forward/linear1_0/weight", -1, -1, Map::kTranspose});
  e.push_back({"mlp.up_proj.weight", "feed_forward/linear1_1/weight", -1, -1, Map::kTranspose});
  e.push_back({"mlp.down_proj.weight", "feed_forward/linear2/weight", -1, -1, Map::kTranspose});
  e.push_back({"input_layernorm.weight", "self_attention/norm/scale", -1, -1, Map::kCopy});
  e.push_back({"post_attention_layernorm.weight", "feed_forward/norm/scale", -1, -1, Map::kCopy});
  return e;
}

// Our per-layer parameter shapes (without the L axis), by path inside a layer.
std::map<std::string, Shape> layer_param_shapes(const LlamaSpec& s) {
  const int64_t d = s.hidden_size, f = s.intermediate_size, h = s.head_dim;
  const std::string qkv = kQkvPath;
  std::map<std::string, Shape> m;
  if (s.qkv == LlamaSpec::Qkv::kFused) {
    m[qkv + "qkv_proj/weight"] = {d, s.num_heads + 2 * s.num_kv_heads, h};
  } else {
    m[qkv + "q_proj/weight"] = {d, s.num_heads, h};
    m[qkv + "k_proj/weight"] = {d, s.num_kv_heads, h};
    m[qkv + "v_proj/weight"] = {d, s.num_kv_heads, h};
  }
  m["self_attention/attention/output_linear/weight"] = {d, s.num_heads, h};
  m["self_attention/norm/scale"] = {d};
  m["feed_forward/linear1_0/weight"] = {d, f};
  m["feed_forward/linear1_1/weight"] = {d, f};
  m["feed_forward/linear2/weight"] = {f, d};
  m["feed_forward/norm/scale"] = {d};
  return m;
}

std::string layer_prefix(const LlamaSpec& s, int64_t i) {
  return s.stack == LlamaSpec::Stack::kRepeated
             ? "decoder/transformer/repeat/layer/"
             : "decoder/transformer/layer" + std::to_string(i) + "/";
}

const char* kEmb = "decoder/emb/token_emb/weight";
const char* kNorm = "decoder/output_norm/scale";
const char* kHead = "decoder/lm_head/weight";

// Every parameter of the model by path, with its full shape.
std::map<std::string, Shape> param_shapes(const LlamaSpec& s) {
  std::map<std::string, Shape> m;
  m[kEmb] = {s.vocab_size, s.hidden_size};
  m[kNorm] = {s.hidden_size};
  if (!s.tie_word_embeddings) m[kHead] = {s.vocab_size, s.hidden_size};
  for (const auto& [path, shape] : layer_param_shapes(s)) {
    if (s.stack == LlamaSpec::Stack::kRepeated) {
      Shape full = shape;
      full.insert(full.begin(), s.num_layers);
      m[layer_prefix(s, 0) + path] = full;
    } else {
      for (int64_t i = 0; i < s.num_layers; ++i) m[layer_prefix(s, i) + path] = shape;
    }
  }
  return m;
}

Shape hf_shape(Map map, const Shape& ours) {
  switch (map) {
    case Map::kCopy:
      return ours;
    case Map::kTranspose:
      return {ours[1], ours[0]};
    case Map::kHeadsIn:
      return {ours[1] * ours[2], ours[0]};
    case Map::kHeadsOut:
      return {ours[0], ours[1] * ours[2]};
  }
  return ours;
}

Tensor to_hf(Map map, const Tensor& t) {
  switch (map) {
    case Map::kCopy:
      return t;
    case Map::kTranspose:
      return transpose(t);
    case Map::kHeadsIn:
      return transpose(reshape(t, {t.shape(0), t.shape(1) * t.shape(2)}));
    case Map::kHeadsOut:
      return reshape(t, {t.shape(0), t.shape(1) * t.shape(2)});
  }
  return t;
}

// HF tensor -> ours (d, n, H) etc.; `heads` is n for the head maps.
Tensor from_hf(Map map, const Tensor& t, int64_t heads) {
  switch (map) {
    case Map::kCopy:
      return t;
    case Map::kTranspose:
      return transpose(t);
    case Map::kHeadsIn:
      return reshape(transpose(t), {t.shape(1), heads, t.shape(0) / heads});
    case Map::kHeadsOut:
      return reshape(t, {t.shape(0), heads, t.shape(1) / heads});
  }
  return t;
}

std::string layer_name(int64_t i, const std::string& suffix) {
  return "model.layers." + std::to_string(i) + "." + suffix;
}

// The per-layer shape of an entry's slice of ours (the head range applied).
Shape entry_ours_shape(const LlamaSpec& s, const LayerEntry& e) {
  Shape shape = layer_param_shapes(s).at(e.ours);
  if (e.head_begin >= 0) shape[1] = e.head_end - e.head_begin;
  return shape;
}

std::string join_names(const std::vector<std::string>& names, size_t limit = 8) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) {
    out += (i ? ", '" : "'") + names[i] + "'";
  }
  if (names.size() > limit) out += " and " + std::to_string(names.size() - limit) + " more";
  return out;
}

void set_path(NestedTensor& tree, const std::string& path, Tensor value) {
  NestedTensor* node = &tree;
  size_t start = 0;
  for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', start)) {
    node = &(*node)[path.substr(start, slash - start)];
    start = slash + 1;
  }
  (*node)[path.substr(start)] = NestedTensor(std::move(value));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

LlamaSpec llama_spec(const layers::Model::Config& model) {
  auto cfg = model.clone();
  cfg->name = "model";
  std::unique_ptr<layers::Model> m = cfg->instantiate<layers::Model>(nullptr);
  LlamaSpec spec;
  Problems problems;

  const auto* dec = as<layers::Decoder>(m->child("decoder"));
  if (!problems.expect_klass(*dec, kDecoder + ".klass", {layers::Decoder::kRegisteredName})) {
    problems.raise();
  }
  const auto& dcfg = dec->config();
  spec.vocab_size = dcfg.vocab_size;
  spec.hidden_size = dcfg.dim;
  spec.pad_token_id = dcfg.pad_token_id;
  spec.eos_token_id = dcfg.eos_token_id;
  spec.tie_word_embeddings = !dcfg.lm_head.get();
  if (dcfg.lm_head.get()) {
    problems.expect_klass(dec->child("lm_head"), kDecoder + ".lm_head.klass",
                          {layers::LmHead::kRegisteredName});
  }
  const Module& emb = dec->child("emb");
  if (problems.expect_klass(emb, kDecoder + ".emb.klass",
                            {layers::TransformerTextEmbeddings::kRegisteredName})) {
    problems.expect_klass(emb.child("token_emb"), kDecoder + ".emb.token_emb.klass",
                          {layers::Embedding::kRegisteredName});
  }
  const std::optional<double> output_eps =
      rms_eps(dec->child("output_norm"), kDecoder + ".output_norm", problems);
  spec.rms_norm_eps = output_eps.value_or(0.0);

  const Module& stack = dec->child("transformer");
  if (!problems.expect_klass(stack, kDecoder + ".transformer.klass",
                             {layers::RepeatedTransformerLayer::kRegisteredName,
                              layers::StackedTransformerLayer::kRegisteredName})) {
    problems.raise();
  }
  spec.num_layers = as<layers::BaseStackedTransformerLayer>(stack)->config().num_layers;
  const Module* layer;
  if (klass_of(stack) == layers::RepeatedTransformerLayer::kRegisteredName) {
    spec.stack = LlamaSpec::Stack::kRepeated;
    layer = &stack.child("repeat").child("layer");
  } else {
    spec.stack = LlamaSpec::Stack::kStacked;
    layer = &stack.child("layer0");
  }
  read_layer(*layer, output_eps, spec, problems);
  problems.raise();

  // Every parameter must be one the mapping knows, with the shape it expects.
  const auto expected = param_shapes(spec);
  spec.param_dtype = m->dtype();
  std::set<std::string> seen;
  for (const auto& [path, ps] : m->create_parameter_specs_recursively().flatten_with_paths()) {
    auto it = expected.find(path);
    const Dtype dtype = ps.dtype.value_or(spec.param_dtype);
    if (it == expected.end()) {
      problems.add("parameter " + path, "has no Hugging Face LLaMA counterpart");
    } else if (it->second != ps.shape) {
      problems.add("parameter " + path, "has shape " + shape_str(ps.shape) +
                                            ", the mapping expects " + shape_str(it->second));
    } else if (dtype != spec.param_dtype) {
      problems.add("parameter " + path, std::string("has dtype ") + dtype_name(dtype) +
                                            ", the model " + dtype_name(spec.param_dtype));
    }
    seen.insert(path);
  }
  for (const auto& [path, shape] : expected) {
    if (!seen.count(path)) problems.add("parameter " + path, "is missing from the model");
  }
  problems.raise();
  return spec;
}

bool is_hf_derived_buffer(const std::string& name) {
  static const std::regex re(R"(model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq)");
  return std::regex_match(name, re);
}

std::vector<std::pair<std::string, Shape>> hf_tensor_shapes(const LlamaSpec& s) {
  std::vector<std::pair<std::string, Shape>> out;
  out.push_back({"model.embed_tokens.weight", {s.vocab_size, s.hidden_size}});
  const auto entries = layer_entries(s);
  for (int64_t i = 0; i < s.num_layers; ++i) {
    for (const LayerEntry& e : entries) {
      out.push_back({layer_name(i, e.hf), hf_shape(e.map, entry_ours_shape(s, e))});
    }
  }
  out.push_back({"model.norm.weight", {s.hidden_size}});
  if (!s.tie_word_embeddings) out.push_back({"lm_head.weight", {s.vocab_size, s.hidden_size}});
  return out;
}

HfTensors to_hf_tensors(const LlamaSpec& s, const NestedTensor& params) {
  const auto expected = param_shapes(s);
  std::map<std::string, Tensor> ours;
  for (auto& [path, t] : params.flatten_with_paths()) {
    auto it = expected.find(path);
    if (it == expected.end()) {
      fail("to_hf_tensors: parameter '", path, "' has no Hugging Face LLaMA counterpart");
    }
    if (t.shape() != it->second) {
      fail("to_hf_tensors: parameter '", path, "' has shape ", shape_str(t.shape()), ", expected ",
           shape_str(it->second));
    }
    ours[path] = t;
  }
  for (const auto& [path, shape] : expected) {
    if (!ours.count(path)) fail("to_hf_tensors: parameter '", path, "' is missing");
  }

  HfTensors out;
  out.push_back({"model.embed_tokens.weight", ours.at(kEmb)});
  const auto entries = layer_entries(s);
  for (int64_t i = 0; i < s.num_layers; ++i) {
    for (const LayerEntry& e : entries) {
      Tensor t = ours.at(layer_prefix(s, i) + e.ours);
      if (s.stack == LlamaSpec::Stack::kRepeated) t = squeeze(slice_axis(t, 0, i, i + 1), {0});
      if (e.head_begin >= 0) t = slice_axis(t, 1, e.head_begin, e.head_end);
      out.push_back({layer_name(i, e.hf), to_hf(e.map, t)});
    }
  }
  out.push_back({"model.norm.weight", ours.at(kNorm)});
  if (!s.tie_word_embeddings) out.push_back({"lm_head.weight", ours.at(kHead)});
  return out;
}

NestedTensor from_hf_tensors(const LlamaSpec& s, const HfTensors& tensors) {
  std::map<std::string, Tensor> hf;
  std::vector<std::string> unexpected;
  const auto shapes = hf_tensor_shapes(s);
  std::map<std::string, Shape> expected(shapes.begin(), shapes.end());
  for (const auto& [name, t] : tensors) {
    if (is_hf_derived_buffer(name)) continue;
    auto it = expected.find(name);
    if (it == expected.end()) {
      unexpected.push_back(name);
      continue;
    }
    if (!hf.emplace(name, t).second) fail("from_hf_tensors: tensor '", name, "' is given twice");
    if (t.shape() != it->second) {
      fail("from_hf_tensors: tensor '", name, "' has shape ", shape_str(t.shape()), ", expected ",
           shape_str(it->second));
    }
    if (!is_floating(t.dtype())) {
      fail("from_hf_tensors: tensor '", name, "' has dtype ", dtype_name(t.dtype()),
           "; weights must be floating-point");
    }
  }
  if (!unexpected.empty()) {
    fail("from_hf_tensors: unexpected tensor ", join_names(unexpected),
         " (not in LlamaForCausalLM with this config)");
  }
  std::vector<std::string> missing;
  for (const auto& [name, shape] : shapes) {
    if (!hf.count(name)) missing.push_back(name);
  }
  if (!missing.empty()) fail("from_hf_tensors: missing tensor ", join_names(missing));

  auto cast = [&](const Tensor& t) {
    return t.dtype() == s.param_dtype ? t : astype(t, s.param_dtype);
  };
  NestedTensor params;
  set_path(params, kEmb, cast(hf.at("model.embed_tokens.weight")));
  set_path(params, kNorm, cast(hf.at("model.norm.weight")));
  if (!s.tie_word_embeddings) set_path(params, kHead, cast(hf.at("lm_head.weight")));

  // Per parameter path inside a layer: per layer, its pieces in head order.
  const auto entries = layer_entries(s);
  std::map<std::string, std::vector<Tensor>> per_layer;  // path -> one tensor per layer
  for (int64_t i = 0; i < s.num_layers; ++i) {
    std::map<std::string, std::vector<std::pair<int64_t, Tensor>>> pieces;
    for (const LayerEntry& e : entries) {
      const Tensor& t = hf.at(layer_name(i, e.hf));
      const int64_t heads = entry_ours_shape(s, e).size() == 3 ? entry_ours_shape(s, e)[1] : 0;
      pieces[e.ours].push_back({e.head_begin, cast(from_hf(e.map, t, heads))});
    }
    for (auto& [path, parts] : pieces) {
      std::sort(parts.begin(), parts.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      std::vector<Tensor> ts;
      for (auto& [begin, t] : parts) ts.push_back(t);
      per_layer[path].push_back(ts.size() == 1 ? ts[0] : concatenate(ts, 1));
    }
  }
  for (auto& [path, layers_ts] : per_layer) {
    if (s.stack == LlamaSpec::Stack::kRepeated) {
      set_path(params, layer_prefix(s, 0) + path, stack(layers_ts, 0));
    } else {
      for (int64_t i = 0; i < s.num_layers; ++i) {
        set_path(params, layer_prefix(s, i) + path, layers_ts[size_t(i)]);
      }
    }
  }
  return params;
}

std::string hf_torch_dtype(Dtype dtype) {
  switch (dtype) {
    case bfloat16:
      return "bfloat16";
    case float16:
      return "float16";
    case float32:
      return "float32";
    default:
      fail("Hugging Face export supports bfloat16, float16 and float32, not ", dtype_name(dtype));
  }
}

Json hf_config_json(const LlamaSpec& s, Dtype torch_dtype, int64_t max_position_embeddings) {
  Json j;
  j["architectures"] = Json::array({"LlamaForCausalLM"});
  j["model_type"] = "llama";
  j["hidden_size"] = s.hidden_size;
  j["intermediate_size"] = s.intermediate_size;
  j["num_attention_heads"] = s.num_heads;
  j["num_key_value_heads"] = s.num_kv_heads;
  j["head_dim"] = s.head_dim;
  j["num_hidden_layers"] = s.num_layers;
  j["vocab_size"] = s.vocab_size;
  j["rms_norm_eps"] = s.rms_norm_eps;
  j["rope_theta"] = s.rope_theta;
  j["rope_scaling"] = nullptr;
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = s.tie_word_embeddings;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["pretraining_tp"] = 1;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  j["bos_token_id"] = s.eos_token_id;
  j["eos_token_id"] = s.eos_token_id;
  j["pad_token_id"] = s.pad_token_id;
  j["torch_dtype"] = hf_torch_dtype(torch_dtype);
  return j;
}

void check_hf_config(const LlamaSpec& s, const Json& config, const std::string& where) {
  if (!config.is_object()) fail(where, ": config.json must be a JSON object");
  std::vector<std::string> bad;
  auto mismatch = [&](const std::string& key, const std::string& file_value,
                      const std::string& ours, const std::string& our_path) {
    bad.push_back(key + " is " + file_value + " in the file, " + ours + " in the model (" +
                  our_path + ")");
  };
  auto check_int = [&](const std::string& key, int64_t ours, const std::string& our_path,
                       std::optional<int64_t> dflt) {
    if (!config.contains(key) || config[key].is_null()) {
      if (!dflt) {
        bad.push_back(key + " is missing (the model has " + std::to_string(ours) + ")");
      } else if (*dflt != ours) {
        mismatch(key, "absent (default " + std::to_string(*dflt) + ")", std::to_string(ours),
                 our_path);
      }
      return;
    }
    const Json& v = config[key];
    if (!v.is_number_integer() || v.get<int64_t>() != ours) {
      mismatch(key, v.dump(), std::to_string(ours), our_path);
    }
  };
  auto check_float = [&](const std::string& key, double ours, const std::string& our_path,
                         double dflt) {
    const bool absent = !config.contains(key) || config[key].is_null();
    if (!absent && !config[key].is_number()) {
      mismatch(key, config[key].dump(), Json(ours).dump(), our_path);
      return;
    }
    const double v = absent ? dflt : config[key].get<double>();
    if (std::abs(v - ours) > 1e-9 * std::max(std::abs(v), std::abs(ours))) {
      mismatch(key, absent ? "absent (default " + Json(dflt).dump() + ")" : config[key].dump(),
               Json(ours).dump(), our_path);
    }
  };
  auto check_bool = [&](const std::string& key, bool ours, const std::string& our_path) {
    const bool absent = !config.contains(key) || config[key].is_null();
    if (!absent && !config[key].is_boolean()) {
      mismatch(key, config[key].dump(), ours ? "true" : "false", our_path);
    } else if ((absent ? false : config[key].get<bool>()) != ours) {
      mismatch(key, absent ? "absent (default false)" : config[key].dump(), ours ? "true" : "false",
               our_path);
    }
  };

  if (config.value("model_type", Json()) != "llama") {
    bad.push_back("model_type is " + config.value("model_type", Json()).dump() +
                  ", expected \"llama\"");
  }
  if (config.contains("architectures")) {
    const Json& a = config["architectures"];
    if (!a.is_array() || std::find(a.begin(), a.end(), Json("LlamaForCausalLM")) == a.end()) {
      bad.push_back("architectures is " + a.dump() + ", expected [\"LlamaForCausalLM\"]");
    }
  }
  check_int("hidden_size", s.hidden_size, "model.decoder.dim", std::nullopt);
  check_int("intermediate_size", s.intermediate_size, kFeedForward + ".hidden_dim", std::nullopt);
  check_int("num_attention_heads", s.num_heads, kAttention + ".num_heads", std::nullopt);
  check_int("num_hidden_layers", s.num_layers, "model.decoder.transformer.num_layers",
            std::nullopt);
  check_int("vocab_size", s.vocab_size, "model.decoder.vocab_size", std::nullopt);
  // LlamaConfig's defaults for the optional fields.
  int64_t file_heads = s.num_heads, file_hidden = s.hidden_size;
  if (config.contains("num_attention_heads") && config["num_attention_heads"].is_number_integer())
    file_heads = config["num_attention_heads"].get<int64_t>();
  if (config.contains("hidden_size") && config["hidden_size"].is_number_integer())
    file_hidden = config["hidden_size"].get<int64_t>();
  check_int("num_key_value_heads", s.num_kv_heads, kQkv + ".num_kv_heads", file_heads);
  check_int("head_dim", s.head_dim, kAttention + ".per_head_dim",
            file_heads > 0 ? file_hidden / file_heads : 0);
  check_float("rms_norm_eps", s.rms_norm_eps, "model.decoder.output_norm.eps", 1e-6);
  check_float("rope_theta", s.rope_theta, kRope + ".rope_pos_emb_layer.theta", 10000.0);
  check_bool("tie_word_embeddings", s.tie_word_embeddings,
             "model.decoder.lm_head is None when tied");
  check_bool("attention_bias", false, kQkv + ".layer.bias");
  check_bool("mlp_bias", false, kFeedForward + ".linear1.bias");
  const Json act = config.value("hidden_act", Json("silu"));
  if (act != "silu") {
    mismatch("hidden_act", act.dump(), "\"silu\"", kFeedForward + ".activation");
  }
  if (config.contains("rope_scaling") && !config["rope_scaling"].is_null()) {
    bad.push_back("rope_scaling is " + config["rope_scaling"].dump() +
                  "; scaled RoPE is not supported (must be null)");
  }
  if (bad.empty()) return;
  std::string msg = where + ": does not match the model config:";
  for (const auto& b : bad) msg += "\n  " + b;
  fail(msg);
}

}  // namespace axlearn::infer
