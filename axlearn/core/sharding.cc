#include "axlearn/core/sharding.h"

#include <algorithm>
#include <sstream>

#include "axlearn/core/error.h"

namespace axlearn {

int64_t Mesh::size() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

int Mesh::axis_index(const std::string& name) const {
  for (size_t i = 0; i < axis_names.size(); ++i) {
    if (axis_names[i] == name) return int(i);
  }
  return -1;
}

std::vector<int64_t> Mesh::coords(int64_t rank) const {
  std::vector<int64_t> c(shape.size());
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    c[size_t(i)] = rank % shape[size_t(i)];
    rank /= shape[size_t(i)];
  }
  return c;
}

std::string Mesh::str() const {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    os << (i ? ", " : "") << (i < axis_names.size() ? axis_names[i] : "?") << "=" << shape[i];
  }
  os << ")";
  return os.str();
}

Sharding Sharding::replicated(Mesh mesh, int ndim) {
  Sharding s;
  s.mesh = std::move(mesh);
  s.dims.resize(size_t(ndim));
  return s;
}

bool Sharding::is_replicated() const {
  if (!partial.empty()) return false;
  for (const auto& d : dims) {
    if (!d.empty()) return false;
  }
  return true;
}

int64_t Sharding::num_shards(int d) const {
  int64_t n = 1;
  for (int a : dims[size_t(d)]) n *= mesh.shape[size_t(a)];
  return n;
}

int64_t Sharding::shard_index(int d, int64_t rank) const {
  const std::vector<int64_t> c = mesh.coords(rank);
  int64_t idx = 0;
  for (int a : dims[size_t(d)]) idx = idx * mesh.shape[size_t(a)] + c[size_t(a)];
  return idx;
}

Shape Sharding::local_shape(const Shape& global) const {
  if (global.size() != dims.size()) {
    fail("sharding ", str(), " has ", dims.size(), " dimensions but the tensor has shape ",
         shape_str(global));
  }
  Shape out = global;
  for (size_t d = 0; d < global.size(); ++d) {
    const int64_t n = num_shards(int(d));
    if (global[d] % n != 0) {
      fail("sharding ", str(), " of shape ", shape_str(global), " on mesh ", mesh.str(),
           ": dimension ", d, " (size ", global[d], ") is not divisible into ", n, " shards");
    }
    out[d] = global[d] / n;
  }
  return out;
}

std::vector<int> Sharding::used_axes() const {
  std::vector<int> out;
  for (const auto& d : dims) out.insert(out.end(), d.begin(), d.end());
  std::sort(out.begin(), out.end());
  return out;
}

std::string Sharding::str() const {
  std::ostringstream os;
  auto name = [&](int a) {
    return "'" + (size_t(a) < mesh.axis_names.size() ? mesh.axis_names[size_t(a)] : "?") + "'";
  };
  os << "PartitionSpec(";
  for (size_t d = 0; d < dims.size(); ++d) {
    os << (d ? ", " : "");
    if (dims[d].empty()) {
      os << "None";
    } else if (dims[d].size() == 1) {
      os << name(dims[d][0]);
    } else {
      os << "(";
      for (size_t k = 0; k < dims[d].size(); ++k) os << (k ? ", " : "") << name(dims[d][k]);
      os << ")";
    }
  }
  os << ")";
  if (!partial.empty()) {
    os << " partial(";
    for (size_t k = 0; k < partial.size(); ++k) os << (k ? ", " : "") << name(partial[k]);
    os << ")";
  }
  return os.str();
}

namespace {
thread_local int64_t device_rank = 0;
detail::ShardingHooks hooks;
}  // namespace

int64_t current_device_rank() { return device_rank; }

namespace detail {
void set_sharding_hooks(const ShardingHooks& h) { hooks = h; }
const ShardingHooks& sharding_hooks() { return hooks; }
void set_current_device_rank(int64_t rank) { device_rank = rank; }
}  // namespace detail

}  // namespace axlearn
