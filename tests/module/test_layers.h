// Small layers for the module tests: a dense layer, two norms behind one base (to swap by klass),
// a noise layer using the PRNG key, a key probe, a block and a root model composing them.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/module/base_layer.h"
#include "axlearn/module/module.h"

namespace axlearn::module_test {

// y = x @ weight + bias; weight (input_dim, output_dim) sharded by param_partition_spec.
class Dense : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Input dim."};
    Field<int64_t> output_dim{this, "output_dim", REQUIRED, "Output dim."};
  };
  AXLEARN_CONFIGURABLE(Dense, "axlearn.test.Dense")
  Dense(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
    register_method("forward", [this](const NestedTensor& in) -> NestedTensor {
      return forward(in.at("x").tensor());
    });
  }
  Tensor forward(const Tensor& x) const {
    auto scope = enter_context();
    const Tensor& weight = parameter("weight");
    Tensor y = matmul(x, weight) + parameter("bias");
    add_summary("output_mean", mean(y));
    return y;
  }

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override {
    const Config& cfg = config();
    ParameterSpec weight{.shape = {cfg.input_dim, cfg.output_dim}};
    ParameterSpec bias{.shape = {cfg.output_dim}};
    if (const auto& spec = cfg.param_partition_spec.get()) {
      weight.mesh_axes = *spec;
      bias.mesh_axes = MeshAxes{spec->back()};
    }
    return {{"weight", weight}, {"bias", bias}};
  }
};

class BaseNorm : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Feature dim."};
    Field<double> eps{this, "eps", 1e-6, "Added to the variance."};
  };
  AXLEARN_CONFIGURABLE(BaseNorm, "axlearn.test.BaseNorm")
  BaseNorm(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}
  virtual Tensor forward(const Tensor& x) const = 0;
};

class LayerNorm : public BaseNorm {
 public:
  AXLEARN_CONFIGURABLE(LayerNorm, "axlearn.test.LayerNorm")
  LayerNorm(const Config& cfg, Module* parent) : BaseNorm(cfg, parent) {}
  Tensor forward(const Tensor& x) const override {
    auto scope = enter_context();
    Tensor centered = x - mean(x, {-1}, true);
    Tensor y = centered * rsqrt(mean(square(centered), {-1}, true) + config().eps.get());
    return y * parameter("scale") + parameter("bias");
  }

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override {
    return {{"scale", {.shape = {config().input_dim}}}, {"bias", {.shape = {config().input_dim}}}};
  }
};

class RMSNorm : public BaseNorm {
 public:
  AXLEARN_CONFIGURABLE(RMSNorm, "axlearn.test.RMSNorm")
  RMSNorm(const Config& cfg, Module* parent) : BaseNorm(cfg, parent) {}
  Tensor forward(const Tensor& x) const override {
    auto scope = enter_context();
    return x * rsqrt(mean(square(x), {-1}, true) + config().eps.get()) * parameter("scale");
  }

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override {
    return {{"scale", {.shape = {config().input_dim}}}};
  }
};

// Adds uniform noise in training (uses the PRNG key), the identity otherwise.
class Noise : public BaseLayer {
 public:
  AXLEARN_CONFIGURABLE(Noise, "axlearn.test.Noise")
  Noise(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}
  Tensor forward(const Tensor& x) const {
    auto scope = enter_context();
    if (!is_training()) return x;
    return x + random::uniform(prng_key(), x.shape(), x.dtype());
  }
};

// Records the PRNG key and the state it sees as module outputs.
class Probe : public Module {
 public:
  AXLEARN_CONFIGURABLE(Probe, "axlearn.test.Probe")
  Probe(const Config& cfg, Module* parent) : Module(cfg, parent) {}
  void record(const std::string& tag = "key") const {
    auto scope = enter_context();
    add_module_output(tag, prng_key());
  }
};

// dense -> norm -> noise, with a running mean as a state update.
class Block : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> dim{this, "dim", REQUIRED, "Model dim."};
    Field<ConfigPtr<Dense::Config>> dense{this, "dense", Dense::default_config(), "Projection."};
    Field<ConfigPtr<BaseNorm::Config>> norm{this, "norm", LayerNorm::default_config(), "Any norm."};
  };
  AXLEARN_CONFIGURABLE(Block, "axlearn.test.Block")
  Block(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
    auto dense = config().dense.get();
    dense->input_dim = config().dim.get();
    if (!dense->output_dim.is_set()) dense->output_dim = config().dim.get();
    dense_ = &add_child<Dense>("dense", dense);
    auto norm = config().norm.get();
    norm->input_dim = dense->output_dim.get();
    norm_ = &add_child<BaseNorm>("norm", norm);
    noise_ = &add_child<Noise>("noise", Noise::default_config());
  }
  Tensor forward(const Tensor& x) const {
    auto scope = enter_context();
    Tensor y = noise_->forward(norm_->forward(dense_->forward(x)));
    add_state_update("moving_mean", mean(y, {0}));
    return y;
  }
  const Dense& dense() const { return *dense_; }
  const BaseNorm& norm() const { return *norm_; }

 private:
  const Dense* dense_;
  const BaseNorm* norm_;
  const Noise* noise_;
};

// The root: a block plus an own parameter, and a loss summary.
class Model : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<ConfigPtr<Block::Config>> block{this, "block", Block::default_config(), "The block."};
  };
  AXLEARN_CONFIGURABLE(Model, "axlearn.test.Model")
  Model(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
    block_ = &add_child<Block>("block", config().block);
    register_method("forward", [this](const NestedTensor& in) -> NestedTensor {
      return NestedTensor{{"y", forward(in.at("x").tensor())}};
    });
  }
  Tensor forward(const Tensor& x) const {
    auto scope = enter_context();
    Tensor y = block_->forward(x) * parameter("out_scale");
    add_summary("loss", mean(square(y)));
    return y;
  }
  const Block& block() const { return *block_; }

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override {
    const int64_t dim = config().block->dim;
    return {{"out_scale", {.shape = {dim}}}};
  }

 private:
  const Block* block_;
};

}  // namespace axlearn::module_test
