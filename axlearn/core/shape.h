// Shapes and strides (row-major, in elements), axis normalisation and broadcasting rules.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace axlearn {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

int64_t num_elements(const Shape& shape);
Strides row_major_strides(const Shape& shape);
std::string shape_str(const Shape& shape);  // "(2, 3)" as numpy prints it
std::ostream& operator<<(std::ostream& os, const Shape& shape);

// Maps a possibly negative axis into [0, ndim); throws Error naming `op` when out of range.
int normalize_axis(int axis, int ndim, const char* op);
std::vector<int> normalize_axes(const std::vector<int>& axes, int ndim, const char* op);

// numpy broadcasting of two shapes; throws Error naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace axlearn
