// CRC-32C (Castagnoli), the checksum of TFRecord framing and of checkpoint tensor files, and
// TFRecord's masked form of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace axlearn {

// Extends `crc` (the result of a previous call, 0 to start) over `n` bytes.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);
inline uint32_t crc32c(const void* data, size_t n) { return crc32c_extend(0, data, n); }
inline uint32_t crc32c(std::string_view s) { return crc32c(s.data(), s.size()); }

// TFRecord stores rotated-plus-constant CRCs so that a CRC of data containing CRCs stays strong.
inline uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t unmask_crc32c(uint32_t masked) {
  uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace axlearn
