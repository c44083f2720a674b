#include "axlearn/layers/transformer.h"

#include <cmath>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/remat.h"

namespace axlearn::layers {

HiddenDimFn ScaleFn::call() const {
  const double s = scale;
  const int64_t m = round_up_to_multiples_of;
  if (m <= 0) fail("scale_fn: round_up_to_multiples_of must be positive, got ", m);
  return [s, m](int64_t dim) {
    const auto h = int64_t(double(dim) * s);
    return (h + m - 1) / m * m;
  };
}

// ---- TransformerFeedForwardLayer ----

TransformerFeedForwardLayer::TransformerFeedForwardLayer(const Config& cfg, Module* parent)
    : BaseLayer(cfg, parent) {
  const int64_t d = cfg.input_dim;
  const auto& hd = cfg.hidden_dim.get();
  if (const auto* v = std::get_if<int64_t>(&hd)) {
    hidden_dim_ = *v;
  } else {
    const auto& fn = std::get<ConfigPtr<HiddenDimFnConfig>>(hd);
    if (!fn) fail(path(), ": hidden_dim is None");
    hidden_dim_ = fn->instantiate()(d);
  }
  if (hidden_dim_ <= 0) fail(path(), ": hidden_dim must be positive, got ", hidden_dim_);
  const auto& act = cfg.activation.get();
  if (const auto* s = std::get_if<std::string>(&act)) {
    activations_ = {*s};
  } else {
    activations_ = std::get<std::vector<std::string>>(act);
    if (activations_.empty()) fail(path(), ": activation list is empty");
  }
  for (const auto& a : activations_) get_activation(a, zeros({1}));  // unknown names fail here
  const NormStructure st = cfg.structure;
  {
    ConfigPtr<BaseNormalizationLayer::Config> n = cfg.norm;
    n->set("input_dim", d);
    add_child<BaseNormalizationLayer>("norm", n);
  }
  if (st == NormStructure::kHybridnorm) {
    if (!cfg.postnorm.get()) fail(path(), ": hybridnorm needs a postnorm config");
    ConfigPtr<BaseNormalizationLayer::Config> n = cfg.postnorm;
    n->set("input_dim", d);
    add_child<BaseNormalizationLayer>("postnorm", n);
  }
  auto linear = [&](const std::string& name, const ConfigPtr<Linear::Config>& base, int64_t in,
                    int64_t out) {
    ConfigPtr<Linear::Config> c = base;
    c->set("input_dim", in).set("output_dim", out);
    add_child<Linear>(name, c);
  };
  if (activations_.size() == 1) {
    linear("linear1", cfg.linear1, d, hidden_dim_);
  } else {
    for (size_t i = 0; i < activations_.size(); ++i) {
      linear("linear1_" + std::to_string(i), cfg.linear1, d, hidden_dim_);
    }
  }
  linear("linear2", cfg.linear2, hidden_dim_, d);
  add_child<Dropout>("dropout1", cfg.dropout);
  add_child<Dropout>("dropout2", cfg.dropout);
  add_child<StochasticDepth>("stochastic_depth", cfg.stochastic_depth);
  register_method("forward", [this](const NestedTensor& in) {
    return NestedTensor{{"y", forward(in.at("x").tensor())}};
  });
}

Tensor TransformerFeedForwardLayer::forward(const Tensor& x) const {
  auto scope = enter_context();
  const Config& cfg = config();
  auto& norm = static_cast<const BaseNormalizationLayer&>(child("norm"));
  const NormStructure st = cfg.structure;
  Tensor h = st == NormStructure::kPostnorm ? x : norm.forward(x);
  Tensor act;
  if (activations_.size() == 1) {
    act = get_activation(activations_[0], static_cast<const Linear&>(child("linear1")).forward(h));
  } else {
    for (size_t i = 0; i < activations_.size(); ++i) {
      const auto& lin = static_cast<const Linear&>(child("linear1_" + std::to_string(i)));
      Tensor a = get_activation(activations_[i], lin.forward(h));
      act = act.defined() ? act * a : a;
    }
  }
  act = static_cast<const Dropout&>(child("dropout1")).forward(act);
  Tensor y = static_cast<const Linear&>(child("linear2")).forward(act);
  if (st == NormStructure::kHybridnorm) {
    y = static_cast<const BaseNormalizationLayer&>(child("postnorm")).forward(y);
  }
  y = static_cast<const Dropout&>(child("dropout2")).forward(y);
  y = static_cast<const StochasticDepth&>(child("stochastic_depth")).forward(y);
  if (cfg.residual_weight.get() != 1.0) y = y * cfg.residual_weight.get();
  y = x + y;
  return st == NormStructure::kPostnorm ? norm.forward(y) : y;
}

// ---- TransformerAttentionLayer ----

TransformerAttentionLayer::TransformerAttentionLayer(const Config& cfg, Module* parent)
    : BaseLayer(cfg, parent) {
  if (cfg.structure.get() == NormStructure::kHybridnorm) {
    fail(path(), ": hybridnorm is not supported by TransformerAttentionLayer yet");
  }
  ConfigPtr<BaseNormalizationLayer::Config> n = cfg.norm;
  n->set("input_dim", cfg.target_dim.get());
  norm_ = &add_child<BaseNormalizationLayer>("norm", n);
  ConfigPtr<MultiheadAttention::Config> a = cfg.attention;
  a->set("query_dim", cfg.target_dim.get())
      .set("key_dim", cfg.source_dim.get())
      .set("value_dim", cfg.source_dim.get())
      .set("output_dim", std::optional<int64_t>(cfg.target_dim.get()));
  attention_ = &add_child<MultiheadAttention>("attention", a);
  dropout_ = &add_child<Dropout>("dropout", cfg.dropout);
  stochastic_depth_ = &add_child<StochasticDepth>("stochastic_depth", cfg.stochastic_depth);
}

Tensor TransformerAttentionLayer::forward(const Tensor& target,
                                          const AttentionInputs& inputs) const {
  auto scope = enter_context();
  if (config().structure.get() == NormStructure::kPrenorm) {
    Tensor h = norm_->forward(target);
    AttentionInputs in = inputs;
    Tensor out = attention_->forward(h, in).data;
    return target + stochastic_depth_->forward(dropout_->forward(out));
  }
  Tensor out = attention_->forward(target, inputs).data;
  return norm_->forward(target + stochastic_depth_->forward(dropout_->forward(out)));
}

NestedTensor TransformerAttentionLayer::init_states(int64_t batch, int64_t max_len) const {
  return NestedTensor{{"attention", attention_->init_states(batch, max_len)}};
}

namespace {
const NestedTensor& sub_state(const Module& m, const NestedTensor& states, const std::string& key) {
  if (states.is_leaf() || !states.contains(key)) {
    fail(m.path(), ": the decoding state has no '", key, "' (make it with init_states)");
  }
  return states.at(key);
}
}  // namespace

CachedOutput TransformerAttentionLayer::prefill(const NestedTensor& states, const Tensor& target,
                                                const Tensor& time_step) const {
  auto scope = enter_context();
  const NestedTensor& st = sub_state(*this, states, "attention");
  const bool prenorm = config().structure.get() == NormStructure::kPrenorm;
  CachedOutput a = attention_->prefill(st, prenorm ? norm_->forward(target) : target, time_step);
  Tensor y = target + stochastic_depth_->forward(dropout_->forward(a.data));
  return {NestedTensor{{"attention", a.states}}, prenorm ? y : norm_->forward(y)};
}

CachedOutput TransformerAttentionLayer::extend_step(const NestedTensor& states,
                                                    const Tensor& target) const {
  auto scope = enter_context();
  const NestedTensor& st = sub_state(*this, states, "attention");
  const bool prenorm = config().structure.get() == NormStructure::kPrenorm;
  CachedOutput a = attention_->extend_step(st, prenorm ? norm_->forward(target) : target);
  Tensor y = target + stochastic_depth_->forward(dropout_->forward(a.data));
  return {NestedTensor{{"attention", a.states}}, prenorm ? y : norm_->forward(y)};
}

// ---- TransformerLayer ----

TransformerLayer::TransformerLayer(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
  const int64_t d = cfg.input_dim;
  ConfigPtr<TransformerAttentionLayer::Config> sa = cfg.self_attention;
  sa->set("target_dim", d).set("source_dim", d);
  self_attention_ = &add_child<TransformerAttentionLayer>("self_attention", sa);
  ConfigPtr<TransformerFeedForwardLayer::Config> ff = cfg.feed_forward;
  ff->set("input_dim", d);
  feed_forward_ = &add_child<TransformerFeedForwardLayer>("feed_forward", ff);
  // Added last, as AXLearn does: the order decides how the init key is split among children.
  if (cfg.cross_attention.get()) {
    ConfigPtr<TransformerAttentionLayer::Config> ca = cfg.cross_attention;
    ca->set("target_dim", d);
    cross_attention_ = &add_child<TransformerAttentionLayer>("cross_attention", ca);
  }
}

Tensor TransformerLayer::forward(const Tensor& data, const AttentionInputs& self_inputs,
                                 const CrossAttentionInputs& cross) const {
  auto scope = enter_context();
  if (self_inputs.key.defined()) {
    fail(path(), ": self_inputs.key is set; pass cross-attention sources as cross.data");
  }
  if (cross.data.defined() && !cross_attention_) {
    fail(path(), ": cross_attention_data given, but the layer's cross_attention config is None");
  }
  if (!cross.data.defined() && cross.logit_biases.defined()) {
    fail(path(), ": cross_attention_logit_biases given without cross_attention_data");
  }
  if (config().remat_spec.get() && is_training()) {
    return forward_with_remat(data, self_inputs, cross);
  }
  return forward_layers(data, self_inputs, cross);
}

Tensor TransformerLayer::forward_layers(const Tensor& data, const AttentionInputs& self_inputs,
                                        const CrossAttentionInputs& cross) const {
  Tensor x = self_attention_->forward(data, self_inputs);
  if (cross.data.defined()) {
    AttentionInputs in;
    in.key = cross.data;
    in.value = cross.data;
    in.attention_logit_biases = cross.logit_biases;
    x = cross_attention_->forward(x, in);
  }
  return feed_forward_->forward(x);
}

namespace {

// A copy of `src` with every tensor replaced by fn(tensor), visiting summaries, state updates and
// module outputs of each node, then its children, in key order.
OutputCollection map_collection(const OutputCollection& src,
                                const std::function<Tensor(const Tensor&)>& fn) {
  OutputCollection dst;
  for (const auto& [name, s] : src.local_summaries()) {
    Tensor v = fn(s.value());
    switch (s.kind()) {
      case Summary::Kind::kScalar:
        dst.add_summary(name, Summary::scalar(v));
        break;
      case Summary::Kind::kTensor:
        dst.add_summary(name, Summary::tensor(v));
        break;
      case Summary::Kind::kHistogram:
        dst.add_summary(name, Summary::histogram(v));
        break;
      case Summary::Kind::kImage:
        dst.add_summary(name, Summary::image(v));
        break;
    }
  }
  if (!src.local_state_updates().is_leaf()) {
    for (const auto& [name, v] : src.local_state_updates().dict())
      dst.add_state_update(name, v.map(fn));
  }
  if (!src.local_module_outputs().is_leaf()) {
    for (const auto& [name, v] : src.local_module_outputs().dict())
      dst.add_module_output(name, v.map(fn));
  }
  for (const auto& [name, child] : src.children()) {
    OutputCollection mapped = map_collection(*child, fn);
    dst.add_child(name).update(std::move(mapped));
  }
  return dst;
}

}  // namespace

Tensor TransformerLayer::forward_with_remat(const Tensor& data, const AttentionInputs& self_inputs,
                                            const CrossAttentionInputs& cross) const {
  InvocationContext& ctx = invocation_context();
  const NestedTensor& state = ctx.state();
  // Inputs: data, the parameters in flatten order, then the key of the "remat" context.
  std::vector<Tensor> inputs = {data};
  const std::vector<Tensor> params = state.leaves();
  inputs.insert(inputs.end(), params.begin(), params.end());
  const bool has_key = ctx.prng_key().has_value();
  if (has_key) inputs.push_back(random::fold_in(*ctx.prng_key(), seed_from_name("remat")));

  // The collection the traced body fills: its tensors become extra outputs of the call.
  OutputCollection traced;
  VectorFn body = [&](const std::vector<Tensor>& in) {
    const NestedTensor layer_state = state.unflatten(
        std::vector<Tensor>(in.begin() + 1, in.begin() + 1 + std::ptrdiff_t(params.size())));
    ChildContextOptions opts{.module = const_cast<TransformerLayer*>(this),
                             .state = &layer_state,
                             .output_collection = &traced};
    if (has_key) opts.prng_key = in.back();
    std::vector<Tensor> outs;
    {
      auto scope = child_context("remat", opts);
      outs.push_back(forward_layers(in[0], self_inputs, cross));
    }
    map_collection(traced, [&](const Tensor& t) {
      outs.push_back(t);
      return t;
    });
    return outs;
  };
  std::vector<Tensor> outs = checkpoint(body)(inputs);
  size_t next = 1;
  ctx.output_collection().update(
      map_collection(traced, [&](const Tensor&) { return outs[next++]; }));
  return outs[0];
}

NestedTensor TransformerLayer::init_states(int64_t batch, int64_t max_len) const {
  return NestedTensor{{"self_attention", self_attention_->init_states(batch, max_len)}};
}

CachedOutput TransformerLayer::prefill(const NestedTensor& states, const Tensor& data,
                                       const Tensor& time_step) const {
  auto scope = enter_context();
  CachedOutput a =
      self_attention_->prefill(sub_state(*this, states, "self_attention"), data, time_step);
  return {NestedTensor{{"self_attention", a.states}}, feed_forward_->forward(a.data)};
}

CachedOutput TransformerLayer::extend_step(const NestedTensor& states, const Tensor& data) const {
  auto scope = enter_context();
  CachedOutput a = self_attention_->extend_step(sub_state(*this, states, "self_attention"), data);
  return {NestedTensor{{"self_attention", a.states}}, feed_forward_->forward(a.data)};
}

// ---- stacks ----

Tensor BaseStackedTransformerLayer::forward(const Tensor&, const AttentionInputs&,
                                            const CrossAttentionInputs&) const {
  fail(path(), ": BaseStackedTransformerLayer is abstract");
}

NestedTensor BaseStackedTransformerLayer::init_states(int64_t, int64_t) const {
  fail(path(), ": ", config().describe(), " does not support decoding");
}

CachedOutput BaseStackedTransformerLayer::prefill(const NestedTensor&, const Tensor&,
                                                  const Tensor&) const {
  fail(path(), ": ", config().describe(), " does not support decoding");
}

CachedOutput BaseStackedTransformerLayer::extend_step(const NestedTensor&, const Tensor&) const {
  fail(path(), ": ", config().describe(), " does not support decoding");
}

namespace {
std::string layer_key(int64_t i) { return "layer" + std::to_string(i); }
}  // namespace

StackedTransformerLayer::StackedTransformerLayer(const Config& cfg, Module* parent)
    : BaseStackedTransformerLayer(cfg, parent) {
  if (cfg.num_layers.get() <= 0) fail(path(), ": num_layers must be positive");
  for (int64_t i = 0; i < cfg.num_layers; ++i) {
    ConfigPtr<TransformerLayer::Config> c = cfg.layer;
    c->set("input_dim", cfg.input_dim.get());
    layers_.push_back(&add_child<TransformerLayer>("layer" + std::to_string(i), c));
  }
}

Tensor StackedTransformerLayer::forward(const Tensor& data, const AttentionInputs& inputs,
                                        const CrossAttentionInputs& cross) const {
  auto scope = enter_context();
  Tensor x = data;
  for (const TransformerLayer* layer : layers_) x = layer->forward(x, inputs, cross);
  return x;
}

NestedTensor StackedTransformerLayer::init_states(int64_t batch, int64_t max_len) const {
  NestedTensor states;
  for (size_t i = 0; i < layers_.size(); ++i) {
    states[layer_key(int64_t(i))] = layers_[i]->init_states(batch, max_len);
  }
  return states;
}

CachedOutput StackedTransformerLayer::prefill(const NestedTensor& states, const Tensor& data,
                                              const Tensor& time_step) const {
  auto scope = enter_context();
  CachedOutput out{NestedTensor(), data};
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string key = layer_key(int64_t(i));
    CachedOutput o = layers_[i]->prefill(sub_state(*this, states, key), out.data, time_step);
    out.states[key] = std::move(o.states);
    out.data = o.data;
  }
  return out;
}

CachedOutput StackedTransformerLayer::extend_step(const NestedTensor& states,
                                                  const Tensor& data) const {
  auto scope = enter_context();
  CachedOutput out{NestedTensor(), data};
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string key = layer_key(int64_t(i));
    CachedOutput o = layers_[i]->extend_step(sub_state(*this, states, key), out.data);
    out.states[key] = std::move(o.states);
    out.data = o.data;
  }
  return out;
}

Repeat::Repeat(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
  if (cfg.num_layers.get() <= 0) fail(path(), ": num_layers must be positive");
  if (!cfg.layer.get()) fail(path(), ": Repeat needs a layer config");
  layer_ = &add_child<TransformerLayer>("layer", cfg.layer);
}

NestedParameterSpec Repeat::create_parameter_specs_recursively() const {
  NestedParameterSpec specs;
  specs["layer"] = stack_specs(layer_->create_parameter_specs_recursively(), config().num_layers);
  return specs;
}

Tensor split_prng_key(const Tensor& key, int64_t n) {
  if (n <= 0) fail("split_prng_key: the number of keys must be positive, got ", n);
  std::vector<Tensor> keys;
  Tensor k = key;
  for (int64_t i = 0; i < n; ++i) {
    auto [next, child] = split_key(k);
    keys.push_back(child);
    k = next;
  }
  return stack(keys, 0);
}

NestedTensor Repeat::initialize_parameters_recursively(const Tensor& prng_key) const {
  const int64_t n = config().num_layers;
  Tensor keys = split_prng_key(prng_key, n);
  std::vector<NestedTensor> per_layer;
  for (int64_t i = 0; i < n; ++i) {
    per_layer.push_back(
        layer_->initialize_parameters_recursively(reshape(slice_axis(keys, 0, i, i + 1), {2})));
  }
  std::vector<const NestedTensor*> ptrs;
  for (const auto& p : per_layer) ptrs.push_back(&p);
  NestedTensor out;
  out["layer"] =
      NestedTensor::zip_map(ptrs, [](const std::vector<Tensor>& v) { return stack(v, 0); });
  return out;
}

Tensor Repeat::forward(const Tensor& data, const AttentionInputs& inputs,
                       const CrossAttentionInputs& cross) const {
  auto scope = enter_context();
  const int64_t n = config().num_layers;
  const NestedTensor empty;
  const NestedTensor& stacked = state().contains("layer") ? state().at("layer") : empty;
  std::optional<Tensor> keys;
  if (invocation_context().prng_key()) keys = split_prng_key(prng_key(), n);
  Tensor x = data;
  for (int64_t i = 0; i < n; ++i) {
    const NestedTensor layer_state = index_state(stacked, i);
    ChildContextOptions opts{.module = layer_, .state = &layer_state};
    if (keys) opts.prng_key = reshape(slice_axis(*keys, 0, i, i + 1), {2});
    auto s = child_context("layer" + std::to_string(i), opts);
    x = layer_->forward(x, inputs, cross);
  }
  return x;
}

void Repeat::for_each_layer(const std::function<void(int64_t)>& fn) const {
  const NestedTensor empty;
  const NestedTensor& stacked = state().contains("layer") ? state().at("layer") : empty;
  for (int64_t i = 0; i < config().num_layers; ++i) {
    const NestedTensor layer_state = index_state(stacked, i);
    auto s = child_context(layer_key(i), {.module = layer_, .state = &layer_state});
    fn(i);
  }
}

NestedTensor Repeat::init_states(int64_t batch, int64_t max_len) const {
  // The layers share one config, so their states have one shape.
  const NestedTensor one = layer_->init_states(batch, max_len);
  NestedTensor states;
  for (int64_t i = 0; i < config().num_layers; ++i) states[layer_key(i)] = one;
  return states;
}

CachedOutput Repeat::prefill(const NestedTensor& states, const Tensor& data,
                             const Tensor& time_step) const {
  auto scope = enter_context();
  CachedOutput out{NestedTensor(), data};
  for_each_layer([&](int64_t i) {
    CachedOutput o = layer_->prefill(sub_state(*this, states, layer_key(i)), out.data, time_step);
    out.states[layer_key(i)] = std::move(o.states);
    out.data = o.data;
  });
  return out;
}

CachedOutput Repeat::extend_step(const NestedTensor& states, const Tensor& data) const {
  auto scope = enter_context();
  CachedOutput out{NestedTensor(), data};
  for_each_layer([&](int64_t i) {
    CachedOutput o = layer_->extend_step(sub_state(*this, states, layer_key(i)), out.data);
    out.states[layer_key(i)] = std::move(o.states);
    out.data = o.data;
  });
  return out;
}

RepeatedTransformerLayer::RepeatedTransformerLayer(const Config& cfg, Module* parent)
    : BaseStackedTransformerLayer(cfg, parent) {
  ConfigPtr<TransformerLayer::Config> layer = cfg.layer;
  layer->set("input_dim", cfg.input_dim.get());
  ConfigPtr<Repeat::Config> r = cfg.repeat;
  r->set("num_layers", cfg.num_layers.get()).set("layer", layer);
  repeat_ = &add_child<Repeat>("repeat", r);
}

Tensor RepeatedTransformerLayer::forward(const Tensor& data, const AttentionInputs& inputs,
                                         const CrossAttentionInputs& cross) const {
  auto scope = enter_context();
  return repeat_->forward(data, inputs, cross);
}

NestedTensor RepeatedTransformerLayer::init_states(int64_t batch, int64_t max_len) const {
  return repeat_->init_states(batch, max_len);
}

CachedOutput RepeatedTransformerLayer::prefill(const NestedTensor& states, const Tensor& data,
                                               const Tensor& time_step) const {
  auto scope = enter_context();
  return repeat_->prefill(states, data, time_step);
}

CachedOutput RepeatedTransformerLayer::extend_step(const NestedTensor& states,
                                                   const Tensor& data) const {
  auto scope = enter_context();
  return repeat_->extend_step(states, data);
}

}  // namespace axlearn::layers
