// The trainer's summary writer (AXLearn's summary_writer.SummaryWriter): turns a step's
// module summaries into TensorBoard events in one folder (summaries/train, summaries/eval_NAME).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/config/configurable.h"
#include "axlearn/module/summary.h"
#include "axlearn/train/event_file_writer.h"

namespace axlearn::train {

class SummaryWriter : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<std::string> dir{this, "dir", REQUIRED, "Folder of the event file (filled in)."};
    Field<int64_t> write_every_n_steps{this, "write_every_n_steps", 1,
                                       "Write the step's summaries every n steps."};
    Field<int64_t> max_queue{this, "max_queue", 1000, "Events buffered before a flush."};
  };
  AXLEARN_CONFIGURABLE(SummaryWriter, "axlearn.common.summary_writer.SummaryWriter")
  explicit SummaryWriter(const Config& cfg);

  bool should_write(int64_t step) const { return step % every_ == 0; }
  // Scalars become scalar events; histograms and non-scalar tensors become histograms; images
  // are not written yet. Non-finite scalars are written as they are (TensorBoard shows them).
  void write(int64_t step, const std::vector<std::pair<std::string, Summary>>& summaries);
  void add_scalar(const std::string& tag, double value, int64_t step);
  void add_text(const std::string& tag, const std::string& text, int64_t step);
  void flush();
  const std::string& path() const { return writer_->path(); }

 private:
  void count_event();
  int64_t every_;
  int64_t max_queue_;
  int64_t queued_ = 0;
  std::unique_ptr<EventFileWriter> writer_;
};

}  // namespace axlearn::train
