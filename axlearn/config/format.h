// Text helpers of the config system: Python-style repr of floats and strings (the way AXLearn's
// golden config dumps print values), close-name suggestions for typos, and the literal parser
// behind string overrides (`model.decoder.dim=512`, `args[1].b2=0.9`, `axes=['data', None]`).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace axlearn {

// Configs dump and load JSON with object keys in insertion order (dict fields keep their order).
using Json = nlohmann::ordered_json;

// repr() of a Python float: the shortest digits that round-trip, fixed notation for exponents in
// [-4, 16) with a trailing ".0" when integral, otherwise "1e-08" / "1e+16"; "inf", "nan".
std::string py_repr(double value);
// The same for a float32 value (shortest digits that round-trip as float32).
std::string py_repr_f32(float value);
// repr() of a Python str: single quotes unless the text holds ' and no ", backslash escapes.
std::string py_repr(std::string_view text);

// Levenshtein distance (insertions, deletions, substitutions).
size_t edit_distance(std::string_view a, std::string_view b);
// " (did you mean 'dim'?)" for the closest candidates within a small edit distance, otherwise
// " (valid names: a, b, c)"; "" when there are no candidates.
std::string suggest_names(std::string_view name, const std::vector<std::string>& candidates);

// Parses an override's right-hand side: None/null, True/False/true/false, integers, floats
// (1e-3, .5, inf, nan), quoted strings with backslash escapes, [lists] / (tuples), {dicts}, and
// bare words, which are strings. Throws Error on malformed text (unbalanced brackets...).
Json parse_literal(std::string_view text);

// "int", "float", "bool", "str", "list", "dict" or "None": how a JSON value reads to a user.
std::string json_type_name(const Json& value);
// "str 'abc'", "float 1.5", "list [1, 2]": the given value in an error message.
std::string describe_json(const Json& value);

}  // namespace axlearn
