// Small configurable classes for the config tests: a norm family (LayerNorm / RMSNorm behind an
// abstract Norm), an encoder and a model holding them, a trainer-like config with lists, dicts,
// optionals, enums, dtypes and function configs (schedules).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "axlearn/config/config.h"
#include "axlearn/config/configurable.h"

namespace axlearn::config_test {

enum class Activation { kRelu, kGelu };
AXLEARN_CONFIG_ENUM(Activation, {Activation::kRelu, "relu"}, {Activation::kGelu, "gelu"})

using MeshAxis = std::variant<std::monostate, std::string, std::vector<std::string>>;

class Norm : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Feature dim."};
    Field<double> eps{this, "eps", 1e-6, "Added to the variance."};
  };
  AXLEARN_CONFIGURABLE(Norm, "axlearn.test.Norm")
  virtual std::string kind() const = 0;

 protected:
  explicit Norm(const Config& cfg) : Configurable(cfg) {}
};

class LayerNorm : public Norm {
 public:
  struct Config : Norm::Config {
    AXLEARN_CONFIG(Config)
    Field<bool> bias{this, "bias", true, "Whether to learn a bias."};
  };
  AXLEARN_CONFIGURABLE(LayerNorm, "axlearn.test.LayerNorm")
  explicit LayerNorm(const Config& cfg) : Norm(cfg) {}
  std::string kind() const override { return "layer_norm"; }
};

class RMSNorm : public Norm {
 public:
  struct Config : Norm::Config {
    AXLEARN_CONFIG(Config)
    Config() { eps = 1e-5; }  // a different default than Norm's
  };
  AXLEARN_CONFIGURABLE(RMSNorm, "axlearn.test.RMSNorm")
  explicit RMSNorm(const Config& cfg) : Norm(cfg) {}
  std::string kind() const override { return "rms_norm"; }
};

// A norm with a REQUIRED field its parent does not fill.
class ScaledNorm : public Norm {
 public:
  struct Config : Norm::Config {
    AXLEARN_CONFIG(Config)
    Field<double> scale{this, "scale", REQUIRED, "Output scale."};
  };
  AXLEARN_CONFIGURABLE(ScaledNorm, "axlearn.test.ScaledNorm")
  explicit ScaledNorm(const Config& cfg) : Norm(cfg) {}
  std::string kind() const override { return "scaled_norm"; }
};

// Fills its child's REQUIRED input_dim from its own dim, as AXLearn layers do.
class Encoder : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> dim{this, "dim", REQUIRED, "Model dim."};
    Field<int64_t> num_layers{this, "num_layers", 2, "Number of layers."};
    Field<ConfigPtr<Norm::Config>> norm{this, "norm", LayerNorm::default_config(),
                                        "Any norm's config."};
    Field<Activation> activation{this, "activation", Activation::kRelu, "Nonlinearity."};
  };
  AXLEARN_CONFIGURABLE(Encoder, "axlearn.test.Encoder")
  explicit Encoder(const Config& cfg) : Configurable(cfg) {
    ConfigPtr<Norm::Config> norm_cfg = config().norm;
    if (!norm_cfg->input_dim.is_set()) norm_cfg->input_dim = config().dim.get();
    auto scope = InstantiationScope::child("norm");
    norm_ = norm_cfg->instantiate<Norm>();
  }
  const Norm& norm() const { return *norm_; }

 private:
  std::unique_ptr<Norm> norm_;
};

class Model : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<Dtype> dtype{this, "dtype", float32, "Parameter dtype."};
    Field<ConfigPtr<Encoder::Config>> encoder{this, "encoder", Encoder::default_config(),
                                              "The encoder."};
    Field<ConfigPtr<Norm::Config>> extra_norm{this, "extra_norm", nullptr,
                                              "An optional child, None by default."};
    Field<std::vector<MeshAxis>> param_partition_spec{
        this, "param_partition_spec", {}, "Mesh axes per parameter dim."};
  };
  AXLEARN_CONFIGURABLE(Model, "axlearn.test.Model")
  explicit Model(const Config& cfg) : Configurable(cfg) {
    auto scope = InstantiationScope::child("encoder");
    encoder_ = config().encoder->instantiate<Encoder>();
  }
  const Encoder& encoder() const { return *encoder_; }

 private:
  std::unique_ptr<Encoder> encoder_;
};

using Schedule = std::function<double(int64_t step)>;

struct ConstantSchedule : FunctionConfig<Schedule> {
  AXLEARN_FUNCTION_CONFIG(ConstantSchedule, "axlearn.test.schedule.constant")
  Field<double> value{this, "value", REQUIRED, "The constant."};

 protected:
  Schedule call() const override {
    const double v = value;
    return [v](int64_t) { return v; };
  }
};

struct LinearSchedule : FunctionConfig<Schedule> {
  AXLEARN_FUNCTION_CONFIG(LinearSchedule, "axlearn.test.schedule.linear")
  Field<double> begin_value{this, "begin_value", 0.0, "Value at step 0."};
  Field<double> end_value{this, "end_value", REQUIRED, "Value at max_step."};
  Field<int64_t> max_step{this, "max_step", REQUIRED, "Last step."};

 protected:
  Schedule call() const override {
    const double b = begin_value, e = end_value;
    const int64_t n = max_step;
    return [b, e, n](int64_t step) { return b + (e - b) * double(std::min(step, n)) / double(n); };
  }
};

// A trainer-like config: no class behind it is needed for printing and overrides.
class Trainer : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<std::string> name{this, "name", REQUIRED, "Run name."};
    Field<int64_t> max_step{this, "max_step", 100, "Steps to train."};
    Field<double> learning_rate{this, "learning_rate", 6e-4, "Peak learning rate."};
    Field<float> beta{this, "beta", 0.95f, "A float32 field."};
    Field<std::vector<std::string>> mesh_axis_names{
        this, "mesh_axis_names", {"data", "model"}, "Mesh axes."};
    Field<std::vector<int64_t>> mesh_shape{this, "mesh_shape", {1, -1}, "Mesh shape."};
    Field<ConfigPtr<Model::Config>> model{this, "model", Model::default_config(), "The model."};
    Field<ConfigPtr<FunctionConfig<Schedule>>> schedule{
        this, "schedule", ConstantSchedule::default_config().set("value", 1.0), "LR schedule."};
    Field<std::vector<ConfigPtr<FunctionConfig<Schedule>>>> args{
        this, "args", {}, "Several schedules (like optimizers.chain's args)."};
    Field<std::map<std::string, double>> weights{this, "weights", {}, "Named weights."};
    Field<OrderedDict<ConfigPtr<Norm::Config>>> rules{this, "rules", {}, "First match wins."};
    Field<std::optional<int64_t>> seed{this, "seed", std::nullopt, "Optional seed."};
    Field<std::optional<std::string>> comment{this, "comment", std::string("none yet"),
                                              "An optional whose default is not None."};
  };
  AXLEARN_CONFIGURABLE(Trainer, "axlearn.test.Trainer")
  explicit Trainer(const Config& cfg) : Configurable(cfg) {}
};

}  // namespace axlearn::config_test
