// Configurable classes and function configs. A configurable class has a nested `Config` (fields
// declared with Field<T>), `default_config()`, and is built by `cfg->instantiate<T>(args...)`
// through the registry, so the config alone (e.g. loaded from JSON) decides the class:
//
//   class Linear : public BaseLayer {
//    public:
//     struct Config : BaseLayer::Config { AXLEARN_CONFIG(Config) Field<int64_t> dim{...}; };
//     AXLEARN_CONFIGURABLE(Linear, "axlearn.common.layers.Linear")
//     Linear(const Config& cfg, Module* parent);
//   };
//
// A function config (a schedule, say) is a config whose `fn` names a registered function and
// whose `instantiate()` returns the function's result (AXLearn's config_for_function).
#pragma once

#include <memory>
#include <string>

#include "axlearn/config/config.h"
#include "axlearn/config/registry.h"

namespace axlearn {

class Configurable {
 public:
  struct Config : ConfigBase {
    AXLEARN_CONFIG(Config)
    Field<std::string> klass{this, "klass", REQUIRED,
                             "Registered name of the class this config instantiates."};
    const char* key_field() const override { return "klass"; }

    // Checks REQUIRED fields, looks `klass` up in the registry and builds it with this config
    // and `args` (a Module takes its parent). T is the class or any base of it whose `Factory`
    // the class was registered with.
    template <typename T, typename... Args>
    std::unique_ptr<T> instantiate(Args&&... args) const;
  };
  // How the registry builds a Configurable: subclass families with other constructor
  // arguments (Module takes a parent) redefine Factory.
  using Factory = std::function<std::unique_ptr<Configurable>(const ConfigBase&)>;

  virtual ~Configurable() = default;
  Configurable(const Configurable&) = delete;
  Configurable& operator=(const Configurable&) = delete;

  // This object's own copy of its config (later changes to the caller's config do not reach it).
  const Config& config_base() const { return *config_; }

 protected:
  explicit Configurable(const Config& cfg) : config_(cfg.clone()) {}

 private:
  ConfigPtr<Config> config_;
};

template <typename T, typename... Args>
std::unique_ptr<T> Configurable::Config::instantiate(Args&&... args) const {
  validate_required();
  const RegistryEntry& e = Registry::global().find(klass.get());
  using F = typename T::Factory;
  const F* factory = std::any_cast<F>(&e.factory);
  if (!factory) detail::fail_no_factory(e, detail::config_type_name<T>());
  auto obj = (*factory)(*this, std::forward<Args>(args)...);
  T* typed = dynamic_cast<T*>(obj.get());
  if (!typed) {
    fail("klass ", py_repr(e.name), " is not a ", detail::config_type_name<T>());
  }
  obj.release();
  return std::unique_ptr<T>(typed);
}

// Registers class K under NAME and defines `default_config()` (a K::Config with klass = NAME)
// and `config()` (this object's config as K::Config). Put it in K's body after its Config.
#define AXLEARN_CONFIGURABLE(K, NAME)                                                        \
 public:                                                                                     \
  [[maybe_unused]] static constexpr const char* kRegisteredName = NAME;                      \
  static ::axlearn::ConfigPtr<Config> default_config() {                                     \
    auto cfg = ::axlearn::make_config<Config>();                                             \
    cfg->klass = NAME;                                                                       \
    return cfg;                                                                              \
  }                                                                                          \
  const Config& config() const { return static_cast<const Config&>(this->config_base()); }   \
                                                                                             \
 private:                                                                                    \
  inline static const bool axlearn_registered_ = ::axlearn::detail::register_class<K>(NAME); \
                                                                                             \
 public:

// The config of a function returning R: fields are the function's arguments, `call()` computes
// the result. Concrete ones use AXLEARN_FUNCTION_CONFIG.
template <typename R>
struct FunctionConfig : ConfigBase {
  Field<std::string> fn{this, "fn", REQUIRED, "Registered name of the function."};
  const char* key_field() const override { return "fn"; }

  // Checks REQUIRED fields and calls the function.
  R instantiate() const {
    validate_required();
    return call();
  }

 protected:
  virtual R call() const = 0;
};

// Registers a function config under NAME and defines its AXLEARN_CONFIG members and
// `default_config()` (with fn = NAME).
#define AXLEARN_FUNCTION_CONFIG(Self, NAME)            \
  AXLEARN_CONFIG(Self)                                 \
  static ::axlearn::ConfigPtr<Self> default_config() { \
    auto cfg = ::axlearn::make_config<Self>();         \
    cfg->fn = NAME;                                    \
    return cfg;                                        \
  }                                                    \
  inline static const bool axlearn_registered_ = ::axlearn::detail::register_function<Self>(NAME);

}  // namespace axlearn
