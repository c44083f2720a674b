#include "axlearn/config/config.h"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <ostream>
#include <sstream>

#include "axlearn/config/registry.h"

namespace axlearn {

bool is_valid_name(std::string_view name) {
  if (name.empty() || name[0] < 'a' || name[0] > 'z') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

// ---- detail helpers shared by the value traits ----

namespace detail {

void type_error(const std::string& path, const std::string& expected, const Json& j) {
  fail(path.empty() ? "" : path + ": ", "expected ", expected, ", given ", describe_json(j));
}

void not_a_container(const std::string& path, const std::string& type, const PathElem& e) {
  const std::string what = e.kind == PathElem::Kind::kIndex ? "[" + std::to_string(e.index) + "]"
                           : e.kind == PathElem::Kind::kKey ? key_suffix(e.name)
                                                            : "." + e.name;
  fail(path, " is ", type, ", not a container: it has no ", what);
}

std::string key_suffix(const std::string& key) { return concat({"[", py_repr(key), "]"}); }

std::string index_suffix(int64_t i) { return concat({"[", std::to_string(i), "]"}); }

std::string concat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

std::string demangle(const char* mangled) {
  int status = 0;
  char* out = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string name = (status == 0 && out) ? out : mangled;
  std::free(out);
  // Messages read better without the namespaces every type here shares.
  for (const std::string prefix : {"axlearn::", "(anonymous namespace)::"}) {
    for (size_t pos; (pos = name.find(prefix)) != std::string::npos;)
      name.erase(pos, prefix.size());
  }
  return name;
}

std::string index_path(const std::string& path, int64_t i) { return path + index_suffix(i); }

std::string key_path(const std::string& path, const std::string& key) {
  return path + key_suffix(key);
}

}  // namespace detail

void TypeOps::set_config(void*, std::unique_ptr<ConfigBase> cfg, const std::string& path) const {
  fail(path, ": expected ", name(), ", given the ", cfg ? cfg->describe() : std::string("None"));
}

std::string ValueTraits<Dtype>::text(Dtype d) {
  return d == bool_ ? "jax.numpy.bool_" : std::string("jax.numpy.") + dtype_name(d);
}

Dtype ValueTraits<Dtype>::from_json(const Json& j, const std::string& path, const Dtype&) {
  if (!j.is_string()) detail::type_error(path, name(), j);
  std::string s = j.get<std::string>();
  for (const std::string prefix : {"jax.numpy.", "jnp.", "numpy.", "np."}) {
    if (s.rfind(prefix, 0) == 0) s = s.substr(prefix.size());
  }
  if (s == "bool_") s = "bool";
  try {
    return dtype_from_name(s);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

// ---- fields ----

void FieldBase::attach(ConfigBase* owner, void* value) {
  value_ = value;
  default_is_none_ = set_ && ops_->is_none(value);
  owner->register_field(this);
}

void FieldBase::fail_unset() const { fail("field '", name_, "' is REQUIRED and has not been set"); }

void FieldBase::assign_from(const FieldBase& other) {
  AXLEARN_CHECK(ops_ == other.ops_, "field ", name_, ": ", ops_->name(), " vs ",
                other.ops_->name());
  ops_->assign(value_, other.value_);
  set_ = other.set_;
}

// ---- ConfigBase ----

namespace {

std::string join_path(const std::string& path, const std::string& suffix) {
  if (path.empty() && !suffix.empty() && suffix[0] == '.') return suffix.substr(1);
  return path + suffix;
}

std::string prefix_of(const std::string& path) { return path.empty() ? "" : path + ": "; }

void visit_value(const std::string& path, const ValueRef& ref,
                 const std::function<void(const std::string&, const ValueRef&)>& fn) {
  const bool entered =
      ref.ops->for_each_child(ref.ptr, [&](const std::string& suffix, const ValueRef& child) {
        visit_value(join_path(path, suffix), child, fn);
      });
  if (!entered) fn(path, ref);
}

void collect_missing(const ConfigBase& cfg, const std::string& path, std::vector<std::string>& out);

void collect_missing_value(const std::string& path, const ValueRef& ref,
                           std::vector<std::string>& out) {
  if (ConfigBase* nested = ref.ops->config(ref.ptr)) {
    collect_missing(*nested, path, out);
    return;
  }
  ref.ops->for_each_child(ref.ptr, [&](const std::string& suffix, const ValueRef& child) {
    collect_missing_value(join_path(path, suffix), child, out);
  });
}

void collect_missing(const ConfigBase& cfg, const std::string& path,
                     std::vector<std::string>& out) {
  for (FieldBase* f : cfg.fields()) {
    const std::string p = join_path(path, "." + f->name());
    if (!f->is_set()) {
      out.push_back(p);
    } else {
      collect_missing_value(p, f->ref(), out);
    }
  }
}

bool valid_field_name(const std::string& name) { return is_valid_name(name); }

}  // namespace

void ConfigBase::register_field(FieldBase* field) {
  AXLEARN_CHECK(valid_field_name(field->name()), "invalid config field name '", field->name(),
                "' (must match ^[a-z][a-z0-9_]*$)");
  AXLEARN_CHECK(!contains(field->name()), "config field '", field->name(), "' declared twice");
  fields_.push_back(field);
}

std::string ConfigBase::key() const {
  const char* kf = key_field();
  if (!kf) return "";
  const FieldBase& f = field(kf);
  if (!f.is_set() || &f.ops() != type_ops<std::string>()) return "";
  return *static_cast<const std::string*>(f.value_ptr());
}

std::string ConfigBase::type_name() const { return detail::demangle(typeid(*this).name()); }

std::string ConfigBase::describe() const {
  const std::string k = key();
  if (k.empty()) return type_name();
  return std::string(key_field()) == "fn" ? "config of function " + py_repr(k)
                                          : "config of " + py_repr(k);
}

std::vector<std::string> ConfigBase::keys() const {
  std::vector<std::string> out;
  for (const FieldBase* f : fields_) out.push_back(f->name());
  std::sort(out.begin(), out.end());
  return out;
}

bool ConfigBase::contains(std::string_view name) const {
  return std::any_of(fields_.begin(), fields_.end(),
                     [&](const FieldBase* f) { return f->name() == name; });
}

FieldBase& ConfigBase::field(std::string_view name, const std::string& path) {
  for (FieldBase* f : fields_) {
    if (f->name() == name) return *f;
  }
  fail(prefix_of(path), "no field '", name, "' in the ", describe(), suggest_names(name, keys()));
}

const FieldBase& ConfigBase::field(std::string_view name, const std::string& path) const {
  return const_cast<ConfigBase*>(this)->field(name, path);
}

std::unique_ptr<ConfigBase> ConfigBase::clone_base() const {
  std::unique_ptr<ConfigBase> out = new_instance();
  const ConfigBase& fresh = *out;
  AXLEARN_CHECK(typeid(fresh) == typeid(*this), type_name(),
                " does not define new_instance(): add AXLEARN_CONFIG(", type_name(), ")");
  AXLEARN_CHECK(out->fields_.size() == fields_.size());
  for (size_t i = 0; i < fields_.size(); ++i) out->fields_[i]->assign_from(*fields_[i]);
  return out;
}

bool ConfigBase::operator==(const ConfigBase& other) const {
  if (typeid(*this) != typeid(other) || fields_.size() != other.fields_.size()) return false;
  for (size_t i = 0; i < fields_.size(); ++i) {
    const FieldBase& a = *fields_[i];
    const FieldBase& b = *other.fields_[i];
    if (a.is_set() != b.is_set()) return false;
    if (a.is_set() && !a.ops().equals(a.value_ptr(), b.value_ptr())) return false;
  }
  return true;
}

void ConfigBase::for_each_field_child(const ChildFn& fn) const {
  std::vector<FieldBase*> sorted = fields_;
  std::sort(sorted.begin(), sorted.end(),
            [](const FieldBase* a, const FieldBase* b) { return a->name() < b->name(); });
  for (FieldBase* f : sorted) {
    if (!f->is_set()) continue;
    if (f->default_is_none() && f->ops().is_none(f->value_ptr())) continue;
    fn("." + f->name(), f->ref());
  }
}

void ConfigBase::visit(
    const std::function<void(const std::string& path, const ValueRef& leaf)>& fn) const {
  for_each_field_child([&](const std::string& suffix, const ValueRef& child) {
    visit_value(join_path("", suffix), child, fn);
  });
}

Json ConfigBase::to_flat_dict() const {
  Json out = Json::object();
  visit([&](const std::string& path, const ValueRef& leaf) {
    out[path] = leaf.ops->to_json(leaf.ptr);
  });
  return out;
}

std::string ConfigBase::debug_string() const {
  std::string out;
  visit([&](const std::string& path, const ValueRef& leaf) {
    if (!out.empty()) out += '\n';
    out += path + ": " + leaf.ops->repr(leaf.ptr);
  });
  return out;
}

Json ConfigBase::to_json() const {
  Json out = Json::object();
  const char* kf = key_field();
  if (kf && field(kf).is_set()) out[kf] = key();
  std::vector<FieldBase*> sorted = fields_;
  std::sort(sorted.begin(), sorted.end(),
            [](const FieldBase* a, const FieldBase* b) { return a->name() < b->name(); });
  for (const FieldBase* f : sorted) {
    if (!f->is_set() || (kf && f->name() == kf)) continue;
    out[f->name()] = f->ops().to_json(f->value_ptr());
  }
  return out;
}

std::string ConfigBase::to_json_string(int indent) const { return to_json().dump(indent); }

void ConfigBase::update_from_json(const Json& j, const std::string& path) {
  if (!j.is_object()) detail::type_error(path, "a dict for the " + describe(), j);
  const char* kf = key_field();
  for (const auto& [name, value] : j.items()) {
    if (kf && name == kf) {
      if (!value.is_string()) detail::type_error(join_path(path, "." + name), "str", value);
      const std::string wanted = Registry::global().find(value.get<std::string>()).name;
      if (wanted != key()) {
        fail(prefix_of(path), name, " ", py_repr(wanted), " does not match this ", describe());
      }
      continue;
    }
    FieldBase& f = field(name, path);
    f.ops().from_json(f.value_ptr(), value, join_path(path, "." + name));
    f.mark_set();
  }
}

void ConfigBase::validate_required() const {
  std::vector<std::string> missing;
  const std::string prefix = InstantiationScope::current_path();
  for (const FieldBase* f : fields_) {
    if (!f->is_set()) missing.push_back(prefix.empty() ? f->name() : prefix + "." + f->name());
  }
  if (missing.empty()) return;
  std::string list;
  for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
  fail("cannot instantiate the ", describe(), ": missing value for REQUIRED field",
       missing.size() > 1 ? "s " : " ", list);
}

std::vector<std::string> ConfigBase::missing_required_fields() const {
  std::vector<std::string> out;
  collect_missing(*this, "", out);
  return out;
}

std::ostream& operator<<(std::ostream& os, const ConfigBase& cfg) {
  return os << cfg.debug_string();
}

// ---- instantiation paths ----

namespace {
struct ScopePart {
  std::string text;
  bool absolute;
};
thread_local std::vector<ScopePart> g_scope;
}  // namespace

InstantiationScope::InstantiationScope(std::string part, bool absolute) {
  g_scope.push_back({std::move(part), absolute});
}

InstantiationScope::~InstantiationScope() { g_scope.pop_back(); }

std::string InstantiationScope::current_path() {
  size_t start = 0;
  for (size_t i = 0; i < g_scope.size(); ++i) {
    if (g_scope[i].absolute) start = i;
  }
  std::string out;
  for (size_t i = start; i < g_scope.size(); ++i) {
    if (g_scope[i].text.empty()) continue;
    out += (out.empty() ? "" : ".") + g_scope[i].text;
  }
  return out;
}

// ---- JSON ----

ConfigPtr<ConfigBase> config_from_json(const Json& j) {
  if (!j.is_object()) detail::type_error("config_from_json", "a dict", j);
  for (const char* key : {"klass", "fn"}) {
    if (j.contains(key) && j[key].is_string()) {
      std::unique_ptr<ConfigBase> cfg =
          detail::make_registered_config(j[key].get<std::string>(), "");
      cfg->update_from_json(j);
      return ConfigPtr<ConfigBase>(std::move(cfg));
    }
  }
  fail("config_from_json: the top-level dict needs a 'klass' or 'fn' naming a registered class");
}

ConfigPtr<ConfigBase> config_from_json_string(std::string_view text) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail("config_from_json: invalid JSON: ", e.what());
  }
  return config_from_json(j);
}

}  // namespace axlearn
