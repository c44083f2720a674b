// Checks the MPI communicator, one device per process. Run under `mpirun -np N`: every rank makes
// deterministic inputs from (rank, index), runs each collective over the whole world and over
// sub-groups (even ranks, odd ranks, all ranks in reverse order), and compares with a reference
// built locally from the inputs every rank can compute. Exit code 0 means every check passed.
//
//   mpi_collectives                                  all collectives (under mpirun)
//   mpi_collectives --die-rank=R --die-after-ms=T    rank R exits before a collective; the others
//       [--die-phase=collective|setup]               must fail with an Error within the timeout
//       [--timeout-ms=5000]                          (setup: the collective is a group's first)
//   mpi_collectives --env-detection                  mpi_launched() on launcher environments
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "axlearn/core/dtype.h"
#include "axlearn/core/error.h"
#include "axlearn/dist/communicator.h"
#include "axlearn/dist/mpi_communicator.h"

using axlearn::bfloat16_t;
using axlearn::Dtype;
using axlearn::Error;
using axlearn::dist::Communicator;
using axlearn::dist::ReduceKind;
using Group = std::vector<int64_t>;

namespace {

int64_t my_rank = 0;
int num_checks = 0, num_failures = 0;

std::string group_str(const Group& g) {
  std::string s = "[";
  for (size_t i = 0; i < g.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(g[i]);
  }
  return s + "]";
}

void check(bool ok, const std::string& what) {
  ++num_checks;
  if (ok) return;
  ++num_failures;
  std::printf("rank %lld: FAILED %s\n", (long long)my_rank, what.c_str());
  std::fflush(stdout);
}

// ---- deterministic inputs; magnitudes spread so that float sums depend on their order ----

template <typename T>
T input(int64_t rank, int64_t i);
template <>
float input<float>(int64_t rank, int64_t i) {
  const float m = 1.0f + 0.013f * float(i % 97) + 0.1f * float(rank);
  const float v = std::ldexp(m, int((rank * 3 + i) % 11) - 5);
  return (rank + i) % 3 == 0 ? -v : v;
}
template <>
bfloat16_t input<bfloat16_t>(int64_t rank, int64_t i) {
  // 8 significant bits at magnitudes 2^-4 .. 2^4: sums round at most steps, so order shows.
  const float m = 1.0f + float((rank * 5 + i) % 127) / 128.0f;
  const float v = std::ldexp(m, int((rank * 3 + i) % 9) - 4);
  return bfloat16_t((rank + i) % 4 == 0 ? -v : v);
}
template <>
int32_t input<int32_t>(int64_t rank, int64_t i) {
  return int32_t((rank + 1) * 1000003 % 9973) - int32_t(i * 31) + int32_t((i * rank) % 17);
}

template <typename T>
std::vector<T> inputs(int64_t rank, int64_t n) {
  std::vector<T> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = input<T>(rank, i);
  return v;
}

template <typename T>
bool is_nan(T v) {
  if constexpr (std::is_same_v<T, int32_t>) {
    return false;
  } else {
    return std::isnan(float(v));
  }
}

// The contract: members combined left to right in group order, each step rounded to T; a NaN
// wins max and min.
template <typename T>
std::vector<T> reference_reduce(const std::vector<std::vector<T>>& xs, ReduceKind op) {
  std::vector<T> acc = xs[0];
  for (size_t k = 1; k < xs.size(); ++k) {
    for (size_t i = 0; i < acc.size(); ++i) {
      const T a = acc[i], b = xs[k][i];
      if (op == ReduceKind::kSum) {
        acc[i] = T(a + b);
      } else if (is_nan(a) || is_nan(b)) {
        acc[i] = is_nan(b) ? b : a;
      } else {
        acc[i] = op == ReduceKind::kMax ? (b > a ? b : a) : (b < a ? b : a);
      }
    }
  }
  return acc;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b, std::string* first_diff) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool both_nan = is_nan(a[i]) && is_nan(b[i]);
    if (!both_nan && std::memcmp(&a[i], &b[i], sizeof(T)) != 0) {
      *first_diff = "element " + std::to_string(i) + ": got " + std::to_string(double(a[i])) +
                    ", want " + std::to_string(double(b[i]));
      return false;
    }
  }
  return true;
}

template <typename T>
void check_all_reduce(Communicator& comm, const Group& group, int64_t n, ReduceKind op,
                      bool in_place) {
  const Dtype dtype = axlearn::dtype_of<T>();
  std::vector<std::vector<T>> xs;
  for (int64_t r : group) {
    xs.push_back(inputs<T>(r, n));
    // A NaN from the second member must reach everyone through max and min.
    if constexpr (!std::is_same_v<T, int32_t>) {
      if (op != ReduceKind::kSum && xs.size() == 2 && n > 3) {
        xs.back()[3] = T(std::numeric_limits<float>::quiet_NaN());
      }
    }
  }
  std::vector<T> mine;
  for (size_t k = 0; k < group.size(); ++k) {
    if (group[k] == my_rank) mine = xs[k];
  }
  std::vector<T> out(size_t(n), T(0));
  if (in_place) {
    out = mine;
    comm.all_reduce(out.data(), out.data(), n, dtype, op, group);
  } else {
    comm.all_reduce(mine.data(), out.data(), n, dtype, op, group);
  }
  std::string diff;
  const bool ok = same_bits(out, reference_reduce(xs, op), &diff);
  check(ok, std::string("all_reduce ") + reduce_kind_name(op) + " " + dtype_name(dtype) +
                " n=" + std::to_string(n) + (in_place ? " in place" : "") + " over " +
                group_str(group) + ": " + diff);
}

template <typename T>
void check_reduce_scatter(Communicator& comm, const Group& group, int64_t block) {
  const Dtype dtype = axlearn::dtype_of<T>();
  const int64_t g = int64_t(group.size()), n = block * g;
  std::vector<std::vector<T>> xs;
  int64_t me = 0;
  for (size_t k = 0; k < group.size(); ++k) {
    xs.push_back(inputs<T>(group[k], n));
    if (group[k] == my_rank) me = int64_t(k);
  }
  const std::vector<T> sum = reference_reduce(xs, ReduceKind::kSum);
  const std::vector<T> want(sum.begin() + me * block, sum.begin() + (me + 1) * block);
  std::vector<T> out(size_t(block), T(0));
  comm.reduce_scatter(xs[size_t(me)].data(), out.data(), n, dtype, group);
  std::string diff;
  const bool ok = same_bits(out, want, &diff);
  check(ok, std::string("reduce_scatter ") + dtype_name(dtype) + " block=" + std::to_string(block) +
                " over " + group_str(group) + ": " + diff);
}

uint8_t byte_of(int64_t rank, int64_t block, int64_t j) {
  return uint8_t(rank * 31 + block * 7 + j * 3 + 1);
}

void check_all_gather(Communicator& comm, const Group& group, int64_t nbytes) {
  std::vector<uint8_t> in(static_cast<size_t>(nbytes)), want;
  for (int64_t j = 0; j < nbytes; ++j) in[size_t(j)] = byte_of(my_rank, 0, j);
  for (int64_t r : group) {
    for (int64_t j = 0; j < nbytes; ++j) want.push_back(byte_of(r, 0, j));
  }
  std::vector<uint8_t> out(want.size(), 0);
  comm.all_gather(in.data(), out.data(), nbytes, group);
  check(out == want, "all_gather nbytes=" + std::to_string(nbytes) + " over " + group_str(group));
}

void check_all_to_all(Communicator& comm, const Group& group, int64_t block_bytes) {
  const int64_t g = int64_t(group.size());
  int64_t me = 0;
  for (int64_t k = 0; k < g; ++k) {
    if (group[size_t(k)] == my_rank) me = k;
  }
  // Block j of member m's input is byte_of(group[m], j, .); member me receives block me of all.
  std::vector<uint8_t> in, want;
  for (int64_t j = 0; j < g; ++j) {
    for (int64_t b = 0; b < block_bytes; ++b) in.push_back(byte_of(my_rank, j, b));
  }
  for (int64_t m = 0; m < g; ++m) {
    for (int64_t b = 0; b < block_bytes; ++b) want.push_back(byte_of(group[size_t(m)], me, b));
  }
  std::vector<uint8_t> out(want.size(), 0);
  comm.all_to_all(in.data(), out.data(), block_bytes, group);
  check(out == want,
        "all_to_all block_bytes=" + std::to_string(block_bytes) + " over " + group_str(group));
}

// Ring: member k sends to k+1 (mod g) and receives from k-1. Shift: the same without wrapping,
// so the first member receives nothing and keeps its buffer, the last sends nothing.
void check_send_recv(Communicator& comm, const Group& group, bool ring) {
  const int64_t g = int64_t(group.size()), nbytes = 10;
  int64_t me = 0;
  for (int64_t k = 0; k < g; ++k) {
    if (group[size_t(k)] == my_rank) me = k;
  }
  const int64_t next = ring || me + 1 < g ? group[size_t((me + 1) % g)] : -1;
  const int64_t prev = ring || me > 0 ? group[size_t((me - 1 + g) % g)] : -1;
  std::vector<uint8_t> in(static_cast<size_t>(nbytes)), out(size_t(nbytes), 0xEE),
      want(size_t(nbytes), 0xEE);
  for (int64_t j = 0; j < nbytes; ++j) {
    in[size_t(j)] = byte_of(my_rank, 9, j);
    if (prev >= 0) want[size_t(j)] = byte_of(prev, 9, j);
  }
  comm.send_recv(in.data(), next, out.data(), prev, nbytes, group);
  check(out == want,
        std::string("send_recv ") + (ring ? "ring" : "shift") + " over " + group_str(group));
}

void check_group(Communicator& comm, const Group& group) {
  // all_reduce gathers whole buffers up to 64 KiB from all members together, or in a group of
  // two; 10007 elements over three or more members take the two-round path (blocks).
  for (int64_t n : {1, 37, 10007}) {
    for (ReduceKind op : {ReduceKind::kSum, ReduceKind::kMax, ReduceKind::kMin}) {
      check_all_reduce<float>(comm, group, n, op, false);
      check_all_reduce<bfloat16_t>(comm, group, n, op, false);
      check_all_reduce<int32_t>(comm, group, n, op, false);
    }
  }
  check_all_reduce<float>(comm, group, 37, ReduceKind::kSum, true);
  check_all_reduce<float>(comm, group, 10007, ReduceKind::kSum, true);
  check_reduce_scatter<float>(comm, group, 29);
  check_reduce_scatter<bfloat16_t>(comm, group, 29);
  check_reduce_scatter<int32_t>(comm, group, 1000);
  for (int64_t nbytes : {20, 7}) check_all_gather(comm, group, nbytes);
  for (int64_t block : {12, 3}) check_all_to_all(comm, group, block);
  check_send_recv(comm, group, true);
  check_send_recv(comm, group, false);
}

// Mistakes a caller can make are refused on the calling rank alone, and the communicator stays
// usable afterwards.
template <typename Fn>
void check_refused(const std::string& what, const std::string& expect, Fn fn) {
  try {
    fn();
    check(false, what + ": no error");
  } catch (const Error& e) {
    check(std::string(e.what()).find(expect) != std::string::npos,
          what + ": message '" + e.what() + "' lacks '" + expect + "'");
  }
}

void check_misuse(Communicator& comm, const Group& all) {
  const int64_t size = comm.size();
  float x[4] = {1, 2, 3, 4}, y[4];
  if (size > 1) {
    const Group others = {(my_rank + 1) % size};
    check_refused("non-member", "which is not a member",
                  [&] { comm.all_reduce(x, y, 4, axlearn::float32, ReduceKind::kSum, others); });
    check_refused("uneven reduce_scatter", "do not split",
                  [&] { comm.reduce_scatter(x, y, size + 1, axlearn::float32, all); });
  }
  check_refused("rank outside the world", "outside the world", [&] {
    comm.all_gather(x, y, 4, {my_rank, size});
  });
  check_refused("repeated rank", "appears twice", [&] {
    comm.all_gather(x, y, 4, {my_rank, my_rank});
  });
  bool b[4] = {true, false, true, false};
  check_refused("bool reduction", "bool",
                [&] { comm.all_reduce(b, b, 4, axlearn::bool_, ReduceKind::kMax, all); });
}

int run_checks() {
  Communicator& comm = *axlearn::dist::mpi_world();
  my_rank = comm.rank();
  const int64_t size = comm.size();
  check(std::string(comm.backend()) == "mpi", "backend name");
  check(axlearn::dist::mpi_available(), "mpi_available()");
  check(axlearn::dist::mpi_launched() == (size > 1), "mpi_launched() under mpirun");
  if (const char* r = std::getenv("OMPI_COMM_WORLD_RANK")) {
    check(std::atoll(r) == my_rank, "rank agrees with OMPI_COMM_WORLD_RANK");
  }
  Group all, evens, odds, reversed;
  for (int64_t r = 0; r < size; ++r) {
    all.push_back(r);
    (r % 2 ? odds : evens).push_back(r);
    reversed.insert(reversed.begin(), r);
  }
  for (const Group& g : {all, evens, odds, reversed}) {
    bool member = false;
    for (int64_t r : g) member |= r == my_rank;
    if (member) check_group(comm, g);
  }
  check_misuse(comm, all);
  comm.barrier();

  // Latency of a 4 MiB f32 sum over everyone (oversubscribed ranks make this a loose number).
  const int64_t n = 1 << 20;
  std::vector<float> big = inputs<float>(my_rank, n), out(static_cast<size_t>(n));
  comm.all_reduce(big.data(), out.data(), n, axlearn::float32, ReduceKind::kSum, all);
  const auto t0 = std::chrono::steady_clock::now();
  const int iters = 10;
  for (int i = 0; i < iters; ++i) {
    comm.all_reduce(big.data(), out.data(), n, axlearn::float32, ReduceKind::kSum, all);
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  int32_t failures = num_failures, total = 0;
  comm.all_reduce(&failures, &total, 1, axlearn::int32, ReduceKind::kSum, all);
  if (my_rank == 0) {
    std::printf("mpi_collectives: all_reduce of %lld float32 over %lld ranks: %.2f ms\n",
                (long long)n, (long long)size, ms / iters);
    if (total == 0) {
      std::printf("mpi_collectives: all %d checks passed on each of %lld ranks\n", num_checks,
                  (long long)size);
    } else {
      std::printf("mpi_collectives: %d checks FAILED across %lld ranks\n", total, (long long)size);
    }
  }
  return total == 0 ? 0 : 1;
}

int run_die(int64_t die_rank, int64_t die_after_ms, bool in_setup, int64_t timeout_ms) {
  Communicator& comm = *axlearn::dist::mpi_world();
  my_rank = comm.rank();
  comm.set_timeout(std::chrono::milliseconds(timeout_ms));
  Group all, reversed;
  for (int64_t r = 0; r < comm.size(); ++r) {
    all.push_back(r);
    reversed.insert(reversed.begin(), r);
  }
  float x[16], y[16];
  for (int i = 0; i < 16; ++i) x[i] = float(i);
  comm.all_reduce(x, y, 16, axlearn::float32, ReduceKind::kSum, all);
  check(y[5] == 5.0f * float(comm.size()), "warm-up all_reduce");
  if (my_rank == die_rank) {
    std::this_thread::sleep_for(std::chrono::milliseconds(die_after_ms));
    std::printf("rank %lld: exiting before the collective\n", (long long)my_rank);
    std::fflush(stdout);
    _exit(3);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto elapsed_ms = [&] {
    return (long long)std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now() - t0)
        .count();
  };
  try {
    comm.all_reduce(x, y, 16, axlearn::float32, ReduceKind::kSum, in_setup ? reversed : all);
    std::printf("rank %lld: FAILED: the collective completed although rank %lld died\n",
                (long long)my_rank, (long long)die_rank);
    return 2;
  } catch (const Error& e) {
    std::printf("rank %lld: error after %lld ms: %s\n", (long long)my_rank, elapsed_ms(), e.what());
  }
  const auto t1 = elapsed_ms();
  try {
    comm.barrier();
    std::printf("rank %lld: FAILED: barrier after the failure completed\n", (long long)my_rank);
  } catch (const Error& e) {
    std::printf("rank %lld: next call refused after %lld ms: %s\n", (long long)my_rank,
                elapsed_ms() - t1, e.what());
  }
  std::fflush(stdout);
  return 1;
}

// mpi_launched() on the environments launchers set up, without starting MPI.
int run_env_detection() {
  const char* vars[] = {
      "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMIX_RANK",     "PMI_SIZE",
      "SLURM_PROCID",         "SLURM_NTASKS",         "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS",
      "SLURM_JOB_ID"};
  struct Case {
    const char* name;
    std::vector<std::pair<const char*, const char*>> env;
    bool launched;
  };
  const std::vector<Case> cases = {
      {"plain process", {}, false},
      {"mpirun -np 4",
       {{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "2"}, {"PMIX_RANK", "2"}},
       true},
      {"mpirun -np 1", {{"OMPI_COMM_WORLD_SIZE", "1"}, {"PMIX_RANK", "0"}}, false},
      {"sbatch -n 4 script, not under srun",
       {{"SLURM_JOB_ID", "7"}, {"SLURM_NTASKS", "4"}, {"SLURM_PROCID", "0"}},
       false},
      {"srun -n 4",
       {{"SLURM_JOB_ID", "7"},
        {"SLURM_NTASKS", "4"},
        {"SLURM_PROCID", "3"},
        {"SLURM_STEP_ID", "0"},
        {"SLURM_STEP_NUM_TASKS", "4"}},
       true},
      {"srun -n 1 inside an allocation of 4",
       {{"SLURM_JOB_ID", "7"},
        {"SLURM_NTASKS", "1"},
        {"SLURM_PROCID", "0"},
        {"SLURM_STEP_ID", "1"},
        {"SLURM_STEP_NUM_TASKS", "1"}},
       false},
      {"srun without SLURM_STEP_NUM_TASKS",
       {{"SLURM_NTASKS", "2"}, {"SLURM_PROCID", "1"}, {"SLURM_STEP_ID", "0"}},
       true},
      {"PMIx rank alone", {{"PMIX_RANK", "0"}}, false},
      {"PMIx rank with PMI_SIZE", {{"PMIX_RANK", "1"}, {"PMI_SIZE", "2"}}, true},
  };
  for (const Case& c : cases) {
    for (const char* v : vars) unsetenv(v);
    for (const auto& [k, v] : c.env) setenv(k, v, 1);
    check(axlearn::dist::mpi_launched() == c.launched, std::string("mpi_launched() for ") + c.name +
                                                           " should be " +
                                                           (c.launched ? "true" : "false"));
  }
  std::printf("mpi_collectives --env-detection: %d of %d checks passed\n",
              num_checks - num_failures, num_checks);
  return num_failures == 0 ? 0 : 1;
}

int64_t flag_value(const std::string& arg, const std::string& name) {
  return std::atoll(arg.substr(name.size()).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  int64_t die_rank = -1, die_after_ms = 0, timeout_ms = 5000;
  bool in_setup = false, env_detection = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--die-rank=", 0) == 0) {
      die_rank = flag_value(a, "--die-rank=");
    } else if (a.rfind("--die-after-ms=", 0) == 0) {
      die_after_ms = flag_value(a, "--die-after-ms=");
    } else if (a.rfind("--timeout-ms=", 0) == 0) {
      timeout_ms = flag_value(a, "--timeout-ms=");
    } else if (a == "--die-phase=setup" || a == "--die-phase=collective") {
      in_setup = a == "--die-phase=setup";
    } else if (a == "--env-detection") {
      env_detection = true;
    } else {
      std::fprintf(stderr, "mpi_collectives: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  try {
    if (env_detection) return run_env_detection();
    if (die_rank >= 0) return run_die(die_rank, die_after_ms, in_setup, timeout_ms);
    return run_checks();
  } catch (const std::exception& e) {
    std::printf("rank %lld: FAILED with an exception: %s\n", (long long)my_rank, e.what());
    return 1;
  }
}
