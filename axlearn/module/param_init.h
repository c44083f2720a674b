// Parameter initializers (AXLearn's param_init.py): constant, gaussian, the fan-scaled
// WeightInitializer (jax.nn.initializers.variance_scaling), PerGroupInitializer, and the
// DefaultInitializer that picks one by regex on the parameter name (first match wins; then
// ".*bias$" -> 0, ".*scale$" -> 1, ".*weight$" -> WeightInitializer). Draws are bit-identical to
// AXLearn's on JAX for the same key.
#pragma once

#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "axlearn/config/configurable.h"
#include "axlearn/core/shape.h"
#include "axlearn/core/tensor.h"

namespace axlearn {

// Which axes of a parameter are its fan-in, fan-out and batch axes (negative axes count from the
// end). Axes in none of them form the receptive field (a convolution's spatial axes).
struct FanAxes {
  std::vector<int> in_axis;
  std::vector<int> out_axis;
  std::vector<int> batch_axis;
  bool operator==(const FanAxes&) const = default;
};

struct Fans {
  double fan_in = 0, fan_out = 0, fan_avg = 0;
};

// jax's _compute_fans: fan_in = |in| * receptive field, fan_out = |out| * receptive field,
// where the receptive field is the size of the axes that are not in, out or batch axes.
Fans compute_fans(const Shape& shape, const FanAxes& axes);

class Initializer : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
  };
  using Factory = std::function<std::unique_ptr<Initializer>(const ConfigBase&)>;
  AXLEARN_CONFIGURABLE(Initializer, "axlearn.common.param_init.Initializer")

  // A parameter `name` of `shape` and `dtype` drawn with `prng_key` (fan axes for fan-scaled
  // initializers).
  virtual Tensor initialize(const std::string& name, const Tensor& prng_key, const Shape& shape,
                            Dtype dtype, const std::optional<FanAxes>& axes) const = 0;
  // "normal(0, 1.0 / fan_in), shape=(4, 3)": what initialize would draw, for logs.
  virtual std::string debug_string(const std::string& name, const Shape& shape,
                                   const std::optional<FanAxes>& axes) const = 0;

 protected:
  explicit Initializer(const Config& cfg) : Configurable(cfg) {}
};

class ConstantInitializer : public Initializer {
 public:
  struct Config : Initializer::Config {
    AXLEARN_CONFIG(Config)
    Field<double> value{this, "value", REQUIRED, "The value of every element."};
  };
  AXLEARN_CONFIGURABLE(ConstantInitializer, "axlearn.common.param_init.ConstantInitializer")
  explicit ConstantInitializer(const Config& cfg) : Initializer(cfg) {}
  Tensor initialize(const std::string& name, const Tensor& prng_key, const Shape& shape,
                    Dtype dtype, const std::optional<FanAxes>& axes) const override;
  std::string debug_string(const std::string& name, const Shape& shape,
                           const std::optional<FanAxes>& axes) const override;
};

class GaussianInitializer : public Initializer {
 public:
  struct Config : Initializer::Config {
    AXLEARN_CONFIG(Config)
    Field<double> std{this, "std", REQUIRED, "Standard deviation."};
  };
  AXLEARN_CONFIGURABLE(GaussianInitializer, "axlearn.common.param_init.GaussianInitializer")
  explicit GaussianInitializer(const Config& cfg) : Initializer(cfg) {}
  Tensor initialize(const std::string& name, const Tensor& prng_key, const Shape& shape,
                    Dtype dtype, const std::optional<FanAxes>& axes) const override;
  std::string debug_string(const std::string& name, const Shape& shape,
                           const std::optional<FanAxes>& axes) const override;
};

// With `fan` set: variance = scale / fan; "uniform" draws U(-sqrt(3 var), sqrt(3 var)),
// "normal" N(0, var), "truncated_normal" a normal truncated to 2 std devs rescaled to variance
// var. With fan None: U(-scale, scale), N(0, scale^2), or the truncated normal with std scale.
class WeightInitializer : public Initializer {
 public:
  struct Config : Initializer::Config {
    AXLEARN_CONFIG(Config)
    Field<double> scale{this, "scale", 1.0, "Scale of the variance (or the std / bound)."};
    Field<std::optional<std::string>> fan{this, "fan", std::string("fan_avg"),
                                          "fan_in, fan_out, fan_avg, or None for no scaling."};
    Field<std::string> distribution{this, "distribution", "uniform",
                                    "uniform, normal or truncated_normal."};
  };
  AXLEARN_CONFIGURABLE(WeightInitializer, "axlearn.common.param_init.WeightInitializer")
  explicit WeightInitializer(const Config& cfg);
  Tensor initialize(const std::string& name, const Tensor& prng_key, const Shape& shape,
                    Dtype dtype, const std::optional<FanAxes>& axes) const override;
  std::string debug_string(const std::string& name, const Shape& shape,
                           const std::optional<FanAxes>& axes) const override;
};

class DefaultInitializer : public Initializer {
 public:
  struct Config : Initializer::Config {
    AXLEARN_CONFIG(Config)
    Field<OrderedDict<ConfigPtr<Initializer::Config>>> init_by_param_name{
        this,
        "init_by_param_name",
        {},
        "Regex on the parameter name -> initializer; the first full match wins, then the "
        "defaults for bias, scale and weight."};
  };
  AXLEARN_CONFIGURABLE(DefaultInitializer, "axlearn.common.param_init.DefaultInitializer")
  explicit DefaultInitializer(const Config& cfg);
  Tensor initialize(const std::string& name, const Tensor& prng_key, const Shape& shape,
                    Dtype dtype, const std::optional<FanAxes>& axes) const override;
  std::string debug_string(const std::string& name, const Shape& shape,
                           const std::optional<FanAxes>& axes) const override;
  // The initializer `name` resolves to (Error when no rule matches).
  const Initializer& rule_for(const std::string& name) const;

 private:
  struct Rule {
    std::string pattern;
    std::regex regex;
    std::shared_ptr<const Initializer> initializer;
  };
  std::vector<Rule> rules_;
};

// Splits the last axis into num_groups equal groups and initializes each with `initializer`
// and its own key (depthwise convolutions' fans count one group).
class PerGroupInitializer : public Initializer {
 public:
  struct Config : Initializer::Config {
    AXLEARN_CONFIG(Config)
    Field<ConfigPtr<Initializer::Config>> initializer{
        this, "initializer", DefaultInitializer::default_config(), "Initializer of each group."};
    Field<int64_t> num_groups{this, "num_groups", 1, "Number of groups of the last axis."};
  };
  AXLEARN_CONFIGURABLE(PerGroupInitializer, "axlearn.common.param_init.PerGroupInitializer")
  explicit PerGroupInitializer(const Config& cfg);
  Tensor initialize(const std::string& name, const Tensor& prng_key, const Shape& shape,
                    Dtype dtype, const std::optional<FanAxes>& axes) const override;
  std::string debug_string(const std::string& name, const Shape& shape,
                           const std::optional<FanAxes>& axes) const override;

 private:
  std::unique_ptr<Initializer> initializer_;
};

}  // namespace axlearn
