// Summaries a module adds during an invocation (AXLearn's add_summary values): scalars, whole
// tensors, histograms of values and images, each checked when made. Summary writers turn them
// into TensorBoard events later.
#pragma once

#include <cstdint>

#include "axlearn/core/tensor.h"

namespace axlearn {

class Summary {
 public:
  enum class Kind : uint8_t { kScalar, kTensor, kHistogram, kImage };

  // One number: a tensor with one element (any shape), or a value.
  static Summary scalar(const Tensor& value);
  static Summary scalar(double value);
  // A whole tensor, kept as is.
  static Summary tensor(const Tensor& value);
  // The distribution of the values of a numeric tensor (the writer bins them).
  static Summary histogram(const Tensor& values);
  // Images: (height, width, channels) or (batch, height, width, channels), channels 1, 3 or 4.
  static Summary image(const Tensor& images);

  Kind kind() const { return kind_; }
  const char* kind_name() const;
  const Tensor& value() const { return value_; }

 private:
  Summary(Kind kind, Tensor value) : kind_(kind), value_(std::move(value)) {}
  Kind kind_;
  Tensor value_;
};

}  // namespace axlearn
