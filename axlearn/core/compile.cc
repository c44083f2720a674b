// compile(): trace -> graph of plain values -> CSE -> elementwise fusion -> ordered plan with
// per-step release lists -> execution. The kernel of the fused primitive is in
// backends/cpu/fused.cc.
#include "axlearn/core/compile.h"

#include <algorithm>
#include <mutex>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace axlearn {

namespace {

// ------------------------------------------------------------------ the traced graph

// One value of the traced graph. Nodes are kept in topological order (arguments first).
struct Node {
  enum class Kind : uint8_t { kInput, kConstant, kOp };
  Kind kind = Kind::kOp;
  Shape shape;
  Dtype dtype = float32;
  int input = -1;  // kInput: position among the call's inputs
  Array constant;  // kConstant: captured data, held by the plan
  std::shared_ptr<const Primitive> primitive;
  std::vector<int> args;
};

struct Step {
  std::shared_ptr<const Primitive> primitive;
  const FusedElementwise* fused = nullptr;  // primitive, when it is a fused group
  std::vector<int> inputs, outputs;         // node ids
  std::vector<int> donors;                  // fused: per output, an index into inputs or -1
  std::vector<int> release;                 // node ids whose last reader is this step
};

struct Plan {
  std::vector<Node> nodes;
  std::vector<Step> steps;
  std::vector<int> outputs;
  // Per output: its sharding and global shape when the traced output was sharded.
  std::vector<std::shared_ptr<const Sharding>> out_shardings;
  std::vector<Shape> out_global_shapes;
  NestedTensor out_skeleton;  // output tree structure (tree version only)
  PlanStats stats;
};

std::string signature_of(const std::vector<Tensor>& inputs, const std::string& structure) {
  std::ostringstream os;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined()) fail("compile: input ", i, " is an undefined Tensor");
    os << (i ? ", " : "") << t.dtype() << shape_str(t.shape());
    if (t.device() != Device::cpu()) os << "@" << t.device();
    if (t.is_sharded()) os << " " << t.sharding()->str() << " on " << t.sharding()->mesh.str();
  }
  // A sharded plan holds this device's blocks and slice bounds: one plan per device.
  for (const Tensor& t : inputs) {
    if (t.is_sharded()) {
      os << " @rank" << current_device_rank();
      break;
    }
  }
  if (!structure.empty()) os << " " << structure;
  return os.str();
}

using TraceFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&, NestedTensor*)>;

// Runs fn on placeholders and lowers the result to Nodes. Returns false when fn captured a tensor
// that an outer transform is tracing: such a call cannot become a standalone plan.
bool trace_graph(const TraceFn& fn, const std::vector<Tensor>& inputs, const std::string& sig,
                 Plan& plan) {
  // Node ids grow monotonically: anything older than this marker was captured from outside.
  const uint64_t first_id = Tensor::placeholder({}, float32).id();
  std::vector<Tensor> placeholders;       // what fn sees (sharded where the input is)
  std::vector<Tensor> local_placeholders;  // the per-device graph's inputs
  for (const Tensor& t : inputs) {
    if (t.is_sharded()) {
      const Sharding& sh = *t.sharding();
      Tensor local = Tensor::placeholder(sh.local_shape(t.shape()), t.dtype(), t.device());
      local_placeholders.push_back(local);
      placeholders.push_back(Tensor::make_sharded(local, t.shape(), sh));
    } else {
      placeholders.push_back(Tensor::placeholder(t.shape(), t.dtype(), t.device()));
      local_placeholders.push_back(placeholders.back());
    }
  }

  std::vector<Tensor> outs;
  try {
    std::vector<Tensor> global_outs = fn(placeholders, &plan.out_skeleton);
    for (const Tensor& o : global_outs) {
      if (o.defined() && o.is_sharded()) {
        plan.out_shardings.push_back(o.node().sharding);
        plan.out_global_shapes.push_back(o.shape());
        outs.push_back(o.local());
      } else {
        plan.out_shardings.push_back(nullptr);
        plan.out_global_shapes.push_back({});
        outs.push_back(o);
      }
    }
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.find("placeholder") != std::string::npos) {
      fail(
          "compile: the function read the value of a traced tensor (item(), to_vector(), eval() "
          "or printing) while being traced for inputs (",
          sig,
          "). Inside compile(fn) values "
          "are not known; return the tensor from fn and read it outside. [",
          msg, "]");
    }
    fail("compile: while tracing for inputs (", sig, "): ", msg);
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    if (!outs[i].defined()) fail("compile: output ", i, " of the function is an undefined Tensor");
  }

  placeholders = local_placeholders;
  std::unordered_set<const TensorNode*> mine;
  for (const Tensor& p : placeholders) mine.insert(p.node_ptr().get());
  auto captured_tracer = [&](const Tensor& t) {
    return t.id() < first_id && !mine.count(t.node_ptr().get()) && t.is_tracer();
  };
  std::vector<Tensor> order = topological_order(outs);
  // Lazy tensors captured from outside, where the traced graph reads them.
  std::vector<Tensor> captured;
  auto note_captured = [&](const Tensor& t) {
    if (t.id() < first_id && !t.is_evaluated()) captured.push_back(t);
  };
  for (const Tensor& t : order) {
    if (captured_tracer(t)) return false;
    if (t.id() < first_id) continue;
    for (const Tensor& in : t.inputs()) {
      if (in.is_evaluated() && captured_tracer(in)) return false;
      note_captured(in);
    }
  }
  for (const Tensor& t : outs) {
    if (captured_tracer(t)) return false;
    note_captured(t);
  }
  if (!captured.empty()) {
    eval(captured);  // captured lazy tensors become constants, computed once
    captured.clear();
    order = topological_order(outs);
  }

  std::unordered_map<const TensorNode*, int> index;
  auto value_of = [&](const Tensor& t) -> int {
    auto it = index.find(t.node_ptr().get());
    if (it != index.end()) return it->second;
    AXLEARN_CHECK(t.is_evaluated(), "unevaluated tensor outside the traced order");
    Node n;
    n.kind = Node::Kind::kConstant;
    n.shape = t.shape();
    n.dtype = t.dtype();
    n.constant = t.node().data;
    plan.nodes.push_back(std::move(n));
    return index[t.node_ptr().get()] = int(plan.nodes.size()) - 1;
  };
  for (size_t i = 0; i < placeholders.size(); ++i) {
    Node n;
    n.kind = Node::Kind::kInput;
    n.shape = placeholders[i].shape();
    n.dtype = placeholders[i].dtype();
    n.input = int(i);
    plan.nodes.push_back(std::move(n));
    index[placeholders[i].node_ptr().get()] = int(i);
  }
  for (const Tensor& t : order) {
    if (t.is_placeholder()) continue;  // one of ours (foreign ones were rejected above)
    Node n;
    n.shape = t.shape();
    n.dtype = t.dtype();
    n.primitive = t.primitive_ptr();
    for (const Tensor& in : t.inputs()) n.args.push_back(value_of(in));
    plan.nodes.push_back(std::move(n));
    index[t.node_ptr().get()] = int(plan.nodes.size()) - 1;
  }
  for (const Tensor& t : outs) plan.outputs.push_back(value_of(t));
  return true;
}

// ------------------------------------------------------------------ CSE

std::string printed(const Primitive& p) {
  std::ostringstream os;
  p.print(os);
  return os.str();
}

bool same_op(const Node& a, const Node& b) {
  const Primitive &pa = *a.primitive, &pb = *b.primitive;
  // print() is compared too: it guards against a primitive with attributes that does not
  // override equals().
  return a.args == b.args && a.shape == b.shape && a.dtype == b.dtype && typeid(pa) == typeid(pb) &&
         pa.equals(pb) && pb.equals(pa) && printed(pa) == printed(pb);
}

// Merges nodes that apply the same primitive to the same arguments; returns the live op count.
int eliminate_common_subexpressions(Plan& plan, std::vector<char>& live) {
  std::vector<Node>& nodes = plan.nodes;
  std::vector<int> canon(nodes.size());
  std::unordered_map<size_t, std::vector<int>> table;
  for (size_t v = 0; v < nodes.size(); ++v) {
    canon[v] = int(v);
    Node& n = nodes[v];
    if (n.kind != Node::Kind::kOp) continue;
    size_t h = n.primitive->hash() ^ (size_t(n.dtype) << 7);
    for (int& a : n.args) {
      a = canon[a];
      h = h * 1000003u + size_t(a);
    }
    std::vector<int>& bucket = table[h];
    auto it =
        std::find_if(bucket.begin(), bucket.end(), [&](int u) { return same_op(nodes[u], n); });
    if (it != bucket.end()) {
      canon[v] = *it;
    } else {
      bucket.push_back(int(v));
    }
  }
  for (int& o : plan.outputs) o = canon[o];
  live.assign(nodes.size(), 0);
  for (int o : plan.outputs) live[o] = 1;
  int count = 0;
  for (size_t v = nodes.size(); v-- > 0;) {
    if (!live[v]) continue;
    if (nodes[v].kind == Node::Kind::kOp) ++count;
    for (int a : nodes[v].args) live[a] = 1;
  }
  return count;
}

// ------------------------------------------------------------------ fusion

class Fuser {
 public:
  // fusible: per node, whether it can run inside a FusedElementwise loop.
  Fuser(const std::vector<Node>& nodes, const std::vector<char>& fusible)
      : nodes_(nodes), group_(nodes.size(), -1), stamp_(nodes.size(), 0) {
    for (size_t v = 0; v < nodes.size(); ++v) {
      if (!fusible[v]) continue;
      group_[v] = int(members_.size());
      members_.push_back({int(v)});
      for (int a : nodes[v].args) {
        if (group_[a] >= 0 && group_[a] != group_[v] && nodes[a].shape == nodes[v].shape &&
            can_merge(group_[a], group_[v])) {
          merge(group_[a], group_[v]);
        }
      }
    }
  }
  // Groups of two or more nodes, members in topological order.
  std::vector<std::vector<int>> groups() const {
    std::vector<std::vector<int>> out;
    for (const auto& m : members_) {
      if (m.size() < 2) continue;
      out.push_back(m);
      std::sort(out.back().begin(), out.back().end());
    }
    return out;
  }

 private:
  // Merging groups a and b is safe unless one reaches the other through a node outside both:
  // the merged kernel would then have to run both before and after that node.
  bool can_merge(int a, int b) {
    budget_ = 1 << 16;
    return !reaches_through_outside(b, a) && !reaches_through_outside(a, b);
  }
  // Does some argument (outside a and target) of a member of `from` depend on group `target`?
  // A third group runs as one kernel, after all of its members' arguments: reaching any of its
  // members means depending on every one of their arguments, so the walk takes them all.
  bool reaches_through_outside(int from, int target) {
    int min_index = *std::min_element(members_[target].begin(), members_[target].end());
    ++epoch_;
    std::vector<int> stack;
    for (int m : members_[from]) {
      for (int a : nodes_[m].args) {
        if (group_[a] != from && group_[a] != target) stack.push_back(a);
      }
    }
    while (!stack.empty()) {
      int u = stack.back();
      stack.pop_back();
      if (stamp_[u] == epoch_) continue;
      const int g = group_[u];
      if (g == target) return true;
      if (g >= 0 && g != from && members_[g].size() > 1) {
        for (int m : members_[g]) {
          stamp_[m] = epoch_;
          if (--budget_ < 0) return true;  // give up: not fusing is always correct
          for (int a : nodes_[m].args) {
            if (stamp_[a] != epoch_) stack.push_back(a);
          }
        }
        continue;
      }
      if (u < min_index) continue;
      stamp_[u] = epoch_;
      if (--budget_ < 0) return true;
      for (int a : nodes_[u].args) stack.push_back(a);
    }
    return false;
  }
  void merge(int a, int b) {
    if (members_[a].size() < members_[b].size()) std::swap(a, b);
    for (int v : members_[b]) group_[v] = a;
    members_[a].insert(members_[a].end(), members_[b].begin(), members_[b].end());
    members_[b].clear();
  }

  const std::vector<Node>& nodes_;
  std::vector<int> group_;
  std::vector<std::vector<int>> members_;
  std::vector<uint32_t> stamp_;
  uint32_t epoch_ = 0;
  int budget_ = 0;
};

// Builds the FusedElementwise step of one group. Arguments produced by broadcast_in_dim are read
// through a broadcast view of their operand instead (the broadcast is then usually dead).
Step make_fused_step(const std::vector<Node>& nodes, const std::vector<int>& members,
                     const std::vector<int>& users_outside, const std::vector<char>& is_output) {
  std::unordered_map<int, int> local;  // node id -> value id inside the kernel
  std::vector<FusedElementwise::Input> inputs;
  Step step;
  std::unordered_map<int, int> input_of;  // node id of the original argument -> input position
  std::unordered_set<int> in_group(members.begin(), members.end());
  auto input_id = [&](int arg) {
    auto it = input_of.find(arg);
    if (it != input_of.end()) return it->second;
    FusedElementwise::Input in;
    int src = arg;
    while (nodes[src].kind == Node::Kind::kOp) {
      auto* b = dynamic_cast<const BroadcastInDim*>(nodes[src].primitive.get());
      if (!b) break;
      in.broadcasts.insert(in.broadcasts.begin(), {b->shape(), b->dims()});
      src = nodes[src].args[0];
    }
    in.dtype = nodes[src].dtype;
    inputs.push_back(std::move(in));
    step.inputs.push_back(src);
    return input_of[arg] = int(inputs.size()) - 1;
  };
  for (int m : members) {
    for (int a : nodes[m].args) {
      if (!in_group.count(a)) input_id(a);
    }
  }
  const int num_inputs = int(inputs.size());
  std::vector<FusedElementwise::Instr> instrs;
  std::vector<int> outputs;
  for (int m : members) {
    const Node& n = nodes[m];
    FusedElementwise::Instr ins;
    ins.dtype = n.dtype;
    if (auto* u = dynamic_cast<const Unary*>(n.primitive.get())) {
      ins.kind = FusedElementwise::Kind::kUnary;
      ins.op = uint8_t(u->op());
    } else if (auto* b = dynamic_cast<const Binary*>(n.primitive.get())) {
      ins.kind = FusedElementwise::Kind::kBinary;
      ins.op = uint8_t(b->op());
    } else if (dynamic_cast<const Select*>(n.primitive.get())) {
      ins.kind = FusedElementwise::Kind::kSelect;
    } else {
      ins.kind = FusedElementwise::Kind::kConvert;
    }
    for (int a : n.args) ins.args.push_back(in_group.count(a) ? local.at(a) : input_of.at(a));
    local[m] = num_inputs + int(instrs.size());
    instrs.push_back(std::move(ins));
    if (users_outside[m] > 0 || is_output[m]) {
      outputs.push_back(local[m]);
      step.outputs.push_back(m);
    }
  }
  auto fused = std::make_shared<FusedElementwise>(nodes[members[0]].shape, std::move(inputs),
                                                  std::move(instrs), std::move(outputs));
  step.fused = fused.get();
  step.primitive = std::move(fused);
  return step;
}

// Whether a node's primitive can run inside a FusedElementwise loop.
bool fusible_here(const std::vector<Node>& nodes, const Node& n) {
  if (n.kind != Node::Kind::kOp || !n.primitive->is_elementwise() || num_elements(n.shape) == 0) {
    return false;
  }
  std::vector<Dtype> in;
  for (int a : n.args) {
    if (nodes[a].shape != n.shape) return false;
    in.push_back(nodes[a].dtype);
  }
  return FusedElementwise::supports(*n.primitive, in);
}

// ------------------------------------------------------------------ planning

// Orders the steps (dependencies first, otherwise close to the traced order so intermediates
// die early), drops dead ones, and fills the release and donation lists.
void schedule(Plan& plan, std::vector<Step> steps, std::vector<int> anchor) {
  const std::vector<Node>& nodes = plan.nodes;
  std::vector<int> producer(nodes.size(), -1);
  for (size_t s = 0; s < steps.size(); ++s) {
    for (int o : steps[s].outputs) producer[o] = int(s);
  }
  std::vector<char> needed(steps.size(), 0);
  std::vector<int> stack;
  for (int o : plan.outputs) {
    if (producer[o] >= 0) stack.push_back(producer[o]);
  }
  while (!stack.empty()) {
    int s = stack.back();
    stack.pop_back();
    if (needed[s]) continue;
    needed[s] = 1;
    for (int in : steps[s].inputs) {
      if (producer[in] >= 0 && !needed[producer[in]]) stack.push_back(producer[in]);
    }
  }
  std::vector<int> pending(steps.size(), 0);
  std::vector<std::vector<int>> dependents(steps.size());
  for (size_t s = 0; s < steps.size(); ++s) {
    if (!needed[s]) continue;
    std::vector<int> deps;
    for (int in : steps[s].inputs) {
      if (producer[in] >= 0) deps.push_back(producer[in]);
    }
    std::sort(deps.begin(), deps.end());
    deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
    pending[s] = int(deps.size());
    for (int d : deps) dependents[d].push_back(int(s));
  }
  using Entry = std::pair<int, int>;  // (anchor, step)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> ready;
  for (size_t s = 0; s < steps.size(); ++s) {
    if (needed[s] && pending[s] == 0) ready.push({anchor[s], int(s)});
  }
  while (!ready.empty()) {
    int s = ready.top().second;
    ready.pop();
    plan.steps.push_back(std::move(steps[s]));
    for (int d : dependents[s]) {
      if (--pending[d] == 0) ready.push({anchor[d], d});
    }
  }
  AXLEARN_CHECK(int(plan.steps.size()) == int(std::count(needed.begin(), needed.end(), 1)),
                "compile: the fused plan has a cycle");

  std::vector<char> is_output(nodes.size(), 0);
  for (int o : plan.outputs) is_output[o] = 1;
  std::vector<int> last_use(nodes.size(), -1);
  for (size_t p = 0; p < plan.steps.size(); ++p) {
    for (int in : plan.steps[p].inputs) last_use[in] = int(p);
    for (int o : plan.steps[p].outputs) last_use[o] = std::max(last_use[o], int(p));
  }
  for (size_t v = 0; v < nodes.size(); ++v) {
    if (last_use[v] >= 0 && !is_output[v]) plan.steps[last_use[v]].release.push_back(int(v));
  }
  // A fused output may take over the buffer of an input that dies at this step: elementwise,
  // every chunk is read before it is written.
  for (size_t p = 0; p < plan.steps.size(); ++p) {
    Step& st = plan.steps[p];
    if (!st.fused) continue;
    st.donors.assign(st.outputs.size(), -1);
    std::vector<char> taken(st.inputs.size(), 0);
    for (size_t k = 0; k < st.outputs.size(); ++k) {
      const Node& out = nodes[st.outputs[k]];
      for (size_t j = 0; j < st.inputs.size(); ++j) {
        const int v = st.inputs[j];
        const Node& in = nodes[v];
        if (taken[j] || in.kind != Node::Kind::kOp || is_output[v] || last_use[v] != int(p) ||
            !st.fused->inputs()[j].broadcasts.empty() || in.shape != out.shape ||
            size_of(in.dtype) != size_of(out.dtype) ||
            std::count(st.inputs.begin(), st.inputs.end(), v) != 1) {
          continue;
        }
        taken[j] = 1;
        st.donors[k] = int(j);
        break;
      }
    }
  }
}

std::shared_ptr<Plan> build_plan(const TraceFn& fn, const std::vector<Tensor>& inputs,
                                 const std::string& sig) {
  auto plan = std::make_shared<Plan>();
  if (!trace_graph(fn, inputs, sig, *plan)) return nullptr;
  std::vector<Node>& nodes = plan->nodes;
  for (const Node& n : nodes) plan->stats.nodes_traced += n.kind == Node::Kind::kOp;

  std::vector<char> live;
  plan->stats.nodes_after_cse = eliminate_common_subexpressions(*plan, live);

  std::vector<char> fusible(nodes.size(), 0);
  for (size_t v = 0; v < nodes.size(); ++v) fusible[v] = live[v] && fusible_here(nodes, nodes[v]);
  std::vector<std::vector<int>> groups = Fuser(nodes, fusible).groups();

  std::vector<int> group_of(nodes.size(), -1);
  for (size_t g = 0; g < groups.size(); ++g) {
    for (int m : groups[g]) group_of[m] = int(g);
  }
  std::vector<char> is_output(nodes.size(), 0);
  for (int o : plan->outputs) is_output[o] = 1;
  std::vector<int> users_outside(nodes.size(), 0);
  for (size_t v = 0; v < nodes.size(); ++v) {
    if (!live[v]) continue;
    for (int a : nodes[v].args) {
      if (group_of[a] < 0 || group_of[a] != group_of[v]) ++users_outside[a];
    }
  }

  std::vector<Step> steps;
  std::vector<int> anchor;
  for (const auto& g : groups) {
    steps.push_back(make_fused_step(nodes, g, users_outside, is_output));
    anchor.push_back(g.back());
    plan->stats.fused_nodes += int(g.size());
  }
  plan->stats.fused_groups = int(groups.size());
  for (size_t v = 0; v < nodes.size(); ++v) {
    if (!live[v] || nodes[v].kind != Node::Kind::kOp || group_of[v] >= 0) continue;
    Step s;
    s.primitive = nodes[v].primitive;
    s.inputs = nodes[v].args;
    s.outputs = {int(v)};
    steps.push_back(std::move(s));
    anchor.push_back(int(v));
  }
  schedule(*plan, std::move(steps), std::move(anchor));
  plan->stats.kernels = int(plan->steps.size());
  return plan;
}

// ------------------------------------------------------------------ execution

std::vector<Tensor> run_plan(const Plan& plan, const std::vector<Tensor>& inputs) {
  std::vector<Array> slots(plan.nodes.size());
  for (size_t v = 0; v < plan.nodes.size(); ++v) {
    const Node& n = plan.nodes[v];
    if (n.kind == Node::Kind::kInput) slots[v] = inputs[n.input].local().array();
    if (n.kind == Node::Kind::kConstant) slots[v] = n.constant;
  }
  std::vector<Array> ins;
  for (const Step& st : plan.steps) {
    if (st.fused) {
      std::vector<Array> outs(st.outputs.size());
      for (size_t k = 0; k < outs.size(); ++k) {
        if (st.donors[k] < 0) continue;
        const Array& d = slots[st.inputs[st.donors[k]]];
        const Node& out = plan.nodes[st.outputs[k]];
        // Only this slot refers to the buffer (no view of it is live elsewhere).
        if (d.storage.use_count() == 1 && !d.storage->external && d.offset == 0 &&
            d.strides == row_major_strides(d.shape) &&
            d.storage->nbytes >= size_t(num_elements(out.shape)) * size_of(out.dtype)) {
          outs[k].shape = out.shape;
          outs[k].strides = row_major_strides(out.shape);
          outs[k].dtype = out.dtype;
          outs[k].storage = d.storage;
        }
      }
      for (int in : st.inputs) ins.push_back(slots[in]);
      st.fused->eval_cpu_multi(ins, outs);
      for (size_t k = 0; k < outs.size(); ++k) slots[st.outputs[k]] = std::move(outs[k]);
    } else {
      for (int in : st.inputs) ins.push_back(slots[in]);
      const Node& n = plan.nodes[st.outputs[0]];
      Array out;
      out.shape = n.shape;
      out.dtype = n.dtype;
      st.primitive->eval_cpu(ins, out);
      AXLEARN_CHECK(out.defined(), st.primitive->name(), " produced no data");
      AXLEARN_CHECK(out.shape == n.shape && out.dtype == n.dtype, st.primitive->name(),
                    " produced the wrong shape or dtype");
      slots[st.outputs[0]] = std::move(out);
    }
    ins.clear();
    for (int v : st.release) slots[v] = Array();
  }
  std::vector<Tensor> result;
  std::unordered_map<int, Tensor> made;
  for (size_t k = 0; k < plan.outputs.size(); ++k) {
    const int o = plan.outputs[k];
    const Node& n = plan.nodes[o];
    const auto& sh = plan.out_shardings[k];
    if (n.kind == Node::Kind::kInput && (sh != nullptr) == inputs[n.input].is_sharded()) {
      result.push_back(inputs[n.input]);
      continue;
    }
    Tensor local;
    if (n.kind == Node::Kind::kInput) {
      local = inputs[n.input].local();
    } else {
      auto it = made.find(o);
      if (it == made.end()) it = made.emplace(o, Tensor(slots[o])).first;
      local = it->second;
    }
    result.push_back(sh ? Tensor::make_sharded(local, plan.out_global_shapes[k], *sh) : local);
  }
  return result;
}

std::string plan_string(const Plan& plan) {
  std::ostringstream os;
  auto name = [&](int v) {
    const Node& n = plan.nodes[v];
    std::ostringstream s;
    if (n.kind == Node::Kind::kInput) {
      s << "in" << n.input;
    } else if (n.kind == Node::Kind::kConstant) {
      s << "const" << v;
    } else {
      s << "%" << v;
    }
    return s.str();
  };
  for (const Step& st : plan.steps) {
    for (size_t k = 0; k < st.outputs.size(); ++k) os << (k ? ", " : "") << name(st.outputs[k]);
    os << " = ";
    st.primitive->print(os);
    os << "(";
    for (size_t k = 0; k < st.inputs.size(); ++k) os << (k ? ", " : "") << name(st.inputs[k]);
    os << ")\n";
  }
  os << "return ";
  for (size_t k = 0; k < plan.outputs.size(); ++k) os << (k ? ", " : "") << name(plan.outputs[k]);
  return os.str();
}

bool any_traced(const std::vector<Tensor>& inputs) {
  for (const Tensor& t : inputs) {
    if (t.defined() && t.is_tracer()) return true;
  }
  return false;
}

void structure_of(const NestedTensor& t, std::string& s) {
  if (t.is_leaf()) {
    s += '*';
    return;
  }
  s += '{';
  for (const auto& [k, v] : t.dict()) {
    s += k;
    s += ':';
    structure_of(v, s);
    s += ',';
  }
  s += '}';
}

}  // namespace

// ------------------------------------------------------------------ the cache

namespace {

class PlanCache {
 public:
  // The plan for these inputs, tracing on a new signature; null when the call must run fn inline
  // (fn captured a tensor that an outer transform is tracing).
  std::shared_ptr<const Plan> plan_for(const std::vector<Tensor>& inputs,
                                       const std::string& structure, const TraceFn& trace) {
    const std::string sig = signature_of(inputs, structure);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = plans_.find(sig);
    if (it != plans_.end()) return it->second;
    std::shared_ptr<Plan> plan = build_plan(trace, inputs, sig);
    if (!plan) return nullptr;
    ++num_traces_;
    last_ = plan->stats;
    last_plan_ = plan;
    plans_.emplace(sig, plan);
    return plan;
  }
  int num_traces() const {
    std::lock_guard<std::mutex> lock(mu_);
    return num_traces_;
  }
  PlanStats last_stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }
  std::string last_plan_string() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_plan_ ? plan_string(*last_plan_) : "";
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const Plan>> plans_;
  int num_traces_ = 0;
  PlanStats last_;
  std::shared_ptr<const Plan> last_plan_;
};

}  // namespace

struct CompiledFunction::Impl {
  VectorFn fn;
  PlanCache cache;
};

CompiledFunction::CompiledFunction(VectorFn fn) : impl_(std::make_shared<Impl>()) {
  impl_->fn = std::move(fn);
}

std::vector<Tensor> CompiledFunction::operator()(const std::vector<Tensor>& inputs) const {
  const VectorFn& fn = impl_->fn;
  if (any_traced(inputs)) return fn(inputs);
  auto plan = impl_->cache.plan_for(
      inputs, "", [&](const std::vector<Tensor>& ph, NestedTensor*) { return fn(ph); });
  if (!plan) return fn(inputs);
  return run_plan(*plan, inputs);
}

int CompiledFunction::num_traces() const { return impl_->cache.num_traces(); }

PlanStats CompiledFunction::last_plan_stats() const { return impl_->cache.last_stats(); }

std::string CompiledFunction::last_plan_string() const { return impl_->cache.last_plan_string(); }

CompiledFn compile(VectorFn fn) {
  CompiledFunction f(std::move(fn));
  return [f](const std::vector<Tensor>& inputs) { return f(inputs); };
}

NestedFn compile(NestedFn fn) {
  auto cache = std::make_shared<PlanCache>();
  return [cache, fn = std::move(fn)](const NestedTensor& tree) -> NestedTensor {
    std::vector<Tensor> leaves = tree.leaves();
    if (any_traced(leaves)) return fn(tree);
    std::string structure;
    structure_of(tree, structure);
    auto plan = cache->plan_for(leaves, structure,
                                [&](const std::vector<Tensor>& ph, NestedTensor* skeleton) {
                                  NestedTensor out = fn(tree.unflatten(ph));
                                  *skeleton = out.map([](const Tensor&) { return Tensor(); });
                                  return out.leaves();
                                });
    if (!plan) return fn(tree);
    return plan->out_skeleton.unflatten(run_plan(*plan, leaves));
  };
}

}  // namespace axlearn
