// Attention masks and biases that compose (AXLearn's attention_bias.py): boolean masks built from
// positions (causal, sliding window), segment ids (packed sequences) and key validity (padding),
// and-ed together and turned into one additive logit bias.
#pragma once

#include <functional>

#include "axlearn/config/configurable.h"
#include "axlearn/core/tensor.h"

namespace axlearn::layers {

// The additive bias of a masked-out logit: -0.7 * the dtype's largest value (finite, so a fully
// masked row gives a uniform softmax instead of NaN).
double neg_inf(Dtype dtype);

// query_positions (..., T, 1) and key_positions (..., 1, S) int -> bool (..., T, S), true where
// the query may attend to the key.
using MaskFn = std::function<Tensor(const Tensor& query_positions, const Tensor& key_positions)>;
using MaskFnConfig = FunctionConfig<MaskFn>;

// key <= query.
struct CausalMask : MaskFnConfig {
  AXLEARN_FUNCTION_CONFIG(CausalMask, "axlearn.common.attention_bias.causal_mask")
 protected:
  MaskFn call() const override;
};

// key <= query and query - key <= sliding_window_size.
struct SlidingWindowCausalMask : MaskFnConfig {
  AXLEARN_FUNCTION_CONFIG(SlidingWindowCausalMask,
                          "axlearn.common.attention_bias.sliding_window_causal_mask")
  Field<int64_t> sliding_window_size{this, "sliding_window_size", REQUIRED,
                                     "How many earlier keys a query sees besides itself."};

 protected:
  MaskFn call() const override;
};

// Bool (B|1, 1, T, S) from a mask function over positions (B|1, T) and (B|1, S) (int).
Tensor mask_from_positions(const MaskFn& fn, const Tensor& query_positions,
                           const Tensor& key_positions);
// Bool (B, 1, T, S): the same segment. query_segment_ids (B, T), key_segment_ids (B, S).
Tensor segment_mask(const Tensor& query_segment_ids, const Tensor& key_segment_ids);
// Bool (B, 1, 1, S) from key_valid (B, S) (true for real tokens, false for padding).
Tensor padding_mask(const Tensor& key_valid);
// Additive bias of `dtype`: 0 where mask is true, neg_inf(dtype) where false.
Tensor bool_to_bias(const Tensor& mask, Dtype dtype);
// Adds two biases either of which may be undefined (absent); broadcasts.
Tensor add_biases(const Tensor& a, const Tensor& b);

}  // namespace axlearn::layers
