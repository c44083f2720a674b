// Tiny decoders for the decoding tests (MHA, GQA fused and separate, sliding window; stacked or
// repeated layers) and the reference they are checked against: the Decoder's full forward pass
// over one row's whole prefix.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/layers/decoder.h"

namespace axlearn::layers {

enum class TinyAttention { kMha, kGqaFused, kGqaSeparate, kSlidingWindow };

struct TinySpec {
  TinyAttention attention = TinyAttention::kGqaFused;
  bool stacked = false;  // StackedTransformerLayer; false: RepeatedTransformerLayer
  int64_t vocab_size = 32;
  int64_t dim = 16;
  int64_t num_layers = 2;
  int64_t sliding_window = 3;
};

inline ConfigPtr<Decoder::Config> tiny_decoder_config(const TinySpec& s) {
  auto layer = TransformerLayer::default_config();
  ConfigPtr<MultiheadAttention::Config> attn;
  if (s.attention == TinyAttention::kMha) {
    // Rotary around separate projections with biases, LayerNorm, ReLU feed-forward.
    attn = MultiheadAttention::default_config();
    auto rope = RoFormerQKVLinear::default_config();
    rope->input_linear = QKVLinear::default_config();
    attn->input_linear = rope;
  } else {
    attn = GroupedQueryAttention::default_config();
    if (s.attention == TinyAttention::kGqaSeparate) {
      // No rotary embedding: positions only matter through the mask.
      attn->input_linear = GroupedQKVLinear::default_config().set("num_kv_heads", 2);
    } else {
      auto rope = RoFormerQKVLinear::default_config();
      rope->input_linear = FusedGroupedQKVLinear::default_config().set("num_kv_heads", 2);
      rope->input_linear->set("layer", MultiheadInputLinear::default_config().set("bias", false));
      attn->input_linear = rope;
    }
    attn->output_linear->bias = false;
    layer->self_attention->norm = RMSNorm::default_config().set("eps", 1e-5);
    layer->feed_forward->activation = std::vector<std::string>{"nn.silu", "linear"};
    layer->feed_forward->norm = RMSNorm::default_config().set("eps", 1e-5);
  }
  attn->num_heads = 4;
  if (s.attention == TinyAttention::kSlidingWindow) {
    attn->mask = ConfigPtr<MaskFnConfig>(
        SlidingWindowCausalMask::default_config().set("sliding_window_size", s.sliding_window));
  } else {
    attn->causal = true;
  }
  layer->self_attention->attention = attn;
  layer->feed_forward->hidden_dim = int64_t(2 * s.dim);
  ConfigPtr<BaseStackedTransformerLayer::Config> stack;
  if (s.stacked) {
    stack = StackedTransformerLayer::default_config();
  } else {
    stack = RepeatedTransformerLayer::default_config();
  }
  stack->num_layers = s.num_layers;
  stack->layer = layer;
  auto dec = Decoder::default_config();
  dec->name = "decoder";
  dec->dim = s.dim;
  dec->vocab_size = s.vocab_size;
  dec->transformer = stack;
  if (s.attention == TinyAttention::kGqaFused) dec->lm_head = LmHead::default_config();
  return dec;
}

inline std::string tiny_name(const TinySpec& s) {
  const char* a[] = {"Mha", "GqaFused", "GqaSeparate", "SlidingWindow"};
  return std::string(a[int(s.attention)]) + (s.stacked ? "Stacked" : "Repeated");
}

// Names parameterized tests' values in ctest's listing.
inline void PrintTo(const TinySpec& s, std::ostream* os) { *os << tiny_name(s); }

// The next-token logits (V) after `ids` by the full forward pass over them (one row, every
// token in one segment, positions 0..n-1): what cached decoding must reproduce.
inline std::vector<float> full_forward_last_logits(Decoder& decoder, const NestedTensor& params,
                                                   const std::vector<int32_t>& ids) {
  const auto n = int64_t(ids.size());
  Tensor x = array(ids, {1, n});
  Tensor seg = ones({1, n}, int32);
  Tensor logits = functional_call(decoder, params, std::nullopt, false, [&] {
                    return decoder.forward(x, seg).logits;
                  }).outputs;
  return slice_axis(logits, 1, n - 1, n).to_vector<float>();
}

}  // namespace axlearn::layers
