// Materialised data: devices, reference-counted storages from a caching allocator, and
// `Array`, a strided view of a storage (what a kernel reads and writes).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "axlearn/core/dtype.h"
#include "axlearn/core/shape.h"

namespace axlearn {

struct Device {
  enum class Type : uint8_t { kCpu, kCuda };
  Type type = Type::kCpu;
  int index = 0;
  static Device cpu(int index = 0) { return {Type::kCpu, index}; }
  bool operator==(const Device&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Device& d);

// Host memory pool: freed blocks are kept per rounded size and handed out again, so a training
// step in steady state does not call the system allocator. Thread-safe.
class CpuAllocator {
 public:
  static CpuAllocator& instance();
  void* allocate(size_t nbytes);
  void deallocate(void* p, size_t nbytes);
  // Returns cached blocks to the system.
  void clear_cache();
  // Freed blocks are returned to the system instead of cached once the cache holds this many
  // bytes (default 4 GiB).
  void set_cache_limit(size_t bytes);

  size_t bytes_in_use() const;  // live blocks, rounded sizes
  size_t peak_bytes() const;    // max of bytes_in_use since the last reset_peak()
  size_t bytes_cached() const;  // free blocks held for reuse
  void reset_peak();

  static size_t round_size(size_t nbytes);

 private:
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t in_use_ = 0, peak_ = 0, cached_ = 0;
  size_t cache_limit_ = size_t(4) << 30;
};

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  // Non-null for storage that wraps memory the allocator does not own.
  std::shared_ptr<void> external;
  Storage(size_t nbytes, Device device);
  Storage(void* data, size_t nbytes, std::shared_ptr<void> owner);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

// A strided view of a storage. Strides and offset are in elements; strides may be 0 (broadcast)
// but are never negative.
struct Array {
  Shape shape;
  Strides strides;
  int64_t offset = 0;
  Dtype dtype = float32;
  std::shared_ptr<Storage> storage;

  static Array empty(const Shape& shape, Dtype dtype, Device device = Device::cpu());
  int ndim() const { return int(shape.size()); }
  int64_t size() const { return num_elements(shape); }
  size_t nbytes() const { return size_t(size()) * size_of(dtype); }
  bool defined() const { return storage != nullptr; }
  bool is_contiguous() const;  // row-major, dense
  template <typename T>
  T* data() const {
    return static_cast<T*>(storage->data) + offset;
  }
  void* raw() const { return static_cast<char*>(storage->data) + offset * size_of(dtype); }
  // Reads element `flat` (row-major index) as double; for printing and tests.
  double get_as_double(int64_t flat) const;
};

// Returns a dense row-major copy (or `a` itself when already dense).
Array contiguous(const Array& a);

}  // namespace axlearn
