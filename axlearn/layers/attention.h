// Multi-head attention as in AXLearn's attention.py: the per-head projections
// (MultiheadInputLinear / MultiheadOutputLinear), the QKV projection family (separate, fused,
// grouped, rotary), query/key scaling, and MultiheadAttention / GroupedQueryAttention with
// composable masks, logit cap and probability dropout. Shapes: B batch, T query length, S key
// length, N query heads, K key/value heads, H per-head dim, D model dim.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "axlearn/layers/attention_bias.h"
#include "axlearn/layers/layers.h"

namespace axlearn::layers {

// x (B, T, D) -> (B, T, N, H); weight (D, N, H), bias (N, H).
class MultiheadInputLinear : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> model_dim{this, "model_dim", REQUIRED, "Input dim D."};
    Field<int64_t> num_heads{this, "num_heads", REQUIRED, "Heads N."};
    Field<int64_t> per_head_dim{this, "per_head_dim", REQUIRED, "Per-head dim H."};
    Field<bool> bias{this, "bias", true, "Whether to add a bias."};
  };
  AXLEARN_CONFIGURABLE(MultiheadInputLinear, "axlearn.common.attention.MultiheadInputLinear")
  MultiheadInputLinear(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}
  Tensor forward(const Tensor& x) const;

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override;
  std::optional<FanAxes> compute_fan_axes(const std::string& name,
                                          const ParameterSpec& spec) const override;
};

// x (B, T, N, H) -> (B, T, D); weight (D, N, H), bias (D,).
class MultiheadOutputLinear : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> model_dim{this, "model_dim", REQUIRED, "Output dim D."};
    Field<int64_t> num_heads{this, "num_heads", REQUIRED, "Heads N."};
    Field<int64_t> per_head_dim{this, "per_head_dim", REQUIRED, "Per-head dim H."};
    Field<bool> bias{this, "bias", true, "Whether to add a bias."};
  };
  AXLEARN_CONFIGURABLE(MultiheadOutputLinear, "axlearn.common.attention.MultiheadOutputLinear")
  MultiheadOutputLinear(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}
  Tensor forward(const Tensor& x) const;

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override;
  std::optional<FanAxes> compute_fan_axes(const std::string& name,
                                          const ParameterSpec& spec) const override;
};

// Projected queries (B, T, N, H), keys and values (B, S, K, H).
struct QKV {
  Tensor query, key, value;
};

// Base of the QKV projections. key / value undefined means self-attention (they are the query).
class BaseQKVLinear : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> query_dim{this, "query_dim", REQUIRED, "Query input dim."};
    Field<int64_t> key_dim{this, "key_dim", REQUIRED, "Key input dim."};
    Field<int64_t> value_dim{this, "value_dim", REQUIRED, "Value input dim."};
    Field<int64_t> num_heads{this, "num_heads", REQUIRED, "Query heads N."};
    Field<int64_t> per_head_dim{this, "per_head_dim", REQUIRED, "Per-head dim H."};
  };
  AXLEARN_CONFIGURABLE(BaseQKVLinear, "axlearn.common.attention.BaseQKVLinear")
  BaseQKVLinear(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}
  // query_positions (B|1, T) int: used by rotary projections only (undefined: 0..T-1).
  virtual QKV forward(const Tensor& query, const Tensor& key, const Tensor& value,
                      const Tensor& query_positions) const;
  // K, the number of key/value heads.
  virtual int64_t num_kv_heads() const { return config().num_heads; }
};

// Separate q_proj, k_proj, v_proj (MultiheadInputLinear each, from `layer`).
class QKVLinear : public BaseQKVLinear {
 public:
  struct Config : BaseQKVLinear::Config {
    AXLEARN_CONFIG(Config)
    Field<ConfigPtr<MultiheadInputLinear::Config>> layer{
        this, "layer", MultiheadInputLinear::default_config(), "Config of each projection."};
  };
  AXLEARN_CONFIGURABLE(QKVLinear, "axlearn.common.attention.QKVLinear")
  QKVLinear(const Config& cfg, Module* parent);
  QKV forward(const Tensor& query, const Tensor& key, const Tensor& value,
              const Tensor& query_positions) const override;

 protected:
  // Builds q_proj (num_heads) and k_proj / v_proj (kv_heads).
  void build(const Config& cfg, int64_t kv_heads);
  const MultiheadInputLinear* q_proj_ = nullptr;
  const MultiheadInputLinear* k_proj_ = nullptr;
  const MultiheadInputLinear* v_proj_ = nullptr;
};

// QKVLinear with K = num_kv_heads key/value heads (N a multiple of K).
class GroupedQKVLinear : public QKVLinear {
 public:
  struct Config : QKVLinear::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> num_kv_heads{this, "num_kv_heads", REQUIRED, "Key/value heads K."};
  };
  AXLEARN_CONFIGURABLE(GroupedQKVLinear, "axlearn.common.attention.GroupedQKVLinear")
  GroupedQKVLinear(const Config& cfg, Module* parent);
  int64_t num_kv_heads() const override { return config().num_kv_heads; }
};

// One qkv_proj with weight (3, D, N, H) and bias (3, N, H); self-attention or equal dims only.
class FusedQKVLinear : public BaseQKVLinear {
 public:
  struct Config : BaseQKVLinear::Config {
    AXLEARN_CONFIG(Config)
    Field<ConfigPtr<MultiheadInputLinear::Config>> layer{
        this, "layer", MultiheadInputLinear::default_config(), "Config of the fused projection."};
  };
  AXLEARN_CONFIGURABLE(FusedQKVLinear, "axlearn.common.attention.FusedQKVLinear")
  FusedQKVLinear(const Config& cfg, Module* parent);
  QKV forward(const Tensor& query, const Tensor& key, const Tensor& value,
              const Tensor& query_positions) const override;
  NestedParameterSpec create_parameter_specs_recursively() const override;
  NestedTensor initialize_parameters_recursively(const Tensor& prng_key) const override;
};

// One qkv_proj with weight (D, N + 2K, H): heads [0, N) are queries, then K keys, K values.
class FusedGroupedQKVLinear : public BaseQKVLinear {
 public:
  struct Config : BaseQKVLinear::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> num_kv_heads{this, "num_kv_heads", REQUIRED, "Key/value heads K."};
    Field<ConfigPtr<MultiheadInputLinear::Config>> layer{
        this, "layer", MultiheadInputLinear::default_config(), "Config of the fused projection."};
  };
  AXLEARN_CONFIGURABLE(FusedGroupedQKVLinear, "axlearn.common.attention.FusedGroupedQKVLinear")
  FusedGroupedQKVLinear(const Config& cfg, Module* parent);
  QKV forward(const Tensor& query, const Tensor& key, const Tensor& value,
              const Tensor& query_positions) const override;
  int64_t num_kv_heads() const override { return config().num_kv_heads; }

 private:
  const MultiheadInputLinear* qkv_proj_ = nullptr;
};

// Rotary position embedding tables: for positions (B|1, T), sin and cos of pos * theta^(-2i/dim)
// for i < dim/2, each repeated to (B|1, T, dim) as [f, f] (HF's rotate_half layout).
class RoFormerSinusoidalPositionalEmbedding : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> dim{this, "dim", REQUIRED, "Rotated dim (the per-head dim), even."};
    Field<double> theta{this, "theta", 10000.0, "Base of the frequencies."};
  };
  AXLEARN_CONFIGURABLE(RoFormerSinusoidalPositionalEmbedding,
                       "axlearn.common.attention.RoFormerSinusoidalPositionalEmbedding")
  RoFormerSinusoidalPositionalEmbedding(const Config& cfg, Module* parent);
  // positions int (B|1, T) -> {sin, cos}, each f32 (B|1, T, dim).
  std::pair<Tensor, Tensor> forward(const Tensor& positions) const;
};

// x (B, T, N, H) rotated: x * cos + rotate_half(x) * sin with rotate_half([x1, x2]) = [-x2, x1]
// (HF's convention); sin / cos (B|1, T, H).
Tensor apply_rotary_position_embeddings(const Tensor& x, const Tensor& sin, const Tensor& cos);

// Wraps another QKV projection (`input_linear`) and rotates queries and keys (and values when
// rotary_value) by their positions.
class RoFormerQKVLinear : public BaseQKVLinear {
 public:
  struct Config : BaseQKVLinear::Config {
    AXLEARN_CONFIG(Config)
    Field<ConfigPtr<BaseQKVLinear::Config>> input_linear{
        this, "input_linear", ConfigPtr<BaseQKVLinear::Config>(QKVLinear::default_config()),
        "The projection whose outputs are rotated."};
    Field<ConfigPtr<RoFormerSinusoidalPositionalEmbedding::Config>> rope_pos_emb_layer{
        this, "rope_pos_emb_layer", RoFormerSinusoidalPositionalEmbedding::default_config(),
        "The rotary tables; dim is filled in."};
    Field<bool> rotary_value{this, "rotary_value", false, "Whether values are rotated too."};
  };
  AXLEARN_CONFIGURABLE(RoFormerQKVLinear, "axlearn.common.attention.RoFormerQKVLinear")
  RoFormerQKVLinear(const Config& cfg, Module* parent);
  QKV forward(const Tensor& query, const Tensor& key, const Tensor& value,
              const Tensor& query_positions) const override;
  int64_t num_kv_heads() const override { return input_linear_->num_kv_heads(); }

 private:
  const BaseQKVLinear* input_linear_;
  const RoFormerSinusoidalPositionalEmbedding* rope_;
};

// Multiplies projected queries (keys) by scale_factor; default per_head_dim^-0.5 for queries and
// 1 for keys.
class ScaleQuery : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> per_head_dim{this, "per_head_dim", REQUIRED, "Per-head dim (filled in)."};
    Field<std::optional<double>> scale_factor{this, "scale_factor", std::nullopt,
                                              "None: per_head_dim ** -0.5."};
  };
  AXLEARN_CONFIGURABLE(ScaleQuery, "axlearn.common.attention.ScaleQuery")
  ScaleQuery(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}
  virtual Tensor forward(const Tensor& proj) const;
};

class ScaleKey : public ScaleQuery {
 public:
  struct Config : ScaleQuery::Config {
    AXLEARN_CONFIG(Config)
  };
  AXLEARN_CONFIGURABLE(ScaleKey, "axlearn.common.attention.ScaleKey")
  ScaleKey(const Config& cfg, Module* parent) : ScaleQuery(cfg, parent) {}
  Tensor forward(const Tensor& proj) const override;
};

// Optional inputs of an attention call; undefined tensors are absent.
struct AttentionInputs {
  Tensor key;                     // (B, S, key_dim); undefined: self-attention
  Tensor value;                   // (B, S, value_dim)
  Tensor attention_logit_biases;  // additive, broadcastable to (B, N, T, S)
  Tensor segment_ids;             // (B, T) int: packed sequences (self-attention)
  Tensor query_positions;         // (B|1, T) int: for rotary and position masks; default 0..T-1
};

struct AttentionOutput {
  Tensor data;   // (B, T, output_dim)
  Tensor probs;  // (B, N, T, S)
};

// KV-cache decoding (AXLearn's init_states / prefill_states / extend_step). A decoding state is
// a NestedTensor each of whose leaves has the batch on axis 0, so beams are reordered by taking
// rows of every leaf. An attention layer's state:
//   {"key": (B, L, K, H), "value": (B, L, K, H), "time_step": (B,) int32}
// keys scaled by key_scale and rotated, L = max_len, or for sliding-window attention (mask
// sliding_window_causal_mask) min(max_len, sliding_window_size + 1) slots written as a ring
// buffer: position p lives in slot p % L. time_step is the number of tokens a row has seen: the
// position of its next token.
struct CachedOutput {
  NestedTensor states;  // the updated decoding state
  Tensor data;          // (B, T, output_dim)
};

class MultiheadAttention : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> query_dim{this, "query_dim", REQUIRED, "Query input dim."};
    Field<int64_t> key_dim{this, "key_dim", REQUIRED, "Key input dim."};
    Field<int64_t> value_dim{this, "value_dim", REQUIRED, "Value input dim."};
    Field<std::optional<int64_t>> output_dim{this, "output_dim", std::nullopt,
                                             "Output dim; None: query_dim."};
    Field<int64_t> num_heads{this, "num_heads", REQUIRED, "Query heads N."};
    Field<std::optional<int64_t>> per_head_dim{this, "per_head_dim", std::nullopt,
                                               "None: query_dim / num_heads."};
    Field<ConfigPtr<BaseQKVLinear::Config>> input_linear{
        this, "input_linear", ConfigPtr<BaseQKVLinear::Config>(QKVLinear::default_config()),
        "The QKV projection; dims are filled in."};
    Field<ConfigPtr<MultiheadOutputLinear::Config>> output_linear{
        this, "output_linear", MultiheadOutputLinear::default_config(), "Output projection."};
    Field<ConfigPtr<Dropout::Config>> dropout{this, "dropout", Dropout::default_config(),
                                              "Dropout on the attention probabilities."};
    Field<ConfigPtr<ScaleQuery::Config>> query_scale{
        this, "query_scale", ScaleQuery::default_config(), "Query scaling."};
    Field<ConfigPtr<ScaleQuery::Config>> key_scale{
        this, "key_scale", ConfigPtr<ScaleQuery::Config>(ScaleKey::default_config()),
        "Key scaling."};
    Field<std::optional<double>> atten_logit_cap{this, "atten_logit_cap", std::nullopt,
                                                 "cap * tanh(logits / cap) when set."};
    Field<bool> causal{this, "causal", false, "Adds the causal mask (same as mask=causal_mask)."};
    Field<ConfigPtr<MaskFnConfig>> mask{this, "mask", nullptr,
                                        "A mask over positions (causal_mask, "
                                        "sliding_window_causal_mask); None: none."};
  };
  AXLEARN_CONFIGURABLE(MultiheadAttention, "axlearn.common.attention.MultiheadAttention")
  MultiheadAttention(const Config& cfg, Module* parent);

  // query (B, T, query_dim).
  AttentionOutput forward(const Tensor& query, const AttentionInputs& inputs = {}) const;
  int64_t per_head_dim() const;

  // ---- decoding (self-attention; see CachedOutput for the state) ----
  // An empty state (zeros, time_step 0) of `batch` rows that can hold max_len positions.
  NestedTensor init_states(int64_t batch, int64_t max_len) const;
  // Runs a batch of prompts query (B, T, query_dim), right-padded, row b of length time_step[b]
  // (B,) int, at positions 0..T-1 as forward(query) does, and returns `states` (any contents,
  // from init_states) holding their keys and values, with time_step set to the lengths. Outputs
  // at padded positions are unspecified.
  CachedOutput prefill(const NestedTensor& states, const Tensor& query,
                       const Tensor& time_step) const;
  // One token per row: query (B, 1, query_dim) at position time_step[b] (its rotary position
  // too) attends to the cached positions p <= time_step[b] allowed by the masks; the state comes
  // back with that key / value written and time_step + 1.
  CachedOutput extend_step(const NestedTensor& states, const Tensor& query) const;
  // sliding_window_size when the mask is sliding_window_causal_mask.
  std::optional<int64_t> sliding_window() const;

 protected:
  // The one place attention proper is computed: q (B, T, N, H) scaled, k / v (B, S, K, H),
  // bias broadcastable to (B, N, T, S) or undefined -> context (B, T, N, H) and probs
  // (B, N, T, S). The naive path (softmax of q k^T + bias); the fused CPU attention primitive
  // (core/attention.h) plugs in here.
  std::pair<Tensor, Tensor> compute_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                              const Tensor& bias) const;

 private:
  const BaseQKVLinear* input_linear_;
  const MultiheadOutputLinear* output_linear_;
  const Dropout* dropout_;
  const ScaleQuery* query_scale_;
  const ScaleQuery* key_scale_;
  std::optional<MaskFn> mask_fn_;
  // The context (B, T, N, H) from the fused attention kernel, or undefined when these inputs need
  // the general masked-bias path.
  Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionInputs& inputs) const;
  // forward(); when kv is given, it receives the scaled, rotated keys and the values (B, S, K, H).
  AttentionOutput attend(const Tensor& query, const AttentionInputs& inputs, QKV* kv) const;
};

// Multi-head attention whose input_linear has fewer key/value heads (GroupedQKVLinear,
// FusedGroupedQKVLinear, or RoFormerQKVLinear around one); each group of N / K query heads shares
// one key/value head.
class GroupedQueryAttention : public MultiheadAttention {
 public:
  struct Config : MultiheadAttention::Config {
    AXLEARN_CONFIG(Config)
  };
  AXLEARN_CONFIGURABLE(GroupedQueryAttention, "axlearn.common.attention.GroupedQueryAttention")
  GroupedQueryAttention(const Config& cfg, Module* parent) : MultiheadAttention(cfg, parent) {}
};

// Helpers shared with the transformer stacks: a leading stacked axis over a layer's parameters.
NestedParameterSpec stack_specs(const NestedParameterSpec& specs, int64_t n);
// Entry i of every leaf along axis 0.
NestedTensor index_state(const NestedTensor& state, int64_t i);

}  // namespace axlearn::layers
