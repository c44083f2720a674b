// The primitive interface. A primitive is one class that owns its output-shape inference,
// its VJP rule, and a kernel per backend (eval_cpu lives under backends/cpu/).
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <typeinfo>
#include <vector>

#include "axlearn/core/array.h"
#include "axlearn/core/tensor.h"

namespace axlearn {

struct OutputSpec {
  Shape shape;
  Dtype dtype;
};

class Primitive {
 public:
  virtual ~Primitive() = default;
  virtual const char* name() const = 0;

  // Validates `inputs` and returns the output's shape and dtype. Throws Error naming the op and
  // the offending shapes/dtypes.
  virtual OutputSpec infer(const std::vector<Tensor>& inputs) const = 0;

  // Computes `out` (shape and dtype already set) from materialised inputs. A kernel either
  // allocates out.storage or makes `out` a view of an input's storage.
  virtual void eval_cpu(const std::vector<Array>& inputs, Array& out) const = 0;
  // The same on a CUDA device. Builds without a CUDA backend keep this default, which says the
  // op has no kernel there.
  virtual void eval_gpu(const std::vector<Array>& inputs, Array& out) const;

  // Cotangents of the inputs given the output's cotangent; an undefined Tensor where no gradient
  // flows (integer inputs, indices). The default says the op is not differentiable.
  virtual std::vector<Tensor> vjp(const std::vector<Tensor>& inputs, const Tensor& output,
                                  const Tensor& cotangent) const;

  // True for ops that map elements independently (fusable by compile).
  virtual bool is_elementwise() const { return false; }

  // Attribute equality and hash, for common-subexpression elimination.
  virtual bool equals(const Primitive& other) const { return typeid(*this) == typeid(other); }
  virtual size_t hash() const { return std::hash<std::string>()(name()); }
  // Name plus attributes, for printing graphs and errors.
  virtual void print(std::ostream& os) const { os << name(); }
};

}  // namespace axlearn
