#include "axlearn/config/format.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "axlearn/core/error.h"

namespace axlearn {

namespace {

// Formats shortest round-trip scientific text ("d.ddde±x") the way Python's float repr does.
std::string repr_from_scientific(std::string_view sci) {
  bool negative = false;
  if (!sci.empty() && sci[0] == '-') {
    negative = true;
    sci.remove_prefix(1);
  }
  const size_t e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e_pos)) {
    if (c != '.') digits += c;
  }
  int exponent = 0;
  if (e_pos != std::string_view::npos) {
    std::string_view exp_text = sci.substr(e_pos + 1);
    if (!exp_text.empty() && exp_text[0] == '+') exp_text.remove_prefix(1);
    std::from_chars(exp_text.data(), exp_text.data() + exp_text.size(), exponent);
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int decpt = exponent + 1;  // value = 0.d1d2... * 10^decpt
  std::string out = negative ? "-" : "";
  if (decpt <= -4 || decpt > 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    char buf[16];
    std::snprintf(buf, sizeof(buf), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + buf;
  }
  const int n = int(digits.size());
  if (decpt <= 0) return out + "0." + std::string(size_t(-decpt), '0') + digits;
  if (decpt >= n) return out + digits + std::string(size_t(decpt - n), '0') + ".0";
  return out + digits.substr(0, size_t(decpt)) + "." + digits.substr(size_t(decpt));
}

template <typename F>
std::string float_repr(F value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  return repr_from_scientific(std::string_view(buf, size_t(res.ptr - buf)));
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Recursive-descent parser over a Python-like literal.
class LiteralParser {
 public:
  explicit LiteralParser(std::string_view text) : text_(text) {}

  Json parse_all() {
    skip_space();
    Json v = parse_value(/*top_level=*/true);
    skip_space();
    if (pos_ != text_.size()) error("unexpected text after the value");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail("cannot parse value '", text_, "' at offset ", pos_, ": ", what);
  }
  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }
  bool at(char c) const { return pos_ < text_.size() && text_[pos_] == c; }

  Json parse_value(bool top_level) {
    skip_space();
    if (pos_ >= text_.size()) error("expected a value");
    const char c = text_[pos_];
    if (c == '[' || c == '(') return parse_list(c == '[' ? ']' : ')');
    if (c == '{') return parse_dict();
    if (c == '\'' || c == '"') return parse_string();
    return parse_word(top_level);
  }

  Json parse_list(char close) {
    ++pos_;
    Json out = Json::array();
    skip_space();
    while (!at(close)) {
      out.push_back(parse_value(false));
      skip_space();
      if (at(',')) {
        ++pos_;
        skip_space();
      } else if (!at(close)) {
        error(std::string("expected ',' or '") + close + "'");
      }
    }
    ++pos_;
    return out;
  }

  Json parse_dict() {
    ++pos_;
    Json out = Json::object();
    skip_space();
    while (!at('}')) {
      Json key = parse_value(false);
      if (!key.is_string()) error("dict keys must be strings");
      skip_space();
      if (!at(':')) error("expected ':'");
      ++pos_;
      out[key.get<std::string>()] = parse_value(false);
      skip_space();
      if (at(',')) {
        ++pos_;
        skip_space();
      } else if (!at('}')) {
        error("expected ',' or '}'");
      }
    }
    ++pos_;
    return out;
  }

  Json parse_string() {
    const char quote = text_[pos_++];
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      char c = text_[pos_++];
      if (c == '\\' && pos_ < text_.size()) {
        const char e = text_[pos_++];
        switch (e) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case 'r':
            out += '\r';
            break;
          case '0':
            out += '\0';
            break;
          case 'x': {
            if (pos_ + 2 > text_.size()) error("truncated \\x escape");
            out += char(std::stoi(std::string(text_.substr(pos_, 2)), nullptr, 16));
            pos_ += 2;
            break;
          }
          default:
            out += e;  // \\, \', \"
        }
      } else {
        out += c;
      }
    }
    if (pos_ >= text_.size()) error("unterminated string");
    ++pos_;
    return out;
  }

  // A bare token: keyword, number or unquoted string. Inside brackets it ends at a delimiter;
  // at top level it is the whole remaining text (so `name=my run` is one string).
  Json parse_word(bool top_level) {
    const size_t start = pos_;
    if (top_level) {
      pos_ = text_.size();
    } else {
      while (pos_ < text_.size() &&
             std::string_view(",[](){}:").find(text_[pos_]) == std::string_view::npos) {
        ++pos_;
      }
    }
    const std::string_view word = trim(text_.substr(start, pos_ - start));
    if (word.empty()) error("expected a value");
    if (word == "None" || word == "null") return nullptr;
    if (word == "True" || word == "true") return true;
    if (word == "False" || word == "false") return false;
    int64_t i = 0;
    auto ires = std::from_chars(word.data() + (word[0] == '+'), word.data() + word.size(), i);
    if (ires.ec == std::errc() && ires.ptr == word.data() + word.size()) return i;
    if (ires.ec == std::errc::result_out_of_range) error("integer out of range");
    double d = 0;
    std::string_view num = word;
    if (!num.empty() && num[0] == '+') num.remove_prefix(1);
    auto dres = std::from_chars(num.data(), num.data() + num.size(), d);
    if (dres.ec == std::errc() && dres.ptr == num.data() + num.size()) return d;
    return std::string(word);
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

std::string py_repr(double value) { return float_repr(value); }
std::string py_repr_f32(float value) { return float_repr(value); }

std::string py_repr(std::string_view text) {
  const bool has_single = text.find('\'') != std::string_view::npos;
  const bool has_double = text.find('"') != std::string_view::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == quote) {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", u);
      out += buf;
    } else {
      out += c;  // printable ASCII and UTF-8 bytes pass through, as Python prints them
    }
  }
  return out + quote;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string suggest_names(std::string_view name, const std::vector<std::string>& candidates) {
  if (candidates.empty()) return "";
  size_t best = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) best = std::min(best, edit_distance(name, c));
  // A typo is a few edits; beyond a third of the name it is a different word.
  const size_t limit = std::max<size_t>(2, name.size() / 3);
  std::vector<std::string> close;
  if (best <= limit) {
    for (const auto& c : candidates) {
      if (edit_distance(name, c) == best) close.push_back(c);
    }
  }
  std::string out;
  const auto& shown = close.empty() ? candidates : close;
  for (size_t i = 0; i < shown.size(); ++i) {
    out += (i ? ", '" : "'") + shown[i] + "'";
  }
  return close.empty() ? " (valid names: " + out + ")" : " (did you mean " + out + "?)";
}

Json parse_literal(std::string_view text) { return LiteralParser(trim(text)).parse_all(); }

std::string json_type_name(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "None";
    case Json::value_t::boolean:
      return "bool";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "int";
    case Json::value_t::number_float:
      return "float";
    case Json::value_t::string:
      return "str";
    case Json::value_t::array:
      return "list";
    case Json::value_t::object:
      return "dict";
    default:
      return "unknown";
  }
}

std::string describe_json(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "None";
    case Json::value_t::boolean:
      return std::string("bool ") + (value.get<bool>() ? "True" : "False");
    case Json::value_t::number_float:
      return "float " + py_repr(value.get<double>());
    case Json::value_t::string:
      return "str " + py_repr(value.get<std::string>());
    default: {
      std::string dumped = value.dump();
      if (dumped.size() > 60) dumped = dumped.substr(0, 57) + "...";
      return json_type_name(value) + " " + dumped;
    }
  }
}

}  // namespace axlearn
