// The partitioner: records an op on sharded inputs as its per-device op on per-device blocks.
//
// Most primitives are described by a factor rule (as in GSPMD and Shardy): every dimension of
// every operand and of the result is labelled with a factor; dimensions with the same factor
// must be split the same way; factors absent from the result are contracted (sum, max or min)
// and leave the result partial, or reduced across devices. The partitioner picks a split per
// factor from the inputs' current shardings (result factors first, then contracted ones, each
// mesh axis used once), moves every input to the layout that choice needs (all_gather to drop
// axes, a local slice to add them, reduce_scatter or all_reduce to settle partial sums), and runs
// the primitive on the blocks. Ops without a rule run replicated: correct, but every device does
// the whole op.
#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>
#include <optional>
#include <sstream>

#include "axlearn/core/attention.h"
#include "axlearn/core/cross_entropy.h"
#include "axlearn/core/norm.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/primitives.h"
#include "axlearn/core/random.h"
#include "axlearn/dist/collectives.h"
#include "axlearn/dist/sharding.h"

namespace axlearn::dist {

namespace {

// ------------------------------------------------------------------ layout changes

bool contains(const std::vector<int>& v, int a) {
  return std::find(v.begin(), v.end(), a) != v.end();
}

int64_t axes_size(const Mesh& mesh, const std::vector<int>& axes) {
  int64_t n = 1;
  for (int a : axes) n *= mesh.shape[size_t(a)];
  return n;
}

// Moves this device's block `local` of a tensor of global `shape` from layout `from` to `to`.
Tensor redistribute(Tensor local, const Shape& shape, Sharding from, const Sharding& to) {
  const Mesh& mesh = from.mesh;
  for (int a : to.partial) {
    AXLEARN_CHECK(contains(from.partial, a), "redistribute cannot create partial sums");
  }
  // Partial sums first: a reduce_scatter where the target splits a dimension next over that axis,
  // otherwise one all_reduce over the rest.
  std::vector<int> reduce_axes;
  for (int a : from.partial) {
    if (contains(to.partial, a)) continue;
    bool scattered = false;
    for (size_t d = 0; d < shape.size() && !scattered; ++d) {
      auto& cur = from.dims[d];
      const auto& tgt = to.dims[d];
      if (tgt.size() > cur.size() && std::equal(cur.begin(), cur.end(), tgt.begin()) &&
          tgt[cur.size()] == a) {
        local = reduce_scatter(local, mesh, {a}, int(d));
        cur.push_back(a);
        scattered = true;
      }
    }
    if (!scattered) reduce_axes.push_back(a);
  }
  if (!reduce_axes.empty()) local = all_reduce(local, mesh, reduce_axes, ReduceKind::kSum);
  from.partial = to.partial;
  // Then every axis the target does not keep is gathered, and only then are new axes sliced
  // (an axis may move from one dimension to another).
  std::vector<size_t> prefix(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    auto& cur = from.dims[d];
    const auto& tgt = to.dims[d];
    size_t p = 0;
    while (p < cur.size() && p < tgt.size() && cur[p] == tgt[p]) ++p;
    if (p < cur.size()) {
      local = all_gather(local, mesh, std::vector<int>(cur.begin() + long(p), cur.end()), int(d));
      cur.resize(p);
    }
    prefix[d] = p;
  }
  for (size_t d = 0; d < shape.size(); ++d) {
    const auto& tgt = to.dims[d];
    if (tgt.size() == prefix[d]) continue;
    const std::vector<int> extra(tgt.begin() + long(prefix[d]), tgt.end());
    const int64_t n = axes_size(mesh, extra);
    const int64_t len = local.shape(int(d)) / n;
    const int64_t idx = block_index(mesh, extra);
    local = slice_axis(local, int(d), idx * len, (idx + 1) * len);
  }
  return local;
}

// ------------------------------------------------------------------ sharding_constraint

class ShardingConstraint : public Primitive {
 public:
  explicit ShardingConstraint(Sharding s) : s_(std::move(s)) {}
  const char* name() const override { return "sharding_constraint"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override {
    s_.local_shape(in[0].shape());  // checks rank and divisibility
    return {in[0].shape(), in[0].dtype()};
  }
  void eval_cpu(const std::vector<Array>& in, Array& out) const override { out = in[0]; }
  std::vector<Tensor> vjp(const std::vector<Tensor>&, const Tensor&,
                          const Tensor& ct) const override {
    return {with_sharding_constraint(ct, s_)};
  }
  bool equals(const Primitive& o) const override {
    return typeid(o) == typeid(*this) && static_cast<const ShardingConstraint&>(o).s_ == s_;
  }
  void print(std::ostream& os) const override { os << name() << "[" << s_.str() << "]"; }
  const Sharding& sharding() const { return s_; }

 private:
  Sharding s_;
};

// ------------------------------------------------------------------ rules

enum class FactorKind : uint8_t { kPass, kSum, kMax, kMin, kWhole };
// How partial-sum inputs may flow through: not at all (settled first), when every input is
// partial over the same axes (linear ops: add, transpose, reduce_sum), or when exactly one is
// (bilinear ops: dot_general).
enum class PartialMode : uint8_t { kNone, kLinear, kBilinear };

struct FactorRule {
  std::vector<std::vector<int>> in;  // per input, per dimension: factor or -1 (kept whole)
  std::vector<int> out;              // per result dimension
  std::vector<int64_t> size;         // per factor
  std::vector<FactorKind> kind;      // per factor
  PartialMode partial = PartialMode::kNone;
  // The primitive for the per-device shapes; null: the op itself.
  std::function<std::shared_ptr<const Primitive>(const std::vector<Shape>&, const Shape&)> localize;
  // Adjusts the per-device inputs once the result's sharding is known.
  std::function<void(std::vector<Tensor>&, const Sharding& out)> adjust;

  int factor(int64_t sz, FactorKind k = FactorKind::kPass) {
    size.push_back(sz);
    kind.push_back(k);
    return int(size.size()) - 1;
  }
};

// One factor per dimension, shared by every input of the result's shape.
std::optional<FactorRule> elementwise_rule(const std::vector<Tensor>& in, const OutputSpec& os,
                                           PartialMode mode) {
  FactorRule r;
  for (int64_t s : os.shape) r.out.push_back(r.factor(s));
  for (const Tensor& t : in) {
    if (t.shape() == os.shape) {
      r.in.push_back(r.out);
    } else if (t.ndim() == 0) {
      r.in.push_back({});
    } else {
      return std::nullopt;
    }
  }
  r.partial = mode;
  return r;
}

bool is_float_convert(const Primitive& p, const std::vector<Tensor>& in) {
  const auto* c = dynamic_cast<const Convert*>(&p);
  return c && is_floating(c->dtype()) && is_floating(in[0].dtype());
}

std::optional<FactorRule> rule_for(const Primitive& p, const std::vector<Tensor>& in,
                                   const OutputSpec& os) {
  const std::string name = p.name();
  // Elementwise and shape-preserving ops.
  if (const auto* b = dynamic_cast<const Binary*>(&p)) {
    const bool linear = b->op() == BinaryOp::kAdd || b->op() == BinaryOp::kSub;
    return elementwise_rule(in, os, linear ? PartialMode::kLinear : PartialMode::kNone);
  }
  if (const auto* u = dynamic_cast<const Unary*>(&p)) {
    return elementwise_rule(in, os,
                            u->op() == UnaryOp::kNeg ? PartialMode::kLinear : PartialMode::kNone);
  }
  if (dynamic_cast<const Convert*>(&p)) {
    return elementwise_rule(in, os,
                            is_float_convert(p, in) ? PartialMode::kLinear : PartialMode::kNone);
  }
  if (const auto* bc = dynamic_cast<const BitcastConvert*>(&p)) {
    if (size_of(bc->dtype()) != size_of(in[0].dtype())) return std::nullopt;
    return elementwise_rule(in, os, PartialMode::kNone);
  }
  if (dynamic_cast<const StopGradient*>(&p) || name == "identity") {
    return elementwise_rule(in, os, PartialMode::kLinear);
  }
  if (dynamic_cast<const Select*>(&p) || p.is_elementwise()) {
    return elementwise_rule(in, os, PartialMode::kNone);
  }
  if (const auto* bd = dynamic_cast<const BroadcastInDim*>(&p)) {
    FactorRule r;
    for (int64_t s : os.shape) r.out.push_back(r.factor(s));
    std::vector<int> f(size_t(in[0].ndim()), -1);
    for (size_t i = 0; i < bd->dims().size(); ++i) {
      const int od = bd->dims()[i];
      if (in[0].shape(int(i)) == os.shape[size_t(od)]) f[i] = r.out[size_t(od)];
    }
    r.in.push_back(f);
    r.partial = PartialMode::kLinear;
    const std::vector<int> dims = bd->dims();
    r.localize = [dims](const std::vector<Shape>&, const Shape& out) {
      return std::make_shared<BroadcastInDim>(out, dims);
    };
    return r;
  }
  if (dynamic_cast<const Reshape*>(&p)) {
    // Dimensions regroup into runs with equal products ((B, T, N*H) -> (B, T, N, H)): the major
    // dimension of a run may stay split, and maps to the major dimension of the run it becomes.
    const Shape& a = in[0].shape();
    const Shape& b = os.shape;
    for (int64_t d : a) {
      if (d == 0) return std::nullopt;
    }
    FactorRule r;
    std::vector<int> fa(a.size(), -1), fb(b.size(), -1);
    size_t i = 0, j = 0;
    while (i < a.size() || j < b.size()) {
      if (i < a.size() && a[i] == 1 && (j >= b.size() || b[j] != 1)) {
        ++i;
        continue;
      }
      if (j < b.size() && b[j] == 1 && (i >= a.size() || a[i] != 1)) {
        ++j;
        continue;
      }
      if (i >= a.size() || j >= b.size()) return std::nullopt;
      const size_t i0 = i, j0 = j;
      int64_t pa = a[i++], pb = b[j++];
      while (pa != pb) {
        if (pa < pb) {
          if (i >= a.size()) return std::nullopt;
          pa *= a[i++];
        } else {
          if (j >= b.size()) return std::nullopt;
          pb *= b[j++];
        }
      }
      fa[i0] = fb[j0] = r.factor(std::gcd(a[i0], b[j0]));
    }
    r.in.push_back(fa);
    r.out = fb;
    r.partial = PartialMode::kLinear;
    r.localize = [](const std::vector<Shape>&, const Shape& out) {
      return std::make_shared<Reshape>(out);
    };
    return r;
  }
  if (const auto* tr = dynamic_cast<const Transpose*>(&p)) {
    FactorRule r;
    std::vector<int> f;
    for (int64_t s : in[0].shape()) f.push_back(r.factor(s));
    for (int d : tr->perm()) r.out.push_back(f[size_t(d)]);
    r.in.push_back(f);
    r.partial = PartialMode::kLinear;
    return r;
  }
  if (const auto* rd = dynamic_cast<const Reduce*>(&p)) {
    FactorKind k = FactorKind::kWhole;
    if (rd->op() == ReduceOp::kSum) k = FactorKind::kSum;
    if (rd->op() == ReduceOp::kMax) k = FactorKind::kMax;
    if (rd->op() == ReduceOp::kMin) k = FactorKind::kMin;
    FactorRule r;
    std::vector<int> f;
    for (int d = 0; d < in[0].ndim(); ++d) {
      const bool reduced = contains(rd->axes(), d);
      f.push_back(r.factor(in[0].shape(d), reduced ? k : FactorKind::kPass));
      if (!reduced) r.out.push_back(f.back());
    }
    r.in.push_back(f);
    r.partial = rd->op() == ReduceOp::kSum ? PartialMode::kLinear : PartialMode::kNone;
    return r;
  }
  if (const auto* ar = dynamic_cast<const ArgReduce*>(&p)) {
    if (int(os.shape.size()) != in[0].ndim() - 1) return std::nullopt;
    FactorRule r;
    std::vector<int> f;
    for (int d = 0; d < in[0].ndim(); ++d) {
      if (d == ar->axis()) {
        f.push_back(-1);
      } else {
        f.push_back(r.factor(in[0].shape(d)));
        r.out.push_back(f.back());
      }
    }
    r.in.push_back(f);
    return r;
  }
  if (const auto* dot = dynamic_cast<const DotGeneral*>(&p)) {
    const DotDimensions& dd = dot->dims();
    FactorRule r;
    std::vector<int> lf(size_t(in[0].ndim()), -2), rf(size_t(in[1].ndim()), -2);
    for (size_t i = 0; i < dd.lhs_batch.size(); ++i) {
      const int f = r.factor(in[0].shape(dd.lhs_batch[i]));
      lf[size_t(dd.lhs_batch[i])] = rf[size_t(dd.rhs_batch[i])] = f;
      r.out.push_back(f);
    }
    for (size_t i = 0; i < dd.lhs_contract.size(); ++i) {
      const int f = r.factor(in[0].shape(dd.lhs_contract[i]), FactorKind::kSum);
      lf[size_t(dd.lhs_contract[i])] = rf[size_t(dd.rhs_contract[i])] = f;
    }
    for (size_t d = 0; d < lf.size(); ++d) {
      if (lf[d] == -2) r.out.push_back(lf[d] = r.factor(in[0].shape(int(d))));
    }
    for (size_t d = 0; d < rf.size(); ++d) {
      if (rf[d] == -2) r.out.push_back(rf[d] = r.factor(in[1].shape(int(d))));
    }
    r.in = {lf, rf};
    r.partial = PartialMode::kBilinear;
    return r;
  }
  if (const auto* sm = dynamic_cast<const Softmax*>(&p)) {
    auto r = elementwise_rule(in, os, PartialMode::kNone);
    const int axis = sm->axis() < 0 ? sm->axis() + in[0].ndim() : sm->axis();
    r->in[0][size_t(axis)] = -1;
    r->out[size_t(axis)] = -1;
    return r;
  }
  if (const auto* sl = dynamic_cast<const Slice*>(&p)) {
    FactorRule r;
    std::vector<int> f;
    for (int d = 0; d < in[0].ndim(); ++d) {
      const bool whole = sl->start()[size_t(d)] == 0 && sl->limit()[size_t(d)] == in[0].shape(d) &&
                         (sl->strides().empty() || sl->strides()[size_t(d)] == 1);
      f.push_back(whole ? r.factor(in[0].shape(d)) : -1);
    }
    r.in.push_back(f);
    r.out = f;
    r.partial = PartialMode::kLinear;
    const Shape start = sl->start(), limit = sl->limit(), strides = sl->strides();
    r.localize = [start, limit, strides, f](const std::vector<Shape>& ins, const Shape&) {
      Shape lim = limit;
      for (size_t d = 0; d < f.size(); ++d) {
        if (f[d] >= 0) lim[d] = ins[0][d];
      }
      return std::make_shared<Slice>(start, lim, strides);
    };
    return r;
  }
  if (const auto* cc = dynamic_cast<const Concatenate*>(&p)) {
    auto r = elementwise_rule({}, os, PartialMode::kLinear);
    const int axis = cc->axis() < 0 ? cc->axis() + int(os.shape.size()) : cc->axis();
    r->out[size_t(axis)] = -1;
    for (size_t i = 0; i < in.size(); ++i) r->in.push_back(r->out);
    return r;
  }
  if (const auto* pd = dynamic_cast<const Pad*>(&p)) {
    FactorRule r;
    std::vector<int> f;
    for (int d = 0; d < in[0].ndim(); ++d) {
      const bool unpadded =
          pd->low()[size_t(d)] == 0 && pd->high()[size_t(d)] == 0 && pd->interior()[size_t(d)] == 0;
      f.push_back(unpadded ? r.factor(in[0].shape(d)) : -1);
    }
    r.in = {f, {}};
    r.out = f;
    return r;
  }
  if (const auto* g = dynamic_cast<const Gather*>(&p)) {
    const int axis = g->axis();
    FactorRule r;
    std::vector<int> of, idf;
    for (int d = 0; d < in[0].ndim(); ++d) of.push_back(d == axis ? -1 : r.factor(in[0].shape(d)));
    for (int d = 0; d < in[1].ndim(); ++d) idf.push_back(r.factor(in[1].shape(d)));
    for (int d = 0; d < axis; ++d) r.out.push_back(of[size_t(d)]);
    r.out.insert(r.out.end(), idf.begin(), idf.end());
    for (int d = axis + 1; d < in[0].ndim(); ++d) r.out.push_back(of[size_t(d)]);
    r.in = {of, idf};
    return r;
  }
  if (const auto* sc = dynamic_cast<const ScatterAdd*>(&p)) {
    // Updates summed over the index dimensions: a split there leaves partial sums, and the
    // operand is added once (by the first device of each group).
    const int axis = sc->axis();
    FactorRule r;
    std::vector<int> of, idf, uf;
    for (int d = 0; d < in[0].ndim(); ++d) of.push_back(d == axis ? -1 : r.factor(in[0].shape(d)));
    for (int d = 0; d < in[1].ndim(); ++d)
      idf.push_back(r.factor(in[1].shape(d), FactorKind::kSum));
    for (int d = 0; d < axis; ++d) uf.push_back(of[size_t(d)]);
    uf.insert(uf.end(), idf.begin(), idf.end());
    for (int d = axis + 1; d < in[0].ndim(); ++d) uf.push_back(of[size_t(d)]);
    r.in = {of, idf, uf};
    r.out = of;
    r.adjust = [](std::vector<Tensor>& locals, const Sharding& out) {
      // Zeros that still read the operand: its layout change may hold a collective that
      // every device must run.
      if (!out.partial.empty() && block_index(out.mesh, out.partial) != 0) {
        locals[0] = where(zeros(locals[0].shape(), bool_), locals[0], zeros_like(locals[0]));
      }
    };
    return r;
  }
  if (dynamic_cast<const Norm*>(&p)) {
    // Rows split freely; the normalised (last) axis and the (D,) scale and bias stay whole.
    auto r = elementwise_rule({}, os, PartialMode::kNone);
    r->out.back() = -1;
    r->in.push_back(r->out);
    for (size_t i = 1; i < in.size(); ++i) r->in.push_back({-1});
    return r;
  }
  if (dynamic_cast<const CrossEntropy*>(&p) || dynamic_cast<const CrossEntropyGrad*>(&p)) {
    // (logits (..., V), labels (...), [dloss (...)]): rows split, the vocabulary whole.
    FactorRule r;
    std::vector<int> rows;
    for (int64_t s : in[1].shape()) rows.push_back(r.factor(s));
    std::vector<int> lf = rows;
    lf.push_back(-1);
    r.in = {lf, rows};
    if (in.size() == 3) r.in.push_back(rows);
    r.out = os.shape.size() == rows.size() ? rows : lf;
    return r;
  }
  if (const auto* at = dynamic_cast<const Attention*>(&p)) {
    // Batch and heads split; sequences and head_dim whole (q head n reads kv head n / (N / K),
    // so an equal split of both head axes keeps every pair on one device).
    FactorRule r;
    const int b = r.factor(in[0].shape(0));
    const int h = r.factor(in[1].shape(2));
    r.in = {{b, -1, h, -1}, {b, -1, h, -1}, {b, -1, h, -1}};
    const AttentionAttrs& a = at->attrs();
    if (a.has_segments) {
      r.in.push_back({b, -1});
      r.in.push_back({b, -1});
    }
    if (a.has_mask) r.in.push_back({b, -1});
    r.out = {b, -1, h, -1};
    return r;
  }
  if (dynamic_cast<const AttentionGrad*>(&p)) {
    // Inputs as Attention's plus (out, dout); the packed result (B, K, G*T*H + 2*S*H) leads
    // with batch and kv heads, so it splits with them.
    FactorRule r;
    const int b = r.factor(in[0].shape(0));
    const int h = r.factor(in[1].shape(2));
    const std::vector<int> qkv = {b, -1, h, -1};
    r.in = {qkv, qkv, qkv};
    for (size_t i = 3; i + 2 < in.size(); ++i) r.in.push_back({b, -1});
    r.in.push_back(qkv);
    r.in.push_back(qkv);
    r.out = {b, h, -1};
    return r;
  }
  return std::nullopt;
}

// ------------------------------------------------------------------ decompositions

// Ops whose reduced axis is split across devices run as the same function composed from
// reductions, each of which combines across the devices, instead of gathering the axis.
std::optional<Tensor> decompose(const Primitive& p, const std::vector<Tensor>& in) {
  auto split_along = [](const Tensor& x, int a) {
    return x.is_sharded() && !x.sharding()->dims[size_t(a)].empty();
  };
  if (const auto* ce = dynamic_cast<const CrossEntropy*>(&p)) {
    if (split_along(in[0], in[0].ndim() - 1)) {
      return cross_entropy_loss_composed(in[0], in[1], ce->options());
    }
  }
  if (const auto* ar = dynamic_cast<const ArgReduce*>(&p)) {
    if (split_along(in[0], ar->axis())) {
      return arg_reduce_composed(in[0], ar->axis(), std::string(p.name()) == "argmax");
    }
  }
  return std::nullopt;
}

// ------------------------------------------------------------------ deciding a layout

struct Decision {
  std::vector<Sharding> in;
  Sharding out;
  std::vector<std::pair<std::vector<int>, ReduceKind>> post;  // all_reduce the result
  FactorRule rule;
  bool has_rule = false;
};

Decision decide(const Primitive& p, const std::vector<Tensor>& inputs,
                const std::vector<Sharding>& cur, const OutputSpec& os, const Mesh& mesh) {
  Decision dec;
  std::optional<FactorRule> rule = rule_for(p, inputs, os);
  if (!rule) {
    for (const Tensor& t : inputs) dec.in.push_back(Sharding::replicated(mesh, t.ndim()));
    dec.out = Sharding::replicated(mesh, int(os.shape.size()));
    return dec;
  }
  FactorRule& r = *rule;
  AXLEARN_CHECK(r.in.size() == inputs.size(), p.name(), ": rule arity");
  AXLEARN_CHECK(r.out.size() == os.shape.size(), p.name(), ": rule rank");

  // Partial sums that flow through.
  std::vector<int> pass_partial;
  {
    int n_partial = 0;
    bool same = true;
    const std::vector<int>* first = nullptr;
    for (const Sharding& s : cur) {
      if (s.partial.empty()) continue;
      ++n_partial;
      if (!first) first = &s.partial;
      same = same && s.partial == *first;
    }
    if (first && same &&
        ((r.partial == PartialMode::kLinear && n_partial == int(cur.size())) ||
         (r.partial == PartialMode::kBilinear && n_partial == 1))) {
      pass_partial = *first;
    }
  }

  std::vector<char> in_out(r.size.size(), 0);
  for (int f : r.out) {
    if (f >= 0) in_out[size_t(f)] = 1;
  }
  std::vector<std::vector<int>> assigned(r.size.size());
  std::vector<char> done(r.size.size(), 0);
  std::vector<int> used = pass_partial;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      for (size_t d = 0; d < r.in[i].size(); ++d) {
        const int f = r.in[i][d];
        if (f < 0 || done[size_t(f)] || bool(in_out[size_t(f)]) != (pass == 0)) continue;
        if (r.kind[size_t(f)] == FactorKind::kWhole) continue;
        const std::vector<int>& axes = cur[i].dims[d];
        if (axes.empty()) continue;
        bool free = true;
        for (int a : axes) free = free && !contains(used, a);
        if (!free || r.size[size_t(f)] % axes_size(mesh, axes) != 0) continue;
        assigned[size_t(f)] = axes;
        done[size_t(f)] = 1;
        used.insert(used.end(), axes.begin(), axes.end());
      }
    }
  }

  for (size_t i = 0; i < inputs.size(); ++i) {
    Sharding s = Sharding::replicated(mesh, inputs[i].ndim());
    for (size_t d = 0; d < r.in[i].size(); ++d) {
      if (r.in[i][d] >= 0) s.dims[d] = assigned[size_t(r.in[i][d])];
    }
    if (!pass_partial.empty() && !cur[i].partial.empty()) s.partial = pass_partial;
    dec.in.push_back(std::move(s));
  }
  dec.out = Sharding::replicated(mesh, int(os.shape.size()));
  for (size_t d = 0; d < r.out.size(); ++d) {
    if (r.out[d] >= 0) dec.out.dims[d] = assigned[size_t(r.out[d])];
  }
  std::vector<int> partial = pass_partial;
  for (size_t f = 0; f < r.size.size(); ++f) {
    if (in_out[f] || assigned[f].empty()) continue;
    switch (r.kind[f]) {
      case FactorKind::kSum:
        partial.insert(partial.end(), assigned[f].begin(), assigned[f].end());
        break;
      case FactorKind::kMax:
        dec.post.emplace_back(assigned[f], ReduceKind::kMax);
        break;
      case FactorKind::kMin:
        dec.post.emplace_back(assigned[f], ReduceKind::kMin);
        break;
      default:
        AXLEARN_CHECK(false, p.name(), ": split factor missing from the result");
    }
  }
  std::sort(partial.begin(), partial.end());
  dec.out.partial = partial;
  dec.rule = std::move(r);
  dec.has_rule = true;
  return dec;
}

// ------------------------------------------------------------------ the hooks

Tensor apply(std::shared_ptr<const Primitive> prim, std::vector<Tensor> inputs) {
  const Mesh* mesh = nullptr;
  for (const Tensor& t : inputs) {
    if (!t.defined() || !t.is_sharded()) continue;
    if (!mesh) {
      mesh = &t.sharding()->mesh;
    } else if (!(*mesh == t.sharding()->mesh)) {
      fail(prim->name(), ": inputs live on different meshes, ", mesh->str(), " and ",
           t.sharding()->mesh.str());
    }
  }
  AXLEARN_CHECK(mesh, "partitioner called without a sharded input");
  const Mesh mesh_copy = *mesh;
  if (dynamic_cast<const CollectiveBase*>(prim.get())) {
    fail(prim->name(), " takes per-device tensors; got a sharded one (use x.local())");
  }
  std::vector<Sharding> cur;
  std::vector<Tensor> locals;
  for (const Tensor& t : inputs) {
    cur.push_back(t.is_sharded() ? *t.sharding() : Sharding::replicated(mesh_copy, t.ndim()));
    locals.push_back(t.local());
  }
  if (const auto* c = dynamic_cast<const ShardingConstraint*>(prim.get())) {
    const Sharding target = c->sharding();
    if (!(target.mesh == mesh_copy)) {
      fail("with_sharding_constraint: target mesh ", target.mesh.str(),
           " differs from the tensor's ", mesh_copy.str());
    }
    prim->infer(inputs);
    Tensor local = redistribute(locals[0], inputs[0].shape(), cur[0], target);
    const Shape shape = inputs[0].shape();
    return Tensor::make_sharded(local, shape, target, std::move(prim), std::move(inputs));
  }
  if (std::optional<Tensor> d = decompose(*prim, inputs)) return *d;
  const OutputSpec os = prim->infer(inputs);
  Decision dec = decide(*prim, inputs, cur, os, mesh_copy);
  std::vector<Shape> local_shapes;
  for (size_t i = 0; i < inputs.size(); ++i) {
    locals[i] = redistribute(locals[i], inputs[i].shape(), cur[i], dec.in[i]);
    local_shapes.push_back(locals[i].shape());
  }
  const Shape local_out = dec.out.local_shape(os.shape);
  std::shared_ptr<const Primitive> local_prim = prim;
  if (dec.has_rule && dec.rule.localize) local_prim = dec.rule.localize(local_shapes, local_out);
  if (dec.has_rule && dec.rule.adjust) dec.rule.adjust(locals, dec.out);
  Tensor out = Tensor::make(local_prim, locals);
  for (const auto& [axes, kind] : dec.post) out = all_reduce(out, mesh_copy, axes, kind);
  AXLEARN_CHECK(out.shape() == local_out, prim->name(), ": per-device result ",
                shape_str(out.shape()), " but ", dec.out.str(), " of ", shape_str(os.shape),
                " needs ", shape_str(local_out));
  return Tensor::make_sharded(out, os.shape, dec.out, std::move(prim), std::move(inputs));
}

Array copy_array(const Array& a) {
  Array c = contiguous(a);
  Array out = Array::empty(c.shape, c.dtype);
  if (c.nbytes()) std::memcpy(out.raw(), c.raw(), c.nbytes());
  return out;
}

Array gather(const Tensor& t) {
  const Sharding& s = *t.sharding();
  Tensor full = redistribute(t.local(), t.shape(), s, Sharding::replicated(s.mesh, t.ndim()));
  return copy_array(full.array());
}

}  // namespace

// ------------------------------------------------------------------ public API

int64_t block_index(const Mesh& mesh, const std::vector<int>& axes) {
  const std::vector<int64_t> c = mesh.coords(current_device_rank());
  int64_t idx = 0;
  for (int a : axes) idx = idx * mesh.shape[size_t(a)] + c[size_t(a)];
  return idx;
}

Tensor from_local(const Tensor& local, const Shape& global, const Sharding& sharding) {
  install_partitioner();
  if (local.is_sharded()) fail("from_local: the block is itself sharded");
  const Shape want = sharding.local_shape(global);
  if (local.shape() != want) {
    fail("from_local: this device's block has shape ", shape_str(local.shape()), " but ",
         sharding.str(), " of ", shape_str(global), " on mesh ", sharding.mesh.str(), " needs ",
         shape_str(want));
  }
  return Tensor::make_sharded(local, global, sharding);
}

void install_partitioner() {
  static const bool installed = [] {
    axlearn::detail::ShardingHooks h;
    h.apply = &apply;
    h.gather = &gather;
    axlearn::detail::set_sharding_hooks(h);
    return true;
  }();
  (void)installed;
}

std::string partition_spec_str(const PartitionSpec& spec) {
  std::ostringstream os;
  os << "(";
  for (size_t d = 0; d < spec.size(); ++d) {
    os << (d ? ", " : "");
    if (spec[d].empty()) {
      os << "None";
    } else if (spec[d].size() == 1) {
      os << "'" << spec[d][0] << "'";
    } else {
      os << "(";
      for (size_t k = 0; k < spec[d].size(); ++k) os << (k ? ", " : "") << "'" << spec[d][k] << "'";
      os << ")";
    }
  }
  os << ")";
  return os.str();
}

Mesh make_mesh(std::vector<int64_t> shape, std::vector<std::string> axis_names,
               int64_t num_devices) {
  auto shape_text = [&] {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
    os << "]";
    return os.str();
  };
  if (shape.size() != axis_names.size()) {
    fail("mesh_shape ", shape_text(), " has ", shape.size(), " axes but mesh_axis_names has ",
         axis_names.size());
  }
  for (size_t i = 0; i < axis_names.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (axis_names[i] == axis_names[j])
        fail("mesh_axis_names: '", axis_names[i], "' appears twice");
    }
  }
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) fail("mesh_shape ", shape_text(), ": at most one axis may be -1");
      infer = int(i);
    } else if (shape[i] < 1) {
      fail("mesh_shape ", shape_text(), ": axis '", axis_names[i], "' has size ", shape[i]);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (num_devices % known != 0) {
      fail("mesh_shape ", shape_text(), ": ", num_devices, " devices are not divisible by ", known);
    }
    shape[size_t(infer)] = num_devices / known;
  }
  Mesh m{shape, axis_names};
  if (m.size() != num_devices) {
    fail("mesh_shape ", shape_text(), " needs ", m.size(), " devices but this run has ",
         num_devices, " (use --devices=N, or mpirun -np N)");
  }
  return m;
}

Sharding named_sharding(const Mesh& mesh, const PartitionSpec& spec, int ndim) {
  if (int(spec.size()) > ndim) {
    fail("partition spec ", partition_spec_str(spec), " has ", spec.size(),
         " entries for a tensor of rank ", ndim);
  }
  Sharding s = Sharding::replicated(mesh, ndim);
  std::vector<int> seen;
  for (size_t d = 0; d < spec.size(); ++d) {
    for (const std::string& name : spec[d]) {
      const int a = mesh.axis_index(name);
      if (a < 0) {
        fail("partition spec ", partition_spec_str(spec), ": '", name, "' is not an axis of mesh ",
             mesh.str());
      }
      if (contains(seen, a)) {
        fail("partition spec ", partition_spec_str(spec), ": mesh axis '", name, "' used twice");
      }
      seen.push_back(a);
      if (mesh.shape[size_t(a)] > 1) s.dims[d].push_back(a);
    }
  }
  return s;
}

Tensor with_sharding_constraint(const Tensor& x, const Sharding& sharding) {
  if (!x.is_sharded() && sharding.mesh.size() == 1) return x;
  if (!x.is_sharded()) return device_put(x, sharding);
  install_partitioner();
  return Tensor::make(std::make_shared<ShardingConstraint>(sharding), {x});
}

Tensor device_put(const Tensor& x, const Sharding& sharding) {
  install_partitioner();
  if (x.is_sharded()) return with_sharding_constraint(x, sharding);
  sharding.local_shape(x.shape());  // checks rank and divisibility
  const Sharding from = Sharding::replicated(sharding.mesh, x.ndim());
  if (!sharding.partial.empty()) fail("device_put: cannot place a tensor as partial sums");
  Tensor local = redistribute(x, x.shape(), from, sharding);
  if (x.is_tracer()) {
    return Tensor::make_sharded(local, x.shape(), sharding,
                                std::make_shared<ShardingConstraint>(sharding), {x});
  }
  if (x.is_placeholder()) fail("device_put: x is an abstract placeholder");
  // The block is copied so the full tensor can be freed.
  Tensor block(copy_array(local.array()));
  return Tensor::make_sharded(block, x.shape(), sharding);
}

Tensor replicate(const Tensor& x) {
  if (!x.is_sharded()) return x;
  return with_sharding_constraint(x, Sharding::replicated(x.sharding()->mesh, x.ndim()));
}

}  // namespace axlearn::dist
