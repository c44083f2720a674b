// BaseLayer: the base of layers with parameters (AXLearn's base_layer.py). A layer declares its
// own parameters as ParameterSpecs; the recursive walks give the spec tree (shapes, dtypes, mesh
// axes for sharding, fan axes) and the initial parameters, with keys split as AXLearn splits
// them. dtype and param_init come from the nearest ancestor that sets them.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "axlearn/module/module.h"
#include "axlearn/module/param_init.h"

namespace axlearn {

// How one tensor dimension is split over the device mesh: not at all (None), along one mesh
// axis ('model'), or along several (('data', 'fsdp')).
using MeshAxis = std::variant<std::monostate, std::string, std::vector<std::string>>;
// One MeshAxis per dimension (a PartitionSpec).
using MeshAxes = std::vector<MeshAxis>;
// "(None, 'model', ('data', 'fsdp'))".
std::string mesh_axes_str(const MeshAxes& axes);

// Written with designated initializers: {.shape = {4, 8}, .mesh_axes = cfg.param_partition_spec}.
struct ParameterSpec {
  Shape shape = {};
  std::optional<Dtype> dtype = std::nullopt;                 // None: the layer's dtype()
  std::optional<MeshAxes> mesh_axes = std::nullopt;          // None: replicated (all None)
  std::shared_ptr<const Initializer> initializer = nullptr;  // null: the layer's param_init()
  std::optional<FanAxes> fan_axes = std::nullopt;            // None: compute_fan_axes decides
  std::optional<double> weight_decay_scale = std::nullopt;   // None: the optimizer's default

  // fan_in / fan_out / fan_avg of this parameter; Error when it has no fan axes.
  Fans fans() const;
};

// A tree of ParameterSpecs keyed by child and parameter name, like the parameter tree.
class NestedParameterSpec {
 public:
  NestedParameterSpec() = default;
  explicit NestedParameterSpec(ParameterSpec spec) : spec_(std::move(spec)) {}
  bool is_leaf() const { return spec_.has_value(); }
  const ParameterSpec& spec() const;
  std::map<std::string, NestedParameterSpec>& children() { return children_; }
  const std::map<std::string, NestedParameterSpec>& children() const { return children_; }
  NestedParameterSpec& operator[](const std::string& name) { return children_[name]; }
  // Looks up "decoder/linear/weight"; Error naming the path when absent.
  const ParameterSpec& at_path(const std::string& path) const;
  // Leaves in key order with "/"-joined paths, as NestedTensor::flatten_with_paths.
  std::vector<std::pair<std::string, ParameterSpec>> flatten_with_paths() const;

 private:
  std::optional<ParameterSpec> spec_;
  std::map<std::string, NestedParameterSpec> children_;
};

// Arguments of rematerialization (jax.remat) around a layer's methods.
struct RematSpec : ConfigBase {
  AXLEARN_CONFIG(RematSpec)
  Field<bool> prevent_cse{this, "prevent_cse", true, "Keep CSE from undoing the remat."};
  Field<std::optional<std::string>> policy{this, "policy", std::nullopt,
                                           "Name of the checkpoint policy; None saves nothing."};
};

class BaseLayer : public Module {
 public:
  struct Config : Module::Config {
    AXLEARN_CONFIG(Config)
    Field<std::optional<Dtype>> dtype{this, "dtype", std::nullopt,
                                      "Parameter dtype; None inherits the parent's."};
    Field<ConfigPtr<Initializer::Config>> param_init{
        this, "param_init", nullptr, "Parameter initializer; None inherits the parent's."};
    Field<std::optional<MeshAxes>> param_partition_spec{
        this, "param_partition_spec", std::nullopt,
        "Mesh axes of the layer's main (weight) parameter; layers derive the others'."};
    Field<ConfigPtr<RematSpec>> remat_spec{this, "remat_spec", nullptr,
                                           "Remat arguments; None lets the compiler decide."};
  };
  AXLEARN_CONFIGURABLE(BaseLayer, "axlearn.common.base_layer.BaseLayer")

  BaseLayer(const Config& cfg, Module* parent);

  // config.dtype, else the nearest BaseLayer ancestor's, else float32.
  Dtype dtype() const;
  // config.param_init, else the nearest BaseLayer ancestor's, else DefaultInitializer.
  const Initializer& param_init() const;

  // This layer's and its descendant layers' specs with dtype, mesh_axes (checked against the
  // rank) and fan_axes filled in.
  virtual NestedParameterSpec create_parameter_specs_recursively() const;
  // Draws every parameter: for each own parameter in declaration order, then each child layer
  // in the order added, (key, sub_key) = split(key) and sub_key draws it, as AXLearn does.
  virtual NestedTensor initialize_parameters_recursively(const Tensor& prng_key) const;

  // The parameter `name` of the current invocation's state (inside a method).
  const Tensor& parameter(const std::string& name) const;

 protected:
  // This layer's own parameters, in order. Layers override this.
  virtual std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const;
  // spec.fan_axes when set; else for names ending in "weight" (in=-2, out=-1), which need at
  // least two dims; else None.
  virtual std::optional<FanAxes> compute_fan_axes(const std::string& name,
                                                  const ParameterSpec& spec) const;

 private:
  const BaseLayer* parent_layer() const;
  // The spec with dtype, mesh_axes and fan_axes resolved.
  ParameterSpec resolve_spec(const std::string& name, ParameterSpec spec) const;

  std::unique_ptr<Initializer> param_init_;  // null: inherited
};

// (key, sub_key) = jax.random.split(key).
std::pair<Tensor, Tensor> split_key(const Tensor& key);

}  // namespace axlearn
