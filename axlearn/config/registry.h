// The registry from a class's or function's registered name (its `klass` / `fn`, e.g.
// 'axlearn.common.layers.RMSNorm') to its default config and factory, so that a dumped config
// re-instantiates and `norm.klass=RMSNorm` can swap a child for another class.
#pragma once

#include <any>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <typeindex>
#include <vector>

#include "axlearn/config/config.h"

namespace axlearn {

struct RegistryEntry {
  enum class Kind : uint8_t { kClass, kFunction };
  std::string name;
  Kind kind = Kind::kClass;
  std::type_index type = typeid(void);  // the class, or the function's config class
  std::function<std::unique_ptr<ConfigBase>()> make_config;
  // The class's `Factory` (a std::function building it from its config); empty for abstract
  // classes and for functions, whose configs instantiate themselves.
  std::any factory;
};

class Registry {
 public:
  static Registry& global();
  // Registering the same name for the same type again is a no-op (headers register from every
  // translation unit that includes them); another type under a taken name is an InternalError.
  void add(RegistryEntry entry);
  // The entry named exactly `name`, or else the one whose name ends in "." + name; throws Error
  // listing close names when there is none, or the candidates when the suffix is ambiguous.
  const RegistryEntry& find(std::string_view name) const;
  const RegistryEntry* find_exact(std::string_view name) const;
  // The exact entry, or else every entry whose name ends in "." + name.
  std::vector<const RegistryEntry*> candidates(std::string_view name) const;
  std::vector<std::string> names() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, RegistryEntry, std::less<>> entries_;
};

namespace detail {

template <typename K, typename Factory>
struct FactoryMaker;

// Factory = std::function<std::unique_ptr<Root>(const ConfigBase&, Args...)>: checks the config
// is a K::Config and calls K(config, args...).
template <typename K, typename R, typename... Args>
struct FactoryMaker<K, std::function<R(const ConfigBase&, Args...)>> {
  static std::function<R(const ConfigBase&, Args...)> make(std::string name) {
    return [name](const ConfigBase& cfg, Args... args) -> R {
      const auto* typed = dynamic_cast<const typename K::Config*>(&cfg);
      if (!typed) {
        fail("klass ", py_repr(name), " needs a ", config_type_name<typename K::Config>(),
             ", given a ", cfg.type_name());
      }
      return std::make_unique<K>(*typed, std::forward<Args>(args)...);
    };
  }
};

template <typename K>
bool register_class(const char* name) {
  RegistryEntry e;
  e.name = name;
  e.kind = RegistryEntry::Kind::kClass;
  e.type = typeid(K);
  e.make_config = [] { return std::unique_ptr<ConfigBase>(K::default_config().release()); };
  if constexpr (!std::is_abstract_v<K>) {
    e.factory = FactoryMaker<K, typename K::Factory>::make(name);
  }
  Registry::global().add(std::move(e));
  return true;
}

template <typename FnConfig>
bool register_function(const char* name) {
  RegistryEntry e;
  e.name = name;
  e.kind = RegistryEntry::Kind::kFunction;
  e.type = typeid(FnConfig);
  e.make_config = [] { return std::unique_ptr<ConfigBase>(FnConfig::default_config().release()); };
  Registry::global().add(std::move(e));
  return true;
}

[[noreturn]] void fail_no_factory(const RegistryEntry& e, const std::string& wanted);

}  // namespace detail
}  // namespace axlearn
