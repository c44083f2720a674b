// The caching allocator and strided arrays.
#include <gtest/gtest.h>

#include <climits>

#include "axlearn/core/array.h"
#include "axlearn/core/ops.h"

namespace axlearn {
namespace {

TEST(CpuAllocatorTest, FreedBlocksAreReusedForTheSameRoundedSize) {
  auto& alloc = CpuAllocator::instance();
  const size_t n = 3 << 20;
  void* p = alloc.allocate(n);
  const size_t in_use = alloc.bytes_in_use();
  alloc.deallocate(p, n);
  EXPECT_EQ(alloc.bytes_in_use(), in_use - CpuAllocator::round_size(n));
  EXPECT_GE(alloc.bytes_cached(), CpuAllocator::round_size(n));
  void* q = alloc.allocate(n - 100);  // rounds to the same block size
  EXPECT_EQ(p, q);
  alloc.deallocate(q, n - 100);
}

TEST(CpuAllocatorTest, CacheLimitReturnsMemoryToTheSystem) {
  auto& alloc = CpuAllocator::instance();
  alloc.set_cache_limit(0);
  EXPECT_EQ(alloc.bytes_cached(), 0u);
  void* p = alloc.allocate(1 << 20);
  alloc.deallocate(p, 1 << 20);
  EXPECT_EQ(alloc.bytes_cached(), 0u);
  alloc.set_cache_limit(size_t(4) << 30);
}

TEST(CpuAllocatorTest, RoundSizeIsMonotoneAndCoversTheRequest) {
  size_t prev = 0;
  for (size_t n = 1; n < (size_t(1) << 26); n = n * 3 / 2 + 7) {
    size_t r = CpuAllocator::round_size(n);
    EXPECT_GE(r, n);
    EXPECT_GE(r, prev);
    EXPECT_LE(r, n + n / 8 + 256) << n;  // waste stays bounded
    prev = r;
  }
}

TEST(ArrayTest, ContiguousCopiesTransposedViewsInRowMajorOrder) {
  Array a = Array::empty({2, 3}, float32);
  for (int i = 0; i < 6; ++i) a.data<float>()[i] = float(i);
  Array t = a;
  t.shape = {3, 2};
  t.strides = {1, 3};
  EXPECT_FALSE(t.is_contiguous());
  Array c = contiguous(t);
  EXPECT_TRUE(c.is_contiguous());
  const float want[] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.data<float>()[i], want[i]);
}

TEST(ArrayTest, BroadcastViewsShareStorage) {
  Tensor x = arange(3, float32);
  Tensor b = broadcast_to(x, {4, 3});
  b.eval();
  EXPECT_EQ(b.array().storage, x.array().storage);
  EXPECT_EQ(b.array().strides, (Strides{0, 1}));
  EXPECT_EQ(b.to_vector<float>()[10], 1.0f);
}

TEST(ArrayTest, NegativeDimensionsAreUserErrors) {
  EXPECT_THROW(iota({-1}, 0), Error);
  EXPECT_THROW(full({2, -3}, 1.0), Error);
}

}  // namespace
}  // namespace axlearn

namespace axlearn {
namespace {

TEST(IndexingEdgeTest, EmptyAxesAreUserErrorsNotCrashes) {
  Tensor empty = zeros({0, 3});
  Tensor idx = array(std::vector<int32_t>{0, 1}, {2});
  EXPECT_THROW(take(empty, idx, 0), Error);
  EXPECT_THROW(scatter_add(empty, idx, ones({2, 3}), 0), Error);
  // An empty index list on an empty axis is fine.
  Tensor none = array(std::vector<int32_t>{}, {0});
  EXPECT_EQ(take(empty, none, 0).shape(), (Shape{0, 3}));
}

}  // namespace
}  // namespace axlearn

namespace axlearn {
namespace {

TEST(TopKEdgeTest, BoolAndIntegerInputsSortDescendingWithoutWrapping) {
  TopK b = top_k(array(std::vector<bool>{false, true, false, true}, {4}), 2);
  EXPECT_EQ(b.indices.to_vector<int>(), (std::vector<int>{1, 3}));
  TopK i = top_k(array(std::vector<int32_t>{INT32_MIN, 5, -3}, {3}), 3);
  EXPECT_EQ(i.values.to_vector<int64_t>(), (std::vector<int64_t>{5, -3, INT32_MIN}));
}

}  // namespace
}  // namespace axlearn
