// String overrides: "model.decoder.dim=512", "args[1].b2=0.9", "norm.klass=RMSNorm".
#include <algorithm>
#include <cctype>

#include "axlearn/config/config.h"
#include "axlearn/config/registry.h"

namespace axlearn {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string append_path(const std::string& path, const PathElem& e) {
  switch (e.kind) {
    case PathElem::Kind::kField:
      return path.empty() ? e.name : path + "." + e.name;
    case PathElem::Kind::kIndex:
      return detail::index_path(path, e.index);
    case PathElem::Kind::kKey:
      return detail::key_path(path, e.name);
  }
  return path;
}

// Parses the text as a literal for the value at `ref`. Unquoted text that does not fit the type
// as a literal is tried as a string, so `name=123` sets a str field to "123".
void assign_literal(const ValueRef& ref, std::string_view text, const std::string& path) {
  const bool quoted = !text.empty() && (text[0] == '\'' || text[0] == '"');
  Json literal;
  bool parsed = true;
  std::string parse_error;
  try {
    literal = parse_literal(text);
  } catch (const Error& e) {
    parsed = false;
    parse_error = e.what();
  }
  if (parsed) {
    try {
      ref.ops->from_json(ref.ptr, literal, path);
      if (ref.field) ref.field->mark_set();
      return;
    } catch (const Error&) {
      if (quoted || literal.is_array() || literal.is_object() || literal.is_string()) throw;
      try {
        ref.ops->from_json(ref.ptr, Json(std::string(text)), path);
        if (ref.field) ref.field->mark_set();
        return;
      } catch (const Error&) {
      }
      throw;
    }
  }
  try {
    ref.ops->from_json(ref.ptr, Json(std::string(text)), path);
  } catch (const Error&) {
    fail(parse_error);
  }
  if (ref.field) ref.field->mark_set();
}

// The fields of `old` that differ from its class's defaults and that `fresh` has with the same
// type move over: swapping LayerNorm for RMSNorm keeps an eps the user set, not LayerNorm's.
void carry_over(const ConfigBase& old, ConfigBase& fresh) {
  std::unique_ptr<ConfigBase> defaults;
  if (const RegistryEntry* e = Registry::global().find_exact(old.key())) {
    defaults = e->make_config();
  } else {
    defaults = old.new_instance();
  }
  const char* kf = old.key_field();
  for (const FieldBase* f : old.fields()) {
    if ((kf && f->name() == kf) || !fresh.contains(f->name())) continue;
    FieldBase& target = fresh.field(f->name());
    if (&target.ops() != &f->ops()) continue;
    const FieldBase* d = defaults->contains(f->name()) ? &defaults->field(f->name()) : nullptr;
    const bool changed = !d || &d->ops() != &f->ops() || d->is_set() != f->is_set() ||
                         (f->is_set() && !f->ops().equals(f->value_ptr(), d->value_ptr()));
    if (changed) target.assign_from(*f);
  }
}

size_t common_dotted_prefix(const std::string& a, const std::string& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size() && i < b.size() && a[i] == b[i]; ++i) {
    if (a[i] == '.') n = i + 1;
  }
  return n;
}

// The entry a short name means in this slot: among the registered names it is a suffix of, the
// ones whose config the slot accepts, then the one nearest the current class (same package).
const RegistryEntry& resolve_for_slot(const std::string& name, const ValueRef& slot,
                                      const ConfigBase* old) {
  std::vector<const RegistryEntry*> fit;
  for (const RegistryEntry* e : Registry::global().candidates(name)) {
    if (slot.ops->accepts(*e->make_config())) fit.push_back(e);
  }
  if (fit.size() > 1 && old) {
    size_t best = 0;
    for (const RegistryEntry* e : fit)
      best = std::max(best, common_dotted_prefix(e->name, old->key()));
    std::vector<const RegistryEntry*> nearest;
    for (const RegistryEntry* e : fit) {
      if (common_dotted_prefix(e->name, old->key()) == best) nearest.push_back(e);
    }
    fit = nearest;
  }
  if (fit.size() == 1) return *fit[0];
  return Registry::global().find(name);  // the error: unknown, ambiguous, or of the wrong type
}

void swap_class(const ValueRef& slot, std::string_view text, const std::string& path,
                const std::string& key_path) {
  Json literal = parse_literal(text);
  if (!literal.is_string()) detail::type_error(key_path, "str (a registered name)", literal);
  ConfigBase* old = slot.ops->config(slot.ptr);
  const RegistryEntry& entry = resolve_for_slot(literal.get<std::string>(), slot, old);
  if (old && old->key() == entry.name) return;
  std::unique_ptr<ConfigBase> fresh = entry.make_config();
  if (old) carry_over(*old, *fresh);
  slot.ops->set_config(slot.ptr, std::move(fresh), path);
  if (slot.field) slot.field->mark_set();
}

}  // namespace

std::vector<PathElem> parse_config_path(std::string_view path) {
  std::vector<PathElem> out;
  size_t i = 0;
  auto error = [&](const std::string& what) {
    fail("invalid config path '", path, "' at offset ", i, ": ", what);
  };
  auto is_ident = [](char c, bool first) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_' ||
           (!first && std::isdigit(static_cast<unsigned char>(c)));
  };
  if (path.empty()) error("empty path");
  while (true) {
    const size_t start = i;
    while (i < path.size() && is_ident(path[i], i == start)) ++i;
    if (i == start) error("expected a field name");
    out.push_back({PathElem::Kind::kField, std::string(path.substr(start, i - start)), 0});
    while (i < path.size() && path[i] == '[') {
      ++i;
      if (i < path.size() && (path[i] == '\'' || path[i] == '"')) {
        const char quote = path[i++];
        std::string key;
        while (i < path.size() && path[i] != quote) {
          if (path[i] == '\\' && i + 1 < path.size()) ++i;
          key += path[i++];
        }
        if (i >= path.size()) error("unterminated key");
        ++i;
        out.push_back({PathElem::Kind::kKey, key, 0});
      } else {
        const size_t num_start = i;
        if (i < path.size() && path[i] == '-') ++i;
        while (i < path.size() && std::isdigit(static_cast<unsigned char>(path[i]))) ++i;
        if (i == num_start || (i == num_start + 1 && path[num_start] == '-')) {
          error("expected an index or a quoted key");
        }
        out.push_back({PathElem::Kind::kIndex, "",
                       std::stoll(std::string(path.substr(num_start, i - num_start)))});
      }
      if (i >= path.size() || path[i] != ']') error("expected ']'");
      ++i;
    }
    if (i == path.size()) break;
    if (path[i] != '.') error("expected '.' or '['");
    ++i;
  }
  return out;
}

void apply_override(ConfigBase& cfg, std::string_view override_text) {
  try {
    const size_t eq = override_text.find('=');
    if (eq == std::string_view::npos) fail("expected the form path=value");
    const std::string_view value = trim(override_text.substr(eq + 1));
    const std::vector<PathElem> elems = parse_config_path(trim(override_text.substr(0, eq)));

    ValueRef cur;  // ops == null: the root config itself
    std::string path;
    for (size_t k = 0; k < elems.size(); ++k) {
      const PathElem& e = elems[k];
      const bool last = k + 1 == elems.size();
      if (last && e.kind == PathElem::Kind::kField) {
        ConfigBase* held = cur.ops ? cur.ops->config(cur.ptr) : &cfg;
        const bool is_key = held ? (held->key_field() && e.name == held->key_field())
                                 : (e.name == "klass" || e.name == "fn");
        if (is_key) {
          if (!cur.ops) fail("the class of the root config cannot be changed by an override");
          if (cur.ops->is_config_slot()) {
            swap_class(cur, value, path, append_path(path, e));
            return;
          }
        }
      }
      ValueRef next = cur.ops ? cur.ops->child(cur.ptr, e, path) : cfg.field(e.name, "").ref();
      if (!cur.ops && e.kind != PathElem::Kind::kField) fail("a path starts with a field name");
      path = append_path(path, e);
      if (!last && next.field && !next.field->is_set()) {
        fail(path, " is REQUIRED and has not been set");
      }
      cur = next;
    }
    assign_literal(cur, value, path);
  } catch (const Error& e) {
    fail("override '", override_text, "': ", e.what());
  }
}

void apply_overrides(ConfigBase& cfg, const std::vector<std::string>& overrides) {
  for (const auto& o : overrides) apply_override(cfg, o);
}

}  // namespace axlearn
