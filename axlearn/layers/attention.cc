#include "axlearn/layers/attention.h"

#include <cmath>

#include "axlearn/core/attention.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"

namespace axlearn::layers {

namespace {
using Specs = std::vector<std::pair<std::string, ParameterSpec>>;

// The bias's mesh axes: the weight's, less the model dim (axis 0).
std::optional<MeshAxes> drop_first(const std::optional<MeshAxes>& axes) {
  if (!axes || axes->empty()) return std::nullopt;
  return MeshAxes(axes->begin() + 1, axes->end());
}

void check_rank3(const Module& m, const Tensor& x, int64_t dim, const char* what) {
  if (x.ndim() != 3 || x.shape(2) != dim) {
    fail(m.path(), ": ", what, " must be (B, T, ", dim, "), got ", shape_str(x.shape()));
  }
}
}  // namespace

// ---- MultiheadInputLinear / MultiheadOutputLinear ----

Tensor MultiheadInputLinear::forward(const Tensor& x) const {
  auto scope = enter_context();
  Tensor y = einsum("btd,dnh->btnh", x, parameter("weight"));
  if (config().bias) y = y + parameter("bias");
  return y;
}

Specs MultiheadInputLinear::create_layer_parameter_specs() const {
  const Config& cfg = config();
  Specs specs{{"weight",
               {.shape = {cfg.model_dim, cfg.num_heads, cfg.per_head_dim},
                .mesh_axes = cfg.param_partition_spec}}};
  if (cfg.bias) {
    specs.push_back({"bias",
                     {.shape = {cfg.num_heads, cfg.per_head_dim},
                      .mesh_axes = drop_first(cfg.param_partition_spec)}});
  }
  return specs;
}

std::optional<FanAxes> MultiheadInputLinear::compute_fan_axes(const std::string& name,
                                                              const ParameterSpec& spec) const {
  if (name == "weight") return FanAxes{.in_axis = {0}, .out_axis = {1, 2}, .batch_axis = {}};
  return BaseLayer::compute_fan_axes(name, spec);
}

Tensor MultiheadOutputLinear::forward(const Tensor& x) const {
  auto scope = enter_context();
  Tensor y = einsum("btnh,dnh->btd", x, parameter("weight"));
  if (config().bias) y = y + parameter("bias");
  return y;
}

Specs MultiheadOutputLinear::create_layer_parameter_specs() const {
  const Config& cfg = config();
  Specs specs{{"weight",
               {.shape = {cfg.model_dim, cfg.num_heads, cfg.per_head_dim},
                .mesh_axes = cfg.param_partition_spec}}};
  if (cfg.bias) {
    std::optional<MeshAxes> axes;
    if (cfg.param_partition_spec.get()) axes = MeshAxes{cfg.param_partition_spec.get()->front()};
    specs.push_back({"bias", {.shape = {cfg.model_dim}, .mesh_axes = axes}});
  }
  return specs;
}

std::optional<FanAxes> MultiheadOutputLinear::compute_fan_axes(const std::string& name,
                                                               const ParameterSpec& spec) const {
  if (name == "weight") return FanAxes{.in_axis = {1, 2}, .out_axis = {0}, .batch_axis = {}};
  return BaseLayer::compute_fan_axes(name, spec);
}

// ---- QKV projections ----

QKV BaseQKVLinear::forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&) const {
  fail(path(), ": BaseQKVLinear is abstract");
}

QKVLinear::QKVLinear(const Config& cfg, Module* parent) : BaseQKVLinear(cfg, parent) {
  // GroupedQKVLinear's config adds num_kv_heads.
  build(cfg, cfg.contains("num_kv_heads") ? cfg.get<int64_t>("num_kv_heads") : cfg.num_heads);
}

void QKVLinear::build(const Config& cfg, int64_t kv_heads) {
  if (kv_heads <= 0 || cfg.num_heads.get() % kv_heads != 0) {
    fail(path(), ": num_heads (", cfg.num_heads.get(), ") must be a multiple of num_kv_heads (",
         kv_heads, ")");
  }
  auto make = [&](const char* name, int64_t dim, int64_t heads) {
    ConfigPtr<MultiheadInputLinear::Config> c = cfg.layer;
    c->set("model_dim", dim).set("num_heads", heads).set("per_head_dim", cfg.per_head_dim.get());
    return &add_child<MultiheadInputLinear>(name, c);
  };
  q_proj_ = make("q_proj", cfg.query_dim, cfg.num_heads);
  k_proj_ = make("k_proj", cfg.key_dim, kv_heads);
  v_proj_ = make("v_proj", cfg.value_dim, kv_heads);
}

QKV QKVLinear::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                       const Tensor&) const {
  auto scope = enter_context();
  const Tensor& k_in = key.defined() ? key : query;
  const Tensor& v_in = value.defined() ? value : k_in;
  return {q_proj_->forward(query), k_proj_->forward(k_in), v_proj_->forward(v_in)};
}

GroupedQKVLinear::GroupedQKVLinear(const Config& cfg, Module* parent) : QKVLinear(cfg, parent) {}

FusedQKVLinear::FusedQKVLinear(const Config& cfg, Module* parent) : BaseQKVLinear(cfg, parent) {
  if (cfg.query_dim.get() != cfg.key_dim.get() || cfg.key_dim.get() != cfg.value_dim.get()) {
    fail(path(), ": FusedQKVLinear needs query_dim == key_dim == value_dim, got ",
         cfg.query_dim.get(), ", ", cfg.key_dim.get(), ", ", cfg.value_dim.get());
  }
  ConfigPtr<MultiheadInputLinear::Config> c = cfg.layer;
  c->set("model_dim", cfg.query_dim.get())
      .set("num_heads", cfg.num_heads.get())
      .set("per_head_dim", cfg.per_head_dim.get());
  add_child<MultiheadInputLinear>("qkv_proj", c);
}

NestedParameterSpec FusedQKVLinear::create_parameter_specs_recursively() const {
  NestedParameterSpec specs = BaseLayer::create_parameter_specs_recursively();
  specs["qkv_proj"] = stack_specs(specs["qkv_proj"], 3);
  return specs;
}

NestedTensor FusedQKVLinear::initialize_parameters_recursively(const Tensor& prng_key) const {
  const auto& proj = static_cast<const BaseLayer&>(child("qkv_proj"));
  Tensor keys = random::split(prng_key, 3);
  std::vector<NestedTensor> parts;
  for (int64_t i = 0; i < 3; ++i) {
    parts.push_back(
        proj.initialize_parameters_recursively(reshape(slice_axis(keys, 0, i, i + 1), {2})));
  }
  std::vector<const NestedTensor*> ptrs;
  for (const auto& p : parts) ptrs.push_back(&p);
  NestedTensor out;
  out["qkv_proj"] =
      NestedTensor::zip_map(ptrs, [](const std::vector<Tensor>& v) { return stack(v, 0); });
  return out;
}

QKV FusedQKVLinear::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                            const Tensor&) const {
  auto scope = enter_context();
  if ((key.defined() && !key.same(query)) || (value.defined() && !value.same(query))) {
    fail(path(), ": FusedQKVLinear supports self-attention only");
  }
  const NestedTensor& p = state().at("qkv_proj");
  Tensor y = einsum("btd,kdnh->kbtnh", query, p.at("weight").tensor());  // (3, B, T, N, H)
  if (config().layer->bias) y = y + expand_dims(expand_dims(p.at("bias").tensor(), 1), 1);
  auto parts = split(y, 3, 0);
  return {squeeze(parts[0], {0}), squeeze(parts[1], {0}), squeeze(parts[2], {0})};
}

FusedGroupedQKVLinear::FusedGroupedQKVLinear(const Config& cfg, Module* parent)
    : BaseQKVLinear(cfg, parent) {
  const int64_t n = cfg.num_heads, k = cfg.num_kv_heads;
  if (k <= 0 || n % k != 0) {
    fail(path(), ": num_heads (", n, ") must be a multiple of num_kv_heads (", k, ")");
  }
  if (cfg.query_dim.get() != cfg.key_dim.get() || cfg.key_dim.get() != cfg.value_dim.get()) {
    fail(path(), ": FusedGroupedQKVLinear needs query_dim == key_dim == value_dim");
  }
  ConfigPtr<MultiheadInputLinear::Config> c = cfg.layer;
  c->set("model_dim", cfg.query_dim.get())
      .set("num_heads", n + 2 * k)
      .set("per_head_dim", cfg.per_head_dim.get());
  qkv_proj_ = &add_child<MultiheadInputLinear>("qkv_proj", c);
}

QKV FusedGroupedQKVLinear::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                   const Tensor&) const {
  auto scope = enter_context();
  if ((key.defined() && !key.same(query)) || (value.defined() && !value.same(query))) {
    fail(path(), ": FusedGroupedQKVLinear supports self-attention only");
  }
  const int64_t n = config().num_heads, k = config().num_kv_heads;
  Tensor y = qkv_proj_->forward(query);  // (B, T, N + 2K, H)
  auto parts = split(y, std::vector<int64_t>{n, n + k}, 2);
  return {parts[0], parts[1], parts[2]};
}

// ---- rotary ----

RoFormerSinusoidalPositionalEmbedding::RoFormerSinusoidalPositionalEmbedding(const Config& cfg,
                                                                             Module* parent)
    : BaseLayer(cfg, parent) {
  if (cfg.dim.get() <= 0 || cfg.dim.get() % 2 != 0) {
    fail(path(), ": rotary dim must be positive and even, got ", cfg.dim.get());
  }
}

std::pair<Tensor, Tensor> RoFormerSinusoidalPositionalEmbedding::forward(
    const Tensor& positions) const {
  auto scope = enter_context();
  const int64_t dim = config().dim;
  const double theta = config().theta;
  std::vector<float> inv_freq(size_t(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    inv_freq[size_t(i)] = float(1.0 / std::pow(theta, double(2 * i) / double(dim)));
  }
  Tensor freqs = expand_dims(astype(positions, float32), -1) * array(inv_freq, {dim / 2});
  Tensor emb = concatenate({freqs, freqs}, -1);  // (B|1, T, dim)
  return {sin(emb), cos(emb)};
}

Tensor apply_rotary_position_embeddings(const Tensor& x, const Tensor& sin_t, const Tensor& cos_t) {
  const int64_t h = x.shape(-1);
  Tensor x1 = slice_axis(x, -1, 0, h / 2);
  Tensor x2 = slice_axis(x, -1, h / 2, h);
  Tensor rotated = concatenate({negative(x2), x1}, -1);
  Tensor s = astype(expand_dims(sin_t, 2), x.dtype());  // (B|1, T, 1, H)
  Tensor c = astype(expand_dims(cos_t, 2), x.dtype());
  return x * c + rotated * s;
}

RoFormerQKVLinear::RoFormerQKVLinear(const Config& cfg, Module* parent)
    : BaseQKVLinear(cfg, parent) {
  ConfigPtr<BaseQKVLinear::Config> in = cfg.input_linear;
  in->set("query_dim", cfg.query_dim.get())
      .set("key_dim", cfg.key_dim.get())
      .set("value_dim", cfg.value_dim.get())
      .set("num_heads", cfg.num_heads.get())
      .set("per_head_dim", cfg.per_head_dim.get());
  input_linear_ = &add_child<BaseQKVLinear>("input_linear", in);
  ConfigPtr<RoFormerSinusoidalPositionalEmbedding::Config> r = cfg.rope_pos_emb_layer;
  r->set("dim", cfg.per_head_dim.get());
  rope_ = &add_child<RoFormerSinusoidalPositionalEmbedding>("rope_pos_emb_layer", r);
}

QKV RoFormerQKVLinear::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                               const Tensor& query_positions) const {
  auto scope = enter_context();
  QKV qkv = input_linear_->forward(query, key, value, query_positions);
  const int64_t t = query.shape(1), s = qkv.key.shape(1);
  Tensor qpos = query_positions.defined() ? query_positions : reshape(arange(t), {1, t});
  // Keys of self-attention share the query positions; other keys count from 0.
  Tensor kpos =
      (!key.defined() && query_positions.defined()) ? query_positions : reshape(arange(s), {1, s});
  auto [qsin, qcos] = rope_->forward(qpos);
  Tensor ksin = qsin, kcos = qcos;
  if (!kpos.same(qpos)) {
    auto scope2 = child_context("rope_pos_emb_layer_key",
                                {.module = const_cast<Module*>(static_cast<const Module*>(rope_))});
    std::tie(ksin, kcos) = rope_->forward(kpos);
  }
  qkv.query = apply_rotary_position_embeddings(qkv.query, qsin, qcos);
  qkv.key = apply_rotary_position_embeddings(qkv.key, ksin, kcos);
  if (config().rotary_value) qkv.value = apply_rotary_position_embeddings(qkv.value, ksin, kcos);
  return qkv;
}

// ---- scaling ----

Tensor ScaleQuery::forward(const Tensor& proj) const {
  const auto& f = config().scale_factor.get();
  const double factor = f ? *f : 1.0 / std::sqrt(double(config().per_head_dim.get()));
  return proj * factor;
}

Tensor ScaleKey::forward(const Tensor& proj) const {
  const auto& f = config().scale_factor.get();
  return f ? proj * *f : proj;
}

// ---- MultiheadAttention ----

MultiheadAttention::MultiheadAttention(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
  const int64_t n = cfg.num_heads;
  const int64_t h = per_head_dim();
  ConfigPtr<BaseQKVLinear::Config> in = cfg.input_linear;
  in->set("query_dim", cfg.query_dim.get())
      .set("key_dim", cfg.key_dim.get())
      .set("value_dim", cfg.value_dim.get())
      .set("num_heads", n)
      .set("per_head_dim", h);
  input_linear_ = &add_child<BaseQKVLinear>("input_linear", in);
  ConfigPtr<MultiheadOutputLinear::Config> out = cfg.output_linear;
  out->set("model_dim", cfg.output_dim.get().value_or(cfg.query_dim.get()))
      .set("num_heads", n)
      .set("per_head_dim", h);
  output_linear_ = &add_child<MultiheadOutputLinear>("output_linear", out);
  dropout_ = &add_child<Dropout>("dropout", cfg.dropout);
  ConfigPtr<ScaleQuery::Config> qs = cfg.query_scale;
  qs->set("per_head_dim", h);
  query_scale_ = &add_child<ScaleQuery>("query_scale", qs);
  ConfigPtr<ScaleQuery::Config> ks = cfg.key_scale;
  ks->set("per_head_dim", h);
  key_scale_ = &add_child<ScaleQuery>("key_scale", ks);
  if (cfg.mask.get()) mask_fn_ = cfg.mask.get()->instantiate();
  if (const auto& cap = cfg.atten_logit_cap.get(); cap && *cap <= 0) {
    fail(path(), ": atten_logit_cap must be positive, got ", *cap);
  }
}

int64_t MultiheadAttention::per_head_dim() const {
  const Config& cfg = config();
  if (cfg.per_head_dim.get()) return *cfg.per_head_dim.get();
  if (cfg.query_dim.get() % cfg.num_heads.get() != 0) {
    fail(path(), ": query_dim (", cfg.query_dim.get(), ") is not a multiple of num_heads (",
         cfg.num_heads.get(), "); set per_head_dim");
  }
  return cfg.query_dim.get() / cfg.num_heads.get();
}

std::pair<Tensor, Tensor> MultiheadAttention::compute_attention(const Tensor& q, const Tensor& k,
                                                                const Tensor& v,
                                                                const Tensor& bias) const {
  const int64_t b = q.shape(0), t = q.shape(1), n = q.shape(2), h = q.shape(3);
  const int64_t s = k.shape(1), kv = k.shape(2);
  if (n % kv != 0) fail(path(), ": ", n, " query heads cannot share ", kv, " key/value heads");
  // Query heads grouped by the key/value head they share: (B, T, K, G, H).
  Tensor qg = reshape(q, {b, t, kv, n / kv, h});
  Tensor logits = reshape(einsum("btkgh,bskh->bkgts", qg, k), {b, n, t, s});
  if (const auto& cap = config().atten_logit_cap.get()) {
    logits = tanh(logits / *cap) * *cap;
  }
  if (bias.defined()) logits = logits + astype(bias, logits.dtype());
  // At least f32 (16-bit logits are upcast; f64 stays f64 for gradient checks).
  Tensor probs = softmax(astype(logits, logits.dtype() == float64 ? float64 : float32), -1);
  probs = astype(probs, q.dtype());
  Tensor dropped = dropout_->forward(probs);
  Tensor ctx = einsum("bkgts,bskh->btkgh", reshape(dropped, {b, kv, n / kv, t, s}), v);
  return {reshape(ctx, {b, t, n, h}), probs};
}

Tensor MultiheadAttention::fused_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const AttentionInputs& inputs) const {
  const Config& cfg = config();
  const double dropout_rate = dropout_->config().rate.get().value_or(0.0);
  // Cross-attention (key defined) fits the kernel too: its key positions count from 0, as the
  // kernel's top-left aligned masks assume. Segment ids there are an error of the general path.
  if ((inputs.key.defined() && inputs.segment_ids.defined()) || inputs.query_positions.defined() ||
      inputs.attention_logit_biases.defined() || (is_training() && dropout_rate > 0)) {
    return Tensor();
  }
  AttentionOptions opts;
  opts.scale = 1.0;  // the query is already scaled by query_scale
  opts.causal = cfg.causal;
  if (const auto* mask = cfg.mask.get().get()) {
    if (dynamic_cast<const CausalMask*>(mask)) {
      opts.causal = true;
    } else if (const auto* sw = dynamic_cast<const SlidingWindowCausalMask*>(mask)) {
      opts.sliding_window = int64_t(sw->sliding_window_size);
    } else {
      return Tensor();  // a mask function the kernel does not know
    }
  }
  if (inputs.segment_ids.defined()) {
    opts.q_segment_ids = inputs.segment_ids;
    opts.kv_segment_ids = inputs.segment_ids;
  }
  opts.logit_cap = cfg.atten_logit_cap.get();
  return attention(q, k, v, opts);
}

AttentionOutput MultiheadAttention::forward(const Tensor& query,
                                            const AttentionInputs& inputs) const {
  auto scope = enter_context();
  return attend(query, inputs, nullptr);
}

AttentionOutput MultiheadAttention::attend(const Tensor& query, const AttentionInputs& inputs,
                                           QKV* kv) const {
  const Config& cfg = config();
  check_rank3(*this, query, cfg.query_dim, "query");
  const int64_t b = query.shape(0), t = query.shape(1);
  QKV qkv = input_linear_->forward(query, inputs.key, inputs.value, inputs.query_positions);
  Tensor q = query_scale_->forward(qkv.query);
  Tensor k = key_scale_->forward(qkv.key);
  const int64_t s = k.shape(1);
  if (kv) *kv = {q, k, qkv.value};

  // Attention with default positions and no extra bias or attention dropout runs on the fused
  // kernel (tiled online softmax, no (T, S) matrix); anything else on the masked-bias path.
  if (auto ctx = fused_attention(q, k, qkv.value, inputs); ctx.defined()) {
    return {output_linear_->forward(ctx), Tensor()};
  }

  Tensor mask;  // bool (B|1, 1, T, S)
  auto and_mask = [&](const Tensor& m) { mask = mask.defined() ? logical_and(mask, m) : m; };
  Tensor qpos =
      inputs.query_positions.defined() ? inputs.query_positions : reshape(arange(t), {1, t});
  Tensor kpos = reshape(arange(s), {1, s});
  if (!inputs.key.defined() && inputs.query_positions.defined()) kpos = inputs.query_positions;
  if (cfg.causal)
    and_mask(mask_from_positions(CausalMask::default_config()->instantiate(), qpos, kpos));
  if (mask_fn_) and_mask(mask_from_positions(*mask_fn_, qpos, kpos));
  if (inputs.segment_ids.defined()) {
    if (inputs.key.defined()) fail(path(), ": segment_ids are for self-attention only");
    and_mask(segment_mask(inputs.segment_ids, inputs.segment_ids));
  }
  Tensor bias = inputs.attention_logit_biases;
  if (mask.defined()) bias = add_biases(bias, bool_to_bias(mask, float32));
  (void)b;

  auto [ctx, probs] = compute_attention(q, k, qkv.value, bias);
  return {output_linear_->forward(ctx), probs};
}

// ---- MultiheadAttention: decoding ----

namespace {

const Tensor& state_leaf(const Module& m, const NestedTensor& states, const char* name) {
  if (states.is_leaf() || !states.contains(name) || !states.at(name).is_leaf()) {
    fail(m.path(), ": the decoding state has no '", name, "' (make it with init_states)");
  }
  return states.at(name).tensor();
}

Tensor int32_scalar(int64_t v) { return scalar(double(v), int32); }

}  // namespace

std::optional<int64_t> MultiheadAttention::sliding_window() const {
  if (const auto* sw = dynamic_cast<const SlidingWindowCausalMask*>(config().mask.get().get())) {
    return int64_t(sw->sliding_window_size);
  }
  return std::nullopt;
}

NestedTensor MultiheadAttention::init_states(int64_t batch, int64_t max_len) const {
  if (batch <= 0 || max_len <= 0) {
    fail(path(), ": init_states needs a positive batch and max_len, got ", batch, " and ", max_len);
  }
  int64_t len = max_len;
  if (auto w = sliding_window()) len = std::min(max_len, *w + 1);
  const Shape shape = {batch, len, input_linear_->num_kv_heads(), per_head_dim()};
  return NestedTensor{{"key", zeros(shape, dtype())},
                      {"value", zeros(shape, dtype())},
                      {"time_step", zeros({batch}, int32)}};
}

CachedOutput MultiheadAttention::prefill(const NestedTensor& states, const Tensor& query,
                                         const Tensor& time_step) const {
  auto scope = enter_context();
  check_rank3(*this, query, config().query_dim, "query");
  const Tensor& cache_key = state_leaf(*this, states, "key");
  const int64_t b = query.shape(0), t = query.shape(1), len = cache_key.shape(1);
  if (cache_key.shape(0) != b || time_step.shape() != Shape{b}) {
    fail(path(), ": prefill of query ", shape_str(query.shape()), " needs time_step (", b,
         ",) and a state of ", b, " rows, got time_step ", shape_str(time_step.shape()),
         " and key ", shape_str(cache_key.shape()));
  }
  const auto window = sliding_window();
  const bool ring = window && len == *window + 1;
  if (t > len && !ring) {
    fail(path(), ": a prompt of ", t, " positions does not fit the cache of ", len,
         " (init_states max_len)");
  }
  QKV kv;
  AttentionOutput out = attend(query, {}, &kv);
  const Tensor lengths = astype(time_step, int32);
  auto to_cache = [&](const Tensor& x) {  // (B, T, K, H) -> (B, L, K, H)
    Tensor y = astype(x, cache_key.dtype());
    if (t <= len) return t == len ? y : pad(y, {{0, 0}, {0, len - t}, {0, 0}, {0, 0}});
    // A ring shorter than the prompt keeps each row's last L positions: slot j gets the latest
    // position p < time_step with p % L == j (negative p: none, the slot stays unused).
    Tensor last = reshape(lengths - int32_scalar(1), {b, 1});
    Tensor p = last - remainder(last - iota({b, len}, 1), int32_scalar(len));  // (B, L)
    return take_along_axis(y, reshape(maximum(p, zeros_like(p)), {b, len, 1, 1}), 1);
  };
  NestedTensor next{
      {"key", to_cache(kv.key)}, {"value", to_cache(kv.value)}, {"time_step", lengths}};
  return {next, out.data};
}

CachedOutput MultiheadAttention::extend_step(const NestedTensor& states,
                                             const Tensor& query) const {
  auto scope = enter_context();
  check_rank3(*this, query, config().query_dim, "query");
  const Tensor& cache_key = state_leaf(*this, states, "key");
  const Tensor& cache_value = state_leaf(*this, states, "value");
  const Tensor& time_step = state_leaf(*this, states, "time_step");
  const int64_t b = query.shape(0), len = cache_key.shape(1);
  if (query.shape(1) != 1 || cache_key.shape(0) != b || time_step.shape() != Shape{b}) {
    fail(path(), ": extend_step takes one token per row of the state, got query ",
         shape_str(query.shape()), " for key ", shape_str(cache_key.shape()));
  }
  const auto window = sliding_window();
  if (!(window && len == *window + 1) && !time_step.is_tracer()) {
    for (int32_t ts : time_step.to_vector<int32_t>()) {
      if (ts >= len) {
        fail(path(), ": time_step ", ts, " is past the cache of ", len,
             " positions (init_states max_len)");
      }
    }
  }
  const Tensor qpos = reshape(astype(time_step, int32), {b, 1});
  QKV qkv = input_linear_->forward(query, Tensor(), Tensor(), qpos);
  Tensor q = query_scale_->forward(qkv.query);
  Tensor k = key_scale_->forward(qkv.key);
  // Write slot time_step % L of each row.
  const Tensor slots = iota({b, len}, 1);
  const Tensor l = int32_scalar(len);
  Tensor write = reshape(equal(slots, remainder(qpos, l)), {b, len, 1, 1});
  Tensor key = where(write, astype(k, cache_key.dtype()), cache_key);
  Tensor value = where(write, astype(qkv.value, cache_value.dtype()), cache_value);
  // The position each slot holds: the latest p <= time_step with p % L == slot; negative when
  // the slot was never written. Every p <= time_step, so the causal mask holds already.
  Tensor kpos = qpos - remainder(qpos - slots, l);  // (B, L)
  Tensor mask = reshape(greater_equal(kpos, zeros_like(kpos)), {b, 1, 1, len});
  if (mask_fn_) mask = logical_and(mask, mask_from_positions(*mask_fn_, qpos, kpos));
  auto [ctx, probs] = compute_attention(q, key, value, bool_to_bias(mask, float32));
  (void)probs;
  NestedTensor next{
      {"key", key}, {"value", value}, {"time_step", reshape(qpos, {b}) + int32_scalar(1)}};
  return {next, output_linear_->forward(ctx)};
}

// ---- stacking helpers ----

NestedParameterSpec stack_specs(const NestedParameterSpec& specs, int64_t n) {
  if (specs.is_leaf()) {
    ParameterSpec s = specs.spec();
    s.shape.insert(s.shape.begin(), n);
    if (s.mesh_axes) s.mesh_axes->insert(s.mesh_axes->begin(), std::monostate{});
    if (s.fan_axes) {
      FanAxes f = *s.fan_axes;
      auto shift = [](std::vector<int>& axes) {
        for (int& a : axes) a = a < 0 ? a : a + 1;
      };
      shift(f.in_axis);
      shift(f.out_axis);
      shift(f.batch_axis);
      f.batch_axis.insert(f.batch_axis.begin(), 0);
      s.fan_axes = f;
    }
    return NestedParameterSpec(s);
  }
  NestedParameterSpec out;
  for (const auto& [name, child] : specs.children()) out[name] = stack_specs(child, n);
  return out;
}

NestedTensor index_state(const NestedTensor& state, int64_t i) {
  return state.map([i](const Tensor& x) { return squeeze(slice_axis(x, 0, i, i + 1), {0}); });
}

}  // namespace axlearn::layers
