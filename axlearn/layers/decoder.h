// The decoder-only language model of AXLearn's decoder.py and causal_lm.py: token embedding,
// a transformer stack, output norm and a tied or separate lm_head (Decoder), and the causal LM
// Model computing the next-token cross-entropy with target weights, z-loss and summaries.
#pragma once

#include "axlearn/layers/transformer.h"

namespace axlearn::layers {

// token_emb (Embedding) then dropout. ids (B, T) -> (B, T, dim).
class TransformerTextEmbeddings : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> dim{this, "dim", REQUIRED, "Embedding dim (filled in)."};
    Field<int64_t> vocab_size{this, "vocab_size", REQUIRED, "Vocabulary size (filled in)."};
    Field<ConfigPtr<Embedding::Config>> token_emb{this, "token_emb", Embedding::default_config(),
                                                  "Token embedding."};
    Field<ConfigPtr<Dropout::Config>> dropout{this, "dropout", Dropout::default_config(),
                                              "On the embeddings."};
  };
  AXLEARN_CONFIGURABLE(TransformerTextEmbeddings,
                       "axlearn.common.embedding.TransformerTextEmbeddings")
  TransformerTextEmbeddings(const Config& cfg, Module* parent);
  Tensor forward(const Tensor& ids) const;
  // x (B, T, dim) -> (B, T, vocab) with the token embedding as output weights.
  Tensor attend(const Tensor& x) const;

 private:
  const Embedding* token_emb_;
  const Dropout* dropout_;
};

// The lm_head: weight (vocab_size, dim); logits = x @ weight^T.
class LmHead : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> vocab_size{this, "vocab_size", REQUIRED, "Vocabulary size (filled in)."};
    Field<int64_t> embedding_dim{this, "embedding_dim", REQUIRED, "Model dim (filled in)."};
  };
  AXLEARN_CONFIGURABLE(LmHead, "axlearn.common.decoder.LmHead")
  LmHead(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}
  Tensor forward(const Tensor& x) const;

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override;
};

struct DecoderOutput {
  Tensor logits;         // (B, T, vocab_size)
  Tensor hidden_states;  // (B, T, dim), after output_norm
};

// A decoding step of the Decoder: the updated state and the step's outputs.
struct DecoderStepOutput {
  NestedTensor states;   // {"transformer": the stack's state, "time_step": (B,) int32}
  Tensor logits;         // (B, T, vocab_size); T = 1 for extend_step
  Tensor hidden_states;  // (B, T, dim)
};

class Decoder : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> dim{this, "dim", REQUIRED, "Model dim."};
    Field<int64_t> vocab_size{this, "vocab_size", REQUIRED, "Vocabulary size."};
    Field<double> dropout_rate{this, "dropout_rate", 0.0, "Default rate of the dropouts."};
    Field<int64_t> pad_token_id{this, "pad_token_id", 0, "Padding token."};
    Field<int64_t> eos_token_id{this, "eos_token_id", 1, "End-of-sequence token."};
    Field<ConfigPtr<TransformerTextEmbeddings::Config>> emb{
        this, "emb", TransformerTextEmbeddings::default_config(), "Embeddings."};
    Field<ConfigPtr<BaseStackedTransformerLayer::Config>> transformer{
        this, "transformer",
        ConfigPtr<BaseStackedTransformerLayer::Config>(StackedTransformerLayer::default_config()),
        "The transformer stack."};
    Field<ConfigPtr<BaseNormalizationLayer::Config>> output_norm{
        this, "output_norm",
        ConfigPtr<BaseNormalizationLayer::Config>(LayerNorm::default_config()), "Final norm."};
    Field<ConfigPtr<Dropout::Config>> output_dropout{
        this, "output_dropout", Dropout::default_config(), "After the final norm."};
    Field<ConfigPtr<LmHead::Config>> lm_head{this, "lm_head", nullptr,
                                             "Separate output weights; None ties them to the "
                                             "token embedding."};
  };
  AXLEARN_CONFIGURABLE(Decoder, "axlearn.common.decoder.Decoder")
  Decoder(const Config& cfg, Module* parent);

  // input_ids (B, T) int. input_segment_ids (B, T): packed sequences; undefined: ids != pad
  // (padding attends only to padding). positions (B|1, T): undefined: 0..T-1.
  DecoderOutput forward(const Tensor& input_ids, const Tensor& input_segment_ids = {},
                        const Tensor& positions = {}) const;

  // KV-cache decoding (AXLearn's init_states / prefill_states / extend_step); every leaf of the
  // state has the batch on axis 0. An empty state for `batch` rows of up to max_len positions.
  NestedTensor init_states(int64_t batch, int64_t max_len) const;
  // input_ids (B, T) int: right-padded prompts, row b of length time_step[b] (B,) int, 1 <=
  // time_step[b] <= T <= max_len (sliding-window caches take longer prompts). Returns the state
  // with every prompt cached and time_step = the lengths, and the logits of every position (row
  // b's next-token logits are at time_step[b] - 1; padded positions are unspecified).
  DecoderStepOutput prefill(const NestedTensor& states, const Tensor& input_ids,
                            const Tensor& time_step) const;
  // input_ids (B, 1): one token per row at position time_step[b]; logits (B, 1, vocab_size).
  DecoderStepOutput extend_step(const NestedTensor& states, const Tensor& input_ids) const;

 private:
  // x (B, T, dim) from the stack -> output norm, dropout and the (tied or separate) head.
  DecoderOutput output_logits(const Tensor& x) const;

  const TransformerTextEmbeddings* emb_;
  const BaseStackedTransformerLayer* transformer_;
  const BaseNormalizationLayer* output_norm_;
  const Dropout* output_dropout_;
  const LmHead* lm_head_ = nullptr;
};

struct LmLoss {
  Tensor loss;    // f32 scalar: the weighted mean cross-entropy (+ z-loss)
  Tensor logits;  // (B, T, vocab)
};

// Causal language model (AXLearn's causal_lm.Model). forward's summaries: loss, cross_entropy,
// accuracy, perplexity, num_tokens (and z_loss when z_loss_scale > 0). The registered method
// "forward" takes an input batch {"input_ids", "target_labels" [, "target_weights",
// "input_segment_ids", "input_positions"]} and returns {"loss"}.
class Model : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<ConfigPtr<Decoder::Config>> decoder{this, "decoder", Decoder::default_config(),
                                              "The decoder."};
    Field<double> z_loss_scale{this, "z_loss_scale", 0.0,
                               "Weight of mean(logsumexp(logits)^2) over live targets."};
    Field<std::vector<std::string>> batch_axis_names{
        this, "batch_axis_names", std::vector<std::string>{"data"}, "Mesh axes of the batch."};
  };
  AXLEARN_CONFIGURABLE(Model, "axlearn.common.causal_lm.Model")
  Model(const Config& cfg, Module* parent);

  // input_ids, target_labels (B, T) int; target_labels < 0 are not counted. target_weights
  // (B, T) float or undefined (1 for labels >= 0). input_segment_ids / positions as Decoder's.
  LmLoss forward(const Tensor& input_ids, const Tensor& target_labels,
                 const Tensor& target_weights = {}, const Tensor& input_segment_ids = {},
                 const Tensor& positions = {}) const;

  const Decoder& decoder() const { return *decoder_; }

 private:
  const Decoder* decoder_;
};

}  // namespace axlearn::layers
