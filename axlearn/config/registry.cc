#include "axlearn/config/registry.h"

#include "axlearn/core/error.h"

namespace axlearn {

Registry& Registry::global() {
  static Registry* registry = new Registry();  // never destroyed: used from static initialisers
  return *registry;
}

void Registry::add(RegistryEntry entry) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(entry.name);
  if (it != entries_.end()) {
    AXLEARN_CHECK(it->second.type == entry.type, "two types registered as '", entry.name,
                  "': ", detail::demangle(it->second.type.name()), " and ",
                  detail::demangle(entry.type.name()));
    return;
  }
  const std::string name = entry.name;
  entries_.emplace(name, std::move(entry));
}

const RegistryEntry* Registry::find_exact(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

const RegistryEntry& Registry::find(std::string_view name) const {
  const std::vector<const RegistryEntry*> matches = candidates(name);
  if (matches.size() == 1) return *matches[0];
  if (matches.size() > 1) {
    std::string list;
    for (const auto* m : matches) list += (list.empty() ? "'" : ", '") + m->name + "'";
    fail("registered name '", name, "' is ambiguous: ", list);
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> short_names;
  for (const auto& [n, e] : entries_) short_names.push_back(n.substr(n.rfind('.') + 1));
  std::vector<std::string> candidates;
  for (const auto& [n, e] : entries_) candidates.push_back(n);
  std::string hint = suggest_names(name, short_names);
  if (hint.find("did you mean") == std::string::npos) hint = suggest_names(name, candidates);
  if (hint.find("did you mean") == std::string::npos) {
    hint = " (" + std::to_string(entries_.size()) + " names are registered)";
  }
  fail("no class or function is registered as '", name, "'", hint);
}

std::vector<const RegistryEntry*> Registry::candidates(std::string_view name) const {
  if (const RegistryEntry* e = find_exact(name)) return {e};
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<const RegistryEntry*> out;
  std::string suffix(1, '.');
  suffix += name;
  for (const auto& [n, e] : entries_) {
    if (n.size() > suffix.size() &&
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
      out.push_back(&e);
    }
  }
  return out;
}

std::vector<std::string> Registry::names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [n, e] : entries_) out.push_back(n);
  return out;
}

namespace detail {

std::unique_ptr<ConfigBase> make_registered_config(const std::string& name,
                                                   const std::string& path) {
  const RegistryEntry* e = nullptr;
  try {
    e = &Registry::global().find(name);
  } catch (const Error& err) {
    fail(path.empty() ? "" : path + ": ", err.what());
  }
  return e->make_config();
}

void fail_no_factory(const RegistryEntry& e, const std::string& wanted) {
  if (e.kind == RegistryEntry::Kind::kFunction) {
    fail("'", e.name, "' is a registered function, not a class: call instantiate() on its config");
  }
  if (!e.factory.has_value()) fail("klass '", e.name, "' is abstract and cannot be instantiated");
  fail("klass '", e.name, "' (", demangle(e.type.name()), ") cannot be instantiated as a ", wanted,
       " (it is built by another Factory)");
}

}  // namespace detail
}  // namespace axlearn
