// Bad input raises axlearn::Error where the op is written (not at eval), naming the op and the
// offending shapes or dtypes; nothing a user passes may abort the process.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/primitives.h"
#include "axlearn/core/transforms.h"

namespace axlearn {
namespace {

// Runs fn and expects an axlearn::Error whose message names one of `ops` and contains every
// string in `parts` (shapes as numpy prints them, dtype names).
::testing::AssertionResult raises(const std::function<void()>& fn, std::vector<std::string> ops,
                                  std::vector<std::string> parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    bool named = ops.empty();
    for (const auto& op : ops) named = named || msg.find(op) != std::string::npos;
    if (!named) {
      return ::testing::AssertionFailure() << "message does not name the op: \"" << msg << "\"";
    }
    for (const auto& p : parts) {
      if (msg.find(p) == std::string::npos) {
        return ::testing::AssertionFailure() << "message lacks \"" << p << "\": \"" << msg << "\"";
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-axlearn::Error: " << e.what();
  }
  return ::testing::AssertionFailure() << "no exception";
}

Tensor f32(const Shape& s) { return zeros(s, float32); }

TEST(ErrorsTest, ElementwiseShapeMismatchNamesOpAndBothShapes) {
  EXPECT_TRUE(raises([] { add(f32({2, 3}), f32({4, 3})); }, {"add"}, {"(2, 3)", "(4, 3)"}));
  EXPECT_TRUE(raises([] { multiply(f32({2, 3}), f32({2})); }, {"mul"}, {"(2, 3)", "(2,)"}));
  EXPECT_TRUE(raises([] { maximum(f32({5}), f32({4})); }, {"max"}, {"(5,)", "(4,)"}));
  EXPECT_TRUE(raises([] { less(f32({2, 3}), f32({3, 2})); }, {"less", "lt"}, {"(2, 3)", "(3, 2)"}));
  EXPECT_TRUE(raises([] { (void)(f32({2, 3}) - f32({3, 3})); }, {"sub"}, {"(2, 3)", "(3, 3)"}));
}

TEST(ErrorsTest, WhereShapeMismatchNamesAllShapes) {
  Tensor cond = zeros({2, 3}, bool_);
  EXPECT_TRUE(raises(
      [&] {
        where(cond, f32({4, 3}), f32({3}));
      },
      {"where", "select"}, {"(2, 3)", "(4, 3)"}));
}

TEST(ErrorsTest, BroadcastToIncompatibleShape) {
  EXPECT_TRUE(raises([] { broadcast_to(f32({3}), {2, 4}); }, {"broadcast"}, {"(3,)", "(2, 4)"}));
  EXPECT_TRUE(raises(
      [] {
        broadcast_in_dim(f32({3}), {3, 4}, {1});
      },
      {"broadcast_in_dim"}, {"(3,)", "(3, 4)"}));
}

TEST(ErrorsTest, BitwiseOpsRejectFloats) {
  EXPECT_TRUE(raises([] { bitwise_and(f32({2}), f32({2})); }, {"and"}, {"float32"}));
  EXPECT_TRUE(
      raises([] { bitwise_or(zeros({2}, bfloat16), zeros({2}, bfloat16)); }, {"or"}, {"bfloat16"}));
  EXPECT_TRUE(
      raises([] { bitwise_xor(zeros({2}, float64), zeros({2}, float64)); }, {"xor"}, {"float64"}));
  EXPECT_TRUE(raises([] { left_shift(f32({2}), f32({2})); }, {"shift"}, {"float32"}));
  EXPECT_TRUE(raises([] { right_shift_logical(f32({2}), f32({2})); }, {"shift"}, {"float32"}));
}

TEST(ErrorsTest, MatmulInnerDimensionMismatch) {
  EXPECT_TRUE(raises(
      [] {
        matmul(f32({2, 3}), f32({4, 5}));
      },
      {"matmul", "dot_general"}, {"(2, 3)", "(4, 5)"}));
  EXPECT_TRUE(raises(
      [] {
        matmul(f32({7, 2, 3}), f32({6, 3, 5}));
      },
      {"matmul", "dot_general"}, {"(7, 2, 3)", "(6, 3, 5)"}));
  EXPECT_TRUE(raises([] { matmul(f32({}), f32({3})); }, {"matmul"}, {"()"}));
}

TEST(ErrorsTest, DotGeneralBadDimensions) {
  EXPECT_TRUE(raises(
      [] {
        dot_general(f32({2, 3}), f32({4, 3}), {1}, {0});
      },
      {"dot_general"}, {"(2, 3)", "(4, 3)"}));
  EXPECT_TRUE(raises(
      [] {
        dot_general(f32({2, 3}), f32({3, 4}), {2}, {0});
      },
      {"dot_general"}, {"(2, 3)"}));
  EXPECT_TRUE(raises(
      [] {
        dot_general(f32({5, 2, 3}), f32({4, 3, 6}), {2}, {1}, {0}, {0});
      },
      {"dot_general"}, {"(5, 2, 3)", "(4, 3, 6)"}));
}

TEST(ErrorsTest, EinsumBadSpec) {
  EXPECT_TRUE(raises(
      [] {
        einsum("ij,jk->ik", f32({2, 3}), f32({4, 5}));
      },
      {"einsum"}, {"(2, 3)", "(4, 5)"}));
  EXPECT_TRUE(raises(
      [] {
        einsum("ij,jk->ik", f32({2, 3, 1}), f32({3, 5}));
      },
      {"einsum"}, {"(2, 3, 1)"}));
  EXPECT_TRUE(raises([] { einsum("ij,jk->iz", f32({2, 3}), f32({3, 5})); }, {"einsum"}, {}));
  EXPECT_TRUE(raises([] { einsum("ij,jk,kl->il", {f32({2, 3}), f32({3, 5})}); }, {"einsum"}, {}));
}

TEST(ErrorsTest, ReshapeToWrongSize) {
  EXPECT_TRUE(raises([] { reshape(f32({2, 3}), {4, 2}); }, {"reshape"}, {"(2, 3)", "(4, 2)"}));
  EXPECT_TRUE(raises([] { reshape(f32({2, 3}), {4, -1}); }, {"reshape"}, {"(2, 3)"}));
  EXPECT_TRUE(raises([] { reshape(f32({2, 3}), {-1, -1}); }, {"reshape"}, {"(2, 3)"}));
}

TEST(ErrorsTest, ConcatenateRankOrSizeMismatch) {
  EXPECT_TRUE(raises(
      [] {
        concatenate({f32({2, 3}), f32({2})}, 0);
      },
      {"concatenate"}, {"(2, 3)", "(2,)"}));
  EXPECT_TRUE(raises(
      [] {
        concatenate({f32({2, 3}), f32({4, 4})}, 0);
      },
      {"concatenate"}, {"(2, 3)", "(4, 4)"}));
  EXPECT_TRUE(raises(
      [] {
        concatenate({f32({2, 3}), f32({2, 3})}, 2);
      },
      {"concatenate"}, {"axis"}));
  EXPECT_TRUE(raises([] { concatenate({}, 0); }, {"concatenate"}, {}));
  EXPECT_TRUE(raises(
      [] {
        stack({f32({2, 3}), f32({3, 2})});
      },
      {"stack", "concatenate"}, {"(2, 3)", "(3, 2)"}));
}

TEST(ErrorsTest, BadAxisNamesOpAndAxis) {
  EXPECT_TRUE(raises([] { sum(f32({2, 3}), {2}); }, {"sum", "reduce"}, {"axis 2"}));
  EXPECT_TRUE(raises([] { max(f32({2, 3}), {-3}); }, {"max", "reduce"}, {"axis -3"}));
  EXPECT_TRUE(raises([] { sum(f32({2, 3}), {1, 1}); }, {"sum", "reduce"}, {}));
  EXPECT_TRUE(raises([] { argmax(f32({2, 3}), 2); }, {"argmax"}, {"axis"}));
  EXPECT_TRUE(raises([] { softmax(f32({2, 3}), 5); }, {"softmax"}, {"axis"}));
  EXPECT_TRUE(raises([] { cumsum(f32({2, 3}), -3); }, {"cumsum"}, {"axis"}));
  EXPECT_TRUE(raises([] { sort(f32({2, 3}), 2); }, {"sort"}, {"axis"}));
  EXPECT_TRUE(raises([] { expand_dims(f32({2, 3}), 4); }, {"expand_dims"}, {"axis"}));
  EXPECT_TRUE(raises(
      [] {
        take(f32({2, 3}), zeros({2}, int32), 3);
      },
      {"take", "gather"}, {"axis"}));
}

TEST(ErrorsTest, TransposeBadPermutation) {
  EXPECT_TRUE(raises([] { transpose(f32({2, 3}), {0, 0}); }, {"transpose"}, {"(2, 3)"}));
  EXPECT_TRUE(raises([] { transpose(f32({2, 3}), {0, 1, 2}); }, {"transpose"}, {"(2, 3)"}));
}

TEST(ErrorsTest, SqueezeOfNonUnitAxis) {
  EXPECT_TRUE(raises([] { squeeze(f32({2, 1}), {0}); }, {"squeeze"}, {"(2, 1)"}));
}

TEST(ErrorsTest, SliceOutOfBounds) {
  EXPECT_TRUE(raises([] { slice(f32({4, 3}), {0, 0}, {5, 3}); }, {"slice"}, {"(4, 3)"}));
  EXPECT_TRUE(raises([] { slice(f32({4, 3}), {0}, {2}); }, {"slice"}, {"(4, 3)"}));
  EXPECT_TRUE(raises([] { slice(f32({4, 3}), {3, 0}, {1, 3}); }, {"slice"}, {"(4, 3)"}));
  EXPECT_TRUE(raises([] { slice(f32({4, 3}), {0, 0}, {4, 3}, {0, 1}); }, {"slice"}, {}));
}

TEST(ErrorsTest, DynamicSliceWindowLargerThanOperand) {
  Tensor starts = zeros({2}, int32);
  EXPECT_TRUE(raises(
      [&] {
        dynamic_slice(f32({4, 3}), starts, {5, 1});
      },
      {"dynamic_slice"}, {"(4, 3)"}));
  EXPECT_TRUE(raises(
      [&] {
        dynamic_slice(f32({4, 3}), zeros({3}, int32), {1, 1});
      },
      {"dynamic_slice"}, {"(4, 3)"}));
  EXPECT_TRUE(raises(
      [&] {
        dynamic_update_slice(f32({4, 3}), f32({5, 3}), starts);
      },
      {"dynamic_update_slice"}, {"(4, 3)", "(5, 3)"}));
  EXPECT_TRUE(raises(
      [&] {
        dynamic_slice(f32({4, 3}), zeros({2}, float32), {1, 1});
      },
      {"dynamic_slice"}, {"float32"}));
}

TEST(ErrorsTest, PadWithWrongNumberOfWidths) {
  EXPECT_TRUE(raises([] { pad(f32({2, 3}), {{1, 1}}); }, {"pad"}, {"(2, 3)"}));
  EXPECT_TRUE(raises([] { pad_general(f32({2}), scalar(0), {-3}, {0}, {0}); }, {"pad"}, {"(2,)"}));
  EXPECT_TRUE(raises([] { pad_general(f32({2}), scalar(0), {0}, {0}, {-1}); }, {"pad"}, {}));
}

TEST(ErrorsTest, TakeNeedsIntegerIndices) {
  EXPECT_TRUE(raises([] { take(f32({4}), f32({2})); }, {"take", "gather"}, {"float32"}));
  EXPECT_TRUE(raises([] { one_hot(f32({2}), 3); }, {"one_hot"}, {"float32"}));
  EXPECT_TRUE(raises(
      [] {
        scatter_add(f32({4, 2}), zeros({3}, int32), f32({3, 3}));
      },
      {"scatter_add"}, {"(4, 2)", "(3, 3)"}));
}

TEST(ErrorsTest, SplitIntoUnequalSections) {
  EXPECT_TRUE(raises([] { split(f32({7}), 3); }, {"split"}, {"(7,)"}));
}

TEST(ErrorsTest, ReadingDataOfWrongSizeOrPlaceholder) {
  EXPECT_TRUE(raises([] { (void)f32({2}).item<float>(); }, {"item"}, {"(2,)"}));
  Tensor p = Tensor::placeholder({2, 3}, float32);
  EXPECT_TRUE(raises([&] { eval(add(p, p)); }, {"eval"}, {"(2, 3)"}));
  EXPECT_TRUE(raises([] { Tensor().shape(); }, {}, {"undefined"}));
}

TEST(ErrorsTest, ArrayFromWrongNumberOfValues) {
  EXPECT_TRUE(raises([] { array(std::vector<float>{1, 2, 3}, {2, 2}); }, {"array"}, {"(2, 2)"}));
}

TEST(ErrorsTest, GradNeedsScalarFloatOutput) {
  Tensor x = ones({3}, float32);
  EXPECT_TRUE(raises([&] { grad([](const std::vector<Tensor>& a) { return a[0]; })({x}); },
                     {"grad"}, {"(3,)"}));
  Tensor i = ones({}, int32);
  EXPECT_TRUE(raises([&] { grad([](const std::vector<Tensor>& a) { return a[0]; })({i}); },
                     {"grad"}, {"int32"}));
  EXPECT_TRUE(raises(
      [&] { vjp([](const std::vector<Tensor>& a) { return a; }, {x}, {ones({2}, float32)}); },
      {"vjp"}, {"(2,)", "(3,)"}));
}

TEST(ErrorsTest, NegativeSizesAndDegenerateArguments) {
  EXPECT_TRUE(raises([] { zeros({2, -1}); }, {"zeros", "full", "broadcast"}, {"-1"}));
  EXPECT_TRUE(raises([] { reshape(f32({2, 3}), {-2, -3}); }, {"reshape"}, {"(2, 3)"}));
  EXPECT_TRUE(raises([] { arange(0, 5, 0); }, {"arange"}, {"step"}));
  EXPECT_TRUE(raises([] { iota({2, 3}, 2); }, {"iota"}, {"axis 2"}));
  EXPECT_TRUE(raises([] { top_k(f32({2, 3}), 4); }, {"top_k"}, {"(2, 3)"}));
  EXPECT_TRUE(raises([] { split(f32({6}), 0); }, {"split"}, {}));
  EXPECT_TRUE(raises([] { one_hot(zeros({2}, int32), -1); }, {"one_hot"}, {}));
}

TEST(ErrorsTest, IndexingRankMismatch) {
  EXPECT_TRUE(raises(
      [] {
        take_along_axis(f32({3, 4}), zeros({3}, int32), 1);
      },
      {"take_along_axis", "gather"}, {"(3, 4)", "(3,)"}));
  EXPECT_TRUE(raises(
      [] {
        dynamic_update_slice(f32({4, 3}), f32({3}), zeros({2}, int32));
      },
      {"dynamic_update_slice"}, {"(4, 3)", "(3,)"}));
  EXPECT_TRUE(raises(
      [] {
        broadcast_in_dim(f32({3, 2}), {2, 3}, {1, 0});
      },
      {"broadcast_in_dim"}, {"(3, 2)", "(2, 3)"}));
  EXPECT_TRUE(raises(
      [] {
        broadcast_in_dim(f32({3}), {3, 4}, {0, 1});
      },
      {"broadcast_in_dim"}, {"(3,)"}));
}

TEST(ErrorsTest, PrimitiveInferRejectsMismatchedInputs) {
  // ops.h broadcasts and promotes; the primitives themselves insist on equal shapes and dtypes.
  auto bin = std::make_shared<Binary>(BinaryOp::kAdd);
  EXPECT_TRUE(raises(
      [&] {
        Tensor::make(bin, {f32({2, 3}), f32({3})});
      },
      {"add"}, {"(2, 3)", "(3,)"}));
  EXPECT_TRUE(raises(
      [&] {
        Tensor::make(bin, {f32({2}), zeros({2}, int32)});
      },
      {"add"}, {"float32", "int32"}));
  auto sel = std::make_shared<Select>();
  EXPECT_TRUE(raises(
      [&] {
        Tensor::make(sel, {f32({2}), f32({2}), f32({2})});
      },
      {"select"}, {"float32"}));
  EXPECT_TRUE(raises([&] { Tensor::make(std::make_shared<BitcastConvert>(float16), {f32({2})}); },
                     {"bitcast"}, {"float32", "float16"}));
}

}  // namespace
}  // namespace axlearn
