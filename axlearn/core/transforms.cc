#include "axlearn/core/transforms.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "axlearn/core/ops.h"
#include "axlearn/core/primitive.h"
#include "axlearn/core/primitives.h"

namespace axlearn {

std::vector<Tensor> topological_order(const std::vector<Tensor>& outputs) {
  std::vector<Tensor> order;
  std::unordered_set<const TensorNode*> visited;
  // Iterative post-order DFS: deep graphs (long training loops) must not overflow the stack.
  std::vector<std::pair<Tensor, size_t>> stack;
  for (const Tensor& out : outputs) {
    if (!out.defined() || out.is_evaluated() || visited.count(out.node_ptr().get())) continue;
    visited.insert(out.node_ptr().get());
    stack.emplace_back(out, 0);
    while (!stack.empty()) {
      auto& [t, next] = stack.back();
      const auto& ins = t.inputs();
      if (next < ins.size()) {
        const Tensor& in = ins[next++];
        if (!in.is_evaluated() && visited.insert(in.node_ptr().get()).second) {
          stack.emplace_back(in, 0);
        }
      } else {
        order.push_back(t);
        stack.pop_back();
      }
    }
  }
  return order;
}

void eval(const std::vector<Tensor>& tensors) {
  // Sharded tensors evaluate as their per-device blocks; their global graph is dropped after.
  bool any_sharded = false;
  for (const Tensor& t : tensors) any_sharded = any_sharded || (t.defined() && t.is_sharded());
  if (any_sharded) {
    std::vector<Tensor> locals;
    for (const Tensor& t : tensors) locals.push_back(t.defined() ? t.local() : t);
    eval(locals);
    for (const Tensor& t : tensors) {
      if (t.defined() && t.is_sharded() && !t.is_tracer()) {
        t.node().inputs.clear();
        t.node().primitive.reset();
      }
    }
    return;
  }
  std::vector<Tensor> order = topological_order(tensors);
  if (order.empty()) return;
  // Count uses inside this graph so intermediates can be released as soon as their last user ran.
  std::unordered_map<const TensorNode*, int> uses;
  for (const Tensor& t : order) {
    for (const Tensor& in : t.inputs()) ++uses[in.node_ptr().get()];
  }
  std::unordered_map<const TensorNode*, size_t> position;
  for (size_t i = 0; i < order.size(); ++i) position[order[i].node_ptr().get()] = i;

  std::vector<Array> in_arrays;
  for (size_t i = 0; i < order.size(); ++i) {
    Tensor t = order[i];
    TensorNode& n = t.node();
    if (!n.primitive) {
      fail("eval: tensor of shape ", shape_str(n.shape), " and dtype ", n.dtype,
           " is an abstract placeholder of a function being traced; its value is not known yet");
    }
    in_arrays.clear();
    for (const Tensor& in : n.inputs) in_arrays.push_back(in.node().data);
    Array out;
    out.shape = n.shape;
    out.dtype = n.dtype;
    if (n.device.type == Device::Type::kCpu) {
      n.primitive->eval_cpu(in_arrays, out);
    } else {
      n.primitive->eval_gpu(in_arrays, out);
    }
    AXLEARN_CHECK(out.defined(), n.primitive->name(), " produced no data");
    AXLEARN_CHECK(out.shape == n.shape && out.dtype == n.dtype, n.primitive->name(),
                  " produced the wrong shape or dtype");
    n.data = std::move(out);
    in_arrays.clear();
    // Release inputs whose last user this was, unless they are among the requested tensors
    // (the caller's references keep those alive anyway).
    for (const Tensor& in : n.inputs) {
      auto it = position.find(in.node_ptr().get());
      if (it != position.end() && --uses[in.node_ptr().get()] == 0) order[it->second] = Tensor();
    }
    if (!t.is_tracer()) {
      n.inputs.clear();
      n.inputs.shrink_to_fit();
      n.primitive.reset();
    }
    order[i] = Tensor();
    if (uses[&n] > 0) order[i] = t;  // still needed by a later node
  }
}

void eval(const NestedTensor& tree) { eval(tree.leaves()); }

// ---------------------------------------------------------------- autodiff

namespace {

// The primal seen by the traced function: a fresh tracer node sharing the primal's data (or
// computing it), so that gradients stop exactly here.
class Identity : public Primitive {
 public:
  const char* name() const override { return "identity"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override {
    return {in[0].shape(), in[0].dtype()};
  }
  void eval_cpu(const std::vector<Array>& in, Array& out) const override { out = in[0]; }
  std::vector<Tensor> vjp(const std::vector<Tensor>&, const Tensor&,
                          const Tensor& ct) const override {
    return {ct};
  }
};

Tensor make_tracer(const Tensor& primal, uint64_t trace) {
  Tensor t = Tensor::make(std::make_shared<Identity>(), {primal});
  t.node().traces.push_back(trace);
  return t;
}

// Keeps a trace active for the scope of one transform.
class TraceScope {
 public:
  TraceScope() : id_(detail::begin_trace()) {}
  ~TraceScope() { detail::end_trace(id_); }
  uint64_t id() const { return id_; }

 private:
  uint64_t id_;
};

Tensor add_cotangent(const Tensor& acc, const Tensor& ct) {
  return acc.defined() ? add(acc, ct) : ct;
}

// The cotangent of one node while the backward pass collects it: a sum of dense terms, plus the
// cotangents of slices of the node kept apart with their windows. A slice's VJP alone is its
// cotangent zero-padded to the node's shape; for a tensor cut into pieces (a stack of layer
// weights, a fused QKV projection, the halves of rotate_half) that sum of padded copies costs
// pieces x size, while the same values are one concatenate of the pieces.
struct SlicePiece {
  Tensor ct;
  const Slice* slice;
};
struct Cotangent {
  Tensor dense;
  std::vector<SlicePiece> pieces;
  bool defined() const { return dense.defined() || !pieces.empty(); }
};

// The axis along which `s` cuts a tensor of shape `shape` with unit stride, everything else
// kept whole; -1 for the whole tensor, -2 for any other window.
int cut_axis(const Slice& s, const Shape& shape) {
  int axis = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (s.start()[i] == 0 && s.limit()[i] == shape[i]) continue;
    if (axis != -1 || s.strides()[i] != 1) return -2;
    axis = int(i);
  }
  return axis;
}

// Pieces that cut `like` along one axis into disjoint windows, joined by one concatenate (zeros
// where no piece lies); an undefined Tensor when they do not.
Tensor join_pieces(std::vector<SlicePiece> pieces, const Tensor& like) {
  const Shape& shape = like.shape();
  const int axis = cut_axis(*pieces[0].slice, shape);
  if (axis < 0) return Tensor();
  for (const SlicePiece& p : pieces) {
    if (cut_axis(*p.slice, shape) != axis) return Tensor();
  }
  std::stable_sort(pieces.begin(), pieces.end(), [axis](const SlicePiece& a, const SlicePiece& b) {
    return a.slice->start()[axis] < b.slice->start()[axis];
  });
  std::vector<Tensor> parts;
  auto gap = [&](int64_t n) {
    Shape g = shape;
    g[axis] = n;
    parts.push_back(zeros(g, like.dtype()));
  };
  int64_t at = 0;
  for (const SlicePiece& p : pieces) {
    const int64_t start = p.slice->start()[axis];
    if (start < at) return Tensor();  // overlapping windows add up: not a concatenate
    if (start > at) gap(start - at);
    parts.push_back(p.ct);
    at = p.slice->limit()[axis];
  }
  if (at < shape[axis]) gap(shape[axis] - at);
  return parts.size() == 1 ? parts[0] : concatenate(parts, axis);
}

// The collected cotangent of `like` as one tensor.
Tensor total(const Cotangent& c, const Tensor& like) {
  if (c.pieces.empty()) return c.dense;
  Tensor joined = c.pieces.size() > 1 ? join_pieces(c.pieces, like) : Tensor();
  if (!joined.defined()) {
    for (const SlicePiece& p : c.pieces) {
      joined = add_cotangent(joined, p.slice->vjp({like}, Tensor(), p.ct)[0]);
    }
  }
  return add_cotangent(c.dense, joined);
}

using CotangentFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& outputs)>;

VjpResult vjp_impl(const VectorFn& fn, const std::vector<Tensor>& primals,
                   const CotangentFn& make_cotangents) {
  TraceScope scope;
  std::vector<Tensor> tracers;
  tracers.reserve(primals.size());
  for (const Tensor& p : primals) tracers.push_back(make_tracer(p, scope.id()));
  VjpResult result;
  result.outputs = fn(tracers);
  std::vector<Tensor> cotangents = make_cotangents(result.outputs);
  if (cotangents.size() != result.outputs.size()) {
    fail("vjp: ", cotangents.size(), " cotangents given for ", result.outputs.size(), " outputs");
  }
  for (size_t i = 0; i < cotangents.size(); ++i) {
    if (cotangents[i].shape() != result.outputs[i].shape()) {
      fail("vjp: cotangent ", i, " has shape ", shape_str(cotangents[i].shape()), " but output ", i,
           " has shape ", shape_str(result.outputs[i].shape()));
    }
  }

  // Walk every node between outputs and tracers, including evaluated ones that kept their graph.
  std::unordered_set<const TensorNode*> primal_set;
  for (const Tensor& t : tracers) primal_set.insert(t.node_ptr().get());
  std::vector<Tensor> order;
  std::unordered_map<const TensorNode*, bool> depends;  // on some primal
  {
    std::vector<std::pair<Tensor, size_t>> stack;
    for (const Tensor& out : result.outputs) {
      if (depends.count(out.node_ptr().get())) continue;
      depends[out.node_ptr().get()] = false;
      stack.emplace_back(out, 0);
      while (!stack.empty()) {
        auto& [t, next] = stack.back();
        const TensorNode* tn = t.node_ptr().get();
        static const std::vector<Tensor> kNoInputs;  // walking stops at the primals
        const std::vector<Tensor>& ins = primal_set.count(tn) ? kNoInputs : t.inputs();
        if (next < ins.size()) {
          const Tensor& in = ins[next++];
          if (!depends.count(in.node_ptr().get())) {
            depends[in.node_ptr().get()] = false;
            stack.emplace_back(in, 0);
          }
        } else {
          bool dep = primal_set.count(tn) > 0;
          for (const Tensor& in : ins) {
            auto it = depends.find(in.node_ptr().get());
            dep = dep || (it != depends.end() && it->second);
          }
          depends[tn] = dep;
          if (dep) order.push_back(t);
          stack.pop_back();
        }
      }
    }
  }

  std::unordered_map<const TensorNode*, Cotangent> ct_map;
  for (size_t i = 0; i < result.outputs.size(); ++i) {
    const TensorNode* n = result.outputs[i].node_ptr().get();
    if (!depends[n]) continue;
    Tensor ct = cotangents[i];
    if (ct.dtype() != result.outputs[i].dtype()) ct = astype(ct, result.outputs[i].dtype());
    ct_map[n].dense = add_cotangent(ct_map[n].dense, ct);
  }
  auto depends_on_primal = [&](const Tensor& in) {
    auto d = depends.find(in.node_ptr().get());
    return d != depends.end() && d->second;
  };
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const Tensor& t = *it;
    const TensorNode* tn = t.node_ptr().get();
    if (primal_set.count(tn)) continue;
    auto ct_it = ct_map.find(tn);
    if (ct_it == ct_map.end() || !ct_it->second.defined()) continue;
    Tensor ct = total(ct_it->second, t);
    ct_map.erase(ct_it);  // release as we go
    if (const auto* s = dynamic_cast<const Slice*>(t.primitive())) {
      const Tensor& in = t.inputs()[0];
      if (depends_on_primal(in)) ct_map[in.node_ptr().get()].pieces.push_back({ct, s});
      continue;
    }
    std::vector<Tensor> in_cts = t.primitive()->vjp(t.inputs(), t, ct);
    AXLEARN_CHECK(in_cts.size() == t.inputs().size(), t.primitive()->name(), " vjp arity");
    for (size_t k = 0; k < in_cts.size(); ++k) {
      const Tensor& in = t.inputs()[k];
      if (!in_cts[k].defined() || !depends_on_primal(in)) continue;
      Tensor c = in_cts[k];
      AXLEARN_CHECK(c.shape() == in.shape(), t.primitive()->name(),
                    " vjp shape: ", shape_str(c.shape()), " vs ", shape_str(in.shape()));
      if (c.dtype() != in.dtype()) c = astype(c, in.dtype());
      Tensor& dense = ct_map[in.node_ptr().get()].dense;
      dense = add_cotangent(dense, c);
    }
  }
  for (size_t i = 0; i < tracers.size(); ++i) {
    auto it = ct_map.find(tracers[i].node_ptr().get());
    if (it != ct_map.end() && it->second.defined()) {
      result.cotangents.push_back(total(it->second, tracers[i]));
    } else {
      result.cotangents.push_back(zeros(primals[i].shape(), primals[i].dtype()));
    }
  }
  return result;
}

}  // namespace

VjpResult vjp(const VectorFn& fn, const std::vector<Tensor>& primals,
              const std::vector<Tensor>& cotangents) {
  return vjp_impl(fn, primals, [&](const std::vector<Tensor>&) { return cotangents; });
}

namespace {
std::vector<Tensor> ones_for_scalar(const std::vector<Tensor>& outs) {
  if (outs.size() != 1 || outs[0].ndim() != 0) {
    fail("grad: the function must return one scalar, got ",
         outs.size() == 1 ? "shape " + shape_str(outs[0].shape())
                          : std::to_string(outs.size()) + " outputs");
  }
  if (!is_floating(outs[0].dtype()))
    fail("grad: the function's output has dtype ", outs[0].dtype(), "; it must be a float");
  return {ones({}, outs[0].dtype())};
}
}  // namespace

ValueAndGrad value_and_grad(const ScalarFn& fn, const std::vector<Tensor>& args,
                            std::vector<int> argnums) {
  if (argnums.empty()) {
    for (size_t i = 0; i < args.size(); ++i) argnums.push_back(int(i));
  }
  std::vector<Tensor> primals;
  for (int a : argnums) {
    if (a < 0 || a >= int(args.size()))
      fail("grad: argnum ", a, " out of range for ", args.size(), " arguments");
    primals.push_back(args[a]);
  }
  auto wrapped = [&](const std::vector<Tensor>& ps) {
    std::vector<Tensor> full = args;
    for (size_t i = 0; i < argnums.size(); ++i) full[argnums[i]] = ps[i];
    return std::vector<Tensor>{fn(full)};
  };
  VjpResult r = vjp_impl(wrapped, primals, ones_for_scalar);
  return {r.outputs[0], std::move(r.cotangents)};
}

std::function<std::vector<Tensor>(const std::vector<Tensor>&)> grad(ScalarFn fn,
                                                                    std::vector<int> argnums) {
  return [fn = std::move(fn), argnums = std::move(argnums)](const std::vector<Tensor>& args) {
    return value_and_grad(fn, args, argnums).grads;
  };
}

NestedValueAndGrad value_and_grad_with_aux(
    const std::function<std::pair<Tensor, NestedTensor>(const NestedTensor&)>& fn,
    const NestedTensor& params) {
  NestedTensor aux;
  auto wrapped = [&](const std::vector<Tensor>& leaves) {
    auto [loss, a] = fn(params.unflatten(leaves));
    aux = std::move(a);
    return std::vector<Tensor>{loss};
  };
  VjpResult r = vjp_impl(wrapped, params.leaves(), ones_for_scalar);
  return {r.outputs[0], params.unflatten(r.cotangents), std::move(aux)};
}

NestedValueAndGrad value_and_grad(const std::function<Tensor(const NestedTensor&)>& fn,
                                  const NestedTensor& params) {
  return value_and_grad_with_aux(
      [&](const NestedTensor& p) { return std::make_pair(fn(p), NestedTensor()); }, params);
}

NestedTensor grad(const std::function<Tensor(const NestedTensor&)>& fn,
                  const NestedTensor& params) {
  return value_and_grad(fn, params).grads;
}

}  // namespace axlearn
