#include "axlearn/core/remat.h"

#include <unordered_map>

#include "axlearn/core/ops.h"
#include "axlearn/core/primitives.h"

namespace axlearn {
namespace detail {

namespace {

struct Traced {
  std::shared_ptr<RematGraph> graph;
  std::vector<Tensor> call_inputs;  // the call's inputs, then the captured tensors
};

// Runs fn on placeholders and flattens the graph it built. Leaves of that graph are our
// placeholders, constants (evaluated tensors that no transform traces), and tensors captured from
// outside (anything else older than the trace), which become extra inputs.
Traced trace(const VectorFn& fn, const std::vector<Tensor>& inputs) {
  // Node ids grow monotonically: anything older than this marker was captured from outside.
  const uint64_t first_id = Tensor::placeholder({}, float32).id();
  std::vector<Tensor> placeholders;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) fail("checkpoint: input ", i, " is an undefined Tensor");
    placeholders.push_back(
        Tensor::placeholder(inputs[i].shape(), inputs[i].dtype(), inputs[i].device()));
  }
  std::vector<Tensor> outs;
  try {
    outs = fn(placeholders);
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.find("abstract placeholder") != std::string::npos) {
      fail(
          "checkpoint: the function read the value of a traced tensor (item(), to_vector(), "
          "eval() or printing); inside checkpoint(fn) values are not known while fn is traced. [",
          msg, "]");
    }
    throw;
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    if (!outs[i].defined()) fail("checkpoint: output ", i, " of the function is undefined");
  }

  enum class Kind : uint8_t { kInput, kCaptured, kConstant, kOp };
  std::unordered_map<const TensorNode*, int> input_index;
  for (size_t i = 0; i < placeholders.size(); ++i)
    input_index[placeholders[i].node_ptr().get()] = int(i);
  auto kind_of = [&](const Tensor& t) {
    if (input_index.count(t.node_ptr().get())) return Kind::kInput;
    const bool traced = t.is_tracer();
    if (t.id() < first_id) return (t.is_evaluated() && !traced) ? Kind::kConstant : Kind::kCaptured;
    // Made by fn: replayed unless it is plain data (an evaluated tracer keeps its graph and may
    // depend on a captured tracer, so it is replayed too).
    if (t.primitive() && (!t.is_evaluated() || traced)) return Kind::kOp;
    if (!t.is_evaluated())
      fail("checkpoint: the function's outputs depend on a placeholder it made");
    return Kind::kConstant;
  };

  // Iterative post-order over the op nodes.
  std::vector<Tensor> ops, captured, constants;
  std::unordered_map<const TensorNode*, Kind> seen;
  std::vector<std::pair<Tensor, size_t>> stack;
  auto visit = [&](const Tensor& t) {
    auto [it, fresh] = seen.emplace(t.node_ptr().get(), Kind::kOp);
    if (!fresh) return;
    it->second = kind_of(t);
    switch (it->second) {
      case Kind::kOp:
        stack.emplace_back(t, 0);
        break;
      case Kind::kCaptured:
        captured.push_back(t);
        break;
      case Kind::kConstant:
        constants.push_back(t);
        break;
      case Kind::kInput:
        break;
    }
  };
  for (const Tensor& out : outs) {
    visit(out);
    while (!stack.empty()) {
      auto& [t, next] = stack.back();
      if (next < t.inputs().size()) {
        Tensor in = t.inputs()[next++];
        visit(in);
      } else {
        ops.push_back(t);
        stack.pop_back();
      }
    }
  }

  auto graph = std::make_shared<RematGraph>();
  std::unordered_map<const TensorNode*, int> value;
  auto add_input = [&](const Tensor& t) {
    value[t.node_ptr().get()] = int(graph->input_specs.size());
    graph->input_specs.push_back({t.shape(), t.dtype()});
  };
  for (const Tensor& p : placeholders) add_input(p);
  for (const Tensor& c : captured) add_input(c);
  int next_value = graph->num_inputs();
  for (const Tensor& c : constants) {
    value[c.node_ptr().get()] = next_value++;
    graph->constants.push_back(c.array());
  }
  for (const Tensor& t : ops) {
    RematGraph::Op op{t.primitive_ptr(), {}};
    for (const Tensor& in : t.inputs()) op.args.push_back(value.at(in.node_ptr().get()));
    graph->ops.push_back(std::move(op));
    value[t.node_ptr().get()] = next_value++;
  }
  for (const Tensor& out : outs) {
    graph->outputs.push_back(value.at(out.node_ptr().get()));
    graph->output_specs.push_back({out.shape(), out.dtype()});
  }

  Traced result{std::move(graph), inputs};
  result.call_inputs.insert(result.call_inputs.end(), captured.begin(), captured.end());
  return result;
}

std::vector<Tensor> call_graph(const std::shared_ptr<const RematGraph>& graph,
                               const std::vector<Tensor>& call_inputs) {
  if (graph->outputs.empty()) return {};
  Tensor call = Tensor::make(std::make_shared<RematCall>(graph), call_inputs);
  if (graph->outputs.size() == 1) return {call};
  std::vector<Tensor> outs;
  for (size_t i = 0; i < graph->outputs.size(); ++i) {
    outs.push_back(Tensor::make(std::make_shared<RematOutput>(graph, int(i)), {call}));
  }
  return outs;
}

// Whether an autodiff trace in progress reaches x: x carries the id of an active trace other than
// the one every placeholder carries (compile's abstract inputs need no cotangent of their own).
bool differentiated(const Tensor& x) {
  static const uint64_t placeholder_trace = Tensor::placeholder({}, float32).node().traces.at(0);
  if (!is_floating(x.dtype())) return false;
  for (uint64_t t : x.node().traces) {
    if (t != placeholder_trace && detail::trace_active(t)) return true;
  }
  return false;
}

// Cotangents of the call's inputs `xs` given cotangents `cts` of its outputs `indices`: a
// checkpointed function of (xs, cts) that replays the graph and differentiates it, so the
// recomputed activations live only while that backward node runs. Only float inputs that an
// autodiff trace reaches get a cotangent.
std::vector<Tensor> remat_vjp(const std::shared_ptr<const RematGraph>& graph,
                              const std::vector<int>& indices, const std::vector<Tensor>& cts,
                              const std::vector<Tensor>& xs) {
  std::vector<int> diff;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (differentiated(xs[i])) diff.push_back(int(i));
  }
  std::vector<Tensor> result(xs.size());
  if (diff.empty()) return result;
  const size_t n = xs.size();
  VectorFn backward = [graph, indices, diff, n](const std::vector<Tensor>& zs) {
    std::vector<Tensor> primals;
    for (int d : diff) primals.push_back(zs[size_t(d)]);
    auto forward = [&](const std::vector<Tensor>& ps) {
      std::vector<Tensor> full(zs.begin(), zs.begin() + std::ptrdiff_t(n));
      for (size_t k = 0; k < diff.size(); ++k) full[size_t(diff[k])] = ps[k];
      std::vector<Tensor> outs = graph->replay(full), picked;
      for (int i : indices) picked.push_back(outs[size_t(i)]);
      return picked;
    };
    return vjp(forward, primals, std::vector<Tensor>(zs.begin() + std::ptrdiff_t(n), zs.end()))
        .cotangents;
  };
  std::vector<Tensor> zs = xs;
  zs.insert(zs.end(), cts.begin(), cts.end());
  Traced traced = trace(backward, zs);
  std::vector<Tensor> in_cts = call_graph(traced.graph, traced.call_inputs);
  for (size_t k = 0; k < diff.size(); ++k) result[size_t(diff[k])] = in_cts[k];
  return result;
}

// Reads a sum of RematCotangent carriers back into (index, cotangent) pairs.
void collect_carriers(const Tensor& t, std::vector<int>& indices, std::vector<Tensor>& cts) {
  if (const auto* c = dynamic_cast<const RematCotangent*>(t.primitive())) {
    indices.push_back(c->index());
    cts.push_back(t.inputs()[0]);
    return;
  }
  const auto* b = dynamic_cast<const Binary*>(t.primitive());
  AXLEARN_CHECK(b && b->op() == BinaryOp::kAdd && t.inputs().size() == 2,
                "checkpoint: the cotangent of a token must be a sum of carriers, got ",
                t.primitive() ? t.primitive()->name() : "data");
  collect_carriers(t.inputs()[0], indices, cts);
  collect_carriers(t.inputs()[1], indices, cts);
}

}  // namespace

std::vector<Tensor> RematGraph::replay(const std::vector<Tensor>& inputs) const {
  AXLEARN_CHECK(inputs.size() == input_specs.size(), "checkpoint replay arity");
  std::vector<Tensor> values = inputs;
  values.reserve(inputs.size() + constants.size() + ops.size());
  for (const Array& c : constants) values.emplace_back(c);
  std::vector<Tensor> args;
  for (const Op& op : ops) {
    args.clear();
    for (int a : op.args) args.push_back(values[size_t(a)]);
    values.push_back(Tensor::make(op.primitive, args));
  }
  std::vector<Tensor> outs;
  for (int o : outputs) outs.push_back(values[size_t(o)]);
  return outs;
}

OutputSpec RematCall::infer(const std::vector<Tensor>& in) const {
  AXLEARN_CHECK(int(in.size()) == graph_->num_inputs(), "checkpoint: ", in.size(),
                " inputs for a graph of ", graph_->num_inputs());
  for (size_t i = 0; i < in.size(); ++i) {
    const OutputSpec& s = graph_->input_specs[i];
    AXLEARN_CHECK(in[i].shape() == s.shape && in[i].dtype() == s.dtype, "checkpoint: input ", i,
                  " is ", in[i].dtype(), shape_str(in[i].shape()), ", traced as ", s.dtype,
                  shape_str(s.shape));
  }
  if (graph_->outputs.size() == 1) return graph_->output_specs[0];
  return {{1}, uint8};
}

void RematCall::eval_cpu(const std::vector<Array>& in, Array& out) const {
  std::vector<Tensor> inputs;
  inputs.reserve(in.size());
  for (const Array& a : in) inputs.emplace_back(a);
  std::vector<Tensor> outs = graph_->replay(inputs);
  inputs.clear();
  eval(outs);
  if (outs.size() == 1) {
    out = outs[0].array();
    return;
  }
  auto results = std::make_shared<RematResults>();
  for (Tensor& t : outs) {
    results->outputs.push_back(t.array());
    t = Tensor();
  }
  void* token = &results->token;
  out.strides = {1};
  out.offset = 0;
  out.storage = std::make_shared<Storage>(token, 1, std::move(results));
}

std::vector<Tensor> RematCall::vjp(const std::vector<Tensor>& in, const Tensor&,
                                   const Tensor& ct) const {
  if (graph_->outputs.size() == 1) return remat_vjp(graph_, {0}, {ct}, in);
  std::vector<int> indices;
  std::vector<Tensor> cts;
  collect_carriers(ct, indices, cts);
  return remat_vjp(graph_, indices, cts, in);
}

bool RematCall::equals(const Primitive& o) const {
  const auto* r = dynamic_cast<const RematCall*>(&o);
  return r && r->graph_ == graph_;
}

size_t RematCall::hash() const { return std::hash<const void*>()(graph_.get()); }

void RematCall::print(std::ostream& os) const {
  os << "checkpoint[outputs=" << graph_->outputs.size() << ", ops=" << graph_->ops.size()
     << ", graph=" << graph_.get() << "]";
}

OutputSpec RematOutput::infer(const std::vector<Tensor>& in) const {
  AXLEARN_CHECK(in.size() == 1 && in[0].dtype() == uint8, "checkpoint_output takes the token");
  return graph_->output_specs[size_t(index_)];
}

void RematOutput::eval_cpu(const std::vector<Array>& in, Array& out) const {
  auto* results = static_cast<RematResults*>(in[0].storage->external.get());
  AXLEARN_CHECK(results, "checkpoint_output: the input is not a checkpoint token");
  std::lock_guard<std::mutex> lock(results->mu);
  Array& a = results->outputs[size_t(index_)];
  AXLEARN_CHECK(a.defined(), "checkpoint_output ", index_, " was taken twice");
  out = std::move(a);
  a = Array();
}

std::vector<Tensor> RematOutput::vjp(const std::vector<Tensor>&, const Tensor&,
                                     const Tensor& ct) const {
  return {Tensor::make(std::make_shared<RematCotangent>(index_), {ct})};
}

bool RematOutput::equals(const Primitive& o) const {
  const auto* r = dynamic_cast<const RematOutput*>(&o);
  return r && r->graph_ == graph_ && r->index_ == index_;
}

size_t RematOutput::hash() const {
  return std::hash<const void*>()(graph_.get()) * 31 + size_t(index_);
}

void RematOutput::print(std::ostream& os) const {
  os << "checkpoint_output[" << index_ << ", graph=" << graph_.get() << "]";
}

OutputSpec RematCotangent::infer(const std::vector<Tensor>& in) const {
  AXLEARN_CHECK(in.size() == 1, "checkpoint_cotangent arity");
  return {{1}, uint8};
}

void RematCotangent::eval_cpu(const std::vector<Array>&, Array&) const {
  AXLEARN_CHECK(false, "checkpoint_cotangent is read by RematCall::vjp and never evaluated");
}

bool RematCotangent::equals(const Primitive& o) const {
  const auto* r = dynamic_cast<const RematCotangent*>(&o);
  return r && r->index_ == index_;
}

}  // namespace detail

VectorFn checkpoint(VectorFn fn) {
  if (!fn) fail("checkpoint: the function is empty");
  return [fn = std::move(fn)](const std::vector<Tensor>& inputs) {
    auto traced = detail::trace(fn, inputs);
    return detail::call_graph(traced.graph, traced.call_inputs);
  };
}

}  // namespace axlearn
