// Communicators: how the devices of one SPMD program exchange data. `ThreadWorld` runs N virtual
// CPU devices as N threads of this process (like JAX's host device count); `mpi_world()`
// (mpi_communicator.h) runs one device per process under Open MPI. The collectives work on flat
// buffers over a group of ranks; the collective primitives (collectives.h) lay tensors out for
// them.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "axlearn/core/dtype.h"

namespace axlearn::dist {

enum class ReduceKind : uint8_t { kSum, kMax, kMin };
const char* reduce_kind_name(ReduceKind k);

// One device's handle on the world. A group is the ordered list of world ranks taking part
// (this device among them); every member must make the same calls on the group in the same order.
// A member that does not arrive within timeout() makes the others throw Error naming the
// collective and the group, so a dead device never hangs the rest.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  // Backend name for logs: "threads" or "mpi".
  virtual const char* backend() const = 0;

  // out[i] = reduce over members of in[i]; in and out hold n elements (they may alias). Every
  // member gets the same bits (members are combined in group order).
  virtual void all_reduce(const void* in, void* out, int64_t n, Dtype dtype, ReduceKind op,
                          const std::vector<int64_t>& group) = 0;
  // out = the members' in (nbytes each) concatenated in group order.
  virtual void all_gather(const void* in, void* out, int64_t nbytes,
                          const std::vector<int64_t>& group) = 0;
  // Member k of the group gets block k (n / group size elements) of the elementwise sum of the
  // members' in (n elements).
  virtual void reduce_scatter(const void* in, void* out, int64_t n, Dtype dtype,
                              const std::vector<int64_t>& group) = 0;
  // in holds group-size blocks of `block_bytes`; block j goes to member j, and out holds the
  // blocks received, in group order.
  virtual void all_to_all(const void* in, void* out, int64_t block_bytes,
                          const std::vector<int64_t>& group) = 0;
  // Sends `in` to world rank `dst` and receives `out` from world rank `src` (either may be -1:
  // nothing sent / out left as it is). Every member of `group` calls it in the same order.
  virtual void send_recv(const void* in, int64_t dst, void* out, int64_t src, int64_t nbytes,
                         const std::vector<int64_t>& group) = 0;
  virtual void barrier() = 0;

  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }

 private:
  std::chrono::milliseconds timeout_{60000};
};

// "[0,2,4]": a group as error messages show it.
std::string group_str(const std::vector<int64_t>& group);

// The communicator of the device this thread runs as; null outside any multi-device run.
Communicator* current_communicator();
void set_current_communicator(Communicator* comm);

// Runs the code in its scope as a one-device program (no communicator, rank 0), e.g. text
// generation from a checkpoint after a multi-device run; restores the device on exit.
class SingleDeviceScope {
 public:
  SingleDeviceScope();
  ~SingleDeviceScope();
  SingleDeviceScope(const SingleDeviceScope&) = delete;
  SingleDeviceScope& operator=(const SingleDeviceScope&) = delete;

 private:
  Communicator* comm_;
  int64_t rank_;
};

// N devices as N threads of this process. `run` starts one thread per device, binds it (device
// rank, communicator) and calls fn(rank) there; it returns when all are done and rethrows the
// first device's error. A device that throws aborts the world: the others' pending and later
// collectives throw at once instead of waiting.
class ThreadWorld {
 public:
  explicit ThreadWorld(int64_t num_devices);
  ~ThreadWorld();
  int64_t size() const;
  void run(const std::function<void(int64_t rank)>& fn);
  void set_timeout(std::chrono::milliseconds t);

  struct State;

 private:
  std::shared_ptr<State> state_;
};

// Runs fn(rank) on every device of the world this process belongs to: on N threads when
// num_devices > 1 and no MPI world is active, else once on this process's device (an MPI rank,
// or the single device).
void run_spmd(int64_t num_devices, const std::function<void(int64_t rank)>& fn);

}  // namespace axlearn::dist
