// Transformer blocks as in AXLearn's attention.py: the feed-forward layer (plain and gated
// activations), the attention sub-layer with norm / residual, TransformerLayer, and the stacks
// StackedTransformerLayer (layer0, layer1, ...) and RepeatedTransformerLayer (one set of weights
// with a leading num_layers axis under repeat/layer, run in a loop). x: (B, T, input_dim).
#pragma once

#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "axlearn/layers/attention.h"

namespace axlearn::layers {

enum class NormStructure { kPrenorm, kPostnorm, kHybridnorm };
AXLEARN_CONFIG_ENUM(NormStructure, {NormStructure::kPrenorm, "prenorm"},
                    {NormStructure::kPostnorm, "postnorm"},
                    {NormStructure::kHybridnorm, "hybridnorm"})

// input_dim -> hidden dim.
using HiddenDimFn = std::function<int64_t(int64_t input_dim)>;
using HiddenDimFnConfig = FunctionConfig<HiddenDimFn>;

// round_up(int(input_dim * scale), round_up_to_multiples_of), as Fuji's scale_fn.
struct ScaleFn : HiddenDimFnConfig {
  AXLEARN_FUNCTION_CONFIG(ScaleFn, "axlearn.experiments.text.gpt.common.scale_fn")
  Field<double> scale{this, "scale", REQUIRED, "Multiple of the input dim."};
  Field<int64_t> round_up_to_multiples_of{this, "round_up_to_multiples_of", 1,
                                          "The hidden dim is rounded up to a multiple of this."};

 protected:
  HiddenDimFn call() const override;
};

// prenorm: x + residual_weight * sd(drop2(linear2(drop1(act(linear1(norm(x))))))).
// postnorm: norm(x + residual_weight * sd(drop2(linear2(drop1(act(linear1(x))))))).
// hybridnorm: x + residual_weight * sd(postnorm(... (norm(x)))): needs `postnorm`.
// A tuple activation ("nn.silu", "linear") makes one linear1_i per entry, multiplied after their
// activations (SwiGLU).
class TransformerFeedForwardLayer : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Input (and output) dim."};
    Field<std::variant<int64_t, ConfigPtr<HiddenDimFnConfig>>> hidden_dim{
        this, "hidden_dim", REQUIRED, "An integer, or a function config of input_dim."};
    Field<std::variant<std::string, std::vector<std::string>>> activation{
        this, "activation", std::string("nn.relu"), "A name, or a list of names for a gated FFN."};
    Field<ConfigPtr<Linear::Config>> linear1{this, "linear1", Linear::default_config(),
                                             "Input projection(s)."};
    Field<ConfigPtr<Linear::Config>> linear2{this, "linear2", Linear::default_config(),
                                             "Output projection."};
    Field<ConfigPtr<BaseNormalizationLayer::Config>> norm{
        this, "norm", ConfigPtr<BaseNormalizationLayer::Config>(LayerNorm::default_config()),
        "The normalization."};
    Field<ConfigPtr<BaseNormalizationLayer::Config>> postnorm{
        this, "postnorm", nullptr, "The second norm of hybridnorm."};
    Field<ConfigPtr<Dropout::Config>> dropout{this, "dropout", Dropout::default_config(),
                                              "Config of dropout1 and dropout2."};
    Field<ConfigPtr<StochasticDepth::Config>> stochastic_depth{
        this, "stochastic_depth", StochasticDepth::default_config(), "On the residual branch."};
    Field<NormStructure> structure{this, "structure", NormStructure::kPrenorm,
                                   "prenorm, postnorm or hybridnorm."};
    Field<double> residual_weight{this, "residual_weight", 1.0, "Scale of the residual branch."};
  };
  AXLEARN_CONFIGURABLE(TransformerFeedForwardLayer,
                       "axlearn.common.attention.TransformerFeedForwardLayer")
  TransformerFeedForwardLayer(const Config& cfg, Module* parent);
  Tensor forward(const Tensor& x) const;
  int64_t hidden_dim() const { return hidden_dim_; }

 private:
  std::vector<std::string> activations_;
  int64_t hidden_dim_;
};

// Norm, attention (self when source is undefined), dropout, stochastic depth and the residual.
class TransformerAttentionLayer : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> target_dim{this, "target_dim", REQUIRED, "Query (and output) dim."};
    Field<int64_t> source_dim{this, "source_dim", REQUIRED, "Key/value dim."};
    Field<ConfigPtr<BaseNormalizationLayer::Config>> norm{
        this, "norm", ConfigPtr<BaseNormalizationLayer::Config>(LayerNorm::default_config()),
        "The normalization."};
    Field<ConfigPtr<MultiheadAttention::Config>> attention{
        this, "attention", MultiheadAttention::default_config(), "The attention; dims filled in."};
    Field<ConfigPtr<Dropout::Config>> dropout{this, "dropout", Dropout::default_config(),
                                              "On the attention output."};
    Field<ConfigPtr<StochasticDepth::Config>> stochastic_depth{
        this, "stochastic_depth", StochasticDepth::default_config(), "On the residual branch."};
    Field<NormStructure> structure{this, "structure", NormStructure::kPrenorm,
                                   "prenorm or postnorm."};
  };
  AXLEARN_CONFIGURABLE(TransformerAttentionLayer,
                       "axlearn.common.attention.TransformerAttentionLayer")
  TransformerAttentionLayer(const Config& cfg, Module* parent);
  // target (B, T, target_dim); inputs.key is the source (cross-attention) when defined.
  Tensor forward(const Tensor& target, const AttentionInputs& inputs = {}) const;

  // Decoding (self-attention): the attention's state under "attention"; see
  // MultiheadAttention::init_states / prefill / extend_step.
  NestedTensor init_states(int64_t batch, int64_t max_len) const;
  CachedOutput prefill(const NestedTensor& states, const Tensor& target,
                       const Tensor& time_step) const;
  CachedOutput extend_step(const NestedTensor& states, const Tensor& target) const;

 private:
  const BaseNormalizationLayer* norm_;
  const MultiheadAttention* attention_;
  const Dropout* dropout_;
  const StochasticDepth* stochastic_depth_;
};

// The cross-attention inputs of a transformer layer (AXLearn's cross_attention_data and
// cross_attention_logit_biases). Undefined data: no cross-attention.
struct CrossAttentionInputs {
  Tensor data;          // (B, S, source_dim)
  Tensor logit_biases;  // additive, broadcastable to (B, N, T, S); undefined: none
};

// Self-attention, then cross-attention (when configured and given data), then feed-forward.
//
// remat_spec set and training: the whole layer runs under checkpoint() (core/remat.h), with the
// layer's parameters, its input and its PRNG key as inputs, so a backward pass recomputes the
// layer's activations instead of keeping them. As in AXLearn's BaseLayer, the layer body then runs
// in a child context "remat" of the layer (its key is fold_in(layer key, "remat"), so dropout masks
// differ from a run without remat, and are the same in the forward and the recomputation);
// summaries, state updates and module outputs added inside come back as outputs of the
// checkpointed call, under the same paths as without remat. remat_spec.policy is not
// interpreted: everything inside the layer is recomputed (jax's nothing_saveable).
class TransformerLayer : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Model dim."};
    Field<ConfigPtr<TransformerAttentionLayer::Config>> self_attention{
        this, "self_attention", TransformerAttentionLayer::default_config(), "Self-attention."};
    Field<ConfigPtr<TransformerAttentionLayer::Config>> cross_attention{
        this, "cross_attention", nullptr,
        "Cross-attention over cross_attention_data; None: none. Set its source_dim."};
    Field<ConfigPtr<TransformerFeedForwardLayer::Config>> feed_forward{
        this, "feed_forward", TransformerFeedForwardLayer::default_config(), "Feed-forward."};
  };
  AXLEARN_CONFIGURABLE(TransformerLayer, "axlearn.common.attention.TransformerLayer")
  TransformerLayer(const Config& cfg, Module* parent);
  // data (B, T, input_dim); self_inputs carry the self-attention biases, segment ids and
  // positions; cross the cross-attention source and biases.
  Tensor forward(const Tensor& data, const AttentionInputs& self_inputs = {},
                 const CrossAttentionInputs& cross = {}) const;

  // Decoding: the self-attention's state under "self_attention" (a configured cross-attention
  // is skipped, as forward() does without cross data). data (B, T, input_dim) right-padded
  // prompts of lengths time_step (B,); extend_step one token per row (B, 1, input_dim).
  NestedTensor init_states(int64_t batch, int64_t max_len) const;
  CachedOutput prefill(const NestedTensor& states, const Tensor& data,
                       const Tensor& time_step) const;
  CachedOutput extend_step(const NestedTensor& states, const Tensor& data) const;

 private:
  Tensor forward_layers(const Tensor& data, const AttentionInputs& self_inputs,
                        const CrossAttentionInputs& cross) const;
  Tensor forward_with_remat(const Tensor& data, const AttentionInputs& self_inputs,
                            const CrossAttentionInputs& cross) const;

  const TransformerAttentionLayer* self_attention_;
  const TransformerAttentionLayer* cross_attention_ = nullptr;
  const TransformerFeedForwardLayer* feed_forward_;
};

// Base of the stacks: num_layers copies of `layer`.
class BaseStackedTransformerLayer : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Model dim."};
    Field<int64_t> num_layers{this, "num_layers", REQUIRED, "Number of layers."};
    Field<ConfigPtr<TransformerLayer::Config>> layer{this, "layer",
                                                     TransformerLayer::default_config(),
                                                     "Config of each layer."};
  };
  AXLEARN_CONFIGURABLE(BaseStackedTransformerLayer,
                       "axlearn.common.attention.BaseStackedTransformerLayer")
  BaseStackedTransformerLayer(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}
  virtual Tensor forward(const Tensor& data, const AttentionInputs& inputs = {},
                         const CrossAttentionInputs& cross = {}) const;

  // Decoding through every layer. The state is {"layer0": ..., "layer{n-1}": ...}, one
  // TransformerLayer state per layer, for both stacks (so every leaf keeps the batch on axis 0).
  virtual NestedTensor init_states(int64_t batch, int64_t max_len) const;
  virtual CachedOutput prefill(const NestedTensor& states, const Tensor& data,
                               const Tensor& time_step) const;
  virtual CachedOutput extend_step(const NestedTensor& states, const Tensor& data) const;
};

// Children layer0 .. layer{n-1}, each with its own parameters.
class StackedTransformerLayer : public BaseStackedTransformerLayer {
 public:
  struct Config : BaseStackedTransformerLayer::Config {
    AXLEARN_CONFIG(Config)
  };
  AXLEARN_CONFIGURABLE(StackedTransformerLayer, "axlearn.common.attention.StackedTransformerLayer")
  StackedTransformerLayer(const Config& cfg, Module* parent);
  Tensor forward(const Tensor& data, const AttentionInputs& inputs = {},
                 const CrossAttentionInputs& cross = {}) const override;
  NestedTensor init_states(int64_t batch, int64_t max_len) const override;
  CachedOutput prefill(const NestedTensor& states, const Tensor& data,
                       const Tensor& time_step) const override;
  CachedOutput extend_step(const NestedTensor& states, const Tensor& data) const override;

 private:
  std::vector<const TransformerLayer*> layers_;
};

// AXLearn's utils.split_prng_key: n keys (n, 2) drawn one at a time, (key, key_i) = split(key),
// as a parent layer draws its children's keys.
Tensor split_prng_key(const Tensor& key, int64_t n);

// One layer config whose parameters carry a leading num_layers axis (repeat/layer/...), run in a
// loop; layer i sees slice i of every parameter and key i of split_prng_key(repeat key). Because
// the keys are drawn as a parent draws its children's, Repeat initialises exactly as a stack of
// num_layers children would (AXLearn vmaps the layer's init over the same keys).
class Repeat : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> num_layers{this, "num_layers", REQUIRED, "Number of repetitions."};
    Field<ConfigPtr<TransformerLayer::Config>> layer{this, "layer", nullptr,
                                                     "The repeated layer (filled in)."};
  };
  AXLEARN_CONFIGURABLE(Repeat, "axlearn.common.repeat.Repeat")
  Repeat(const Config& cfg, Module* parent);
  Tensor forward(const Tensor& data, const AttentionInputs& inputs,
                 const CrossAttentionInputs& cross = {}) const;
  NestedParameterSpec create_parameter_specs_recursively() const override;
  // Layer i is drawn with key i of split_prng_key(prng_key, num_layers).
  NestedTensor initialize_parameters_recursively(const Tensor& prng_key) const override;

  // Decoding: {"layer{i}": layer i's state}, layer i run on slice i of the parameters.
  NestedTensor init_states(int64_t batch, int64_t max_len) const;
  CachedOutput prefill(const NestedTensor& states, const Tensor& data,
                       const Tensor& time_step) const;
  CachedOutput extend_step(const NestedTensor& states, const Tensor& data) const;

 private:
  // Runs fn(i) for each layer i in the context of layer i (its parameter slice).
  void for_each_layer(const std::function<void(int64_t)>& fn) const;
  TransformerLayer* layer_;
};

class RepeatedTransformerLayer : public BaseStackedTransformerLayer {
 public:
  struct Config : BaseStackedTransformerLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<ConfigPtr<Repeat::Config>> repeat{this, "repeat", Repeat::default_config(),
                                            "The repeat wrapper; layer and num_layers filled in."};
  };
  AXLEARN_CONFIGURABLE(RepeatedTransformerLayer,
                       "axlearn.common.attention.RepeatedTransformerLayer")
  RepeatedTransformerLayer(const Config& cfg, Module* parent);
  Tensor forward(const Tensor& data, const AttentionInputs& inputs = {},
                 const CrossAttentionInputs& cross = {}) const override;
  NestedTensor init_states(int64_t batch, int64_t max_len) const override;
  CachedOutput prefill(const NestedTensor& states, const Tensor& data,
                       const Tensor& time_step) const override;
  CachedOutput extend_step(const NestedTensor& states, const Tensor& data) const override;

 private:
  const Repeat* repeat_;
};

}  // namespace axlearn::layers
