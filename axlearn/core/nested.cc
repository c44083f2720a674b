#include "axlearn/core/nested.h"

namespace axlearn {

const Tensor& NestedTensor::tensor() const {
  if (!is_leaf_)
    fail("NestedTensor: expected a tensor leaf, found a dict of ", dict_.size(), " entries");
  return leaf_;
}
Tensor& NestedTensor::tensor() {
  if (!is_leaf_)
    fail("NestedTensor: expected a tensor leaf, found a dict of ", dict_.size(), " entries");
  return leaf_;
}
const NestedTensor::Dict& NestedTensor::dict() const {
  if (is_leaf_)
    fail("NestedTensor: expected a dict, found a tensor of shape ", shape_str(leaf_.shape()));
  return dict_;
}
NestedTensor::Dict& NestedTensor::dict() {
  if (is_leaf_)
    fail("NestedTensor: expected a dict, found a tensor of shape ", shape_str(leaf_.shape()));
  return dict_;
}

NestedTensor& NestedTensor::operator[](const std::string& key) { return dict()[key]; }

const NestedTensor& NestedTensor::at(const std::string& key) const {
  const Dict& d = dict();
  auto it = d.find(key);
  if (it == d.end()) {
    std::string keys;
    for (const auto& [k, v] : d) keys += (keys.empty() ? "" : ", ") + k;
    fail("NestedTensor: no key '", key, "' (keys: ", keys, ")");
  }
  return it->second;
}

bool NestedTensor::contains(const std::string& key) const {
  return !is_leaf_ && dict_.count(key) > 0;
}

void NestedTensor::flatten_into(const std::string& prefix,
                                std::vector<std::pair<std::string, Tensor>>& out) const {
  if (is_leaf_) {
    out.emplace_back(prefix, leaf_);
    return;
  }
  for (const auto& [k, v] : dict_) v.flatten_into(prefix.empty() ? k : prefix + "/" + k, out);
}

std::vector<std::pair<std::string, Tensor>> NestedTensor::flatten_with_paths() const {
  std::vector<std::pair<std::string, Tensor>> out;
  flatten_into("", out);
  return out;
}

std::vector<Tensor> NestedTensor::leaves() const {
  std::vector<Tensor> out;
  for (auto& [p, t] : flatten_with_paths()) out.push_back(t);
  return out;
}

namespace {
NestedTensor rebuild(const NestedTensor& like, const std::vector<Tensor>& leaves, size_t& i) {
  if (like.is_leaf()) {
    if (i >= leaves.size()) fail("NestedTensor::unflatten: too few leaves (", leaves.size(), ")");
    return NestedTensor(leaves[i++]);
  }
  NestedTensor out;
  for (const auto& [k, v] : like.dict()) out[k] = rebuild(v, leaves, i);
  return out;
}
}  // namespace

NestedTensor NestedTensor::unflatten(const std::vector<Tensor>& leaves) const {
  size_t i = 0;
  NestedTensor out = rebuild(*this, leaves, i);
  if (i != leaves.size())
    fail("NestedTensor::unflatten: ", leaves.size(), " leaves for a tree of ", i);
  return out;
}

const NestedTensor& NestedTensor::at_path(const std::string& path) const {
  const NestedTensor* cur = this;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t next = path.find('/', pos);
    std::string key = path.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    if (cur->is_leaf() || !cur->contains(key)) fail("NestedTensor: no entry at path '", path, "'");
    cur = &cur->dict_.at(key);
    pos = next == std::string::npos ? path.size() : next + 1;
  }
  return *cur;
}

NestedTensor NestedTensor::map(const std::function<Tensor(const Tensor&)>& fn) const {
  if (is_leaf_) return NestedTensor(fn(leaf_));
  NestedTensor out;
  for (const auto& [k, v] : dict_) out.dict_[k] = v.map(fn);
  return out;
}

NestedTensor NestedTensor::map_with_path(
    const std::function<Tensor(const std::string&, const Tensor&)>& fn) const {
  auto flat = flatten_with_paths();
  std::vector<Tensor> mapped;
  mapped.reserve(flat.size());
  for (auto& [p, t] : flat) mapped.push_back(fn(p, t));
  return unflatten(mapped);
}

bool NestedTensor::same_structure(const NestedTensor& o) const {
  if (is_leaf_ != o.is_leaf_) return false;
  if (is_leaf_) return true;
  if (dict_.size() != o.dict_.size()) return false;
  for (auto a = dict_.begin(), b = o.dict_.begin(); a != dict_.end(); ++a, ++b) {
    if (a->first != b->first || !a->second.same_structure(b->second)) return false;
  }
  return true;
}

NestedTensor NestedTensor::zip_map(const std::vector<const NestedTensor*>& trees,
                                   const std::function<Tensor(const std::vector<Tensor>&)>& fn) {
  if (trees.empty()) return NestedTensor();
  for (size_t i = 1; i < trees.size(); ++i) {
    if (!trees[0]->same_structure(*trees[i]))
      fail("NestedTensor::zip_map: tree ", i, " has a different structure");
  }
  std::vector<std::vector<Tensor>> flats;
  for (auto* t : trees) flats.push_back(t->leaves());
  std::vector<Tensor> out;
  for (size_t j = 0; j < flats[0].size(); ++j) {
    std::vector<Tensor> args;
    for (auto& f : flats) args.push_back(f[j]);
    out.push_back(fn(args));
  }
  return trees[0]->unflatten(out);
}

}  // namespace axlearn
