// Tensor: an immutable value in a lazy graph. Creating one records a node (primitive + inputs)
// with its shape and dtype inferred at once; `eval` materialises the data, and reading data
// (`item`, `to_vector`, printing) evaluates implicitly. Evaluated tensors drop their graph.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <vector>

#include "axlearn/core/array.h"
#include "axlearn/core/dtype.h"
#include "axlearn/core/error.h"
#include "axlearn/core/shape.h"
#include "axlearn/core/sharding.h"

namespace axlearn {

class Primitive;
class Tensor;

struct TensorNode {
  Shape shape;
  Dtype dtype = float32;
  Device device;
  std::shared_ptr<const Primitive> primitive;  // null for leaves (constants, placeholders)
  std::vector<Tensor> inputs;
  Array data;  // defined once evaluated
  // The transforms (vjp traces, compile traces) this node depends on. While one of them is
  // active the node is a tracer: it keeps its inputs after eval so the transform can walk them.
  std::vector<uint64_t> traces;
  uint64_t id = 0;
  // Sharded tensors (see sharding.h): `shape` is the global shape, the op above is the global
  // op, and `local` is this device's block, a node of the per-device graph that eval runs.
  // `data`, when defined, caches the gathered full value.
  std::shared_ptr<const Sharding> sharding;
  std::shared_ptr<TensorNode> local;
};

namespace detail {
// Starts a trace (a vjp or compile in progress) and returns its id; end_trace retires it.
uint64_t begin_trace();
void end_trace(uint64_t trace);
bool trace_active(uint64_t trace);
}  // namespace detail

class Tensor {
 public:
  Tensor() = default;
  // Wraps materialised data as a constant.
  explicit Tensor(Array data);
  // Records `primitive` applied to `inputs`; shape and dtype come from primitive->infer().
  static Tensor make(std::shared_ptr<const Primitive> primitive, std::vector<Tensor> inputs);
  // An abstract tensor with shape and dtype but no data (the inputs of a traced function).
  static Tensor placeholder(const Shape& shape, Dtype dtype, Device device = Device::cpu());
  // A sharded tensor of `global` shape whose block on this device is `local`; `primitive` and
  // `inputs` are the global op that produced it (none for device_put and placeholders).
  static Tensor make_sharded(Tensor local, Shape global, Sharding sharding,
                             std::shared_ptr<const Primitive> primitive = nullptr,
                             std::vector<Tensor> inputs = {});

  bool defined() const { return node_ != nullptr; }
  const Shape& shape() const { return node().shape; }
  int64_t shape(int axis) const;
  int ndim() const { return int(node().shape.size()); }
  int64_t size() const { return num_elements(node().shape); }
  Dtype dtype() const { return node().dtype; }
  Device device() const { return node().device; }
  size_t nbytes() const { return size_t(size()) * size_of(dtype()); }

  bool is_evaluated() const {
    const TensorNode& n = node();
    return n.data.defined() || (n.local && n.local->data.defined());
  }
  bool is_placeholder() const { return !node().primitive && !is_evaluated(); }
  // Sharded over a device mesh (the sharding is null for ordinary tensors).
  bool is_sharded() const { return node().sharding != nullptr; }
  const Sharding* sharding() const { return node().sharding.get(); }
  // This device's block of a sharded tensor; the tensor itself otherwise.
  Tensor local() const;
  bool is_tracer() const;
  const Primitive* primitive() const { return node().primitive.get(); }
  const std::shared_ptr<const Primitive>& primitive_ptr() const { return node().primitive; }
  const std::vector<Tensor>& inputs() const { return node().inputs; }
  uint64_t id() const { return node().id; }

  // Evaluates (if needed) and returns the data; for a sharded tensor, the full value (gathered
  // from every device, which must all ask for it).
  const Array& array() const;
  void eval() const;

  // Reads a single-element tensor, converting to T.
  template <typename T>
  T item() const;
  // Copies all elements out in row-major order, converting to T.
  template <typename T>
  std::vector<T> to_vector() const;

  TensorNode& node() const {
    if (!node_) throw Error("use of an undefined Tensor");
    return *node_;
  }
  const std::shared_ptr<TensorNode>& node_ptr() const { return node_; }
  bool same(const Tensor& other) const { return node_ == other.node_; }
  static Tensor from_node(std::shared_ptr<TensorNode> node) {
    Tensor t;
    t.node_ = std::move(node);
    return t;
  }

 private:
  std::shared_ptr<TensorNode> node_;
};

// Prints like numpy: "array([[1, 2], [3, 4]], dtype=int32)".
std::ostream& operator<<(std::ostream& os, const Tensor& t);

template <typename T>
T Tensor::item() const {
  if (size() != 1)
    fail("item(): tensor of shape ", shape_str(shape()), " has ", size(), " elements, not 1");
  const Array& a = array();
  return dispatch_dtype(a.dtype, [&](auto v) -> T {
    using S = decltype(v);
    return cast_value<T>(a.data<S>()[0]);
  });
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Array a = contiguous(array());
  std::vector<T> out(size_t(a.size()));
  dispatch_dtype(a.dtype, [&](auto v) {
    using S = decltype(v);
    const S* p = a.data<S>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = cast_value<T>(p[i]);
  });
  return out;
}

}  // namespace axlearn
