#include "axlearn/layers/attention_bias.h"

#include <limits>

#include "axlearn/core/ops.h"

namespace axlearn::layers {

double neg_inf(Dtype dtype) {
  if (dtype == float64) return -0.7 * std::numeric_limits<double>::max();
  if (dtype == float16) return -0.7 * 65504.0;
  if (dtype == bfloat16) return -0.7 * 3.3895313892515355e38;
  return -0.7 * double(std::numeric_limits<float>::max());
}

MaskFn CausalMask::call() const {
  return [](const Tensor& q, const Tensor& k) { return less_equal(k, q); };
}

MaskFn SlidingWindowCausalMask::call() const {
  const int64_t w = sliding_window_size;
  if (w < 0) fail("sliding_window_causal_mask: sliding_window_size must be >= 0, got ", w);
  return [w](const Tensor& q, const Tensor& k) {
    return logical_and(less_equal(k, q), less_equal(q - k, scalar(double(w), q.dtype())));
  };
}

Tensor mask_from_positions(const MaskFn& fn, const Tensor& query_positions,
                           const Tensor& key_positions) {
  if (query_positions.ndim() != 2 || key_positions.ndim() != 2) {
    fail("mask_from_positions: positions must be (B, T) and (B, S), got ",
         shape_str(query_positions.shape()), " and ", shape_str(key_positions.shape()));
  }
  Tensor q = expand_dims(astype(query_positions, int32), -1);  // (B, T, 1)
  Tensor k = expand_dims(astype(key_positions, int32), -2);    // (B, 1, S)
  return expand_dims(fn(q, k), 1);                             // (B, 1, T, S)
}

Tensor segment_mask(const Tensor& query_segment_ids, const Tensor& key_segment_ids) {
  if (query_segment_ids.ndim() != 2 || key_segment_ids.ndim() != 2) {
    fail("segment_mask: segment ids must be (B, T) and (B, S), got ",
         shape_str(query_segment_ids.shape()), " and ", shape_str(key_segment_ids.shape()));
  }
  Tensor q = expand_dims(expand_dims(query_segment_ids, -1), 1);  // (B, 1, T, 1)
  Tensor k = expand_dims(expand_dims(key_segment_ids, 1), 1);     // (B, 1, 1, S)
  return equal(q, k);
}

Tensor padding_mask(const Tensor& key_valid) {
  if (key_valid.ndim() != 2) fail("padding_mask: key_valid must be (B, S), got ",
                                  shape_str(key_valid.shape()));
  return expand_dims(expand_dims(astype(key_valid, bool_), 1), 1);
}

Tensor bool_to_bias(const Tensor& mask, Dtype dtype) {
  return where(mask, zeros({}, dtype), full({}, neg_inf(dtype), dtype));
}

Tensor add_biases(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

}  // namespace axlearn::layers
