#include "axlearn/layers/layers.h"

#include "axlearn/core/norm.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/dist/sharding.h"

namespace axlearn::layers {

Linear::Linear(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
  register_method("forward", [this](const NestedTensor& in) {
    return NestedTensor{{"y", forward(in.at("x").tensor())}};
  });
}

Tensor Linear::forward(const Tensor& x) const {
  auto scope = enter_context();
  const Config& cfg = config();
  if (x.ndim() == 0 || x.shape(-1) != cfg.input_dim.get()) {
    fail(path(), ": Linear expects (..., ", cfg.input_dim.get(), "), got ", shape_str(x.shape()));
  }
  Tensor y = matmul(x, parameter("weight"));
  if (cfg.bias) y = y + parameter("bias");
  return y;
}

std::vector<std::pair<std::string, ParameterSpec>> Linear::create_layer_parameter_specs() const {
  const Config& cfg = config();
  std::vector<std::pair<std::string, ParameterSpec>> specs;
  specs.push_back(
      {"weight",
       {.shape = {cfg.input_dim, cfg.output_dim}, .mesh_axes = cfg.param_partition_spec}});
  if (cfg.bias) {
    std::optional<MeshAxes> bias_axes;
    if (cfg.param_partition_spec.get())
      bias_axes = MeshAxes{cfg.param_partition_spec.get()->back()};
    specs.push_back({"bias", {.shape = {cfg.output_dim}, .mesh_axes = bias_axes}});
  }
  return specs;
}

Embedding::Embedding(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}

Tensor Embedding::forward(const Tensor& ids) const {
  auto scope = enter_context();
  Tensor out = take(parameter("weight"), ids, 0);
  if (out.is_sharded() && ids.is_sharded()) {
    // Split as the ids are, the embedding dimension whole (AXLearn's output_partition_spec
    // (batch, seq, None)): a weight split over its embedding dimension is gathered here once,
    // not before every norm of the residual stream.
    Sharding s = *ids.sharding();
    s.partial.clear();
    s.dims.push_back({});
    out = dist::with_sharding_constraint(out, s);
  }
  return out;
}

Tensor Embedding::attend(const Tensor& x) const {
  auto scope = enter_context();
  return einsum("...d,vd->...v", x, parameter("weight"));
}

std::vector<std::pair<std::string, ParameterSpec>> Embedding::create_layer_parameter_specs() const {
  const Config& cfg = config();
  return {
      {"weight", {.shape = {cfg.num_embeddings, cfg.dim}, .mesh_axes = cfg.param_partition_spec}}};
}

Tensor BaseNormalizationLayer::forward(const Tensor&) const {
  fail(path(), ": BaseNormalizationLayer is abstract; use RMSNorm or LayerNorm");
}

namespace {
void check_norm_input(const Module& m, const Tensor& x, int64_t dim) {
  if (x.ndim() == 0 || x.shape(-1) != dim) {
    fail(m.path(), ": norm expects (..., ", dim, "), got ", shape_str(x.shape()));
  }
}
std::optional<MeshAxes> last_axis_spec(const std::optional<MeshAxes>& spec) {
  if (!spec || spec->empty()) return std::nullopt;
  return MeshAxes{spec->back()};
}
}  // namespace

Tensor RMSNorm::forward(const Tensor& x) const {
  auto scope = enter_context();
  const Config& cfg = config();
  check_norm_input(*this, x, cfg.input_dim);
  const std::optional<Dtype>& fwd = cfg.forward_dtype.get();
  Tensor xin = fwd ? astype(x, *fwd) : x;
  Tensor y = rms_norm(xin, parameter("scale"), cfg.eps);
  return fwd ? astype(y, x.dtype()) : y;
}

std::vector<std::pair<std::string, ParameterSpec>> RMSNorm::create_layer_parameter_specs() const {
  const Config& cfg = config();
  return {
      {"scale", {.shape = {cfg.input_dim}, .mesh_axes = last_axis_spec(cfg.param_partition_spec)}}};
}

Tensor LayerNorm::forward(const Tensor& x) const {
  auto scope = enter_context();
  const Config& cfg = config();
  check_norm_input(*this, x, cfg.input_dim);
  return layer_norm(x, parameter("scale"), parameter("bias"), cfg.eps);
}

std::vector<std::pair<std::string, ParameterSpec>> LayerNorm::create_layer_parameter_specs() const {
  const Config& cfg = config();
  const auto axes = last_axis_spec(cfg.param_partition_spec);
  return {{"scale", {.shape = {cfg.input_dim}, .mesh_axes = axes}},
          {"bias", {.shape = {cfg.input_dim}, .mesh_axes = axes}}};
}

Dropout::Dropout(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
  const double rate = cfg.rate.get().value_or(0.0);
  if (rate < 0 || rate >= 1) fail(path(), ": dropout rate must be in [0, 1), got ", rate);
}

Tensor Dropout::forward(const Tensor& x) const {
  auto scope = enter_context();
  const double rate = config().rate.get().value_or(0.0);
  if (!is_training() || rate == 0) return x;
  Tensor keep = random::bernoulli(prng_key(), 1.0 - rate, x.shape());
  return where(keep, x / (1.0 - rate), zeros_like(x));
}

StochasticDepth::StochasticDepth(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
  const double rate = cfg.rate.get().value_or(0.0);
  if (rate < 0 || rate >= 1) fail(path(), ": stochastic depth rate must be in [0, 1), got ", rate);
}

Tensor StochasticDepth::forward(const Tensor& x) const {
  auto scope = enter_context();
  const Config& cfg = config();
  const double rate = cfg.rate.get().value_or(0.0);
  if (!is_training() || rate == 0) return x;
  if (x.ndim() < 1) fail(path(), ": StochasticDepth needs a batch axis, got a scalar");
  Shape mask_shape(size_t(x.ndim()), 1);
  if (cfg.mode.get() == StochasticDepthMode::kRow) mask_shape[0] = x.shape(0);
  Tensor keep = random::bernoulli(prng_key(), 1.0 - rate, mask_shape);
  return x * astype(keep, x.dtype()) / (1.0 - rate);
}

Tensor get_activation(const std::string& name, const Tensor& x) {
  if (name == "linear") return x;
  if (name == "nn.relu" || name == "relu") return relu(x);
  if (name == "nn.gelu" || name == "gelu_tanh") return gelu(x, /*approximate=*/true);
  if (name == "exact_gelu" || name == "gelu") return gelu(x, /*approximate=*/false);
  if (name == "nn.silu" || name == "nn.swish" || name == "silu") return silu(x);
  if (name == "nn.tanh") return tanh(x);
  if (name == "nn.sigmoid") return sigmoid(x);
  if (name == "quick_gelu") return x * sigmoid(x * 1.702);
  if (name == "squared_relu") return square(relu(x));
  fail("unknown activation '", name,
       "'; known: linear, nn.relu, nn.gelu, exact_gelu, nn.silu, nn.swish, nn.tanh, nn.sigmoid, "
       "quick_gelu, squared_relu, relu, gelu, gelu_tanh, silu");
}

}  // namespace axlearn::layers
