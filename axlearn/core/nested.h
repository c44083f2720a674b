// NestedTensor: a tree of tensors keyed by name (parameters, gradients, optimizer state).
// Children are kept sorted by key, so flattening is deterministic (as jax does for dicts).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/core/tensor.h"

namespace axlearn {

class NestedTensor {
 public:
  using Dict = std::map<std::string, NestedTensor>;

  NestedTensor() : is_leaf_(false) {}                              // an empty dict
  NestedTensor(Tensor t) : is_leaf_(true), leaf_(std::move(t)) {}  // NOLINT: implicit by design
  NestedTensor(std::initializer_list<std::pair<const std::string, NestedTensor>> items)
      : is_leaf_(false), dict_(items) {}

  bool is_leaf() const { return is_leaf_; }
  const Tensor& tensor() const;
  Tensor& tensor();
  const Dict& dict() const;
  Dict& dict();

  // Child access; operator[] on a non-const tree creates an empty child.
  NestedTensor& operator[](const std::string& key);
  const NestedTensor& at(const std::string& key) const;
  bool contains(const std::string& key) const;
  size_t size() const { return is_leaf_ ? 1 : dict_.size(); }

  // Leaves in key order with their "/"-joined paths ("decoder/emb/weight").
  std::vector<std::pair<std::string, Tensor>> flatten_with_paths() const;
  std::vector<Tensor> leaves() const;
  // Rebuilds a tree of this structure from leaves in flatten order.
  NestedTensor unflatten(const std::vector<Tensor>& leaves) const;
  // Looks up a leaf or subtree by "/"-joined path; throws Error naming the path when absent.
  const NestedTensor& at_path(const std::string& path) const;

  NestedTensor map(const std::function<Tensor(const Tensor&)>& fn) const;
  NestedTensor map_with_path(
      const std::function<Tensor(const std::string&, const Tensor&)>& fn) const;
  // Applies fn to matching leaves of trees with the same structure; throws Error on mismatch.
  static NestedTensor zip_map(const std::vector<const NestedTensor*>& trees,
                              const std::function<Tensor(const std::vector<Tensor>&)>& fn);
  bool same_structure(const NestedTensor& other) const;

 private:
  void flatten_into(const std::string& prefix,
                    std::vector<std::pair<std::string, Tensor>>& out) const;
  bool is_leaf_;
  Tensor leaf_;
  Dict dict_;
};

}  // namespace axlearn
