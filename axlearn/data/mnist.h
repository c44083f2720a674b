// MNIST-format datasets: a reader for IDX files (gzipped or plain) and loaders for MNIST and
// Fashion-MNIST that return images as float32 (N, rows * cols) in [0, 1] and labels as int32 (N,).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "axlearn/core/tensor.h"

namespace axlearn::data {

// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// An IDX file of unsigned bytes: its dimensions (big-endian u32s in the header) and elements.
struct IdxArray {
  Shape dims;
  std::vector<uint8_t> data;  // row-major, num_elements(dims) bytes
};

// Reads an IDX file of element type 0x08 (unsigned byte), gzipped or not (detected from the
// content). `expected_ndim` >= 0 also checks the rank. Throws Error naming the file and the byte
// offset (in the decompressed stream) of a bad header, a short read or trailing bytes.
IdxArray read_idx(const std::string& path, int expected_ndim = -1);

struct MnistSplit {
  Tensor images;  // float32 (N, rows * cols), pixel / 255
  Tensor labels;  // int32 (N,), each in [0, num_classes)
};

// Loads one split from an idx3 image file and an idx1 label file; throws Error when the counts
// differ or a label is >= num_classes.
MnistSplit load_mnist_split(const std::string& images_path, const std::string& labels_path,
                            int num_classes = 10);

struct MnistDataset {
  MnistSplit train;  // 60000 examples for (Fashion-)MNIST
  MnistSplit test;   // 10000
};

// Loads {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from `dir` (the .gz name is preferred);
// throws Error listing the missing file and the directory when one is absent.
MnistDataset load_mnist_dir(const std::string& dir);
inline MnistDataset load_fashion_mnist(const std::string& dir = kFashionMnistDir) {
  return load_mnist_dir(dir);
}

// "T-shirt/top", "Trouser", ..., "Ankle boot", indexed by label.
const std::vector<std::string>& fashion_mnist_class_names();

}  // namespace axlearn::data
