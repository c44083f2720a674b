#include "axlearn/module/summary.h"

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"

namespace axlearn {

Summary Summary::scalar(const Tensor& value) {
  if (value.size() != 1) {
    fail("Summary::scalar: expected one element, given shape ", shape_str(value.shape()));
  }
  return Summary(Kind::kScalar, value);
}

Summary Summary::scalar(double value) { return Summary(Kind::kScalar, axlearn::scalar(value)); }

Summary Summary::tensor(const Tensor& value) { return Summary(Kind::kTensor, value); }

Summary Summary::histogram(const Tensor& values) {
  if (values.dtype() == bool_) fail("Summary::histogram: expected numeric values, given bool");
  if (values.size() == 0)
    fail("Summary::histogram: no values (shape ", shape_str(values.shape()), ")");
  return Summary(Kind::kHistogram, values);
}

Summary Summary::image(const Tensor& images) {
  const int nd = images.ndim();
  const int64_t channels = nd > 0 ? images.shape(nd - 1) : 0;
  if ((nd != 3 && nd != 4) || (channels != 1 && channels != 3 && channels != 4)) {
    fail(
        "Summary::image: expected (height, width, channels) or (batch, height, width, channels) "
        "with 1, 3 or 4 channels, given shape ",
        shape_str(images.shape()));
  }
  return Summary(Kind::kImage, images);
}

const char* Summary::kind_name() const {
  switch (kind_) {
    case Kind::kScalar:
      return "scalar";
    case Kind::kTensor:
      return "tensor";
    case Kind::kHistogram:
      return "histogram";
    case Kind::kImage:
      return "image";
  }
  return "unknown";
}

}  // namespace axlearn
