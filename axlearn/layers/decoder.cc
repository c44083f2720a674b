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
  x = output_dropout_->forward(output_norm_->forward(x));
  if (lm_head_) return {lm_head_->forward(x), x};
  // The embedding's second call needs its own context (same parameters).
  const NestedTensor empty;
  const NestedTensor& emb_state = state().contains("emb") ? state().at("emb") : empty;
  auto s = child_context(
      "emb_attend", {.module = const_cast<TransformerTextEmbeddings*>(emb_), .state = &emb_state});
  return {emb_->attend(x), x};
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
