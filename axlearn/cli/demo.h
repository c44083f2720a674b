// `axlearn demo`: trains softmax regression and a two-layer MLP on Fashion-MNIST with the
// engine itself (lazy tensors, value_and_grad over a parameter tree, Adam written with ops).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "axlearn/data/mnist.h"

namespace axlearn::cli {

struct DemoOptions {
  std::string model = "both";  // softmax | mlp | both
  int epochs = 10;
  int batch_size = 128;
  double learning_rate = 5e-3;  // Adam peak, decayed along a cosine
  int hidden = 256;             // MLP hidden units
  uint64_t seed = 0;
  std::string data_dir = data::kFashionMnistDir;
  int64_t limit_train = 0;  // use only the first N training examples; 0 = all
};

struct DemoResult {
  std::string model;
  double final_train_loss = 0;
  double test_accuracy = 0;  // fraction in [0, 1]
  double seconds = 0;        // training and evaluation, excluding data loading
};

// Throws Error naming the flag when a value is out of range.
void validate(const DemoOptions& options);

// Loads the data, trains the selected models and prints one line per epoch and a summary to
// `out`. Throws Error for bad options or missing/corrupt data.
std::vector<DemoResult> run_demo(const DemoOptions& options, std::ostream& out);

}  // namespace axlearn::cli
