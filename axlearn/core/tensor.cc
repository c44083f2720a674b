#include "axlearn/core/tensor.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "axlearn/core/primitive.h"
#include "axlearn/core/transforms.h"

namespace axlearn {

namespace {
uint64_t next_id() {
  static std::atomic<uint64_t> id{1};
  return id.fetch_add(1, std::memory_order_relaxed);
}
// Trace 1 stands for placeholders: always active.
constexpr uint64_t kPlaceholderTrace = 1;
thread_local std::vector<uint64_t> active_traces;
std::atomic<uint64_t> next_trace{2};

}  // namespace

namespace detail {
uint64_t begin_trace() {
  uint64_t t = next_trace.fetch_add(1, std::memory_order_relaxed);
  active_traces.push_back(t);
  return t;
}
void end_trace(uint64_t trace) {
  for (auto it = active_traces.begin(); it != active_traces.end(); ++it) {
    if (*it == trace) {
      active_traces.erase(it);
      return;
    }
  }
}
bool trace_active(uint64_t trace) {
  if (trace == kPlaceholderTrace) return true;
  for (uint64_t t : active_traces) {
    if (t == trace) return true;
  }
  return false;
}
}  // namespace detail

bool Tensor::is_tracer() const {
  for (uint64_t t : node().traces) {
    if (detail::trace_active(t)) return true;
  }
  return false;
}

Tensor::Tensor(Array data) : node_(std::make_shared<TensorNode>()) {
  node_->shape = data.shape;
  node_->dtype = data.dtype;
  node_->device = data.storage ? data.storage->device : Device::cpu();
  node_->data = std::move(data);
  node_->id = next_id();
}

namespace {
void inherit_traces(TensorNode& n, const std::vector<Tensor>& inputs) {
  for (const Tensor& in : inputs) {
    for (uint64_t tr : in.node().traces) {
      if (detail::trace_active(tr) &&
          std::find(n.traces.begin(), n.traces.end(), tr) == n.traces.end()) {
        n.traces.push_back(tr);
      }
    }
  }
}
}  // namespace

Tensor Tensor::make(std::shared_ptr<const Primitive> primitive, std::vector<Tensor> inputs) {
  const auto& hooks = detail::sharding_hooks();
  if (hooks.apply) {
    for (const Tensor& in : inputs) {
      if (in.defined() && in.is_sharded()) return hooks.apply(std::move(primitive), std::move(inputs));
    }
  }
  OutputSpec spec = primitive->infer(inputs);
  for (int64_t d : spec.shape) {
    if (d < 0) fail(primitive->name(), ": negative dimension in shape ", shape_str(spec.shape));
  }
  Tensor t;
  t.node_ = std::make_shared<TensorNode>();
  TensorNode& n = *t.node_;
  n.shape = std::move(spec.shape);
  n.dtype = spec.dtype;
  n.device = inputs.empty() ? Device::cpu() : inputs[0].device();
  inherit_traces(n, inputs);
  n.primitive = std::move(primitive);
  n.inputs = std::move(inputs);
  n.id = next_id();
  return t;
}

Tensor Tensor::placeholder(const Shape& shape, Dtype dtype, Device device) {
  Tensor t;
  t.node_ = std::make_shared<TensorNode>();
  t.node_->shape = shape;
  t.node_->dtype = dtype;
  t.node_->device = device;
  t.node_->traces.push_back(kPlaceholderTrace);
  t.node_->id = next_id();
  return t;
}

Tensor Tensor::make_sharded(Tensor local, Shape global, Sharding sharding,
                            std::shared_ptr<const Primitive> primitive, std::vector<Tensor> inputs) {
  AXLEARN_CHECK(local.defined() && !local.is_sharded(), "make_sharded: bad local tensor");
  AXLEARN_CHECK(sharding.dims.size() == global.size(), "make_sharded: rank mismatch");
  Tensor t;
  t.node_ = std::make_shared<TensorNode>();
  TensorNode& n = *t.node_;
  n.shape = std::move(global);
  n.dtype = local.dtype();
  n.device = local.device();
  inherit_traces(n, inputs);
  // A sharded placeholder traces like its local block.
  if (local.is_placeholder()) inherit_traces(n, {local});
  n.primitive = std::move(primitive);
  n.inputs = std::move(inputs);
  n.sharding = std::make_shared<const Sharding>(std::move(sharding));
  n.local = local.node_ptr();
  n.id = next_id();
  return t;
}

Tensor Tensor::local() const {
  const TensorNode& n = node();
  return n.local ? from_node(n.local) : *this;
}

int64_t Tensor::shape(int axis) const {
  return node().shape[normalize_axis(axis, ndim(), "Tensor::shape")];
}

const Array& Tensor::array() const {
  TensorNode& n = node();
  if (n.data.defined()) return n.data;
  if (!n.sharding) {
    eval();
    return n.data;
  }
  if (n.sharding->is_replicated()) return from_node(n.local).array();
  const auto& hooks = detail::sharding_hooks();
  AXLEARN_CHECK(hooks.gather, "sharded tensor without a partitioner");
  n.data = hooks.gather(*this);
  return n.data;
}

void Tensor::eval() const { axlearn::eval(std::vector<Tensor>{*this}); }

namespace {

void print_element(std::ostream& os, const Array& a, int64_t flat) {
  double v = a.get_as_double(flat);
  if (a.dtype == bool_) {
    os << (v != 0 ? "True" : "False");
  } else if (is_integer(a.dtype)) {
    os << int64_t(v);
  } else if (std::isnan(v)) {
    os << "nan";
  } else if (std::isinf(v)) {
    os << (v > 0 ? "inf" : "-inf");
  } else {
    std::ostringstream s;
    s << std::setprecision(a.dtype == float64 ? 8 : 6) << v;
    std::string str = s.str();
    if (str.find_first_of(".e") == std::string::npos) str += ".";
    os << str;
  }
}

void print_rec(std::ostream& os, const Array& a, int dim, int64_t base, int indent) {
  const int nd = a.ndim();
  const int64_t n = a.shape[dim];
  int64_t inner = 1;
  for (int i = dim + 1; i < nd; ++i) inner *= a.shape[i];
  const bool elide = n > 8;  // numpy-like summarisation of long axes
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (elide && i == 3) {
      os << "...";
      i = n - 4;
      os << (dim == nd - 1 ? ", " : ",\n" + std::string(indent + 1, ' '));
      continue;
    }
    if (dim == nd - 1) {
      print_element(os, a, base + i);
    } else {
      print_rec(os, a, dim + 1, base + i * inner, indent + 1);
    }
    if (i + 1 < n) os << (dim == nd - 1 ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << "]";
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "Tensor(undefined)";
  if (t.is_placeholder()) {
    return os << "Tensor(shape=" << shape_str(t.shape()) << ", dtype=" << t.dtype() << ")";
  }
  const Array& a = t.array();
  os << "array(";
  if (a.ndim() == 0) {
    print_element(os, a, 0);
  } else if (a.size() == 0) {
    os << "[], shape=" << shape_str(a.shape);
  } else {
    print_rec(os, a, 0, 0, 6);
  }
  return os << ", dtype=" << a.dtype << ")";
}

void Primitive::eval_gpu(const std::vector<Array>&, Array&) const {
  fail(name(), ": no CUDA kernel is available for this operation in this build");
}

std::vector<Tensor> Primitive::vjp(const std::vector<Tensor>&, const Tensor&, const Tensor&) const {
  fail(name(), ": this operation is not differentiable");
}

}  // namespace axlearn
