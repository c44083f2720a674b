// How a Tensor is laid out over a device mesh (GSPMD's model): `Mesh` (axis sizes and names over
// the devices of one SPMD program), `Sharding` (per tensor dimension, the mesh axes it is split
// over, plus the axes over which the per-device values are still partial sums), and the hook
// through which axlearn/dist partitions an op whose inputs are sharded. The partitioner itself,
// the collectives and the device runtimes live in axlearn/dist.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "axlearn/core/shape.h"

namespace axlearn {

struct Array;
class Primitive;
class Tensor;
struct TensorNode;

// Devices 0 .. size()-1 laid out row-major over `shape`, one name per axis.
struct Mesh {
  std::vector<int64_t> shape;
  std::vector<std::string> axis_names;

  int64_t size() const;
  int ndim() const { return int(shape.size()); }
  // Index of the axis called `name`, or -1.
  int axis_index(const std::string& name) const;
  // Coordinates of device `rank` (row-major).
  std::vector<int64_t> coords(int64_t rank) const;
  bool operator==(const Mesh&) const = default;
  // "(data=2, model=2)".
  std::string str() const;
};

// Sharding of one tensor on a mesh. dims[d] lists the mesh axes (indices) dimension d is split
// over, major to minor; an empty list keeps the dimension whole. Device r holds block
// shard_index(d, r) of each dimension. `partial` lists mesh axes over which the per-device
// values still have to be summed to give the tensor (a matmul over a split contracting
// dimension leaves its result so until something needs the sum).
struct Sharding {
  Mesh mesh;
  std::vector<std::vector<int>> dims;
  std::vector<int> partial;  // sorted

  // All dimensions whole, nothing partial: every device holds the full tensor.
  static Sharding replicated(Mesh mesh, int ndim);
  bool is_replicated() const;
  // Number of blocks dimension d is split into.
  int64_t num_shards(int d) const;
  // Which block of dimension d device `rank` holds.
  int64_t shard_index(int d, int64_t rank) const;
  // Per-device shape of a tensor of `global` shape; Error naming the shape when a dimension is
  // not divisible by its number of shards.
  Shape local_shape(const Shape& global) const;
  // Mesh axes used by any dimension.
  std::vector<int> used_axes() const;
  bool operator==(const Sharding&) const = default;
  // "PartitionSpec(('data', 'fsdp'), None, 'model')" plus " partial(model)" when partial.
  std::string str() const;
};

// The device the SPMD program on this thread runs as (one thread per virtual device, or one
// process per device under MPI); 0 when nothing set it. Plans traced by compile() are per device.
int64_t current_device_rank();

namespace detail {
// Installed by axlearn/dist. `apply` records `primitive` on inputs at least one of which is
// sharded and returns the sharded result; `gather` returns the full value of a sharded tensor
// (a collective: every device of the mesh must call it).
struct ShardingHooks {
  Tensor (*apply)(std::shared_ptr<const Primitive> primitive, std::vector<Tensor> inputs) = nullptr;
  Array (*gather)(const Tensor& t) = nullptr;
};
void set_sharding_hooks(const ShardingHooks& hooks);
const ShardingHooks& sharding_hooks();
// Sets this thread's device rank (axlearn/dist's device runtimes call it).
void set_current_device_rank(int64_t rank);
}  // namespace detail

}  // namespace axlearn
