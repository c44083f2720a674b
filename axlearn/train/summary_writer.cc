#include "axlearn/train/summary_writer.h"

#include <cmath>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"

namespace axlearn::train {

SummaryWriter::SummaryWriter(const Config& cfg)
    : Configurable(cfg), every_(cfg.write_every_n_steps.get()), max_queue_(cfg.max_queue.get()) {
  if (every_ < 1) fail("summary_writer.write_every_n_steps must be at least 1, got ", every_);
  if (max_queue_ < 1) fail("summary_writer.max_queue must be at least 1, got ", max_queue_);
  writer_ = std::make_unique<EventFileWriter>(cfg.dir.get());
}

void SummaryWriter::count_event() {
  if (++queued_ >= max_queue_) flush();
}

void SummaryWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  writer_->add_scalar(tag, value, step);
  count_event();
}

void SummaryWriter::add_text(const std::string& tag, const std::string& text, int64_t step) {
  writer_->add_text(tag, text, step);
  count_event();
}

void SummaryWriter::write(int64_t step,
                          const std::vector<std::pair<std::string, Summary>>& summaries) {
  for (const auto& [tag, s] : summaries) {
    switch (s.kind()) {
      case Summary::Kind::kScalar:
        add_scalar(tag, astype(s.value(), float64).item<double>(), step);
        break;
      case Summary::Kind::kTensor:
      case Summary::Kind::kHistogram: {
        std::vector<double> values = astype(s.value(), float64).to_vector<double>();
        bool finite = !values.empty();
        for (double v : values) finite = finite && std::isfinite(v);
        // A histogram of non-finite values cannot be binned; TensorBoard gets none that step.
        if (finite) {
          writer_->add_histogram(tag, values, step);
          count_event();
        }
        break;
      }
      case Summary::Kind::kImage:
        break;
    }
  }
  flush();
}

void SummaryWriter::flush() {
  writer_->flush();
  queued_ = 0;
}

}  // namespace axlearn::train
