// The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of JSON
// naming each tensor's dtype, shape and byte range, then the raw row-major data. Readers validate
// every offset against the file before touching data; the writer commits atomically.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/core/tensor.h"

namespace axlearn::io {

// Largest JSON header accepted (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// One tensor's header entry. begin/end are byte offsets into the data buffer (which starts
// right after the header), as stored in the file's "data_offsets".
struct TensorInfo {
  std::string name;
  Dtype dtype = float32;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct SafetensorsFile {
  std::map<std::string, std::string> metadata;          // the header's "__metadata__"
  std::vector<std::pair<std::string, Tensor>> tensors;  // in name order
};

// The safetensors dtype string ("F32", "BF16", "I64", "BOOL", ...) of a dtype, and back; the
// latter throws Error for strings that are not a dtype we hold (e.g. "I16", "F8_E4M3").
const char* safetensors_dtype_name(Dtype dtype);
Dtype dtype_from_safetensors_name(const std::string& name);

// Writes `tensors` (evaluated here) and string metadata to `path`: header keys sorted, data laid
// out in name order, header padded with spaces to a multiple of 8 bytes. The file is written
// to a temporary beside `path`, fsynced and renamed, so a reader sees the old file or the whole
// new one. Throws Error on duplicate or empty names, invalid UTF-8 names, or I/O failure.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads and validates the whole file. Throws Error naming the file and the problem (and the
// tensor and byte offsets where there is one) on any malformed input.
SafetensorsFile load_safetensors(const std::string& path);

// Reads and validates only the header (no tensor data is read), in name order.
std::vector<TensorInfo> read_safetensors_header(const std::string& path);

// Reads one tensor by name after validating the header; throws Error when absent.
Tensor load_safetensors_tensor(const std::string& path, const std::string& name);

}  // namespace axlearn::io
