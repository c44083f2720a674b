// How the communicators combine members' buffers in reductions: one rule for every backend, so
// virtual devices and MPI ranks give the same bits. 16-bit floats round after each step, as a
// device receiving a 16-bit buffer would, and a NaN wins max and min.
#pragma once

#include <cstdint>

#include "axlearn/dist/communicator.h"

namespace axlearn::dist::combine {

// acc[i] = op(acc[i], x[i]) for i < n.
template <typename T>
void reduce_into(T* acc, const T* x, int64_t n, ReduceKind op) {
  switch (op) {
    case ReduceKind::kSum:
      for (int64_t i = 0; i < n; ++i) acc[i] = T(acc[i] + x[i]);
      break;
    case ReduceKind::kMax:
      for (int64_t i = 0; i < n; ++i) acc[i] = x[i] > acc[i] || x[i] != x[i] ? x[i] : acc[i];
      break;
    case ReduceKind::kMin:
      for (int64_t i = 0; i < n; ++i) acc[i] = x[i] < acc[i] || x[i] != x[i] ? x[i] : acc[i];
      break;
  }
}

}  // namespace axlearn::dist::combine
