// Configs: objects whose fields are typed, named, documented and registered, so that generic code
// can print (`debug_string`, AXLearn's golden format), dump / load JSON, compare, clone and apply
// string overrides to any of them. `ConfigPtr<C>` holds a config by value (copies are deep) and
// may hold any subclass of C: that is how a child config is swapped for another class's.
//
//   struct Config : BaseLayer::Config {
//     AXLEARN_CONFIG(Config)
//     Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Input feature dim."};
//     Field<bool> bias{this, "bias", true, "Whether to add a bias."};
//   };
//   cfg->input_dim = 4;  cfg->set("bias", false);  int64_t d = cfg->input_dim;
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "axlearn/config/value_types.h"

namespace axlearn {

// Whether `name` matches ^[a-z][a-z0-9_]*$ (config fields, modules, children, contexts).
bool is_valid_name(std::string_view name);

// The default of a field that must be set before the config is instantiated.
struct RequiredTag {
  explicit constexpr RequiredTag(int) {}
};
inline constexpr RequiredTag REQUIRED{0};

// A field as the config system sees it: name, doc, type operations, whether it has been set.
class FieldBase {
 public:
  FieldBase(const FieldBase&) = delete;
  FieldBase& operator=(const FieldBase&) = delete;

  const std::string& name() const { return name_; }
  const std::string& doc() const { return doc_; }
  const TypeOps& ops() const { return *ops_; }
  // False while a REQUIRED field has not been given a value.
  bool is_set() const { return set_; }
  // Whether the field's default is None (such fields are left out of debug_string while None).
  bool default_is_none() const { return default_is_none_; }
  void* value_ptr() const { return value_; }
  ValueRef ref() { return ValueRef{value_, ops_, this}; }
  void mark_set() { set_ = true; }
  // Copies value and set-state from a field of the same type.
  void assign_from(const FieldBase& other);

 protected:
  FieldBase(std::string name, std::string doc, const TypeOps* ops, bool set)
      : set_(set), name_(std::move(name)), doc_(std::move(doc)), ops_(ops) {}
  ~FieldBase() = default;
  void attach(ConfigBase* owner, void* value);
  [[noreturn]] void fail_unset() const;

  bool set_;

 private:
  std::string name_;
  std::string doc_;
  const TypeOps* ops_;
  void* value_ = nullptr;
  bool default_is_none_ = false;
};

template <typename C>
class ConfigPtr;
template <typename T>
inline constexpr bool is_config_ptr_v = false;
template <typename C>
inline constexpr bool is_config_ptr_v<ConfigPtr<C>> = true;

// A typed config field. Declared as a member of a config class:
//   Field<double> eps{this, "eps", 1e-5, "Added to the variance."};
// Reading an unset REQUIRED field throws Error naming the field.
template <typename T>
class Field : public FieldBase {
 public:
  Field(ConfigBase* owner, const char* name, T default_value, const char* doc)
      : FieldBase(name, doc, type_ops<T>(), true), value_(std::move(default_value)) {
    attach(owner, &value_);
  }
  // None for optional fields (its own overload: GCC 12 warns falsely on moving an empty optional).
  Field(ConfigBase* owner, const char* name, std::nullopt_t,
        const char* doc) requires std::is_constructible_v<T, std::nullopt_t>
      : FieldBase(name, doc, type_ops<T>(), true), value_(std::nullopt) {
    attach(owner, &value_);
  }
  Field(ConfigBase* owner, const char* name, RequiredTag, const char* doc)
      : FieldBase(name, doc, type_ops<T>(), false), value_() {
    attach(owner, &value_);
  }

  const T& get() const {
    if (!set_) fail_unset();
    return value_;
  }
  // Mutable access; marks the field set.
  T& mut() {
    set_ = true;
    return value_;
  }
  operator const T&() const { return get(); }  // NOLINT: reads like the value
  const T& operator*() const { return get(); }
  // cfg->linear->bias reaches through a ConfigPtr (Error when None); cfg->dims->size() and
  // cfg->seed->has_value() act on the field's value.
  decltype(auto) operator->() const {
    if constexpr (is_config_ptr_v<T>) {
      return static_cast<const T&>(get());
    } else {
      return &get();
    }
  }
  decltype(auto) operator->() {
    if constexpr (is_config_ptr_v<T>) {
      if (!set_) fail_unset();
      return static_cast<T&>(value_);
    } else {
      return &mut();
    }
  }

  Field& operator=(const Field& other) {
    value_ = other.value_;
    set_ = other.set_;
    return *this;
  }
  Field& operator=(T value) {
    value_ = std::move(value);
    set_ = true;
    return *this;
  }
  // Anything T can be assigned from, except a floating-point value into an integer field.
  template <typename U>
  requires std::is_assignable_v<T&, U&&> &&
      (!(std::is_integral_v<T> && std::is_floating_point_v<std::decay_t<U>>)) Field&
      operator=(U&& value) {
    value_ = std::forward<U>(value);
    set_ = true;
    return *this;
  }
  template <typename U>
  requires(std::is_integral_v<T>&& std::is_floating_point_v<std::decay_t<U>>) Field& operator=(
      U&&) = delete;

 private:
  T value_;
};

class ConfigBase {
 public:
  virtual ~ConfigBase() = default;
  ConfigBase(const ConfigBase&) = delete;
  ConfigBase& operator=(const ConfigBase&) = delete;

  // A default-constructed config of the same dynamic type (AXLEARN_CONFIG defines it).
  virtual std::unique_ptr<ConfigBase> new_instance() const = 0;
  // The field naming the registered class or function ("klass", "fn"), or null.
  virtual const char* key_field() const { return nullptr; }
  // That field's value ("" when there is none or it is unset).
  std::string key() const;
  // The C++ type, e.g. "Linear::Config" (for messages).
  std::string type_name() const;
  // "config of 'axlearn.common.layers.Linear'" or "Linear::Config": what errors call this config.
  std::string describe() const;

  // Fields in declaration order, base classes' first.
  const std::vector<FieldBase*>& fields() const { return fields_; }
  std::vector<std::string> keys() const;  // sorted
  bool contains(std::string_view name) const;
  // Throws Error naming `path` and suggesting close names when there is no such field.
  FieldBase& field(std::string_view name, const std::string& path = "");
  const FieldBase& field(std::string_view name, const std::string& path = "") const;

  // Dynamic typed read: cfg.get<int64_t>("dim"). Throws when the field holds another type.
  template <typename T>
  const T& get(std::string_view name) const;
  // Sets a field by name, type-checked: a value of the field's exact type is copied; others are
  // converted as JSON would be (int into a float field is fine, 1.5 into an int field is an
  // Error naming expected and given types); a ConfigPtr must hold the slot's config type.
  template <typename V>
  ConfigBase& set(std::string_view name, V&& value);

  std::unique_ptr<ConfigBase> clone_base() const;
  // Same dynamic type and equal fields (set-state included), recursively.
  bool operator==(const ConfigBase& other) const;

  // Calls fn(path, leaf) for each leaf in debug_string order: fields sorted by name at each
  // level, list items as "[i]", dict items as "['key']"; unset REQUIRED fields and fields that
  // are None by default and still None are left out, as AXLearn does.
  void visit(const std::function<void(const std::string& path, const ValueRef& leaf)>& fn) const;
  // Path -> leaf value, in visit order.
  Json to_flat_dict() const;
  // One line per leaf: "model.decoder.transformer.num_layers: 4".
  std::string debug_string() const;

  // Every set field (REQUIRED ones left unset are omitted), nested configs as objects carrying
  // their "klass" / "fn"; config_from_json rebuilds an equal config from it.
  Json to_json() const;
  std::string to_json_string(int indent = 2) const;
  // Applies the fields of a JSON object (unknown names and wrong types are Errors naming
  // `path`); a "klass" / "fn" entry must match this config's.
  void update_from_json(const Json& j, const std::string& path = "");

  // Throws Error when a REQUIRED field of this config (not of nested ones: parents often fill
  // their children's) is unset, naming the field's full dotted path (see InstantiationScope).
  void validate_required() const;
  // Dotted paths of all unset REQUIRED fields in the tree, nested configs included.
  std::vector<std::string> missing_required_fields() const;

  // Calls fn on this config's visible fields, sorted (the children of a config in visit()).
  void for_each_field_child(const ChildFn& fn) const;

 protected:
  ConfigBase() = default;

 private:
  friend class FieldBase;
  void register_field(FieldBase* field);

  std::vector<FieldBase*> fields_;
};

// A config held by value: copies clone, == compares contents. May be None (null) and may hold
// any subclass of C.
template <typename C>
class ConfigPtr {
 public:
  ConfigPtr() = default;
  ConfigPtr(std::nullptr_t) {}  // NOLINT: None
  explicit ConfigPtr(std::unique_ptr<C> p) : p_(std::move(p)) {}
  explicit ConfigPtr(C* p) : p_(p) {}
  ConfigPtr(const ConfigPtr& o) : p_(clone_of(o.p_.get())) {}
  ConfigPtr(ConfigPtr&&) noexcept = default;
  template <typename U>
  requires std::is_base_of_v<C, U> ConfigPtr(const ConfigPtr<U>& o)
      : p_(clone_of(o.get())) {}  // NOLINT: upcast
  template <typename U>
  requires std::is_base_of_v<C, U> ConfigPtr(ConfigPtr<U>&& o)
      : p_(o.release()) {}  // NOLINT: upcast
  ConfigPtr& operator=(const ConfigPtr& o) {
    if (this != &o) p_.reset(clone_of(o.p_.get()));
    return *this;
  }
  ConfigPtr& operator=(ConfigPtr&&) noexcept = default;

  C* get() { return p_.get(); }
  const C* get() const { return p_.get(); }
  C* operator->() { return &checked(); }
  const C* operator->() const { return &const_cast<ConfigPtr*>(this)->checked(); }
  C& operator*() { return checked(); }
  const C& operator*() const { return const_cast<ConfigPtr*>(this)->checked(); }
  explicit operator bool() const { return p_ != nullptr; }
  C* release() { return p_.release(); }

  // Chainable: C::default_config().set("dim", 8).set("bias", false).
  template <typename V>
  ConfigPtr& set(std::string_view name, V&& value) & {
    checked().ConfigBase::set(name, std::forward<V>(value));
    return *this;
  }
  template <typename V>
  ConfigPtr&& set(std::string_view name, V&& value) && {
    checked().ConfigBase::set(name, std::forward<V>(value));
    return std::move(*this);
  }
  ConfigPtr clone() const { return *this; }

  friend bool operator==(const ConfigPtr& a, const ConfigPtr& b) {
    if (!a.p_ || !b.p_) return !a.p_ && !b.p_;
    return *a.p_ == *b.p_;
  }
  friend bool operator==(const ConfigPtr& a, std::nullptr_t) { return !a.p_; }

 private:
  C& checked() {
    if (!p_) fail("config is None");
    return *p_;
  }
  static C* clone_of(const C* p) {
    return p ? static_cast<C*>(p->clone_base().release()) : nullptr;
  }
  std::unique_ptr<C> p_;
};

template <typename C, typename... Args>
ConfigPtr<C> make_config(Args&&... args) {
  return ConfigPtr<C>(std::make_unique<C>(std::forward<Args>(args)...));
}

namespace detail {
// A new config of the registered class or function `name` (Registry, in registry.cc).
std::unique_ptr<ConfigBase> make_registered_config(const std::string& name,
                                                   const std::string& path);
template <typename C>
std::string config_type_name() {
  return demangle(typeid(C).name());
}
}  // namespace detail

template <typename C>
struct ValueTraits<ConfigPtr<C>> {
  using P = ConfigPtr<C>;
  static std::string name() { return detail::config_type_name<C>(); }
  static Json to_json(const P& v) { return v ? v->to_json() : Json(nullptr); }
  // A dict naming "klass" / "fn" builds that registered config; a dict without one updates a
  // copy of the current config (or a new C when there is none and C is concrete).
  static P from_json(const Json& j, const std::string& path, const P& cur) {
    if (j.is_null()) return P();
    if (!j.is_object()) detail::type_error(path, name() + " (a dict) or None", j);
    std::unique_ptr<ConfigBase> fresh;
    for (const char* key : {"klass", "fn"}) {
      if (!fresh && j.contains(key) && j[key].is_string()) {
        fresh = detail::make_registered_config(j[key].get<std::string>(), path);
      }
    }
    if (!fresh && cur) fresh = cur->clone_base();
    if (!fresh) {
      if constexpr (std::is_default_constructible_v<C> && !std::is_abstract_v<C>) {
        fresh = std::make_unique<C>();
      } else {
        fail(path, ": a dict with 'klass' is needed to create a ", name());
      }
    }
    check_type(*fresh, path);
    fresh->update_from_json(j, path);
    return P(static_cast<C*>(fresh.release()));
  }
  static bool equals(const P& a, const P& b) { return a == b; }
  static bool is_none(const P& v) { return !v; }
  static std::string repr(const P& v) { return v ? v->debug_string() : "None"; }
  static bool for_each_child(P& v, const ChildFn& fn) {
    if (!v) return false;
    v->for_each_field_child(fn);
    return true;
  }
  static ValueRef child(P& v, const PathElem& e, const std::string& path) {
    if (!v) fail(path, " is None (set ", path, ".klass first)");
    if (e.kind != PathElem::Kind::kField) detail::not_a_container(path, name(), e);
    std::string parent = path;
    return v->field(e.name, parent).ref();
  }
  static ConfigBase* config(P& v) { return v.get(); }
  static bool accepts(const ConfigBase& cfg) { return dynamic_cast<const C*>(&cfg) != nullptr; }
  static void set_config(P& slot, std::unique_ptr<ConfigBase> cfg, const std::string& path) {
    if (cfg) check_type(*cfg, path);
    slot = P(static_cast<C*>(cfg.release()));
  }
  static void check_type(const ConfigBase& cfg, const std::string& path) {
    if (!dynamic_cast<const C*>(&cfg)) {
      fail(path, ": expected a ", name(), ", given the ", cfg.describe(), " (a ", cfg.type_name(),
           ")");
    }
  }
};

template <typename T>
const T& ConfigBase::get(std::string_view name) const {
  const FieldBase& f = field(name);
  if (&f.ops() != type_ops<T>()) {
    fail("field '", name, "' is a ", f.ops().cpp_type(), "; get<",
         detail::demangle(typeid(T).name()), "> cannot read it");
  }
  if (!f.is_set()) fail("field '", name, "' is REQUIRED and has not been set");
  return *static_cast<const T*>(f.value_ptr());
}

template <typename V>
ConfigBase& ConfigBase::set(std::string_view name, V&& value) {
  FieldBase& f = field(name);
  using D = std::decay_t<V>;
  const std::string path(name);
  if constexpr (is_config_ptr_v<D>) {
    if (!f.ops().is_config_slot()) {
      fail(path, ": expected ", f.ops().name(), ", given a config");
    }
    f.ops().set_config(f.value_ptr(), value ? value->clone_base() : nullptr, path);
  } else if constexpr (std::is_same_v<D, std::nullopt_t> || std::is_same_v<D, std::nullptr_t>) {
    f.ops().from_json(f.value_ptr(), Json(nullptr), path);
  } else if constexpr (HasValueTraits<D>) {
    if (&f.ops() == type_ops<D>()) {
      f.ops().assign(f.value_ptr(), &value);
    } else {
      f.ops().from_json(f.value_ptr(), ValueTraits<D>::to_json(value), path);
    }
  } else {
    f.ops().from_json(f.value_ptr(), Json(std::forward<V>(value)), path);
  }
  f.mark_set();
  return *this;
}

// Defines the members every concrete config class needs; put it first in the class body.
#define AXLEARN_CONFIG(Self)                                                             \
  ::std::unique_ptr<::axlearn::ConfigBase> new_instance() const override {               \
    return ::std::make_unique<Self>();                                                   \
  }                                                                                      \
  template <typename V>                                                                  \
  Self& set(::std::string_view name, V&& value) {                                        \
    ::axlearn::ConfigBase::set(name, ::std::forward<V>(value));                          \
    return *this;                                                                        \
  }                                                                                      \
  ::axlearn::ConfigPtr<Self> clone() const {                                             \
    return ::axlearn::ConfigPtr<Self>(static_cast<Self*>(this->clone_base().release())); \
  }

// The dotted path that REQUIRED-field errors report for the config being instantiated. Modules
// push their path in add_child; code that instantiates a child config itself can push the field
// name: `auto scope = InstantiationScope::child("schedule"); cfg->schedule->instantiate();`.
class InstantiationScope {
 public:
  // Appends `.name` to the current path.
  static InstantiationScope child(std::string name) {
    return InstantiationScope(std::move(name), false);
  }
  // Replaces the current path (a module's full path).
  static InstantiationScope at(std::string path) {
    return InstantiationScope(std::move(path), true);
  }
  ~InstantiationScope();
  InstantiationScope(const InstantiationScope&) = delete;
  InstantiationScope& operator=(const InstantiationScope&) = delete;
  static std::string current_path();

 private:
  InstantiationScope(std::string part, bool absolute);
};

// Applies "a.b[1].c=value" to `cfg`: the value is parsed for the field's type (ints, floats
// such as 1e-3, bools, strings quoted or bare, lists [1, 2], dicts, None for optional fields).
// Setting `x.klass=Name` (or `x.fn=name`) replaces config x by the registered class's default
// config (a unique suffix of the registered name is enough: `norm.klass=RMSNorm`), carrying over
// the fields both classes have that x had changed from its defaults. Errors name the override,
// the full path, expected and given types, and suggest close names for typos.
void apply_override(ConfigBase& cfg, std::string_view override_text);
void apply_overrides(ConfigBase& cfg, const std::vector<std::string>& overrides);

// Parses "a.b[1]['k'].c" into path elements; throws Error on malformed paths.
std::vector<PathElem> parse_config_path(std::string_view path);

// Rebuilds a config from to_json() output: the top-level "klass" / "fn" picks the registered
// class, whose default config is then updated from the JSON.
ConfigPtr<ConfigBase> config_from_json(const Json& j);
ConfigPtr<ConfigBase> config_from_json_string(std::string_view text);
// The same, checking the result is a C.
template <typename C>
ConfigPtr<C> config_from_json_as(const Json& j) {
  ConfigPtr<ConfigBase> base = config_from_json(j);
  if (!dynamic_cast<C*>(base.get())) {
    fail("config_from_json: expected a ", detail::config_type_name<C>(), ", given the ",
         base->describe());
  }
  return ConfigPtr<C>(static_cast<C*>(base.release()));
}

std::ostream& operator<<(std::ostream& os, const ConfigBase& cfg);

}  // namespace axlearn
