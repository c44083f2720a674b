#include "axlearn/data/text_input.h"

#include <glob.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <thread>
#include <utility>

#include "axlearn/config/format.h"
#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"

namespace axlearn::data {

namespace detail {

// The packed corpus: every document's tokens followed by EOS, in source order.
struct TokenStream {
  std::vector<int32_t> tokens;
  int64_t num_documents = 0;
  uint64_t fingerprint = 0;  // FNV-1a of the tokens: detects a changed corpus or vocab on restore
};

}  // namespace detail

namespace {

constexpr int kStateVersion = 1;

// "input.max_len" when the trainer instantiates us under a scope, else "max_len".
std::string field_path(const char* name) {
  const std::string scope = InstantiationScope::current_path();
  return scope.empty() ? std::string(name) : scope + "." + name;
}

std::vector<std::string> resolve_sources(const std::vector<std::string>& patterns) {
  if (patterns.empty()) fail("Input: ", field_path("sources"), " is empty");
  std::vector<std::string> files;
  for (size_t i = 0; i < patterns.size(); ++i) {
    const std::string expanded = expand_data_path(patterns[i]);
    const std::string shown = expanded == patterns[i]
                                  ? "'" + expanded + "'"
                                  : "'" + patterns[i] + "' (= '" + expanded + "')";
    glob_t g{};
    const int rc = ::glob(expanded.c_str(), 0, nullptr, &g);
    size_t matched = 0;
    if (rc == 0) {
      for (size_t j = 0; j < g.gl_pathc; ++j) {
        std::error_code ec;
        if (std::filesystem::is_regular_file(g.gl_pathv[j], ec)) {
          files.emplace_back(g.gl_pathv[j]);
          ++matched;
        }
      }
    }
    globfree(&g);
    if (rc != 0 && rc != GLOB_NOMATCH) {
      fail("Input: ", field_path("sources"), "[", i, "] ", shown, ": cannot be listed");
    }
    if (matched == 0) {
      fail("Input: ", field_path("sources"), "[", i, "] ", shown, " matches no file",
           patterns[i].starts_with("{data_dir}")
               ? " (the built-in corpus is made by scripts/make_corpus; set AXLEARN_DATA_DIR to "
                 "use another data dir)"
               : "");
    }
  }
  return files;
}

uint64_t fnv1a(const std::vector<int32_t>& tokens) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t t : tokens) {
    uint32_t u = uint32_t(t);
    for (int b = 0; b < 4; ++b) {
      h ^= (u >> (8 * b)) & 0xffu;
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

// Lines of one file, tokenized in parallel in contiguous chunks (the result does not depend on
// the number of threads) and appended to `out` with EOS after each non-empty line.
void tokenize_lines(const std::vector<std::string>& lines, const SentencePieceTokenizer& tok,
                    int32_t eos, detail::TokenStream& out) {
  const size_t n = lines.size();
  const size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const size_t num_threads = std::min<size_t>({hw, 8, std::max<size_t>(1, n / 64)});
  std::vector<std::vector<int32_t>> parts(num_threads);
  std::vector<int64_t> docs(num_threads, 0);
  std::vector<std::exception_ptr> errors(num_threads);
  auto work = [&](size_t t) {
    try {
      const size_t begin = n * t / num_threads, end = n * (t + 1) / num_threads;
      for (size_t i = begin; i < end; ++i) {
        if (lines[i].empty()) continue;
        std::vector<int32_t> ids = tok.encode(lines[i]);
        parts[t].insert(parts[t].end(), ids.begin(), ids.end());
        parts[t].push_back(eos);
        ++docs[t];
      }
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(work, t);
  work(0);
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < num_threads; ++t) {
    if (errors[t]) std::rethrow_exception(errors[t]);
    out.tokens.insert(out.tokens.end(), parts[t].begin(), parts[t].end());
    out.num_documents += docs[t];
  }
}

std::shared_ptr<detail::TokenStream> tokenize_files(const std::vector<std::string>& files,
                                                    const SentencePieceTokenizer& tok) {
  auto stream = std::make_shared<detail::TokenStream>();
  const int32_t eos = tok.eos_id();
  if (eos < 0) fail("Input: vocab '", tok.path(), "' has no EOS piece (the packer needs one)");
  // Lines are read in batches so that the text in memory stays bounded by the batch, not the
  // file; the token stream itself holds the whole corpus (4 bytes per token).
  constexpr size_t kLinesPerChunk = 4096;
  for (const std::string& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("Input: cannot open '", path, "': ", std::strerror(errno));
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      lines.push_back(std::move(line));
      if (lines.size() == kLinesPerChunk) {
        tokenize_lines(lines, tok, eos, *stream);
        lines.clear();
      }
    }
    if (in.bad()) fail("Input: error reading '", path, "': ", std::strerror(errno));
    tokenize_lines(lines, tok, eos, *stream);
  }
  stream->fingerprint = fnv1a(stream->tokens);
  return stream;
}

// SplitMix64: the permutation must be the same on every platform and library, so neither
// std::shuffle nor the std distributions (both implementation-defined) are used.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), by rejection (no modulo bias).
  uint64_t below(uint64_t bound) {
    const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % bound);
    uint64_t x;
    do {
      x = next();
    } while (x >= limit);
    return x % bound;
  }

 private:
  uint64_t state_;
};

// Window order of one training epoch: Fisher-Yates driven by SplitMix64(seed, epoch).
std::vector<int64_t> epoch_permutation(int64_t n, int64_t seed, int64_t epoch) {
  SplitMix64 key(uint64_t(seed) ^ 0x5851f42d4c957f2dull);
  SplitMix64 rng(key.next() + uint64_t(epoch) * 0xd1342543de82ef95ull);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[size_t(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = int64_t(rng.below(uint64_t(i) + 1));
    std::swap(perm[size_t(i)], perm[size_t(j)]);
  }
  return perm;
}

// One batch on the host, row-major (rows, T).
struct HostBatch {
  std::vector<int32_t> input_ids, target_labels, segment_ids, positions;
};

// What a batch depends on, besides its index.
struct Packing {
  int64_t max_len = 0;
  int64_t global_batch_size = 0;
  int64_t rows = 0;       // per process
  int64_t first_row = 0;  // this process's first row within the global batch
  bool is_training = true;
  bool with_segment_ids = false;
  int64_t seed = 0;
  int32_t pad_id = 0;
  int32_t eos_id = 1;
  int64_t num_windows = 0;
};

// Makes batch k. Used by one thread at a time (the prefetch thread, or the caller when
// prefetch = 0): it caches the permutations of the epochs it last touched.
class BatchMaker {
 public:
  BatchMaker(Packing p, std::shared_ptr<const detail::TokenStream> stream)
      : p_(p), stream_(std::move(stream)) {}

  HostBatch make(int64_t batch) {
    if (batch == fail_at_batch.load()) fail("InputIterator: injected failure at batch ", batch);
    const int64_t T = p_.max_len;
    const size_t n = size_t(p_.rows * T);
    HostBatch b;
    b.input_ids.assign(n, p_.pad_id);
    b.target_labels.assign(n, -1);
    if (p_.with_segment_ids) {
      b.segment_ids.assign(n, 0);
      b.positions.assign(n, 0);
    }
    for (int64_t r = 0; r < p_.rows; ++r) {
      const int64_t g = batch * p_.global_batch_size + p_.first_row + r;
      int64_t window;
      if (p_.is_training) {
        window = permutation(g / p_.num_windows)[size_t(g % p_.num_windows)];
      } else if (g < p_.num_windows) {
        window = g;
      } else {
        continue;  // an eval padding row
      }
      fill_row(window, b, size_t(r * T));
    }
    return b;
  }

  std::atomic<int64_t> fail_at_batch{-1};

 private:
  // Row = window w: tokens [w*T, w*T + T] of the stream, inputs the first T, targets the last T.
  void fill_row(int64_t window, HostBatch& b, size_t offset) const {
    const std::vector<int32_t>& s = stream_->tokens;
    const int64_t T = p_.max_len, n = int64_t(s.size()), start = window * T;
    int32_t segment = 1, position = 0;
    for (int64_t j = 0; j < T && start + j < n; ++j) {
      const int32_t token = s[size_t(start + j)];
      const size_t o = offset + size_t(j);
      b.input_ids[o] = token;
      if (start + j + 1 < n) b.target_labels[o] = s[size_t(start + j + 1)];
      if (p_.with_segment_ids) {
        b.segment_ids[o] = segment;
        b.positions[o] = position++;
        if (token == p_.eos_id) {
          b.target_labels[o] = -1;  // the next document's first token is not visible
          ++segment;
          position = 0;
        }
      }
    }
  }

  const std::vector<int64_t>& permutation(int64_t epoch) {
    for (auto& [e, perm] : perms_) {
      if (e == epoch) return perm;
    }
    // A batch spans at most two epochs (unless an epoch is shorter than a batch): keep two.
    if (perms_.size() == 2) perms_.pop_front();
    perms_.emplace_back(epoch, epoch_permutation(p_.num_windows, p_.seed, epoch));
    return perms_.back().second;
  }

  Packing p_;
  std::shared_ptr<const detail::TokenStream> stream_;
  std::deque<std::pair<int64_t, std::vector<int64_t>>> perms_;
};

std::string hex64(uint64_t v) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[size_t(i)] = digits[v & 0xf];
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// InputIterator

struct InputIterator::Impl {
  Impl(ConfigPtr<Input::Config> cfg, Packing p, std::shared_ptr<const detail::TokenStream> s,
       int64_t vocab_size, std::optional<int64_t> num_batches)
      : cfg(std::move(cfg)),
        packing(p),
        stream(s),
        vocab_size(vocab_size),
        num_batches(num_batches),
        maker(p, std::move(s)) {}
  ~Impl() { stop(); }

  // Prefetching: the producer makes batches produce_next, produce_next + 1, ... into `queue`
  // (at most `prefetch` ahead); next() pops them in order. `consumed` is what state() reports.
  void start() {
    if (cfg->prefetch.get() == 0) return;
    stopping = false;
    producer = std::thread([this] { produce(); });
  }
  void stop() {
    if (!producer.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    cv.notify_all();
    producer.join();
  }
  void produce() {
    const auto capacity = size_t(cfg->prefetch.get());
    for (;;) {
      int64_t index;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] {
          return stopping ||
                 (queue.size() < capacity && (!num_batches || produce_next < *num_batches));
        });
        if (stopping) return;
        index = produce_next++;
      }
      HostBatch b;
      try {
        b = maker.make(index);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        error = std::current_exception();
        cv.notify_all();
        return;
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stopping) return;
        queue.push_back(std::move(b));
      }
      cv.notify_all();
    }
  }

  HostBatch take() {
    if (!producer.joinable()) return maker.make(consumed);
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return !queue.empty() || error; });
    if (queue.empty()) std::rethrow_exception(error);
    HostBatch b = std::move(queue.front());
    queue.pop_front();
    lock.unlock();
    cv.notify_all();
    return b;
  }

  void seek(int64_t position) {
    stop();
    queue.clear();
    error = nullptr;
    consumed = position;
    produce_next = position;
    start();
  }

  Json fingerprint() const {
    Json j;
    j["is_training"] = packing.is_training;
    j["max_len"] = packing.max_len;
    j["global_batch_size"] = packing.global_batch_size;
    j["seed"] = packing.seed;
    j["with_segment_ids"] = packing.with_segment_ids;
    j["num_tokens"] = int64_t(stream->tokens.size());
    j["corpus_fingerprint"] = hex64(stream->fingerprint);
    return j;
  }

  ConfigPtr<Input::Config> cfg;
  Packing packing;
  std::shared_ptr<const detail::TokenStream> stream;
  int64_t vocab_size;
  std::optional<int64_t> num_batches;
  BatchMaker maker;
  int64_t consumed = 0;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<HostBatch> queue;
  std::exception_ptr error;
  int64_t produce_next = 0;
  bool stopping = false;
  std::thread producer;
};

InputIterator::InputIterator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  impl_->start();
}
InputIterator::~InputIterator() = default;

std::optional<NestedTensor> InputIterator::next() {
  Impl& m = *impl_;
  if (m.num_batches && m.consumed >= *m.num_batches) return std::nullopt;
  HostBatch b = m.take();
  const Shape shape{m.packing.rows, m.packing.max_len};
  NestedTensor out;
  try {
    out["input_ids"] = array(b.input_ids, shape, int32);
    out["target_labels"] = array(b.target_labels, shape, int32);
    if (m.packing.with_segment_ids) {
      out["input_segment_ids"] = array(b.segment_ids, shape, int32);
      out["input_positions"] = array(b.positions, shape, int32);
    }
  } catch (...) {
    m.seek(m.consumed);  // batch `consumed` was taken from the queue: make it again next time
    throw;
  }
  ++m.consumed;
  return out;
}

std::string InputIterator::state() const {
  Json j;
  j["klass"] = Input::kRegisteredName;
  j["version"] = kStateVersion;
  j["batches_read"] = impl_->consumed;
  const Json fingerprint = impl_->fingerprint();
  for (auto& [k, v] : fingerprint.items()) j[k] = v;
  // For people reading a checkpoint; restore does not compare them (the corpus fingerprint does).
  j["sources"] = impl_->cfg->sources.get();
  j["vocab"] = impl_->cfg->vocab.get();
  return j.dump();
}

void InputIterator::restore(const std::string& state_json) {
  Json j;
  try {
    j = Json::parse(state_json);
  } catch (const std::exception& e) {
    fail("InputIterator::restore: the state is not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail("InputIterator::restore: the state is not a JSON object");
  auto field = [&](const char* name) -> const Json& {
    if (!j.contains(name)) fail("InputIterator::restore: the state has no field '", name, "'");
    return j[name];
  };
  if (field("klass") != Input::kRegisteredName) {
    fail("InputIterator::restore: field 'klass' is ", field("klass").dump(), ", expected \"",
         Input::kRegisteredName, "\"");
  }
  if (field("version") != kStateVersion) {
    fail("InputIterator::restore: field 'version' is ", field("version").dump(),
         ", this build reads version ", kStateVersion);
  }
  const Json fingerprint = impl_->fingerprint();
  for (auto& [name, expected] : fingerprint.items()) {
    const Json& given = field(name.c_str());
    if (given != expected) {
      fail("InputIterator::restore: field '", name, "' is ", given.dump(), " but this input's is ",
           expected.dump(), " (the state was saved by an input with another config or corpus)");
    }
  }
  const Json& pos = field("batches_read");
  if (!pos.is_number_integer() || pos.get<int64_t>() < 0) {
    fail("InputIterator::restore: field 'batches_read' must be an integer >= 0, given ",
         pos.dump());
  }
  const auto position = pos.get<int64_t>();
  if (impl_->num_batches && position > *impl_->num_batches) {
    fail("InputIterator::restore: field 'batches_read' is ", position, " but this eval pass has ",
         *impl_->num_batches, " batches");
  }
  impl_->seek(position);
}

void InputIterator::inject_failure_for_testing(int64_t batch) {
  impl_->maker.fail_at_batch = batch;
}

int64_t InputIterator::batches_read() const { return impl_->consumed; }
std::optional<int64_t> InputIterator::num_batches() const { return impl_->num_batches; }
int64_t InputIterator::num_windows() const { return impl_->packing.num_windows; }
int64_t InputIterator::num_tokens() const { return int64_t(impl_->stream->tokens.size()); }
int64_t InputIterator::vocab_size() const { return impl_->vocab_size; }
int32_t InputIterator::pad_id() const { return impl_->packing.pad_id; }
int32_t InputIterator::eos_id() const { return impl_->packing.eos_id; }

// ---------------------------------------------------------------------------------------------
// Input

Input::Input(const Config& cfg) : Configurable(cfg) {
  const Config& c = config();
  auto at_least = [](const char* name, int64_t value, int64_t min) {
    if (value < min) fail("Input: ", field_path(name), " must be >= ", min, ", given ", value);
  };
  at_least("max_len", c.max_len, 1);
  at_least("global_batch_size", c.global_batch_size, 1);
  at_least("prefetch", c.prefetch, 0);
  at_least("process_count", c.process_count, 1);
  at_least("process_index", c.process_index, 0);
  if (c.process_index >= c.process_count) {
    fail("Input: ", field_path("process_index"), " ", c.process_index.get(),
         " must be < process_count ", c.process_count.get());
  }
  if (c.global_batch_size % c.process_count != 0) {
    fail("Input: ", field_path("global_batch_size"), " ", c.global_batch_size.get(),
         " is not divisible by process_count ", c.process_count.get());
  }
  if (c.max_eval_batches->has_value()) at_least("max_eval_batches", **c.max_eval_batches, 1);
  files_ = resolve_sources(c.sources);
  try {
    tokenizer_.load(c.vocab);
  } catch (const Error& e) {
    fail("Input: ", field_path("vocab"), ": ", e.what());
  }
}

Input::~Input() = default;

int64_t Input::per_process_batch_size() const {
  return config().global_batch_size / config().process_count;
}

std::shared_ptr<const detail::TokenStream> Input::token_stream() const {
  std::lock_guard<std::mutex> lock(stream_mu_);
  if (!stream_) stream_ = tokenize_files(files_, tokenizer_);
  return stream_;
}

std::unique_ptr<InputIterator> Input::make_iterator() const {
  const Config& c = config();
  auto stream = token_stream();
  Packing p;
  p.max_len = c.max_len;
  p.global_batch_size = c.global_batch_size;
  p.rows = per_process_batch_size();
  p.first_row = c.process_index * p.rows;
  p.is_training = c.is_training;
  p.with_segment_ids = c.with_segment_ids;
  p.seed = c.seed;
  p.pad_id = std::max(tokenizer_.pad_id(), 0);  // a model without <pad> pads with id 0
  p.eos_id = tokenizer_.eos_id();
  const auto n = int64_t(stream->tokens.size());
  // Window w spans tokens [w*T, w*T + T]: training uses whole windows only, eval also the last
  // partial one (padded), so that every token is evaluated.
  p.num_windows = p.is_training ? (n - 1) / p.max_len : (n - 1 + p.max_len - 1) / p.max_len;
  if (n < 2 || (p.is_training && p.num_windows == 0)) {
    fail("Input: sources hold ", n, " tokens (", stream->num_documents, " documents) in ",
         files_.size(), " files; training needs at least max_len + 1 = ", p.max_len + 1);
  }
  std::optional<int64_t> num_batches;
  if (!p.is_training) {
    num_batches = (p.num_windows + p.global_batch_size - 1) / p.global_batch_size;
    if (c.max_eval_batches->has_value()) {
      num_batches = std::min(*num_batches, **c.max_eval_batches);
    }
  }
  auto impl = std::make_unique<InputIterator::Impl>(c.clone(), p, std::move(stream),
                                                    tokenizer_.vocab_size(), num_batches);
  return std::unique_ptr<InputIterator>(new InputIterator(std::move(impl)));
}

}  // namespace axlearn::data
