// Configs shared by the layer tests: a small LLaMA-style causal LM (GQA with rotary fused QKV,
// SwiGLU feed-forward with a scale_fn hidden dim, RMSNorm everywhere, repeated layers).
#pragma once

#include <string>
#include <vector>

#include "axlearn/layers/decoder.h"

namespace axlearn::layers {

// 4 query heads sharing 2 kv heads; `untied_head` adds a separate lm_head.
inline ConfigPtr<Model::Config> llama_like_config(int64_t dim, int64_t vocab_size,
                                                  int64_t num_layers, bool untied_head) {
  auto layer = TransformerLayer::default_config();
  auto attn = GroupedQueryAttention::default_config();
  attn->num_heads = 4;
  attn->causal = true;
  auto rope = RoFormerQKVLinear::default_config();
  rope->input_linear = FusedGroupedQKVLinear::default_config().set("num_kv_heads", 2);
  rope->input_linear->set("layer", MultiheadInputLinear::default_config().set("bias", false));
  attn->input_linear = rope;
  attn->output_linear->bias = false;
  layer->self_attention->attention = attn;
  layer->self_attention->norm = RMSNorm::default_config().set("eps", 1e-5);
  layer->feed_forward->hidden_dim = ConfigPtr<HiddenDimFnConfig>(
      ScaleFn::default_config().set("scale", 8.0 / 3).set("round_up_to_multiples_of", 16));
  layer->feed_forward->activation = std::vector<std::string>{"nn.silu", "linear"};
  layer->feed_forward->norm = RMSNorm::default_config().set("eps", 1e-5);
  layer->feed_forward->linear1->bias = false;
  layer->feed_forward->linear2->bias = false;
  auto stack = RepeatedTransformerLayer::default_config();
  stack->num_layers = num_layers;
  stack->layer = layer;
  auto dec = Decoder::default_config();
  dec->dim = dim;
  dec->vocab_size = vocab_size;
  dec->transformer = stack;
  dec->output_norm = RMSNorm::default_config().set("eps", 1e-5);
  if (untied_head) dec->lm_head = LmHead::default_config();
  auto model = Model::default_config();
  model->name = "model";
  model->decoder = dec;
  return model;
}

}  // namespace axlearn::layers
