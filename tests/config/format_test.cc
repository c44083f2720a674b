// Python-style reprs (values from CPython's repr), the literal parser, edit distance.
#include "axlearn/config/format.h"

#include <gtest/gtest.h>

#include <limits>

#include "axlearn/core/error.h"

namespace axlearn {
namespace {

TEST(FormatTest, FloatReprMatchesPython) {
  // Expected strings printed by CPython 3 repr().
  const std::vector<std::pair<double, std::string>> cases = {
      {1.0, "1.0"},
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {0.1, "0.1"},
      {1e-8, "1e-08"},
      {1e-5, "1e-05"},
      {6e-4, "0.0006"},
      {0.0001, "0.0001"},
      {2.6666666666666665, "2.6666666666666665"},
      {1e16, "1e+16"},
      {1e15, "1000000000000000.0"},
      {123456789012345678.0, "1.2345678901234568e+17"},
      {1.5e-7, "1.5e-07"},
      {-2.5, "-2.5"},
      {1e100, "1e+100"},
      {3e-5, "3e-05"},
      {1.0 / 3.0, "0.3333333333333333"},
      {12345.678, "12345.678"},
      {5e-324, "5e-324"},
      {std::numeric_limits<double>::infinity(), "inf"},
      {-std::numeric_limits<double>::infinity(), "-inf"},
      {std::numeric_limits<double>::quiet_NaN(), "nan"},
  };
  for (const auto& [v, want] : cases) EXPECT_EQ(py_repr(v), want) << want;
}

TEST(FormatTest, Float32ReprIsShortestForFloat32) {
  // numpy's float32 str(): the shortest digits that round-trip as float32.
  EXPECT_EQ(py_repr_f32(0.1f), "0.1");
  EXPECT_EQ(py_repr_f32(1e-5f), "1e-05");
  EXPECT_EQ(py_repr_f32(3.4028235e38f), "3.4028235e+38");
  EXPECT_EQ(py_repr_f32(0.95f), "0.95");
}

TEST(FormatTest, StringReprMatchesPython) {
  EXPECT_EQ(py_repr(std::string_view("data")), "'data'");
  EXPECT_EQ(py_repr(std::string_view("it's")), "\"it's\"");
  EXPECT_EQ(py_repr(std::string_view("a\"b")), "'a\"b'");
  EXPECT_EQ(py_repr(std::string_view("both'\"")), "'both\\'\"'");
  EXPECT_EQ(py_repr(std::string_view("tab\there\nnl\\")), "'tab\\there\\nnl\\\\'");
  EXPECT_EQ(py_repr(std::string_view("\x01")), "'\\x01'");
}

TEST(FormatTest, ParseLiteral) {
  EXPECT_EQ(parse_literal("512"), Json(512));
  EXPECT_EQ(parse_literal("-3"), Json(-3));
  EXPECT_TRUE(parse_literal("1e-3").is_number_float());
  EXPECT_DOUBLE_EQ(parse_literal("1e-3").get<double>(), 1e-3);
  EXPECT_DOUBLE_EQ(parse_literal(".5").get<double>(), 0.5);
  EXPECT_EQ(parse_literal("True"), Json(true));
  EXPECT_EQ(parse_literal("false"), Json(false));
  EXPECT_TRUE(parse_literal("None").is_null());
  EXPECT_EQ(parse_literal("'a b'"), Json("a b"));
  EXPECT_EQ(parse_literal("bare words"), Json("bare words"));
  EXPECT_EQ(parse_literal("[1, 'x', [None, 2.5], (3,)]"),
            Json::parse(R"([1, "x", [null, 2.5], [3]])"));
  EXPECT_EQ(parse_literal("{'a': 1, b: [2]}"), Json::parse(R"({"a": 1, "b": [2]})"));
  EXPECT_THROW(parse_literal("[1, 2"), Error);
  EXPECT_THROW(parse_literal("'open"), Error);
  EXPECT_THROW(parse_literal("99999999999999999999"), Error);
}

TEST(FormatTest, EditDistanceAndSuggestions) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("dim", "dim"), 0u);
  EXPECT_EQ(suggest_names("num_layer", {"dim", "num_layers", "norm"}),
            " (did you mean 'num_layers'?)");
  EXPECT_EQ(suggest_names("xyzzy", {"dim", "norm"}), " (valid names: 'dim', 'norm')");
  EXPECT_EQ(suggest_names("x", {}), "");
}

}  // namespace
}  // namespace axlearn
