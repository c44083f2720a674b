// Collectives on virtual devices: values against loops over every device's input, VJPs against
// central finite differences of the summed per-device objective, and a device that fails or
// skips a collective making the others fail instead of hanging.
#include "axlearn/dist/collectives.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <mutex>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"
#include "axlearn/dist/sharding.h"

namespace axlearn::dist {
namespace {

// Device r's input: element i of a (4, 6) tensor is 100 r + i + 0.25 (distinct everywhere).
std::vector<double> input_of(int64_t r, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[size_t(i)] = 100.0 * double(r) + double(i) + 0.25 * double(i % 3);
  return v;
}

Tensor device_input(int64_t r, Dtype dtype = float64) {
  return astype(array(input_of(r, 24), {4, 6}), dtype);
}

const Mesh kMesh{{2, 2}, {"data", "model"}};

// Rank of the device at coords (i, j) of kMesh.
int64_t rank_at(int64_t i, int64_t j) { return i * 2 + j; }

TEST(CollectivesTest, MeshGroupsFollowCoordinates) {
  EXPECT_EQ(mesh_group(kMesh, {1}, 2), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(mesh_group(kMesh, {0}, 3), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(mesh_group(kMesh, {0, 1}, 1), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(mesh_group(kMesh, {1, 0}, 1), (std::vector<int64_t>{0, 2, 1, 3}));
}

TEST(CollectivesTest, ValuesMatchLoopsOverDevices) {
  ThreadWorld world(4);
  std::mutex mu;
  std::vector<std::string> failures;
  world.run([&](int64_t r) {
    auto check = [&](const char* what, const Tensor& got, const std::vector<double>& want) {
      std::vector<double> g = got.to_vector<double>();
      bool ok = g.size() == want.size();
      for (size_t i = 0; ok && i < g.size(); ++i) ok = g[i] == want[i];
      if (!ok) {
        std::lock_guard<std::mutex> lock(mu);
        failures.push_back(std::string(what) + " on device " + std::to_string(r));
      }
    };
    const auto c = kMesh.coords(r);
    const Tensor x = device_input(r);
    // all_reduce over 'model': the two devices of my row.
    {
      std::vector<double> want(24);
      for (int64_t j = 0; j < 2; ++j) {
        auto v = input_of(rank_at(c[0], j), 24);
        for (size_t i = 0; i < 24; ++i) want[i] += v[i];
      }
      check("all_reduce", all_reduce(x, kMesh, {1}), want);
    }
    // all_reduce max over both axes.
    {
      std::vector<double> want = input_of(3, 24);
      check("all_reduce max", all_reduce(x, kMesh, {0, 1}, ReduceKind::kMax), want);
    }
    // all_gather over 'data' along dim 1: (4, 12), columns of device (0, j) then (1, j).
    {
      std::vector<double> want;
      auto a = input_of(rank_at(0, c[1]), 24), b = input_of(rank_at(1, c[1]), 24);
      for (int64_t row = 0; row < 4; ++row) {
        for (int64_t k = 0; k < 6; ++k) want.push_back(a[size_t(row * 6 + k)]);
        for (int64_t k = 0; k < 6; ++k) want.push_back(b[size_t(row * 6 + k)]);
      }
      check("all_gather", all_gather(x, kMesh, {0}, 1), want);
    }
    // reduce_scatter over ('data', 'model') along dim 0: row block r of the sum of all four.
    {
      std::vector<double> sum(24);
      for (int64_t s = 0; s < 4; ++s) {
        auto v = input_of(s, 24);
        for (size_t i = 0; i < 24; ++i) sum[i] += v[i];
      }
      std::vector<double> want(sum.begin() + r * 6, sum.begin() + r * 6 + 6);
      check("reduce_scatter", reduce_scatter(x, kMesh, {0, 1}, 0), want);
    }
    // all_to_all over 'model': split dim 1 in two, concatenate along dim 0.
    {
      std::vector<double> want;
      for (int64_t j = 0; j < 2; ++j) {
        auto v = input_of(rank_at(c[0], j), 24);
        for (int64_t row = 0; row < 4; ++row) {
          for (int64_t k = 0; k < 3; ++k) want.push_back(v[size_t(row * 6 + c[1] * 3 + k)]);
        }
      }
      check("all_to_all", all_to_all(x, kMesh, {1}, 1, 0), want);
    }
    // permute over ('data', 'model'): a ring 0 -> 1 -> 2 -> 3 -> 0 without 3 -> 0.
    {
      std::vector<double> want(24, 0.0);
      if (r > 0) want = input_of(r - 1, 24);
      check("permute", permute(x, kMesh, {0, 1}, {{0, 1}, {1, 2}, {2, 3}}), want);
    }
  });
  EXPECT_TRUE(failures.empty()) << failures.front();
}

// d/dx of sum over devices of <w_r, C(x)_r> by central differences, device by device and element
// by element, against the VJP.
void check_vjp(const char* what, const std::function<Tensor(const Tensor&)>& collective) {
  ThreadWorld world(4);
  std::atomic<int> bad{0};
  world.run([&](int64_t r) {
    const Tensor x = device_input(r) / 50.0;
    auto objective = [&](const Tensor& xr) {
      Tensor y = collective(xr);
      Tensor w = astype(array(input_of(r + 7, y.size()), y.shape()), float64) / 100.0;
      return sum(y * sin(w));
    };
    auto vg = value_and_grad([&](const std::vector<Tensor>& a) { return objective(a[0]); }, {x});
    std::vector<double> grad = vg.grads[0].to_vector<double>();
    const double eps = 1e-6;
    for (int64_t s = 0; s < 4; ++s) {
      for (int64_t i : {0, 7, 23}) {
        auto total = [&](double delta) {
          std::vector<double> xv = x.to_vector<double>();
          if (r == s) xv[size_t(i)] += delta;
          Tensor local = objective(array(xv, {4, 6}));
          return all_reduce(local, kMesh, {0, 1}).item<double>();
        };
        const double fd = (total(eps) - total(-eps)) / (2 * eps);
        if (r == s && std::abs(fd - grad[size_t(i)]) > 1e-6 * std::max(1.0, std::abs(fd))) {
          ++bad;
          ADD_FAILURE() << what << ": device " << r << " element " << i << ": vjp "
                        << grad[size_t(i)] << " vs finite difference " << fd;
        }
      }
    }
  });
  EXPECT_EQ(bad.load(), 0);
}

TEST(CollectivesTest, AllReduceVjpMatchesFiniteDifferences) {
  check_vjp("all_reduce", [](const Tensor& x) { return all_reduce(x, kMesh, {1}); });
}

TEST(CollectivesTest, AllGatherVjpMatchesFiniteDifferences) {
  check_vjp("all_gather", [](const Tensor& x) { return all_gather(x, kMesh, {0, 1}, 1); });
}

TEST(CollectivesTest, ReduceScatterVjpMatchesFiniteDifferences) {
  check_vjp("reduce_scatter", [](const Tensor& x) { return reduce_scatter(x, kMesh, {0}, 0); });
}

TEST(CollectivesTest, AllToAllVjpMatchesFiniteDifferences) {
  check_vjp("all_to_all", [](const Tensor& x) { return all_to_all(x, kMesh, {0, 1}, 0, 1); });
}

TEST(CollectivesTest, PermuteVjpMatchesFiniteDifferences) {
  check_vjp("permute", [](const Tensor& x) {
    return permute(x, kMesh, {0, 1}, {{0, 2}, {2, 1}, {1, 0}});
  });
}

TEST(CollectivesTest, FailingDeviceMakesOthersFailNotHang) {
  ThreadWorld world(3);
  world.set_timeout(std::chrono::seconds(30));
  const Mesh mesh{{3}, {"data"}};
  const auto start = std::chrono::steady_clock::now();
  try {
    world.run([&](int64_t r) {
      if (r == 1) fail("device 1 lost its input");
      all_reduce(device_input(r), mesh, {0}).eval();
    });
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("device 1 lost its input"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(CollectivesTest, MissingDeviceTimesOutWithClearError) {
  ThreadWorld world(2);
  world.set_timeout(std::chrono::milliseconds(300));
  const Mesh mesh{{2}, {"data"}};
  try {
    world.run([&](int64_t r) {
      if (r == 0) all_reduce(device_input(r), mesh, {0}).eval();
    });
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
}

TEST(CollectivesTest, RejectsBadArguments) {
  const Mesh mesh{{2}, {"data"}};
  EXPECT_THROW(all_gather(zeros({2, 2}), mesh, {1}, 0), Error);           // no such axis
  EXPECT_THROW(all_gather(zeros({2, 2}), mesh, {0}, 2), Error);           // no such dimension
  EXPECT_THROW(reduce_scatter(zeros({3, 2}), mesh, {0}, 0), Error);       // 3 rows over 2 devices
  EXPECT_THROW(permute(zeros({2}), mesh, {0}, {{0, 1}, {1, 1}}), Error);  // 1 receives twice
  // Outside a multi-device run there is no communicator.
  EXPECT_THROW(all_reduce(zeros({2}), mesh, {0}).eval(), Error);
}

}  // namespace
}  // namespace axlearn::dist
