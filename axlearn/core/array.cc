#include "axlearn/core/array.h"

#include <cstdlib>
#include <new>

#include "axlearn/core/error.h"

namespace axlearn {

std::ostream& operator<<(std::ostream& os, const Device& d) {
  return os << (d.type == Device::Type::kCpu ? "cpu:" : "cuda:") << d.index;
}

CpuAllocator& CpuAllocator::instance() {
  static CpuAllocator* a = new CpuAllocator();  // never destroyed: storages may outlive statics
  return *a;
}

size_t CpuAllocator::round_size(size_t n) {
  if (n <= 256) return 256;
  if (n <= (size_t(1) << 20)) return (n + 255) & ~size_t(255);
  // Above 1 MiB: steps of 1/16 of the enclosing power of two, so reuse finds close sizes.
  size_t p = size_t(1) << (63 - __builtin_clzll(n));
  size_t step = p / 16;
  return (n + step - 1) / step * step;
}

void* CpuAllocator::allocate(size_t nbytes) {
  size_t n = round_size(nbytes);
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = free_.find(n);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      cached_ -= n;
      in_use_ += n;
      peak_ = std::max(peak_, in_use_);
      return p;
    }
  }
  void* p = std::aligned_alloc(64, n);
  if (p == nullptr) {
    clear_cache();
    p = std::aligned_alloc(64, n);
    if (p == nullptr) fail("out of host memory allocating ", nbytes, " bytes");
  }
  std::lock_guard<std::mutex> l(mu_);
  in_use_ += n;
  peak_ = std::max(peak_, in_use_);
  return p;
}

void CpuAllocator::deallocate(void* p, size_t nbytes) {
  size_t n = round_size(nbytes);
  {
    std::lock_guard<std::mutex> l(mu_);
    in_use_ -= n;
    if (cached_ + n <= cache_limit_) {
      free_[n].push_back(p);
      cached_ += n;
      return;
    }
  }
  std::free(p);
}

void CpuAllocator::set_cache_limit(size_t bytes) {
  {
    std::lock_guard<std::mutex> l(mu_);
    cache_limit_ = bytes;
    if (cached_ <= cache_limit_) return;
  }
  clear_cache();
}

void CpuAllocator::clear_cache() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [n, v] : free_) {
    for (void* p : v) std::free(p);
  }
  free_.clear();
  cached_ = 0;
}

size_t CpuAllocator::bytes_in_use() const {
  std::lock_guard<std::mutex> l(mu_);
  return in_use_;
}
size_t CpuAllocator::peak_bytes() const {
  std::lock_guard<std::mutex> l(mu_);
  return peak_;
}
size_t CpuAllocator::bytes_cached() const {
  std::lock_guard<std::mutex> l(mu_);
  return cached_;
}
void CpuAllocator::reset_peak() {
  std::lock_guard<std::mutex> l(mu_);
  peak_ = in_use_;
}

Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev) {
  AXLEARN_CHECK(dev.type == Device::Type::kCpu, "only CPU storage is available in this build");
  data = CpuAllocator::instance().allocate(n);
}

Storage::Storage(void* d, size_t n, std::shared_ptr<void> owner)
    : data(d), nbytes(n), external(std::move(owner)) {}

Storage::~Storage() {
  if (!external && data) CpuAllocator::instance().deallocate(data, nbytes);
}

Array Array::empty(const Shape& shape, Dtype dtype, Device device) {
  Array a;
  a.shape = shape;
  a.strides = row_major_strides(shape);
  a.dtype = dtype;
  a.storage =
      std::make_shared<Storage>(std::max<size_t>(1, num_elements(shape) * size_of(dtype)), device);
  return a;
}

bool Array::is_contiguous() const {
  int64_t expect = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape[i] == 1) continue;
    if (strides[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

double Array::get_as_double(int64_t flat) const {
  int64_t off = 0;
  for (int i = ndim() - 1; i >= 0; --i) {
    off += (flat % shape[i]) * strides[i];
    flat /= shape[i];
  }
  return dispatch_dtype(dtype, [&](auto t) -> double {
    using T = decltype(t);
    return cast_value<double>(data<T>()[off]);
  });
}

Array contiguous(const Array& a) {
  if (a.is_contiguous()) return a;
  Array out = Array::empty(a.shape, a.dtype, a.storage->device);
  const int nd = a.ndim();
  const int64_t n = a.size();
  const size_t es = size_of(a.dtype);
  if (n == 0) return out;
  // Copy row by row along the last axis with a multi-index over the leading ones.
  const int64_t inner = nd ? a.shape[nd - 1] : 1;
  const int64_t inner_stride = nd ? a.strides[nd - 1] : 1;
  const int64_t rows = n / inner;
  std::vector<int64_t> idx(std::max(nd - 1, 0), 0);
  char* dst = static_cast<char*>(out.raw());
  const char* base = static_cast<const char*>(a.raw());
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0;
    for (int i = 0; i < nd - 1; ++i) off += idx[i] * a.strides[i];
    const char* src = base + off * es;
    char* d = dst + r * inner * es;
    if (inner_stride == 1) {
      std::memcpy(d, src, inner * es);
    } else {
      for (int64_t j = 0; j < inner; ++j) std::memcpy(d + j * es, src + j * inner_stride * es, es);
    }
    for (int i = nd - 2; i >= 0; --i) {
      if (++idx[i] < a.shape[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

}  // namespace axlearn
