// The value types a config field may hold, and what the config system can do with each without
// knowing it statically (`TypeOps`): print it as AXLearn does, dump and load JSON with type checks,
// compare, copy, walk into lists / dicts / optionals / nested configs.
// Supported: bool, integers, float / double, std::string, Dtype, enums named with
// AXLEARN_CONFIG_ENUM, std::vector<T>, std::map<std::string, T>, OrderedDict<T> (insertion
// order kept), std::optional<T>, std::variant<...> (std::monostate is None) and ConfigPtr<C>.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include "axlearn/config/format.h"
#include "axlearn/core/dtype.h"
#include "axlearn/core/error.h"

namespace axlearn {

class ConfigBase;
class FieldBase;
class TypeOps;

// A string-keyed dict that keeps insertion order (AXLearn's `init_by_param_name`: first match
// wins). Looked up linearly; config dicts are small.
template <typename T>
using OrderedDict = std::vector<std::pair<std::string, T>>;

// One step of a config path: `.name`, `[3]` or `['key']`.
struct PathElem {
  enum class Kind : uint8_t { kField, kIndex, kKey };
  Kind kind = Kind::kField;
  std::string name;  // field name or dict key
  int64_t index = 0;
};

// A value somewhere inside a config, with the operations of its type. `field` is the config
// field the value lives in (to mark it set when assigned through a path), or null.
struct ValueRef {
  void* ptr = nullptr;
  const TypeOps* ops = nullptr;
  FieldBase* field = nullptr;
};

// Called with the path suffix of each child ("[0]", "['key']", ".name") and the child.
using ChildFn = std::function<void(const std::string& suffix, const ValueRef& child)>;

// Operations on one value type, erased (one static instance per type: compare by address).
class TypeOps {
 public:
  virtual ~TypeOps() = default;
  // Python-style type name for messages: "int", "list[str]", "Optional[float]", "Linear::Config".
  virtual std::string name() const = 0;
  // The C++ type, demangled ("long", "std::vector<...>"), for get<T>() mismatches.
  virtual std::string cpp_type() const = 0;
  virtual Json to_json(const void* v) const = 0;
  // Replaces *v with the value `j` describes, or throws Error "<path>: expected T, given ...".
  // *v is left unchanged on error.
  virtual void from_json(void* v, const Json& j, const std::string& path) const = 0;
  virtual bool equals(const void* a, const void* b) const = 0;
  virtual void assign(void* dst, const void* src) const = 0;
  // The value as debug_string prints a leaf: 4, 0.95, 'data', True, None.
  virtual std::string repr(const void* v) const = 0;
  virtual bool is_none(const void* v) const = 0;
  // Calls fn on each child and returns true for containers (lists, dicts, configs, and optionals
  // or variants holding one); returns false for leaves.
  virtual bool for_each_child(void* v, const ChildFn& fn) const = 0;
  // The child `e` names; throws Error naming `path` when there is none.
  virtual ValueRef child(void* v, const PathElem& e, const std::string& path) const = 0;
  // Config slots (ConfigPtr<C>): the config held (null when None or not a slot), and replacing it
  // by another config, checked against C.
  virtual bool is_config_slot() const { return false; }
  virtual bool accepts(const ConfigBase&) const { return false; }
  virtual ConfigBase* config(void*) const { return nullptr; }
  virtual void set_config(void* slot, std::unique_ptr<ConfigBase> cfg,
                          const std::string& path) const;
};

namespace detail {
[[noreturn]] void type_error(const std::string& path, const std::string& expected, const Json& j);
[[noreturn]] void not_a_container(const std::string& path, const std::string& type,
                                  const PathElem& e);
std::string key_suffix(const std::string& key);  // "['key']"
std::string index_suffix(int64_t i);             // "[3]"
// Joins the pieces (out of line: GCC 12 warns falsely on inlined `"lit" + std::string&&`).
std::string concat(std::initializer_list<std::string_view> parts);
std::string demangle(const char* mangled);
// "<path>[i]" / "<path>['key']".
std::string index_path(const std::string& path, int64_t i);
std::string key_path(const std::string& path, const std::string& key);
}  // namespace detail

// ValueTraits<T> describes one type; specialisations below and in config.h (ConfigPtr).
template <typename T, typename Enable = void>
struct ValueTraits;

template <typename T>
concept HasValueTraits = requires {
  ValueTraits<T>::name();
};

template <typename T>
const TypeOps* type_ops();

// Defaults for leaf types.
template <typename T>
struct LeafTraits {
  static bool equals(const T& a, const T& b) { return a == b; }
  static bool is_none(const T&) { return false; }
  static bool for_each_child(T&, const ChildFn&) { return false; }
  static ValueRef child(T&, const PathElem& e, const std::string& path) {
    detail::not_a_container(path, ValueTraits<T>::name(), e);
  }
};

template <>
struct ValueTraits<bool> : LeafTraits<bool> {
  static std::string name() { return "bool"; }
  static Json to_json(const bool& v) { return v; }
  static bool from_json(const Json& j, const std::string& path, const bool&) {
    if (!j.is_boolean()) detail::type_error(path, name(), j);
    return j.get<bool>();
  }
  static std::string repr(const bool& v) { return v ? "True" : "False"; }
};

template <typename T>
struct ValueTraits<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>>
    : LeafTraits<T> {
  static std::string name() { return "int"; }
  static Json to_json(const T& v) { return v; }
  static T from_json(const Json& j, const std::string& path, const T&) {
    if (j.is_number_unsigned()) {
      const auto v = j.get<uint64_t>();
      if (v <= uint64_t(std::numeric_limits<T>::max())) return T(v);
    } else if (j.is_number_integer()) {
      const auto v = j.get<int64_t>();
      if constexpr (std::is_signed_v<T>) {
        if (v >= int64_t(std::numeric_limits<T>::min()) &&
            v <= int64_t(std::numeric_limits<T>::max())) {
          return T(v);
        }
      } else {
        if (v >= 0 && uint64_t(v) <= uint64_t(std::numeric_limits<T>::max())) return T(v);
      }
    } else {
      detail::type_error(path, name(), j);
    }
    fail(path, ": integer ", j.dump(), " is out of range for this field");
  }
  static std::string repr(const T& v) { return std::to_string(v); }
};

template <typename T>
struct ValueTraits<T, std::enable_if_t<std::is_floating_point_v<T>>> : LeafTraits<T> {
  static std::string name() { return "float"; }
  // JSON has no inf / nan: they travel as the strings Python prints.
  static Json to_json(const T& v) {
    if (std::isfinite(v)) return double(v);
    return repr(v);
  }
  static T from_json(const Json& j, const std::string& path, const T&) {
    if (j.is_number()) return T(j.get<double>());
    if (j.is_string()) {
      const auto s = j.get<std::string>();
      if (s == "inf") return std::numeric_limits<T>::infinity();
      if (s == "-inf") return -std::numeric_limits<T>::infinity();
      if (s == "nan") return std::numeric_limits<T>::quiet_NaN();
    }
    detail::type_error(path, name(), j);
  }
  // nan == nan for configs: a field holding nan equals its copy.
  static bool equals(const T& a, const T& b) { return a == b || (a != a && b != b); }
  static std::string repr(const T& v) {
    if constexpr (std::is_same_v<T, float>) {
      return py_repr_f32(v);
    } else {
      return py_repr(double(v));
    }
  }
};

template <>
struct ValueTraits<std::string> : LeafTraits<std::string> {
  static std::string name() { return "str"; }
  static Json to_json(const std::string& v) { return v; }
  static std::string from_json(const Json& j, const std::string& path, const std::string&) {
    if (!j.is_string()) detail::type_error(path, name(), j);
    return j.get<std::string>();
  }
  static std::string repr(const std::string& v) { return py_repr(v); }
};

// Dtypes print as AXLearn's golden configs do ('jax.numpy.bfloat16'); parsing also takes the
// short names (bfloat16, bf16).
template <>
struct ValueTraits<Dtype> : LeafTraits<Dtype> {
  static std::string name() { return "dtype"; }
  static std::string text(Dtype d);
  static Json to_json(const Dtype& v) { return text(v); }
  static Dtype from_json(const Json& j, const std::string& path, const Dtype&);
  static std::string repr(const Dtype& v) { return py_repr(text(v)); }
};

// Enums: declare their names next to the enum with
//   AXLEARN_CONFIG_ENUM(Activation, {Activation::kRelu, "relu"}, {Activation::kGelu, "gelu"})
// (at namespace scope, in the enum's namespace). They print and parse as those strings.
#define AXLEARN_CONFIG_ENUM(E, ...)                                            \
  inline const std::vector<std::pair<E, std::string>>& axlearn_enum_names(E) { \
    static const std::vector<std::pair<E, std::string>> names = {__VA_ARGS__}; \
    return names;                                                              \
  }

template <typename E>
concept ConfigEnum = std::is_enum_v<E> && requires(E e) {
  axlearn_enum_names(e);
};

template <ConfigEnum E>
struct ValueTraits<E> : LeafTraits<E> {
  static std::string name() {
    std::string out = "enum{";
    for (const auto& [v, n] : axlearn_enum_names(E{})) {
      out = detail::concat({out, out.size() > 5 ? ", " : "", n});
    }
    return out + "}";
  }
  static std::string text(E v) {
    for (const auto& [value, n] : axlearn_enum_names(E{})) {
      if (value == v) return n;
    }
    return std::to_string(int64_t(v));
  }
  static Json to_json(const E& v) { return text(v); }
  static E from_json(const Json& j, const std::string& path, const E&) {
    if (j.is_string()) {
      for (const auto& [value, n] : axlearn_enum_names(E{})) {
        if (n == j.get<std::string>()) return value;
      }
    }
    detail::type_error(path, name(), j);
  }
  static std::string repr(const E& v) { return py_repr(text(v)); }
};

template <>
struct ValueTraits<std::monostate> : LeafTraits<std::monostate> {
  static std::string name() { return "None"; }
  static Json to_json(const std::monostate&) { return nullptr; }
  static std::monostate from_json(const Json& j, const std::string& path, const std::monostate&) {
    if (!j.is_null()) detail::type_error(path, name(), j);
    return {};
  }
  static bool is_none(const std::monostate&) { return true; }
  static std::string repr(const std::monostate&) { return "None"; }
};

template <HasValueTraits T>
struct ValueTraits<std::vector<T>> {
  static_assert(!std::is_same_v<T, bool>, "use std::vector<int> (vector<bool> has no bool&)");
  static std::string name() { return detail::concat({"list[", ValueTraits<T>::name(), "]"}); }
  static Json to_json(const std::vector<T>& v) {
    Json out = Json::array();
    for (const T& x : v) out.push_back(ValueTraits<T>::to_json(x));
    return out;
  }
  static std::vector<T> from_json(const Json& j, const std::string& path,
                                  const std::vector<T>& cur) {
    if (!j.is_array()) detail::type_error(path, name(), j);
    std::vector<T> out;
    out.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
      out.push_back(ValueTraits<T>::from_json(j[i], detail::index_path(path, int64_t(i)),
                                              i < cur.size() ? cur[i] : T{}));
    }
    return out;
  }
  static bool equals(const std::vector<T>& a, const std::vector<T>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!ValueTraits<T>::equals(a[i], b[i])) return false;
    }
    return true;
  }
  static bool is_none(const std::vector<T>&) { return false; }
  static std::string repr(const std::vector<T>& v) { return to_json(v).dump(); }
  static bool for_each_child(std::vector<T>& v, const ChildFn& fn) {
    for (size_t i = 0; i < v.size(); ++i) {
      fn(detail::index_suffix(int64_t(i)), ValueRef{&v[i], type_ops<T>(), nullptr});
    }
    return true;
  }
  static ValueRef child(std::vector<T>& v, const PathElem& e, const std::string& path) {
    if (e.kind != PathElem::Kind::kIndex) detail::not_a_container(path, name(), e);
    const int64_t n = int64_t(v.size());
    const int64_t i = e.index < 0 ? e.index + n : e.index;
    if (i < 0 || i >= n) {
      fail(path, ": index ", e.index, " is out of range for a list of ", n, " items");
    }
    return ValueRef{&v[size_t(i)], type_ops<T>(), nullptr};
  }
};

// Shared by std::map<std::string, T> and OrderedDict<T>.
template <typename Map, typename T>
struct DictTraits {
  static std::string name() { return detail::concat({"dict[str, ", ValueTraits<T>::name(), "]"}); }
  static Json to_json(const Map& m) {
    Json out = Json::object();
    for (const auto& [k, v] : m) out[k] = ValueTraits<T>::to_json(v);
    return out;
  }
  static const T* find(const Map& m, const std::string& key) {
    for (const auto& [k, v] : m) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  static Map from_json(const Json& j, const std::string& path, const Map& cur) {
    if (!j.is_object()) detail::type_error(path, name(), j);
    Map out;
    for (const auto& [k, v] : j.items()) {
      const T* old = find(cur, k);
      T value = ValueTraits<T>::from_json(v, detail::key_path(path, k), old ? *old : T{});
      if constexpr (std::is_same_v<Map, OrderedDict<T>>) {
        out.emplace_back(k, std::move(value));
      } else {
        out.emplace(k, std::move(value));
      }
    }
    return out;
  }
  static bool equals(const Map& a, const Map& b) {
    if (a.size() != b.size()) return false;
    auto ia = a.begin();
    for (auto ib = b.begin(); ib != b.end(); ++ia, ++ib) {
      if (ia->first != ib->first || !ValueTraits<T>::equals(ia->second, ib->second)) return false;
    }
    return true;
  }
  static bool is_none(const Map&) { return false; }
  static std::string repr(const Map& m) { return to_json(m).dump(); }
  static bool for_each_child(Map& m, const ChildFn& fn) {
    for (auto& [k, v] : m) fn(detail::key_suffix(k), ValueRef{&v, type_ops<T>(), nullptr});
    return true;
  }
  static ValueRef child(Map& m, const PathElem& e, const std::string& path) {
    if (e.kind != PathElem::Kind::kKey) detail::not_a_container(path, name(), e);
    T* found = const_cast<T*>(find(m, e.name));
    if (!found) {
      std::vector<std::string> keys;
      for (const auto& kv : m) keys.push_back(kv.first);
      fail(path, ": no key ", py_repr(e.name), suggest_names(e.name, keys));
    }
    return ValueRef{found, type_ops<T>(), nullptr};
  }
};

template <HasValueTraits T>
struct ValueTraits<std::map<std::string, T>> : DictTraits<std::map<std::string, T>, T> {};

template <HasValueTraits T>
struct ValueTraits<OrderedDict<T>> : DictTraits<OrderedDict<T>, T> {};

template <HasValueTraits T>
struct ValueTraits<std::optional<T>> {
  static std::string name() { return detail::concat({"Optional[", ValueTraits<T>::name(), "]"}); }
  static Json to_json(const std::optional<T>& v) {
    return v ? ValueTraits<T>::to_json(*v) : Json(nullptr);
  }
  static std::optional<T> from_json(const Json& j, const std::string& path,
                                    const std::optional<T>& cur) {
    if (j.is_null()) return std::nullopt;
    try {
      return ValueTraits<T>::from_json(j, path, cur ? *cur : T{});
    } catch (const Error&) {
      detail::type_error(path, name(), j);
    }
  }
  static bool equals(const std::optional<T>& a, const std::optional<T>& b) {
    if (a.has_value() != b.has_value()) return false;
    return !a || ValueTraits<T>::equals(*a, *b);
  }
  static bool is_none(const std::optional<T>& v) { return !v.has_value(); }
  static std::string repr(const std::optional<T>& v) {
    return v ? ValueTraits<T>::repr(*v) : "None";
  }
  static bool for_each_child(std::optional<T>& v, const ChildFn& fn) {
    return v && ValueTraits<T>::for_each_child(*v, fn);
  }
  static ValueRef child(std::optional<T>& v, const PathElem& e, const std::string& path) {
    if (!v) fail(path, " is None");
    return ValueTraits<T>::child(*v, e, path);
  }
};

template <HasValueTraits... Ts>
struct ValueTraits<std::variant<Ts...>> {
  using V = std::variant<Ts...>;
  static std::string name() {
    std::string out;
    ((out = detail::concat({out, out.empty() ? "" : ", ", ValueTraits<Ts>::name()})), ...);
    return detail::concat({"Union[", out, "]"});
  }
  static Json to_json(const V& v) {
    return std::visit(
        [](const auto& x) { return ValueTraits<std::decay_t<decltype(x)>>::to_json(x); }, v);
  }
  // The first alternative that accepts the value wins (None, then str, then list...).
  static V from_json(const Json& j, const std::string& path, const V&) {
    std::optional<V> out;
    auto attempt = [&](auto tag) {
      using A = typename decltype(tag)::type;
      if (out) return;
      try {
        out = V(ValueTraits<A>::from_json(j, path, A{}));
      } catch (const Error&) {
      }
    };
    (attempt(std::type_identity<Ts>{}), ...);
    if (!out) detail::type_error(path, name(), j);
    return std::move(*out);
  }
  static bool equals(const V& a, const V& b) {
    if (a.index() != b.index()) return false;
    return std::visit(
        [&](const auto& x) {
          using A = std::decay_t<decltype(x)>;
          return ValueTraits<A>::equals(x, std::get<A>(b));
        },
        a);
  }
  static bool is_none(const V& v) {
    return std::visit(
        [](const auto& x) { return ValueTraits<std::decay_t<decltype(x)>>::is_none(x); }, v);
  }
  static std::string repr(const V& v) {
    return std::visit([](const auto& x) { return ValueTraits<std::decay_t<decltype(x)>>::repr(x); },
                      v);
  }
  static bool for_each_child(V& v, const ChildFn& fn) {
    return std::visit(
        [&](auto& x) { return ValueTraits<std::decay_t<decltype(x)>>::for_each_child(x, fn); }, v);
  }
  static ValueRef child(V& v, const PathElem& e, const std::string& path) {
    return std::visit(
        [&](auto& x) { return ValueTraits<std::decay_t<decltype(x)>>::child(x, e, path); }, v);
  }
};

namespace detail {

template <typename T>
class TypeOpsImpl final : public TypeOps {
 public:
  using Traits = ValueTraits<T>;
  std::string name() const override { return Traits::name(); }
  std::string cpp_type() const override { return demangle(typeid(T).name()); }
  Json to_json(const void* v) const override { return Traits::to_json(cast(v)); }
  void from_json(void* v, const Json& j, const std::string& path) const override {
    T value = Traits::from_json(j, path, cast(v));
    cast(v) = std::move(value);
  }
  bool equals(const void* a, const void* b) const override {
    return Traits::equals(cast(a), cast(b));
  }
  void assign(void* dst, const void* src) const override { cast(dst) = cast(src); }
  std::string repr(const void* v) const override { return Traits::repr(cast(v)); }
  bool is_none(const void* v) const override { return Traits::is_none(cast(v)); }
  bool for_each_child(void* v, const ChildFn& fn) const override {
    return Traits::for_each_child(cast(v), fn);
  }
  ValueRef child(void* v, const PathElem& e, const std::string& path) const override {
    return Traits::child(cast(v), e, path);
  }
  bool is_config_slot() const override {
    if constexpr (requires { Traits::config(std::declval<T&>()); }) {
      return true;
    } else {
      return false;
    }
  }
  bool accepts(const ConfigBase& cfg) const override {
    if constexpr (requires { Traits::accepts(cfg); }) {
      return Traits::accepts(cfg);
    } else {
      return false;
    }
  }
  ConfigBase* config(void* v) const override {
    if constexpr (requires { Traits::config(std::declval<T&>()); }) {
      return Traits::config(cast(v));
    } else {
      return nullptr;
    }
  }
  void set_config(void* slot, std::unique_ptr<ConfigBase> cfg,
                  const std::string& path) const override {
    if constexpr (requires { Traits::set_config(std::declval<T&>(), std::move(cfg), path); }) {
      Traits::set_config(cast(slot), std::move(cfg), path);
    } else {
      TypeOps::set_config(slot, std::move(cfg), path);
    }
  }

 private:
  static T& cast(void* v) { return *static_cast<T*>(v); }
  static const T& cast(const void* v) { return *static_cast<const T*>(v); }
};

}  // namespace detail

template <typename T>
const TypeOps* type_ops() {
  static const detail::TypeOpsImpl<T> ops;
  return &ops;
}

}  // namespace axlearn
