// The global-view sharding API (GSPMD): build a Mesh, name how a tensor is split with a
// PartitionSpec, place tensors with device_put and steer activations with
// with_sharding_constraint. Ops on sharded tensors are partitioned as they are recorded: each
// primitive's sharding rule (partitioner.cc) picks the output's sharding and inserts the
// collectives its inputs need, so code written on global shapes runs unchanged on any mesh.
#pragma once

#include <string>
#include <vector>

#include "axlearn/core/sharding.h"
#include "axlearn/core/tensor.h"

namespace axlearn::dist {

// Per tensor dimension, the mesh axis names it is split over (empty: not split), as
// jax.sharding.PartitionSpec(None, 'model', ('data', 'fsdp')).
using PartitionSpec = std::vector<std::vector<std::string>>;
std::string partition_spec_str(const PartitionSpec& spec);

// A mesh of `num_devices` devices. One entry of `shape` may be -1 (inferred so the product is
// num_devices); Error when names and shape differ in length, names repeat, or the product does
// not match.
Mesh make_mesh(std::vector<int64_t> shape, std::vector<std::string> axis_names,
               int64_t num_devices);

// The Sharding of an `ndim`-dimensional tensor on `mesh` by `spec` (shorter specs are padded with
// None). Error naming the spec when it names an unknown axis or one axis twice. Axes of size 1
// are dropped (splitting by 1 is no split).
Sharding named_sharding(const Mesh& mesh, const PartitionSpec& spec, int ndim);

// x placed on the mesh as `sharding` (this device keeps its block). x may be ordinary or
// already sharded; gradients flow through.
Tensor device_put(const Tensor& x, const Sharding& sharding);
// Requires x to be laid out as `sharding` from here on (collectives are inserted as needed); the
// cotangent gets the same constraint. Returns x unchanged when it is not sharded and the mesh
// has one device.
Tensor with_sharding_constraint(const Tensor& x, const Sharding& sharding);
// x with every device holding the full value.
Tensor replicate(const Tensor& x);
// The sharded tensor of `global` shape whose block on this device is `local` (no communication:
// each device passes its own block, as jax.make_array_from_process_local_data). Error when
// local's shape is not the block shape the sharding gives.
Tensor from_local(const Tensor& local, const Shape& global, const Sharding& sharding);
// This device's index among the blocks of a split over `axes` (major to minor), e.g. which rows of
// the global batch it holds when the batch is split over the batch axes.
int64_t block_index(const Mesh& mesh, const std::vector<int>& axes);

// Makes the partitioner handle ops on sharded tensors (device_put does it on first use).
void install_partitioner();

}  // namespace axlearn::dist
