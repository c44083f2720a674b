// Collectives as primitives of the per-device graph: each runs on this device's block and talks to
// the devices that differ from it only along the given mesh axes (its group). They have VJPs, so
// a program written per device (or the partitioner's output) differentiates like any other.
// The VJPs follow the per-device convention: the objective is the sum of every device's own
// objective, so the VJP of all_gather is reduce_scatter, of all_reduce(sum) is all_reduce(sum).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/core/primitive.h"
#include "axlearn/core/sharding.h"
#include "axlearn/dist/communicator.h"

namespace axlearn::dist {

// The world ranks of `rank`'s group along mesh axes `axes` (major to minor), in the order in
// which a dimension split over those axes lays out its blocks.
std::vector<int64_t> mesh_group(const Mesh& mesh, const std::vector<int>& axes, int64_t rank);
int64_t group_size(const Mesh& mesh, const std::vector<int>& axes);

// The largest of every device's `value` (a scalar all_reduce over all mesh axes): how devices
// agree on a flag, e.g. that one of them failed or saw a signal.
double max_over_devices(const Mesh& mesh, double value);

// Sum (or max / min) over the group; every member gets the result.
Tensor all_reduce(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes,
                  ReduceKind op = ReduceKind::kSum);
// The members' blocks concatenated along `dim` in group order.
Tensor all_gather(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes, int dim);
// Block k (of dimension `dim`, split group-size ways) of the group's sum goes to member k.
Tensor reduce_scatter(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes, int dim);
// Splits `split_dim` into group-size blocks, sends block j to member j, and concatenates what
// arrives along `concat_dim` in group order.
Tensor all_to_all(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes, int split_dim,
                  int concat_dim);
// Member pairs[i].first sends its block to member pairs[i].second (indices within the group);
// members that receive nothing get zeros.
Tensor permute(const Tensor& x, const Mesh& mesh, const std::vector<int>& axes,
               std::vector<std::pair<int64_t, int64_t>> pairs);

// Traffic of the collectives this device ran since the last reset, per collective name. `bytes`
// is what one device receives with the bandwidth-optimal (ring) algorithms, for an n-byte
// buffer over k devices: all_gather and reduce_scatter (k-1)/k n, all_reduce 2 (k-1)/k n,
// all_to_all (k-1)/k n, permute n.
struct CommStats {
  int64_t calls = 0;
  double bytes = 0;
};
std::map<std::string, CommStats> comm_stats();
void reset_comm_stats();

class CollectiveBase : public Primitive {
 public:
  CollectiveBase(Mesh mesh, std::vector<int> axes)
      : mesh_(std::move(mesh)), axes_(std::move(axes)) {}
  const Mesh& mesh() const { return mesh_; }
  const std::vector<int>& axes() const { return axes_; }
  bool equals(const Primitive& o) const override;
  void print(std::ostream& os) const override;

 protected:
  std::vector<int64_t> group() const;
  Communicator& comm() const;
  // Adds one call moving `bytes` (per device, see CommStats) to this device's statistics.
  void record(double bytes) const;
  Mesh mesh_;
  std::vector<int> axes_;
};

class AllReduce : public CollectiveBase {
 public:
  AllReduce(Mesh mesh, std::vector<int> axes, ReduceKind op)
      : CollectiveBase(std::move(mesh), std::move(axes)), op_(op) {}
  const char* name() const override { return "all_reduce"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;

 private:
  ReduceKind op_;
};

class AllGather : public CollectiveBase {
 public:
  AllGather(Mesh mesh, std::vector<int> axes, int dim)
      : CollectiveBase(std::move(mesh), std::move(axes)), dim_(dim) {}
  const char* name() const override { return "all_gather"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;

 private:
  int dim_;
};

class ReduceScatter : public CollectiveBase {
 public:
  ReduceScatter(Mesh mesh, std::vector<int> axes, int dim)
      : CollectiveBase(std::move(mesh), std::move(axes)), dim_(dim) {}
  const char* name() const override { return "reduce_scatter"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;

 private:
  int dim_;
};

class AllToAll : public CollectiveBase {
 public:
  AllToAll(Mesh mesh, std::vector<int> axes, int split_dim, int concat_dim)
      : CollectiveBase(std::move(mesh), std::move(axes)),
        split_dim_(split_dim),
        concat_dim_(concat_dim) {}
  const char* name() const override { return "all_to_all"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;

 private:
  int split_dim_, concat_dim_;
};

class Permute : public CollectiveBase {
 public:
  Permute(Mesh mesh, std::vector<int> axes, std::vector<std::pair<int64_t, int64_t>> pairs)
      : CollectiveBase(std::move(mesh), std::move(axes)), pairs_(std::move(pairs)) {}
  const char* name() const override { return "permute"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;

 private:
  std::vector<std::pair<int64_t, int64_t>> pairs_;
};

}  // namespace axlearn::dist
