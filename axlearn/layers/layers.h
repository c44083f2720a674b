// The basic layers of AXLearn's layers.py: Linear, Embedding, the norms (RMSNorm, LayerNorm on the
// fused kernels of core/norm.h), Dropout and StochasticDepth. Names and config fields follow
// AXLearn so that configs dump to the same paths.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/core/tensor.h"
#include "axlearn/module/base_layer.h"

namespace axlearn::layers {

// y = x @ weight (+ bias). x: (..., input_dim) -> (..., output_dim); weight (input_dim, output_dim).
class Linear : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Input feature dim."};
    Field<int64_t> output_dim{this, "output_dim", REQUIRED, "Output feature dim."};
    Field<bool> bias{this, "bias", true, "Whether to add a learned bias."};
    Field<std::optional<MeshAxes>> output_partition_spec{
        this, "output_partition_spec", std::nullopt, "Sharding of the outputs (recorded only)."};
  };
  AXLEARN_CONFIGURABLE(Linear, "axlearn.common.layers.Linear")
  Linear(const Config& cfg, Module* parent);
  Tensor forward(const Tensor& x) const;

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override;
};

// Token lookup: ids (...) int -> (..., dim) with weight (num_embeddings, dim).
class Embedding : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> num_embeddings{this, "num_embeddings", REQUIRED, "Vocabulary size."};
    Field<int64_t> dim{this, "dim", REQUIRED, "Embedding dim."};
  };
  AXLEARN_CONFIGURABLE(Embedding, "axlearn.common.layers.Embedding")
  Embedding(const Config& cfg, Module* parent);
  Tensor forward(const Tensor& ids) const;
  // x (..., dim) -> logits (..., num_embeddings): x @ weight^T (a tied output layer).
  Tensor attend(const Tensor& x) const;

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override;
};

// Base of the norms: input_dim and eps; forward maps (..., input_dim) to the same shape.
class BaseNormalizationLayer : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Normalized (last) dim."};
  };
  AXLEARN_CONFIGURABLE(BaseNormalizationLayer,
                       "axlearn.common.base_layer.BaseNormalizationLayer")
  BaseNormalizationLayer(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}
  virtual Tensor forward(const Tensor& x) const;
};

// x * rsqrt(mean(x^2) + eps) * scale; scale (input_dim,).
class RMSNorm : public BaseNormalizationLayer {
 public:
  struct Config : BaseNormalizationLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<double> eps{this, "eps", 1e-8, "Added to the mean square."};
    Field<std::optional<Dtype>> forward_dtype{this, "forward_dtype", std::nullopt,
                                              "Dtype of the computation; None keeps x's."};
  };
  AXLEARN_CONFIGURABLE(RMSNorm, "axlearn.common.layers.RMSNorm")
  RMSNorm(const Config& cfg, Module* parent) : BaseNormalizationLayer(cfg, parent) {}
  Tensor forward(const Tensor& x) const override;

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override;
};

// (x - mean) * rsqrt(var + eps) * scale + bias; scale and bias (input_dim,).
class LayerNorm : public BaseNormalizationLayer {
 public:
  struct Config : BaseNormalizationLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<double> eps{this, "eps", 1e-8, "Added to the variance."};
  };
  AXLEARN_CONFIGURABLE(LayerNorm, "axlearn.common.layers.LayerNorm")
  LayerNorm(const Config& cfg, Module* parent) : BaseNormalizationLayer(cfg, parent) {}
  Tensor forward(const Tensor& x) const override;

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override;
};

// In training with rate > 0: x * bernoulli(1 - rate) / (1 - rate), the mask drawn from this
// layer's PRNG key; identity otherwise.
class Dropout : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<std::optional<double>> rate{this, "rate", std::nullopt,
                                      "Probability of dropping an element; None means 0."};
  };
  AXLEARN_CONFIGURABLE(Dropout, "axlearn.common.layers.Dropout")
  Dropout(const Config& cfg, Module* parent);
  Tensor forward(const Tensor& x) const;
};

enum class StochasticDepthMode { kRow, kBatch };
AXLEARN_CONFIG_ENUM(StochasticDepthMode, {StochasticDepthMode::kRow, "row"},
                    {StochasticDepthMode::kBatch, "batch"})

// Drops whole residual branches (Huang et al. 2016) in training: mode "row" draws one keep
// decision per example (axis 0), "batch" one for the whole batch; kept ones scale by 1/(1-rate).
class StochasticDepth : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<std::optional<double>> rate{this, "rate", std::nullopt,
                                      "Drop probability; None means 0."};
    Field<StochasticDepthMode> mode{this, "mode", StochasticDepthMode::kRow, "'row' or 'batch'."};
  };
  AXLEARN_CONFIGURABLE(StochasticDepth, "axlearn.common.layers.StochasticDepth")
  StochasticDepth(const Config& cfg, Module* parent);
  Tensor forward(const Tensor& x) const;
};

// Applies the activation named as in AXLearn: "linear", "nn.relu", "nn.gelu" (the tanh
// approximation, as jax.nn.gelu defaults to), "exact_gelu", "nn.silu", "nn.swish", "nn.tanh",
// "nn.sigmoid", "quick_gelu", "squared_relu"; also the short names "relu", "gelu" (exact),
// "gelu_tanh", "silu". Throws Error naming an unknown name.
Tensor get_activation(const std::string& name, const Tensor& x);

}  // namespace axlearn::layers
