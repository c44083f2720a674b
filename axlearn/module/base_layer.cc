#include "axlearn/module/base_layer.h"

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"

namespace axlearn {

std::string mesh_axes_str(const MeshAxes& axes) {
  std::string out = "(";
  for (size_t i = 0; i < axes.size(); ++i) {
    if (i) out += ", ";
    if (const auto* s = std::get_if<std::string>(&axes[i])) {
      out += py_repr(*s);
    } else if (const auto* v = std::get_if<std::vector<std::string>>(&axes[i])) {
      out += "(";
      for (size_t j = 0; j < v->size(); ++j) out += (j ? ", " : "") + py_repr((*v)[j]);
      out += v->size() == 1 ? ",)" : ")";
    } else {
      out += "None";
    }
  }
  return out + (axes.size() == 1 ? ",)" : ")");
}

Fans ParameterSpec::fans() const {
  if (!fan_axes) fail("ParameterSpec of shape ", shape_str(shape), " has no fan axes");
  return compute_fans(shape, *fan_axes);
}

// ---- NestedParameterSpec ----

const ParameterSpec& NestedParameterSpec::spec() const {
  if (!spec_) fail("NestedParameterSpec: not a leaf");
  return *spec_;
}

const ParameterSpec& NestedParameterSpec::at_path(const std::string& path) const {
  const NestedParameterSpec* node = this;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t slash = path.find('/', start);
    const std::string part =
        path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    auto it = node->children_.find(part);
    if (it == node->children_.end()) fail("no parameter spec at '", path, "'");
    node = &it->second;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (!node->spec_) fail("'", path, "' is a subtree, not a parameter spec");
  return *node->spec_;
}

namespace {
void flatten_specs(const NestedParameterSpec& node, const std::string& prefix,
                   std::vector<std::pair<std::string, ParameterSpec>>& out) {
  if (node.is_leaf()) {
    out.emplace_back(prefix, node.spec());
    return;
  }
  for (const auto& [name, child] : node.children()) {
    flatten_specs(child, prefix.empty() ? name : prefix + "/" + name, out);
  }
}
}  // namespace

std::vector<std::pair<std::string, ParameterSpec>> NestedParameterSpec::flatten_with_paths() const {
  std::vector<std::pair<std::string, ParameterSpec>> out;
  flatten_specs(*this, "", out);
  return out;
}

std::pair<Tensor, Tensor> split_key(const Tensor& key) {
  const Tensor keys = random::split(key, 2);
  return {reshape(slice_axis(keys, 0, 0, 1), {2}), reshape(slice_axis(keys, 0, 1, 2), {2})};
}

// ---- BaseLayer ----

BaseLayer::BaseLayer(const Config& cfg, Module* parent) : Module(cfg, parent) {
  if (const auto& init = config().param_init.get()) {
    auto scope = InstantiationScope::at(path() + ".param_init");
    param_init_ = init->instantiate<Initializer>();
  } else if (!parent_layer()) {
    param_init_ = DefaultInitializer::default_config()->instantiate<Initializer>();
  }
}

const BaseLayer* BaseLayer::parent_layer() const {
  for (const Module* m = parent(); m; m = m->parent()) {
    if (const auto* layer = dynamic_cast<const BaseLayer*>(m)) return layer;
  }
  return nullptr;
}

Dtype BaseLayer::dtype() const {
  if (const auto& d = config().dtype.get()) return *d;
  if (const BaseLayer* p = parent_layer()) return p->dtype();
  return float32;
}

const Initializer& BaseLayer::param_init() const {
  if (param_init_) return *param_init_;
  return parent_layer()->param_init();  // a layer without one always has a layer ancestor
}

std::vector<std::pair<std::string, ParameterSpec>> BaseLayer::create_layer_parameter_specs() const {
  return {};
}

std::optional<FanAxes> BaseLayer::compute_fan_axes(const std::string& name,
                                                   const ParameterSpec& spec) const {
  if (spec.fan_axes) return spec.fan_axes;
  if (name.size() < 6 || name.compare(name.size() - 6, 6, "weight") != 0) return std::nullopt;
  if (spec.shape.size() < 2) {
    fail(path(), ": the default fan axes need a weight parameter with at least 2 dims; '", name,
         "' has shape ", shape_str(spec.shape));
  }
  return FanAxes{{-2}, {-1}, {}};
}

ParameterSpec BaseLayer::resolve_spec(const std::string& name, ParameterSpec spec) const {
  if (!spec.mesh_axes) spec.mesh_axes = MeshAxes(spec.shape.size(), MeshAxis{});
  if (spec.mesh_axes->size() != spec.shape.size()) {
    fail(path(), ": parameter '", name, "' has mesh axes ", mesh_axes_str(*spec.mesh_axes),
         " for shape ", shape_str(spec.shape), "; they need one entry per dim");
  }
  spec.fan_axes = compute_fan_axes(name, spec);
  if (!spec.dtype) spec.dtype = dtype();
  return spec;
}

NestedParameterSpec BaseLayer::create_parameter_specs_recursively() const {
  NestedParameterSpec specs;
  for (auto& [name, spec] : create_layer_parameter_specs()) {
    specs[name] = NestedParameterSpec(resolve_spec(name, spec));
  }
  for (const Module* child : children()) {
    const auto* layer = dynamic_cast<const BaseLayer*>(child);
    if (!layer) continue;
    if (specs.children().count(child->name())) {
      fail(path(), ": child '", child->name(), "' has the name of a parameter");
    }
    specs[child->name()] = layer->create_parameter_specs_recursively();
  }
  return specs;
}

NestedTensor BaseLayer::initialize_parameters_recursively(const Tensor& prng_key) const {
  NestedTensor params;
  Tensor key = prng_key;
  for (auto& [name, raw] : create_layer_parameter_specs()) {
    if (has_child(name)) fail(path(), ": parameter '", name, "' has the name of a child");
    const ParameterSpec spec = resolve_spec(name, raw);
    auto [next, sub] = split_key(key);
    key = next;
    const Initializer& init = spec.initializer ? *spec.initializer : param_init();
    params[name] = init.initialize(name, sub, spec.shape, *spec.dtype, spec.fan_axes);
  }
  for (const Module* child : children()) {
    const auto* layer = dynamic_cast<const BaseLayer*>(child);
    if (!layer) continue;
    auto [next, sub] = split_key(key);
    key = next;
    params[child->name()] = layer->initialize_parameters_recursively(sub);
  }
  return params;
}

const Tensor& BaseLayer::parameter(const std::string& name) const {
  const NestedTensor& s = state();
  if (s.is_leaf() || !s.contains(name) || !s.at(name).is_leaf()) {
    std::string keys;
    if (!s.is_leaf()) {
      for (const auto& [k, v] : s.dict()) keys += (keys.empty() ? "" : ", ") + k;
    }
    fail(path(), ": no parameter '", name,
         "' in the state (it has: ", keys.empty() ? "nothing" : keys, ")");
  }
  return s.at(name).tensor();
}

}  // namespace axlearn
