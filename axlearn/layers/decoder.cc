#include "axlearn/layers/decoder.h"

#include "axlearn/core/cross_entropy.h"
#include "axlearn/core/ops.h"

namespace axlearn::layers {

TransformerTextEmbeddings::TransformerTextEmbeddings(const Config& cfg, Module* parent)
    : BaseLayer(cfg, parent) {
  ConfigPtr<Embedding::Config> e = cfg.token_emb;
  e->set("num_embeddings", cfg.vocab_size.get()).set("dim", cfg.dim.get());
  token_emb_ = &add_child<Embedding>("token_emb", e);
  dropout_ = &add_child<Dropout>("dropout", cfg.dropout);
}

Tensor TransformerTextEmbeddings::forward(const Tensor& ids) const {
  auto scope = enter_context();
  return dropout_->forward(token_emb_->forward(ids));
}

Tensor TransformerTextEmbeddings::attend(const Tensor& x) const {
  auto scope = enter_context();
  return token_emb_->attend(x);
}

Tensor LmHead::forward(const Tensor& x) const {
  auto scope = enter_context();
  return einsum("btd,vd->btv", x, parameter("weight"));
}

std::vector<std::pair<std::string, ParameterSpec>> LmHead::create_layer_parameter_specs() const {
  const Config& cfg = config();
  return {{"weight",
           {.shape = {cfg.vocab_size, cfg.embedding_dim}, .mesh_axes = cfg.param_partition_spec}}};
}

namespace {
// Sets a dropout config's rate to the decoder's dropout_rate unless it has its own.
ConfigPtr<Dropout::Config> with_rate(ConfigPtr<Dropout::Config> c, double rate) {
  if (!c->rate.get()) c->rate = std::optional<double>(rate);
  return c;
}
}  // namespace

Decoder::Decoder(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
  const int64_t d = cfg.dim, v = cfg.vocab_size;
  ConfigPtr<TransformerTextEmbeddings::Config> e = cfg.emb;
  e->set("dim", d).set("vocab_size", v);
  e->dropout = with_rate(e->dropout.get(), cfg.dropout_rate);
  emb_ = &add_child<TransformerTextEmbeddings>("emb", e);
  ConfigPtr<BaseStackedTransformerLayer::Config> t = cfg.transformer;
  t->set("input_dim", d);
  transformer_ = &add_child<BaseStackedTransformerLayer>("transformer", t);
  ConfigPtr<BaseNormalizationLayer::Config> n = cfg.output_norm;
  n->set("input_dim", d);
  output_norm_ = &add_child<BaseNormalizationLayer>("output_norm", n);
  output_dropout_ =
      &add_child<Dropout>("output_dropout", with_rate(cfg.output_dropout.get(), cfg.dropout_rate));
  if (cfg.lm_head.get()) {
    ConfigPtr<LmHead::Config> h = cfg.lm_head;
    h->set("vocab_size", v).set("embedding_dim", d);
    lm_head_ = &add_child<LmHead>("lm_head", h);
  }
}

DecoderOutput Decoder::forward(const Tensor& input_ids, const Tensor& input_segment_ids,
                               const Tensor& positions) const {
  auto scope = enter_context();
  if (input_ids.ndim() != 2) {
    fail(path(), ": input_ids must be (B, T), got ", shape_str(input_ids.shape()));
  }
  AttentionInputs in;
  in.segment_ids = input_segment_ids.defined()
                       ? input_segment_ids
                       : astype(not_equal(input_ids, scalar(double(config().pad_token_id.get()),
                                                            input_ids.dtype())),
                                int32);
  in.query_positions = positions;
  Tensor x = emb_->forward(input_ids);
  x = transformer_->forward(x, in);
  return output_logits(x);
}

DecoderOutput Decoder::output_logits(const Tensor& hidden) const {
  Tensor x = output_dropout_->forward(output_norm_->forward(hidden));
  if (lm_head_) return {lm_head_->forward(x), x};
  // The embedding's second call needs its own context (same parameters).
  const NestedTensor empty;
  const NestedTensor& emb_state = state().contains("emb") ? state().at("emb") : empty;
  auto s = child_context(
      "emb_attend", {.module = const_cast<TransformerTextEmbeddings*>(emb_), .state = &emb_state});
  return {emb_->attend(x), x};
}

namespace {
void check_ids(const Module& m, const Tensor& ids, const char* op) {
  if (ids.ndim() != 2 || !is_integer(ids.dtype())) {
    fail(m.path(), ": ", op, " needs input_ids (B, T) of integers, got ", shape_str(ids.shape()),
         " ", ids.dtype());
  }
}
}  // namespace

NestedTensor Decoder::init_states(int64_t batch, int64_t max_len) const {
  return NestedTensor{{"transformer", transformer_->init_states(batch, max_len)},
                      {"time_step", zeros({batch}, int32)}};
}

DecoderStepOutput Decoder::prefill(const NestedTensor& states, const Tensor& input_ids,
                                   const Tensor& time_step) const {
  auto scope = enter_context();
  check_ids(*this, input_ids, "prefill");
  if (states.is_leaf() || !states.contains("transformer")) {
    fail(path(), ": prefill needs a state from init_states");
  }
  const int64_t b = input_ids.shape(0), len = input_ids.shape(1);
  if (time_step.shape() != Shape{b}) {
    fail(path(), ": prefill of input_ids ", shape_str(input_ids.shape()), " needs time_step (", b,
         ",), got ", shape_str(time_step.shape()));
  }
  if (!time_step.is_tracer()) {
    for (int64_t n : time_step.to_vector<int64_t>()) {
      if (n < 1 || n > len) fail(path(), ": prompt lengths must be in [1, ", len, "], got ", n);
    }
  }
  CachedOutput t =
      transformer_->prefill(states.at("transformer"), emb_->forward(input_ids), time_step);
  DecoderOutput out = output_logits(t.data);
  return {NestedTensor{{"transformer", t.states}, {"time_step", astype(time_step, int32)}},
          out.logits, out.hidden_states};
}

DecoderStepOutput Decoder::extend_step(const NestedTensor& states, const Tensor& input_ids) const {
  auto scope = enter_context();
  check_ids(*this, input_ids, "extend_step");
  if (input_ids.shape(1) != 1) {
    fail(path(), ": extend_step takes one token per row, got input_ids ",
         shape_str(input_ids.shape()));
  }
  if (states.is_leaf() || !states.contains("transformer") || !states.contains("time_step")) {
    fail(path(), ": extend_step needs a state from init_states / prefill");
  }
  CachedOutput t = transformer_->extend_step(states.at("transformer"), emb_->forward(input_ids));
  DecoderOutput out = output_logits(t.data);
  Tensor next = states.at("time_step").tensor() + scalar(1, int32);
  return {NestedTensor{{"transformer", t.states}, {"time_step", next}}, out.logits,
          out.hidden_states};
}

Model::Model(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
  decoder_ = &add_child<Decoder>("decoder", cfg.decoder);
  // The trainer's entry point: a batch of the input pipeline in, {"loss"} out.
  register_method("forward", [this](const NestedTensor& batch) {
    auto optional = [&](const char* key) {
      return batch.contains(key) ? batch.at(key).tensor() : Tensor();
    };
    LmLoss out = forward(batch.at("input_ids").tensor(), batch.at("target_labels").tensor(),
                         optional("target_weights"), optional("input_segment_ids"),
                         optional("input_positions"));
    return NestedTensor{{"loss", out.loss}};
  });
}

LmLoss Model::forward(const Tensor& input_ids, const Tensor& target_labels,
                      const Tensor& target_weights, const Tensor& input_segment_ids,
                      const Tensor& positions) const {
  auto scope = enter_context();
  if (target_labels.shape() != input_ids.shape()) {
    fail(path(), ": target_labels ", shape_str(target_labels.shape()), " must match input_ids ",
         shape_str(input_ids.shape()));
  }
  DecoderOutput out = decoder_->forward(input_ids, input_segment_ids, positions);
  Tensor logits = astype(out.logits, float32);
  Tensor live = greater_equal(target_labels, scalar(0, target_labels.dtype()));
  Tensor weights = astype(live, float32);
  if (target_weights.defined()) weights = weights * astype(target_weights, float32);
  Tensor labels =
      expand_dims(astype(where(live, target_labels, zeros_like(target_labels)), int32), -1);
  // One fused pass per row: logsumexp and the picked logit, no probabilities in memory.
  Tensor nll = astype(cross_entropy_loss(logits, squeeze(labels, {-1})), float32);  // (B, T)
  Tensor denom = maximum(sum(weights), scalar(1e-9f));
  Tensor ce = sum(nll * weights) / denom;
  Tensor loss = ce;
  if (config().z_loss_scale.get() > 0) {
    Tensor lse = logsumexp(logits, {-1});
    Tensor z = sum(square(lse) * weights) / denom;
    add_summary("z_loss", z);
    loss = loss + z * config().z_loss_scale.get();
  }
  Tensor correct = astype(equal(argmax(logits, -1), squeeze(labels, {-1})), float32);
  add_summary("loss", loss);
  add_summary("cross_entropy", ce);
  add_summary("perplexity", exp(ce));
  add_summary("accuracy", sum(correct * weights) / denom);
  add_summary("num_tokens", sum(astype(live, float32)));
  return {loss, out.logits};
}

}  // namespace axlearn::layers
