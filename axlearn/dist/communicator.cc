#include "axlearn/dist/communicator.h"

#include <omp.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "axlearn/core/error.h"
#include "axlearn/core/sharding.h"
#include "axlearn/dist/combine.h"
#include "axlearn/dist/mpi_communicator.h"

namespace axlearn::dist {

const char* reduce_kind_name(ReduceKind k) {
  switch (k) {
    case ReduceKind::kSum:
      return "sum";
    case ReduceKind::kMax:
      return "max";
    case ReduceKind::kMin:
      return "min";
  }
  return "?";
}

namespace {
thread_local Communicator* current_comm = nullptr;

// acc = reduce(acc, x) on n elements of dtype; 16-bit floats round once per step, as a device
// receiving a 16-bit buffer would.
void reduce_buffers(void* acc, const void* x, int64_t n, Dtype dtype, ReduceKind op) {
  dispatch_dtype(dtype, [&](auto v) {
    using T = decltype(v);
    if constexpr (std::is_same_v<T, bool>) {
      fail("collective reduction of a bool tensor");
    } else {
      combine::reduce_into(static_cast<T*>(acc), static_cast<const T*>(x), n, op);
    }
  });
}

int64_t index_in(const std::vector<int64_t>& group, int64_t rank) {
  for (size_t i = 0; i < group.size(); ++i) {
    if (group[i] == rank) return int64_t(i);
  }
  fail("collective over group ", group_str(group), " called by rank ", rank,
       ", which is not a member");
}
}  // namespace

std::string group_str(const std::vector<int64_t>& group) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < group.size(); ++i) os << (i ? "," : "") << group[i];
  os << "]";
  return os.str();
}

Communicator* current_communicator() { return current_comm; }
void set_current_communicator(Communicator* comm) { current_comm = comm; }

SingleDeviceScope::SingleDeviceScope() : comm_(current_comm), rank_(current_device_rank()) {
  current_comm = nullptr;
  axlearn::detail::set_current_device_rank(0);
}
SingleDeviceScope::~SingleDeviceScope() {
  current_comm = comm_;
  axlearn::detail::set_current_device_rank(rank_);
}

// ------------------------------------------------------------------ threads

// A rendezvous of the members of one group for one call: each posts its buffers, waits for all,
// reads what it needs from the others, then waits again so no buffer is released while read.
struct ThreadWorld::State {
  explicit State(int64_t n) : size(n) {}
  struct Slot {
    std::vector<const void*> in;
    std::vector<void*> out;
    std::vector<int64_t> peer;  // send_recv: destination per member
    int64_t arrived = 0, done = 0;
  };
  const int64_t size;
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::pair<std::string, uint64_t>, Slot> slots;
  std::map<std::pair<int64_t, std::string>, uint64_t> next_seq;  // per (rank, group)
  bool aborted = false;
  std::string abort_reason;
  std::chrono::milliseconds timeout{60000};
};

namespace {

class ThreadCommunicator : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<ThreadWorld::State> s, int64_t rank)
      : s_(std::move(s)), rank_(rank) {
    set_timeout(s_->timeout);
  }
  int64_t rank() const override { return rank_; }
  int64_t size() const override { return s_->size; }
  const char* backend() const override { return "threads"; }

  // Posts (in, out) and runs body(slot, my index) once every member has posted.
  template <typename Body>
  void rendezvous(const char* what, const std::vector<int64_t>& group, const void* in, void* out,
                  int64_t peer, Body body) {
    const int64_t me = index_in(group, rank_);
    const std::string key = group_str(group);
    std::unique_lock<std::mutex> lock(s_->mu);
    const uint64_t seq = s_->next_seq[{rank_, key}]++;
    auto& slot = s_->slots[{key, seq}];
    if (slot.in.empty()) {
      slot.in.assign(group.size(), nullptr);
      slot.out.assign(group.size(), nullptr);
      slot.peer.assign(group.size(), -1);
    }
    slot.in[size_t(me)] = in;
    slot.out[size_t(me)] = out;
    slot.peer[size_t(me)] = peer;
    ++slot.arrived;
    s_->cv.notify_all();
    wait(lock, what, key, [&] { return slot.arrived == int64_t(group.size()); });
    lock.unlock();
    body(slot, me);
    lock.lock();
    ++slot.done;
    s_->cv.notify_all();
    wait(lock, what, key, [&] { return slot.done >= int64_t(group.size()); });
    // The last member to leave frees the slot.
    if (++slot.done == 2 * int64_t(group.size())) s_->slots.erase({key, seq});
  }

  void all_reduce(const void* in, void* out, int64_t n, Dtype dtype, ReduceKind op,
                  const std::vector<int64_t>& group) override {
    // Member k combines block k of every member's input (in group order) and writes it into
    // every member's output: each element is combined once, by one member, and no member reads
    // a block another one writes (outputs may alias inputs).
    const size_t es = size_of(dtype);
    const int64_t g = int64_t(group.size());
    rendezvous("all_reduce", group, in, out, -1, [&](State::Slot& slot, int64_t me) {
      const int64_t lo = n * me / g, hi = n * (me + 1) / g;
      const size_t off = size_t(lo) * es, bytes = size_t(hi - lo) * es;
      if (bytes == 0) return;
      std::vector<char> acc(bytes);
      std::memcpy(acc.data(), static_cast<const char*>(slot.in[0]) + off, bytes);
      for (int64_t k = 1; k < g; ++k) {
        reduce_buffers(acc.data(), static_cast<const char*>(slot.in[size_t(k)]) + off, hi - lo,
                       dtype, op);
      }
      for (int64_t k = 0; k < g; ++k) {
        std::memcpy(static_cast<char*>(slot.out[size_t(k)]) + off, acc.data(), bytes);
      }
    });
  }

  void all_gather(const void* in, void* out, int64_t nbytes,
                  const std::vector<int64_t>& group) override {
    rendezvous("all_gather", group, in, out, -1, [&](State::Slot& slot, int64_t) {
      for (size_t k = 0; k < group.size(); ++k) {
        std::memcpy(static_cast<char*>(out) + k * size_t(nbytes), slot.in[k], size_t(nbytes));
      }
    });
  }

  void reduce_scatter(const void* in, void* out, int64_t n, Dtype dtype,
                      const std::vector<int64_t>& group) override {
    const int64_t block = n / int64_t(group.size());
    const size_t bytes = size_t(block) * size_of(dtype);
    std::vector<char> acc(bytes);
    rendezvous("reduce_scatter", group, in, out, -1, [&](State::Slot& slot, int64_t me) {
      const size_t off = size_t(me) * bytes;
      std::memcpy(acc.data(), static_cast<const char*>(slot.in[0]) + off, bytes);
      for (size_t k = 1; k < group.size(); ++k) {
        reduce_buffers(acc.data(), static_cast<const char*>(slot.in[k]) + off, block, dtype,
                       ReduceKind::kSum);
      }
    });
    std::memcpy(out, acc.data(), bytes);
  }

  void all_to_all(const void* in, void* out, int64_t block_bytes,
                  const std::vector<int64_t>& group) override {
    rendezvous("all_to_all", group, in, out, -1, [&](State::Slot& slot, int64_t me) {
      for (size_t k = 0; k < group.size(); ++k) {
        std::memcpy(static_cast<char*>(out) + k * size_t(block_bytes),
                    static_cast<const char*>(slot.in[k]) + size_t(me) * size_t(block_bytes),
                    size_t(block_bytes));
      }
    });
  }

  void send_recv(const void* in, int64_t dst, void* out, int64_t src, int64_t nbytes,
                 const std::vector<int64_t>& group) override {
    rendezvous("send_recv", group, in, out, dst, [&](State::Slot& slot, int64_t me) {
      if (src < 0) return;
      const int64_t from = index_in(group, src);
      AXLEARN_CHECK(slot.peer[size_t(from)] == rank_, "send_recv: rank ", src,
                    " does not send to rank ", rank_);
      (void)me;
      std::memcpy(out, slot.in[size_t(from)], size_t(nbytes));
    });
  }

  void barrier() override {
    std::vector<int64_t> all(size_t(s_->size));
    for (int64_t i = 0; i < s_->size; ++i) all[size_t(i)] = i;
    rendezvous("barrier", all, nullptr, nullptr, -1, [](State::Slot&, int64_t) {});
  }

 private:
  using State = ThreadWorld::State;

  template <typename Pred>
  void wait(std::unique_lock<std::mutex>& lock, const char* what, const std::string& key,
            Pred pred) {
    const auto deadline = std::chrono::steady_clock::now() + timeout();
    while (!pred()) {
      if (s_->aborted) {
        fail(what, " over devices ", key, " on device ", rank_, " abandoned: ", s_->abort_reason);
      }
      if (s_->cv.wait_until(lock, deadline) == std::cv_status::timeout && !pred()) {
        s_->aborted = true;
        s_->abort_reason = detail::str_cat(what, " over devices ", key, " timed out after ",
                                           timeout().count(), " ms on device ", rank_,
                                           " (another device stopped or took another path)");
        s_->cv.notify_all();
        fail(s_->abort_reason);
      }
    }
  }

  std::shared_ptr<State> s_;
  int64_t rank_;
};

}  // namespace

ThreadWorld::ThreadWorld(int64_t num_devices) {
  if (num_devices < 1) fail("ThreadWorld: number of devices must be >= 1, got ", num_devices);
  state_ = std::make_shared<State>(num_devices);
}
ThreadWorld::~ThreadWorld() = default;
int64_t ThreadWorld::size() const { return state_->size; }
void ThreadWorld::set_timeout(std::chrono::milliseconds t) { state_->timeout = t; }

void ThreadWorld::run(const std::function<void(int64_t rank)>& fn) {
  std::vector<std::exception_ptr> errors(size_t(state_->size));
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < state_->size; ++r) {
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(state_, r);
      // The devices share this machine's cores: each gets its share of kernel threads.
      omp_set_num_threads(std::max(1, omp_get_num_procs() / int(state_->size)));
      Communicator* prev_comm = current_communicator();
      const int64_t prev_rank = current_device_rank();
      set_current_communicator(&comm);
      axlearn::detail::set_current_device_rank(r);
      try {
        fn(r);
      } catch (const std::exception& e) {
        errors[size_t(r)] = std::current_exception();
        std::lock_guard<std::mutex> lock(state_->mu);
        if (!state_->aborted) {
          state_->aborted = true;
          state_->abort_reason = detail::str_cat("device ", r, " failed: ", e.what());
        }
        state_->cv.notify_all();
      }
      set_current_communicator(prev_comm);
      axlearn::detail::set_current_device_rank(prev_rank);
    });
  }
  for (auto& t : threads) t.join();
  // The first failure is the cause; the others abandoned their collectives because of it.
  std::exception_ptr first;
  for (int64_t r = 0; r < state_->size && !first; ++r) {
    if (!errors[size_t(r)]) continue;
    try {
      std::rethrow_exception(errors[size_t(r)]);
    } catch (const std::exception& e) {
      if (std::string(e.what()).find("abandoned:") == std::string::npos) first = errors[size_t(r)];
    }
  }
  for (int64_t r = 0; r < state_->size && !first; ++r) first = errors[size_t(r)];
  state_->slots.clear();
  state_->next_seq.clear();
  state_->aborted = false;
  if (first) std::rethrow_exception(first);
}

void run_spmd(int64_t num_devices, const std::function<void(int64_t rank)>& fn) {
  if (mpi_launched()) {
    Communicator* comm = mpi_world();
    if (num_devices > 1 && num_devices != comm->size()) {
      fail("--devices=", num_devices, " under an MPI job of ", comm->size(),
           " processes: each process is one device; leave --devices out under mpirun");
    }
    set_current_communicator(comm);
    axlearn::detail::set_current_device_rank(comm->rank());
    fn(comm->rank());
    return;
  }
  if (num_devices <= 1) {
    fn(0);
    return;
  }
  ThreadWorld world(num_devices);
  world.run(fn);
}

}  // namespace axlearn::dist
