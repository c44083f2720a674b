#include "axlearn/dist/collectives.h"

#include <algorithm>
#include <cstring>
#include <ostream>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/tensor.h"

namespace axlearn::dist {

std::vector<int64_t> mesh_group(const Mesh& mesh, const std::vector<int>& axes, int64_t rank) {
  const std::vector<int64_t> me = mesh.coords(rank);
  const int64_t n = group_size(mesh, axes);
  std::vector<int64_t> group(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    std::vector<int64_t> c = me;
    int64_t rem = k;
    for (int i = int(axes.size()) - 1; i >= 0; --i) {
      const int a = axes[size_t(i)];
      c[size_t(a)] = rem % mesh.shape[size_t(a)];
      rem /= mesh.shape[size_t(a)];
    }
    int64_t r = 0;
    for (size_t a = 0; a < c.size(); ++a) r = r * mesh.shape[a] + c[a];
    group[size_t(k)] = r;
  }
  return group;
}

int64_t group_size(const Mesh& mesh, const std::vector<int>& axes) {
  int64_t n = 1;
  for (int a : axes) n *= mesh.shape[size_t(a)];
  return n;
}

namespace {

void check_axes(const char* op, const Mesh& mesh, const std::vector<int>& axes) {
  for (int a : axes) {
    if (a < 0 || a >= mesh.ndim())
      fail(op, ": mesh axis ", a, " is not an axis of mesh ", mesh.str());
    if (std::count(axes.begin(), axes.end(), a) > 1) fail(op, ": mesh axis ", a, " given twice");
  }
}

int check_dim(const char* op, const Tensor& x, int dim) {
  if (dim < -x.ndim() || dim >= x.ndim()) {
    fail(op, ": dimension ", dim, " out of range for shape ", shape_str(x.shape()));
  }
  return dim < 0 ? dim + x.ndim() : dim;
}

void check_local(const char* op, const Tensor& x) {
  if (x.is_sharded()) {
    fail(op, " takes a per-device tensor, but got one sharded as ", x.sharding()->str(),
         "; use with_sharding_constraint on global tensors, or x.local()");
  }
}

// Splits a row-major array along `dim` into k equal blocks laid out one after another.
std::vector<char> pack_blocks(const Array& x, int dim, int64_t k) {
  Array a = contiguous(x);
  const size_t es = size_of(a.dtype);
  int64_t pre = 1, post = 1;
  for (int d = 0; d < dim; ++d) pre *= a.shape[size_t(d)];
  for (int d = dim + 1; d < a.ndim(); ++d) post *= a.shape[size_t(d)];
  const int64_t len = a.shape[size_t(dim)] / k;
  std::vector<char> buf(a.nbytes());
  const char* src = static_cast<const char*>(a.raw());
  const size_t row = size_t(len * post) * es;
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t p = 0; p < pre; ++p) {
      std::memcpy(
          buf.data() + size_t(j * pre + p) * row,
          src + (size_t(p) * size_t(a.shape[size_t(dim)] * post) + size_t(j * len * post)) * es,
          row);
    }
  }
  return buf;
}

// Inverse of pack_blocks: k blocks of `block` shape one after another, joined along `dim`.
Array unpack_blocks(const char* buf, const Shape& block, Dtype dtype, int dim, int64_t k) {
  Shape shape = block;
  shape[size_t(dim)] *= k;
  Array out = Array::empty(shape, dtype);
  const size_t es = size_of(dtype);
  int64_t pre = 1, post = 1;
  for (int d = 0; d < dim; ++d) pre *= block[size_t(d)];
  for (size_t d = size_t(dim) + 1; d < block.size(); ++d) post *= block[d];
  const int64_t len = block[size_t(dim)];
  const size_t row = size_t(len * post) * es;
  char* dst = static_cast<char*>(out.raw());
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t p = 0; p < pre; ++p) {
      std::memcpy(dst + (size_t(p) * size_t(k * len * post) + size_t(j * len * post)) * es,
                  buf + size_t(j * pre + p) * row, row);
    }
  }
  return out;
}

}  // namespace

namespace {
thread_local std::map<std::string, CommStats> stats;
}  // namespace

std::map<std::string, CommStats> comm_stats() { return stats; }
void reset_comm_stats() { stats.clear(); }

void CollectiveBase::record(double bytes) const {
  CommStats& s = stats[name()];
  ++s.calls;
  s.bytes += bytes;
}

bool CollectiveBase::equals(const Primitive& o) const {
  if (typeid(*this) != typeid(o)) return false;
  const auto& c = static_cast<const CollectiveBase&>(o);
  return mesh_ == c.mesh_ && axes_ == c.axes_;
}

void CollectiveBase::print(std::ostream& os) const {
  os << name() << "[";
  for (size_t i = 0; i < axes_.size(); ++i) {
    os << (i ? "," : "") << mesh_.axis_names[size_t(axes_[i])];
  }
  os << "]";
}

std::vector<int64_t> CollectiveBase::group() const {
  return mesh_group(mesh_, axes_, current_device_rank());
}

Communicator& CollectiveBase::comm() const {
  Communicator* c = current_communicator();
  if (!c) {
    fail(name(), " over mesh ", mesh_.str(),
         " outside a multi-device run (start it with --devices=N or under mpirun)");
  }
  if (c->size() != mesh_.size()) {
    fail(name(), ": mesh ", mesh_.str(), " has ", mesh_.size(), " devices but this run has ",
         c->size());
  }
  return *c;
}

// ------------------------------------------------------------------ all_reduce

OutputSpec AllReduce::infer(const std::vector<Tensor>& in) const {
  return {in[0].shape(), in[0].dtype()};
}

void AllReduce::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array x = contiguous(in[0]);
  out = Array::empty(out.shape, out.dtype);
  const auto g = group();
  if (g.size() == 1) {
    std::memcpy(out.raw(), x.raw(), x.nbytes());
    return;
  }
  comm().all_reduce(x.raw(), out.raw(), x.size(), x.dtype, op_, g);
  record(2.0 * double(g.size() - 1) / double(g.size()) * double(x.nbytes()));
}

std::vector<Tensor> AllReduce::vjp(const std::vector<Tensor>&, const Tensor&,
                                   const Tensor& ct) const {
  if (op_ != ReduceKind::kSum)
    fail("all_reduce(", reduce_kind_name(op_), ") is not differentiable");
  return {all_reduce(ct, mesh_, axes_, ReduceKind::kSum)};
}

bool AllReduce::equals(const Primitive& o) const {
  return CollectiveBase::equals(o) && static_cast<const AllReduce&>(o).op_ == op_;
}

// ------------------------------------------------------------------ all_gather

OutputSpec AllGather::infer(const std::vector<Tensor>& in) const {
  Shape s = in[0].shape();
  s[size_t(dim_)] *= group_size(mesh_, axes_);
  return {s, in[0].dtype()};
}

void AllGather::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array x = contiguous(in[0]);
  const auto g = group();
  const int64_t k = int64_t(g.size());
  std::vector<char> buf(x.nbytes() * size_t(k));
  if (k == 1) {
    std::memcpy(buf.data(), x.raw(), x.nbytes());
  } else {
    comm().all_gather(x.raw(), buf.data(), int64_t(x.nbytes()), g);
    record(double(k - 1) * double(x.nbytes()));
  }
  // The members' whole arrays one after another are exactly pack_blocks' layout.
  out = unpack_blocks(buf.data(), x.shape, x.dtype, dim_, k);
}

std::vector<Tensor> AllGather::vjp(const std::vector<Tensor>&, const Tensor&,
                                   const Tensor& ct) const {
  return {reduce_scatter(ct, mesh_, axes_, dim_)};
}

bool AllGather::equals(const Primitive& o) const {
  return CollectiveBase::equals(o) && static_cast<const AllGather&>(o).dim_ == dim_;
}

// ------------------------------------------------------------------ reduce_scatter

OutputSpec ReduceScatter::infer(const std::vector<Tensor>& in) const {
  Shape s = in[0].shape();
  const int64_t k = group_size(mesh_, axes_);
  if (s[size_t(dim_)] % k != 0) {
    fail("reduce_scatter: dimension ", dim_, " of shape ", shape_str(s),
         " is not divisible by the group size ", k);
  }
  s[size_t(dim_)] /= k;
  return {s, in[0].dtype()};
}

void ReduceScatter::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const auto g = group();
  const int64_t k = int64_t(g.size());
  std::vector<char> packed = pack_blocks(in[0], dim_, k);
  out = Array::empty(out.shape, out.dtype);
  if (k == 1) {
    std::memcpy(out.raw(), packed.data(), out.nbytes());
    return;
  }
  comm().reduce_scatter(packed.data(), out.raw(), in[0].size(), in[0].dtype, g);
  record(double(k - 1) / double(k) * double(in[0].nbytes()));
}

std::vector<Tensor> ReduceScatter::vjp(const std::vector<Tensor>&, const Tensor&,
                                       const Tensor& ct) const {
  return {all_gather(ct, mesh_, axes_, dim_)};
}

bool ReduceScatter::equals(const Primitive& o) const {
  return CollectiveBase::equals(o) && static_cast<const ReduceScatter&>(o).dim_ == dim_;
}

// ------------------------------------------------------------------ all_to_all

OutputSpec AllToAll::infer(const std::vector<Tensor>& in) const {
  Shape s = in[0].shape();
  const int64_t k = group_size(mesh_, axes_);
  if (s[size_t(split_dim_)] % k != 0) {
    fail("all_to_all: dimension ", split_dim_, " of shape ", shape_str(s),
         " is not divisible by the group size ", k);
  }
  s[size_t(split_dim_)] /= k;
  s[size_t(concat_dim_)] *= k;
  return {s, in[0].dtype()};
}

void AllToAll::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const auto g = group();
  const int64_t k = int64_t(g.size());
  std::vector<char> packed = pack_blocks(in[0], split_dim_, k);
  std::vector<char> recv(packed.size());
  if (k == 1) {
    recv = packed;
  } else {
    comm().all_to_all(packed.data(), recv.data(), int64_t(packed.size()) / k, g);
    record(double(k - 1) / double(k) * double(packed.size()));
  }
  Shape block = in[0].shape;
  block[size_t(split_dim_)] /= k;
  out = unpack_blocks(recv.data(), block, in[0].dtype, concat_dim_, k);
}

std::vector<Tensor> AllToAll::vjp(const std::vector<Tensor>&, const Tensor&,
                                  const Tensor& ct) const {
  return {all_to_all(ct, mesh_, axes_, concat_dim_, split_dim_)};
}

bool AllToAll::equals(const Primitive& o) const {
  const auto* p = dynamic_cast<const AllToAll*>(&o);
  return CollectiveBase::equals(o) && p->split_dim_ == split_dim_ && p->concat_dim_ == concat_dim_;
}

// ------------------------------------------------------------------ permute

OutputSpec Permute::infer(const std::vector<Tensor>& in) const {
  return {in[0].shape(), in[0].dtype()};
}

void Permute::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array x = contiguous(in[0]);
  const auto g = group();
  const int64_t rank = current_device_rank();
  int64_t me = 0;
  while (g[size_t(me)] != rank) ++me;
  int64_t dst = -1, src = -1;
  for (const auto& [s, d] : pairs_) {
    if (s == me) dst = g[size_t(d)];
    if (d == me) src = g[size_t(s)];
  }
  out = Array::empty(out.shape, out.dtype);
  std::memset(out.raw(), 0, out.nbytes());
  if (g.size() == 1) {
    if (src >= 0) std::memcpy(out.raw(), x.raw(), x.nbytes());
    return;
  }
  comm().send_recv(x.raw(), dst, out.raw(), src, int64_t(x.nbytes()), g);
  if (src >= 0) record(double(x.nbytes()));
}

std::vector<Tensor> Permute::vjp(const std::vector<Tensor>&, const Tensor&,
                                 const Tensor& ct) const {
  std::vector<std::pair<int64_t, int64_t>> inverse;
  for (const auto& [s, d] : pairs_) inverse.emplace_back(d, s);
  return {permute(ct, mesh_, axes_, std::move(inverse))};
}

bool Permute::equals(const Primitive& o) const {
  return CollectiveBase::equals(o) && static_cast<const Permute&>(o).pairs_ == pairs_;
}

// ------------------------------------------------------------------ functions

double max_over_devices(const Mesh& mesh, double value) {
  std::vector<int> axes(size_t(mesh.ndim()));
  for (int a = 0; a < mesh.ndim(); ++a) axes[size_t(a)] = a;
  return all_reduce(scalar(value, float64), mesh, axes, ReduceKind::kMax).item<double>();
}

Tensor all_reduce(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes, ReduceKind op) {
  check_local("all_reduce", x);
  check_axes("all_reduce", mesh, axes);
  return Tensor::make(std::make_shared<AllReduce>(mesh, axes, op), {x});
}

Tensor all_gather(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes, int dim) {
  check_local("all_gather", x);
  check_axes("all_gather", mesh, axes);
  dim = check_dim("all_gather", x, dim);
  return Tensor::make(std::make_shared<AllGather>(mesh, axes, dim), {x});
}

Tensor reduce_scatter(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes, int dim) {
  check_local("reduce_scatter", x);
  check_axes("reduce_scatter", mesh, axes);
  dim = check_dim("reduce_scatter", x, dim);
  return Tensor::make(std::make_shared<ReduceScatter>(mesh, axes, dim), {x});
}

Tensor all_to_all(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes, int split_dim,
                  int concat_dim) {
  check_local("all_to_all", x);
  check_axes("all_to_all", mesh, axes);
  split_dim = check_dim("all_to_all", x, split_dim);
  concat_dim = check_dim("all_to_all", x, concat_dim);
  return Tensor::make(std::make_shared<AllToAll>(mesh, axes, split_dim, concat_dim), {x});
}

Tensor permute(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes,
               std::vector<std::pair<int64_t, int64_t>> pairs) {
  check_local("permute", x);
  check_axes("permute", mesh, axes);
  const int64_t n = group_size(mesh, axes);
  std::vector<int> sends(size_t(n), 0), recvs(size_t(n), 0);
  for (const auto& [s, d] : pairs) {
    if (s < 0 || s >= n || d < 0 || d >= n) {
      fail("permute: pair (", s, ", ", d, ") outside the group of ", n, " devices");
    }
    if (sends[size_t(s)]++ || recvs[size_t(d)]++) {
      fail("permute: device ", s, " sends or device ", d, " receives more than once");
    }
  }
  return Tensor::make(std::make_shared<Permute>(mesh, axes, std::move(pairs)), {x});
}

}  // namespace axlearn::dist
