#include "axlearn/dist/mpi_communicator.h"

#include <cstdlib>
#include <string>

#include "axlearn/core/error.h"
#include "axlearn/dist/combine.h"

#ifdef AXLEARN_HAVE_MPI
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#endif

namespace axlearn::dist {

namespace {

// The variable's value as a number; -1 when unset or not a number.
int64_t env_int(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  return *end == '\0' ? int64_t(x) : -1;
}

bool env_set(const char* name) { return std::getenv(name) != nullptr; }

}  // namespace

// mpirun (Open MPI 4 and 5) sets OMPI_COMM_WORLD_SIZE/RANK and PMIX_RANK in every rank.
// srun sets SLURM_PROCID and, per job step, SLURM_STEP_ID and SLURM_STEP_NUM_TASKS; a batch
// script itself has SLURM_PROCID=0 and SLURM_NTASKS but is no job step of several tasks.
bool mpi_launched() {
  if (env_int("OMPI_COMM_WORLD_SIZE") > 1) return true;
  const int64_t step_tasks = env_int("SLURM_STEP_NUM_TASKS") > 0 ? env_int("SLURM_STEP_NUM_TASKS")
                             : env_set("SLURM_STEP_ID")          ? env_int("SLURM_NTASKS")
                                                                 : -1;
  if (env_set("SLURM_PROCID") && step_tasks > 1) return true;
  return env_set("PMIX_RANK") && (env_int("PMI_SIZE") > 1 || step_tasks > 1);
}

#ifndef AXLEARN_HAVE_MPI

bool mpi_available() { return false; }

namespace {
// "OMPI_COMM_WORLD_SIZE=4": the variable that made mpi_launched() true, for messages.
std::string launcher_evidence() {
  for (const char* name :
       {"OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "PMI_SIZE"}) {
    if (env_int(name) > 1) return detail::str_cat(name, "=", std::getenv(name));
  }
  return "PMIX_RANK";
}
}  // namespace

Communicator* mpi_world() {
  const std::string how =
      "install Open MPI's development files (apt-get install libopenmpi-dev openmpi-bin, or "
      "scripts/setup) and rebuild, so CMake finds MPI";
  if (mpi_launched()) {
    fail("this process is one rank of a multi-process MPI job (", launcher_evidence(),
         "), but this build of AXLearn has no MPI support: ", how);
  }
  fail("mpi_world(): this build of AXLearn has no MPI support: ", how);
}

#else  // AXLEARN_HAVE_MPI

bool mpi_available() { return true; }

namespace {

std::string mpi_error_string(int rc) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) return detail::str_cat("MPI error ", rc);
  return std::string(msg, size_t(len));
}

// Outside any collective (initialisation, communicator creation): an MPI error is fatal to the
// call.
void check_mpi(int rc, const char* what) {
  if (rc != MPI_SUCCESS) fail("MPI: ", what, " failed: ", mpi_error_string(rc));
}

// What a call moves, for messages: "all_reduce of 1000 float32 over ranks [0,2]".
struct CallInfo {
  const char* op;
  const std::vector<int64_t>* group;
  int64_t count;
  const char* unit;
  std::string str() const {
    const std::string what = *unit ? detail::str_cat(op, " of ", count, " ", unit) : op;
    return group ? detail::str_cat(what, " over ranks ", group_str(*group))
                 : detail::str_cat(what, " over all ranks");
  }
};

// Buffers move as elements of an unsigned integer type of the widest size that divides them, so
// an MPI count (an int) reaches up to 16 GiB instead of 2 GiB; the bits are copied unchanged.
struct Unit {
  MPI_Datatype type;
  int64_t size;
};
Unit unit_for(int64_t nbytes) {
  if (nbytes % 8 == 0) return {MPI_UINT64_T, 8};
  if (nbytes % 4 == 0) return {MPI_UINT32_T, 4};
  if (nbytes % 2 == 0) return {MPI_UINT16_T, 2};
  return {MPI_BYTE, 1};
}

int to_count(int64_t v, const CallInfo& info) {
  if (v > INT_MAX) fail(info.str(), ": too large for one MPI call (", v, " units of transfer)");
  return int(v);
}

void check_reducible(Dtype dtype, const CallInfo& info) {
  if (dtype == Dtype::kBool) fail(info.str(), ": collective reduction of a bool tensor");
}

// acc = blocks[0] (+) blocks[1] (+) ... in order; blocks are `n` elements apart.
void fold_blocks(char* acc, const char* blocks, int64_t num_blocks, int64_t n, Dtype dtype,
                 ReduceKind op) {
  const size_t bytes = size_t(n) * size_of(dtype);
  if (num_blocks == 0 || bytes == 0) return;
  std::memcpy(acc, blocks, bytes);
  dispatch_dtype(dtype, [&](auto v) {
    using T = decltype(v);
    if constexpr (!std::is_same_v<T, bool>) {
      for (int64_t k = 1; k < num_blocks; ++k) {
        combine::reduce_into(reinterpret_cast<T*>(acc),
                             reinterpret_cast<const T*>(blocks + k * bytes), n, op);
      }
    }
  });
}

struct Buffer {
  std::unique_ptr<char[]> data;
  int64_t capacity = 0;
  char* get() const { return data.get(); }
};

// One nonblocking MPI operation and everything it may still read or write (the staged data and
// the count arrays): on a timeout MPI cannot cancel a collective, so the whole object is kept
// alive rather than letting MPI write into memory the caller has reused.
struct Pending {
  std::vector<MPI_Request> reqs;
  Buffer send, recv;
  std::vector<int> send_counts, send_displs, recv_counts, recv_displs;
  uint64_t token = 0, reply = 0;  // group set-up handshake
  std::vector<uint64_t> tokens;
};

// Split of n elements into g blocks whose sizes differ by at most one: block k starts at
// offset(k) and has size(k) elements.
struct Blocks {
  int64_t n, g;
  int64_t size(int64_t k) const { return n / g + (k < n % g ? 1 : 0); }
  int64_t offset(int64_t k) const { return k * (n / g) + std::min(k, n % g); }
};

uint64_t group_hash(const std::vector<int64_t>& group) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (int64_t r : group) {
    h ^= uint64_t(r) + 0x9e3779b97f4a7c15ull;
    h *= 1099511628211ull;
  }
  return h;
}

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(bool finalize_at_exit, int thread_level)
      : finalize_at_exit_(finalize_at_exit), thread_level_(thread_level) {
    int rank = 0, size = 0, flag = 0;
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
    rank_ = rank;
    size_ = size;
    // A private copy of MPI_COMM_WORLD keeps our messages apart from any MPI code of the user.
    check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "set error handler");
    auto p = std::make_unique<Pending>();
    p->reqs.assign(1, MPI_REQUEST_NULL);
    check_mpi(MPI_Comm_idup(MPI_COMM_WORLD, &world_, p->reqs.data()), "MPI_Comm_idup");
    wait(p, {"start-up (duplicating MPI_COMM_WORLD)", nullptr, 0, ""});
    check_mpi(MPI_Comm_set_errhandler(world_, MPI_ERRORS_RETURN), "set error handler");
    int* tag_ub = nullptr;
    check_mpi(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag), "MPI_TAG_UB");
    tag_ub_ = flag && tag_ub ? *tag_ub : 32767;
    init_thread_ = std::this_thread::get_id();
  }

  // Runs at normal process exit. After a timeout a peer is gone, and MPI_Finalize would wait
  // for it; the process then exits without it.
  void shut_down() {
    // A thread still inside a collective at exit holds the lock; MPI is then left as it is.
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (!lock.owns_lock() || !finalize_at_exit_ || !broken_.empty()) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (auto& [group, comm] : groups_) MPI_Comm_free(&comm);
    groups_.clear();
    MPI_Comm_free(&world_);
    MPI_Finalize();
  }

  int64_t rank() const override { return rank_; }
  int64_t size() const override { return size_; }
  const char* backend() const override { return "mpi"; }

  // Every member combines the members' buffers in group order, so all members get the same bits,
  // and the same bits as the threads backend. Small buffers, and any buffer in a group of two,
  // move in one all_gather followed by the whole fold on every member: one message round, and
  // for two members no more bytes than the two-round scheme. Otherwise member k folds block k of
  // all members' buffers (alltoallv) and the folded blocks are gathered (allgatherv), so each
  // member moves and folds about 2n/g elements instead of n*g.
  void all_reduce(const void* in, void* out, int64_t n, Dtype dtype, ReduceKind op,
                  const std::vector<int64_t>& group) override {
    const CallInfo info{"all_reduce", &group, n, dtype_name(dtype)};
    auto lock = enter(info);
    check_reducible(dtype, info);
    const MPI_Comm comm = group_comm(info);
    const int64_t g = int64_t(group.size()), es = int64_t(size_of(dtype));
    if (g <= 2 || g * n * es <= kGatherAllBytes) {
      all_reduce_by_gather(in, out, n, dtype, op, g, comm, info);
    } else {
      all_reduce_by_blocks(in, out, n, dtype, op, group, comm, info);
    }
  }

  void all_gather(const void* in, void* out, int64_t nbytes,
                  const std::vector<int64_t>& group) override {
    const CallInfo info{"all_gather", &group, nbytes, "bytes per member"};
    auto lock = enter(info);
    const MPI_Comm comm = group_comm(info);
    const int64_t g = int64_t(group.size());
    const Unit unit = unit_for(nbytes);
    auto p = std::make_unique<Pending>();
    p->send = buffer(nbytes);
    if (nbytes > 0) std::memcpy(p->send.get(), in, size_t(nbytes));
    p->recv = buffer(g * nbytes);
    to_count(g * nbytes / unit.size, info);  // the receive displacements must fit an int too
    p->reqs.assign(1, MPI_REQUEST_NULL);
    const int count = to_count(nbytes / unit.size, info);
    start(MPI_Iallgather(p->send.get(), count, unit.type, p->recv.get(), count, unit.type, comm,
                         p->reqs.data()),
          info, p);
    wait(p, info);
    if (nbytes > 0) std::memcpy(out, p->recv.get(), size_t(g * nbytes));
    recycle(*p);
  }

  // Member k folds block k of all members' inputs in group order (see all_reduce).
  void reduce_scatter(const void* in, void* out, int64_t n, Dtype dtype,
                      const std::vector<int64_t>& group) override {
    const CallInfo info{"reduce_scatter", &group, n, dtype_name(dtype)};
    auto lock = enter(info);
    check_reducible(dtype, info);
    const int64_t g = int64_t(group.size()), es = int64_t(size_of(dtype));
    if (g > 0 && n % g != 0) {
      fail(info.str(), ": ", n, " elements do not split into ", g, " equal blocks");
    }
    const MPI_Comm comm = group_comm(info);
    const int64_t block = n / g;
    const Unit unit = unit_for(es);
    auto p = std::make_unique<Pending>();
    p->send = buffer(n * es);
    if (n > 0) std::memcpy(p->send.get(), in, size_t(n * es));
    p->recv = buffer(n * es);
    to_count(n, info);
    p->reqs.assign(1, MPI_REQUEST_NULL);
    start(MPI_Ialltoall(p->send.get(), to_count(block, info), unit.type, p->recv.get(),
                        to_count(block, info), unit.type, comm, p->reqs.data()),
          info, p);
    wait(p, info);
    fold_blocks(static_cast<char*>(out), p->recv.get(), g, block, dtype, ReduceKind::kSum);
    recycle(*p);
  }

  void all_to_all(const void* in, void* out, int64_t block_bytes,
                  const std::vector<int64_t>& group) override {
    const CallInfo info{"all_to_all", &group, block_bytes, "bytes per block"};
    auto lock = enter(info);
    const MPI_Comm comm = group_comm(info);
    const int64_t g = int64_t(group.size());
    const Unit unit = unit_for(block_bytes);
    auto p = std::make_unique<Pending>();
    p->send = buffer(g * block_bytes);
    if (block_bytes > 0) std::memcpy(p->send.get(), in, size_t(g * block_bytes));
    p->recv = buffer(g * block_bytes);
    to_count(g * block_bytes / unit.size, info);
    const int count = to_count(block_bytes / unit.size, info);
    p->reqs.assign(1, MPI_REQUEST_NULL);
    start(MPI_Ialltoall(p->send.get(), count, unit.type, p->recv.get(), count, unit.type, comm,
                        p->reqs.data()),
          info, p);
    wait(p, info);
    if (block_bytes > 0) std::memcpy(out, p->recv.get(), size_t(g * block_bytes));
    recycle(*p);
  }

  void send_recv(const void* in, int64_t dst, void* out, int64_t src, int64_t nbytes,
                 const std::vector<int64_t>& group) override {
    const CallInfo info{"send_recv", &group, nbytes, "bytes"};
    auto lock = enter(info);
    const int64_t to = dst < 0 ? -1 : index_of(group, dst, "destination", info);
    const int64_t from = src < 0 ? -1 : index_of(group, src, "source", info);
    const MPI_Comm comm = group_comm(info);
    const Unit unit = unit_for(nbytes);
    const int count = to_count(nbytes / unit.size, info);
    auto p = std::make_unique<Pending>();
    p->reqs.assign(2, MPI_REQUEST_NULL);
    if (from >= 0) {
      p->recv = buffer(nbytes);
      start(MPI_Irecv(p->recv.get(), count, unit.type, int(from), kSendRecvTag, comm, &p->reqs[0]),
            info, p);
    }
    if (to >= 0) {
      p->send = buffer(nbytes);
      if (nbytes > 0) std::memcpy(p->send.get(), in, size_t(nbytes));
      start(MPI_Isend(p->send.get(), count, unit.type, int(to), kSendRecvTag, comm, &p->reqs[1]),
            info, p);
    }
    wait(p, info);
    if (from >= 0 && nbytes > 0) std::memcpy(out, p->recv.get(), size_t(nbytes));
    recycle(*p);
  }

  void barrier() override {
    const CallInfo info{"barrier", nullptr, 0, ""};
    auto lock = enter(info);
    auto p = std::make_unique<Pending>();
    p->reqs.assign(1, MPI_REQUEST_NULL);
    start(MPI_Ibarrier(world_, p->reqs.data()), info, p);
    wait(p, info);
  }

 private:
  static constexpr int kSendRecvTag = 1;
  // Up to this many bytes from all members together, all_reduce gathers whole buffers.
  static constexpr int64_t kGatherAllBytes = int64_t(64) << 10;

  void all_reduce_by_gather(const void* in, void* out, int64_t n, Dtype dtype, ReduceKind op,
                            int64_t g, MPI_Comm comm, const CallInfo& info) {
    const int64_t es = int64_t(size_of(dtype));
    const Unit unit = unit_for(es);
    to_count(g * n * es / unit.size, info);  // the receive displacements must fit an int too
    const int count = to_count(n * es / unit.size, info);
    auto p = std::make_unique<Pending>();
    p->send = buffer(n * es);
    if (n > 0) std::memcpy(p->send.get(), in, size_t(n * es));
    p->recv = buffer(g * n * es);
    p->reqs.assign(1, MPI_REQUEST_NULL);
    start(MPI_Iallgather(p->send.get(), count, unit.type, p->recv.get(), count, unit.type, comm,
                         p->reqs.data()),
          info, p);
    wait(p, info);
    fold_blocks(static_cast<char*>(out), p->recv.get(), g, n, dtype, op);
    recycle(*p);
  }

  void all_reduce_by_blocks(const void* in, void* out, int64_t n, Dtype dtype, ReduceKind op,
                            const std::vector<int64_t>& group, MPI_Comm comm,
                            const CallInfo& info) {
    const int64_t g = int64_t(group.size()), es = int64_t(size_of(dtype));
    const int64_t me = member_index(group);
    const Blocks blocks{n, g};
    const Unit unit = unit_for(es);
    auto p = std::make_unique<Pending>();
    p->send = buffer(n * es);
    if (n > 0) std::memcpy(p->send.get(), in, size_t(n * es));
    p->recv = buffer(g * blocks.size(me) * es);
    for (int64_t k = 0; k < g; ++k) {
      p->send_counts.push_back(to_count(blocks.size(k), info));
      p->send_displs.push_back(to_count(blocks.offset(k), info));
      p->recv_counts.push_back(to_count(blocks.size(me), info));
      p->recv_displs.push_back(to_count(k * blocks.size(me), info));
    }
    p->reqs.assign(1, MPI_REQUEST_NULL);
    start(MPI_Ialltoallv(p->send.get(), p->send_counts.data(), p->send_displs.data(), unit.type,
                         p->recv.get(), p->recv_counts.data(), p->recv_displs.data(), unit.type,
                         comm, p->reqs.data()),
          info, p);
    wait(p, info);

    auto q = std::make_unique<Pending>();
    q->send = buffer(blocks.size(me) * es);
    fold_blocks(q->send.get(), p->recv.get(), g, blocks.size(me), dtype, op);
    q->recv = buffer(n * es);
    for (int64_t k = 0; k < g; ++k) {
      q->recv_counts.push_back(to_count(blocks.size(k), info));
      q->recv_displs.push_back(to_count(blocks.offset(k), info));
    }
    q->reqs.assign(1, MPI_REQUEST_NULL);
    start(MPI_Iallgatherv(q->send.get(), to_count(blocks.size(me), info), unit.type, q->recv.get(),
                          q->recv_counts.data(), q->recv_displs.data(), unit.type, comm,
                          q->reqs.data()),
          info, q);
    wait(q, info);
    if (n > 0) std::memcpy(out, q->recv.get(), size_t(n * es));
    recycle(*p);
    recycle(*q);
  }

  // Serialises callers (MPI is initialised for one thread at a time) and refuses to go on after
  // a failure, when ranks no longer agree on which call comes next.
  std::unique_lock<std::mutex> enter(const CallInfo& info) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!broken_.empty()) {
      fail(info.str(), " on rank ", rank_,
           ": the MPI communicator is unusable after an earlier failure: ", broken_);
    }
    if (thread_level_ < MPI_THREAD_SERIALIZED && std::this_thread::get_id() != init_thread_) {
      fail(info.str(), ": MPI was initialised for its main thread only (thread level ",
           thread_level_, "); call collectives from the thread that initialised MPI");
    }
    return lock;
  }

  // Staging buffers are reused: a fresh multi-megabyte allocation page-faults on every call.
  // Up to kPoolBytes stay pooled between calls.
  static constexpr int64_t kPoolBytes = int64_t(256) << 20;
  Buffer buffer(int64_t nbytes) {
    auto best = pool_.end();
    for (auto it = pool_.begin(); it != pool_.end(); ++it) {
      if (it->capacity >= nbytes && (best == pool_.end() || it->capacity < best->capacity)) {
        best = it;
      }
    }
    if (best != pool_.end()) {
      Buffer b = std::move(*best);
      pool_.erase(best);
      pooled_bytes_ -= b.capacity;
      return b;
    }
    const int64_t capacity = std::max<int64_t>(nbytes, 1);
    return {std::make_unique_for_overwrite<char[]>(size_t(capacity)), capacity};
  }
  void recycle(Pending& p) {
    for (Buffer* b : {&p.send, &p.recv}) {
      if (!b->data || pooled_bytes_ + b->capacity > kPoolBytes) continue;
      pooled_bytes_ += b->capacity;
      pool_.push_back(std::move(*b));
    }
  }

  // An MPI call that fails to start leaves p's earlier requests running: p is kept.
  void start(int rc, const CallInfo& info, std::unique_ptr<Pending>& p) {
    if (rc == MPI_SUCCESS) return;
    broken_ = detail::str_cat(info.str(), " on rank ", rank_, ": ", mpi_error_string(rc));
    abandoned_.push_back(std::move(p));
    fail("MPI ", broken_);
  }

  // Polls until p's requests complete; after timeout() the call fails and p is kept, since MPI
  // may still use its buffers. For the first kSpin a wait polls without pause: a peer that is
  // running answers within microseconds. Then it sleeps between polls, longer as the wait grows,
  // so that a process sharing the core runs meanwhile. (Yielding instead is far worse: with a busy
  // process on the same core every sched_yield hands it a whole scheduler slice, and each message
  // round of a collective then costs milliseconds.)
  static constexpr std::chrono::microseconds kSpin{250};
  void wait(std::unique_ptr<Pending>& p, const CallInfo& info) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto deadline = start + timeout();
    for (;;) {
      int done = 0;
      const int rc = MPI_Testall(int(p->reqs.size()), p->reqs.data(), &done, MPI_STATUSES_IGNORE);
      if (rc != MPI_SUCCESS) {
        broken_ = detail::str_cat(info.str(), " failed on rank ", rank_, ": ", mpi_error_string(rc),
                                  " (another rank probably died)");
        abandoned_.push_back(std::move(p));
        fail(broken_);
      }
      if (done) return;
      const auto now = clock::now();
      if (now >= deadline) {
        broken_ = detail::str_cat(info.str(), " timed out after ", timeout().count(),
                                  " ms on rank ", rank_,
                                  ": another rank probably died, or called a different "
                                  "collective");
        abandoned_.push_back(std::move(p));
        fail(broken_);
      }
      const auto waited = now - start;
      if (waited < kSpin) continue;
      using std::chrono::microseconds;
      std::this_thread::sleep_for(waited < std::chrono::milliseconds(50) ? microseconds(10)
                                  : waited < std::chrono::seconds(1)     ? microseconds(200)
                                                                         : microseconds(1000));
    }
  }

  int64_t index_of(const std::vector<int64_t>& group, int64_t rank, const char* role,
                   const CallInfo& info) const {
    for (size_t i = 0; i < group.size(); ++i) {
      if (group[i] == rank) return int64_t(i);
    }
    fail(info.str(), " on rank ", rank_, ": ", role, " rank ", rank, " is not in the group");
  }
  int64_t member_index(const std::vector<int64_t>& group) const {
    for (size_t i = 0; i < group.size(); ++i) {
      if (group[i] == rank_) return int64_t(i);
    }
    AXLEARN_CHECK(false, "rank ", rank_, " not in ", group_str(group));
    return -1;
  }

  // The sub-communicator whose rank k is group[k], created on the group's first use.
  MPI_Comm group_comm(const CallInfo& info) {
    const std::vector<int64_t>& group = *info.group;
    if (auto it = groups_.find(group); it != groups_.end()) return it->second;
    bool member = false;
    for (size_t i = 0; i < group.size(); ++i) {
      const int64_t r = group[i];
      if (r < 0 || r >= size_) {
        fail(info.str(), ": rank ", r, " is outside the world of ", size_, " ranks");
      }
      for (size_t j = 0; j < i; ++j) {
        if (group[j] == r) fail(info.str(), ": rank ", r, " appears twice");
      }
      member |= r == rank_;
    }
    if (!member) fail(info.str(), " called by rank ", rank_, ", which is not a member");

    const uint64_t key = group_hash(group);
    const int tag = 1 + int(key % uint64_t(tag_ub_ - 1));
    handshake(group, key, tag, info);
    MPI_Group world_group, sub_group;
    std::vector<int> ranks(group.begin(), group.end());
    check_mpi(MPI_Comm_group(world_, &world_group), "MPI_Comm_group");
    check_mpi(MPI_Group_incl(world_group, int(ranks.size()), ranks.data(), &sub_group),
              "MPI_Group_incl");
    MPI_Comm comm = MPI_COMM_NULL;
    check_mpi(MPI_Comm_create_group(world_, sub_group, tag, &comm), "MPI_Comm_create_group");
    MPI_Group_free(&sub_group);
    MPI_Group_free(&world_group);
    check_mpi(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "set error handler");
    groups_.emplace(group, comm);
    return comm;
  }

  // MPI_Comm_create_group blocks without a deadline, so the members first check in with the
  // group's first member (and it answers) under the usual timeout: a member that died or called
  // another group turns into an Error here rather than a hang there.
  void handshake(const std::vector<int64_t>& group, uint64_t key, int tag, const CallInfo& info) {
    const int64_t g = int64_t(group.size());
    if (g == 1) return;
    const std::string op = detail::str_cat(info.op, " (setting up the group)");
    const CallInfo setup{op.c_str(), info.group, info.count, info.unit};
    const int leader = int(group[0]);
    if (rank_ == leader) {
      auto p = std::make_unique<Pending>();
      p->tokens.assign(size_t(g), 0);
      p->reqs.assign(size_t(g - 1), MPI_REQUEST_NULL);
      for (int64_t k = 1; k < g; ++k) {
        start(MPI_Irecv(&p->tokens[size_t(k)], 1, MPI_UINT64_T, int(group[size_t(k)]), tag, world_,
                        &p->reqs[size_t(k - 1)]),
              setup, p);
      }
      wait(p, setup);
      for (int64_t k = 1; k < g; ++k) {
        if (p->tokens[size_t(k)] != key) {
          broken_ = detail::str_cat(info.str(), ": rank ", group[size_t(k)],
                                    " set up a different group at the same time");
          fail(broken_);
        }
      }
      p->token = key;
      for (int64_t k = 1; k < g; ++k) {
        start(MPI_Isend(&p->token, 1, MPI_UINT64_T, int(group[size_t(k)]), tag, world_,
                        &p->reqs[size_t(k - 1)]),
              setup, p);
      }
      wait(p, setup);
    } else {
      auto p = std::make_unique<Pending>();
      p->token = key;
      p->reqs.assign(2, MPI_REQUEST_NULL);
      start(MPI_Isend(&p->token, 1, MPI_UINT64_T, leader, tag, world_, &p->reqs[0]), setup, p);
      start(MPI_Irecv(&p->reply, 1, MPI_UINT64_T, leader, tag, world_, &p->reqs[1]), setup, p);
      wait(p, setup);
      if (p->reply != key) {
        broken_ = detail::str_cat(info.str(), ": rank ", leader,
                                  " set up a different group at the same time");
        fail(broken_);
      }
    }
  }

  const bool finalize_at_exit_;
  const int thread_level_;
  std::thread::id init_thread_;
  std::mutex mu_;
  MPI_Comm world_ = MPI_COMM_NULL;
  int64_t rank_ = 0, size_ = 1;
  int tag_ub_ = 32767;
  std::map<std::vector<int64_t>, MPI_Comm> groups_;
  std::vector<Buffer> pool_;
  int64_t pooled_bytes_ = 0;
  std::vector<std::unique_ptr<Pending> > abandoned_;
  std::string broken_;  // why the communicator stopped working; empty while it works
};

MpiCommunicator* the_world = nullptr;

void shut_down_world() { the_world->shut_down(); }

MpiCommunicator* create_world() {
  int initialized = 0;
  check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
  int provided = MPI_THREAD_SINGLE;
  if (initialized) {
    check_mpi(MPI_Query_thread(&provided), "MPI_Query_thread");
  } else {
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided),
              "MPI_Init_thread");
  }
  // Whoever initialised MPI finalises it.
  the_world = new MpiCommunicator(!initialized, provided);
  std::atexit(shut_down_world);
  return the_world;
}

}  // namespace

Communicator* mpi_world() {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (the_world == nullptr) create_world();
  return the_world;
}

#endif  // AXLEARN_HAVE_MPI

}  // namespace axlearn::dist
