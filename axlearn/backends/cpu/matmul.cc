// dot_general on the CPU. Operands are viewed as (batch, M, K) x (batch, K, N) without copying
// when their strides allow it; f32 and bf16 run on oneDNN's matmul (f32 accumulation), f16 goes
// through f32, and f64/integers use a blocked reference loop.
#include <algorithm>
#include <dnnl.hpp>
#include <map>
#include <tuple>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/core/primitives.h"

namespace axlearn {

namespace {

struct Matrix3 {
  Array data;          // the (possibly copied) operand
  int64_t b, r, c;     // batch, rows, cols
  int64_t sb, sr, sc;  // strides in elements
};

// Collapses `dims` (given as operand axes, in order) into one (size, stride) when the view allows.
bool collapse(const Array& a, const std::vector<int>& dims, int64_t& size, int64_t& stride) {
  size = 1;
  stride = 1;
  for (int d : dims) size *= a.shape[d];
  // Walk from the innermost axis outwards, checking each is dense over the ones inside it.
  int64_t expect = -1;
  for (int i = int(dims.size()) - 1; i >= 0; --i) {
    int64_t s = a.shape[dims[i]], st = a.strides[dims[i]];
    if (s == 1) continue;
    if (st == 0) return false;
    if (expect < 0) {
      stride = st;
    } else if (st != expect) {
      return false;
    }
    expect = st * s;
  }
  return true;
}

bool collapse_all(Matrix3& m, const std::vector<int>& batch, const std::vector<int>& rows,
                  const std::vector<int>& cols) {
  return collapse(m.data, batch, m.b, m.sb) && collapse(m.data, rows, m.r, m.sr) &&
         collapse(m.data, cols, m.c, m.sc);
}

// Views `a` as (batch, rows, cols); copies it into that order only when its strides do not allow
// the view.
Matrix3 as_matrix(const Array& a, const std::vector<int>& batch, const std::vector<int>& rows,
                  const std::vector<int>& cols) {
  Matrix3 m;
  m.data = a;
  if (collapse_all(m, batch, rows, cols)) return m;
  std::vector<int> perm = batch;
  perm.insert(perm.end(), rows.begin(), rows.end());
  perm.insert(perm.end(), cols.begin(), cols.end());
  Array t = a;
  for (size_t i = 0; i < perm.size(); ++i) {
    t.shape[i] = a.shape[perm[i]];
    t.strides[i] = a.strides[perm[i]];
  }
  m.data = contiguous(t);
  // On the dense copy the groups are consecutive axes.
  std::vector<int> nb, nr, nc;
  int k = 0;
  for (size_t i = 0; i < batch.size(); ++i) nb.push_back(k++);
  for (size_t i = 0; i < rows.size(); ++i) nr.push_back(k++);
  for (size_t i = 0; i < cols.size(); ++i) nc.push_back(k++);
  AXLEARN_CHECK(collapse_all(m, nb, nr, nc), "dense operand failed to collapse");
  return m;
}

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int>;

// A ready-to-run matmul: the primitive plus memory objects whose data handles are swapped per
// call, so a repeated shape costs one map lookup and the kernel.
struct MatmulEntry {
  dnnl::matmul primitive;
  dnnl::memory a, b, c;
};

void run_onednn(const Matrix3& a, const Matrix3& b, Array& out, dnnl::memory::data_type dt) {
  // Per thread: entries hold memory objects whose handles are rebound on every call.
  thread_local std::map<Key, MatmulEntry> cache;
  thread_local dnnl::stream stream(engine());
  const int64_t B = a.b, M = a.r, K = a.c, N = b.c;
  // A batch of one has no batch stride; store 0 so equal problems share an entry.
  const int64_t asb = a.b > 1 ? a.sb : 0, bsb = b.b > 1 ? b.sb : 0;
  Key key{B, M, K, N, asb, a.sr, a.sc, bsb, b.sr, b.sc, int(dt)};
  auto it = cache.find(key);
  if (it == cache.end()) {
    using dims = dnnl::memory::dims;
    dnnl::memory::desc ad(dims{B, M, K}, dt, dims{asb ? asb : M * K, a.sr, a.sc});
    dnnl::memory::desc bd(dims{B, K, N}, dt, dims{bsb ? bsb : K * N, b.sr, b.sc});
    dnnl::memory::desc cd(dims{B, M, N}, dt, dims{M * N, N, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ad, bd, cd), engine());
    if (cache.size() > 256) cache.clear();
    MatmulEntry e{dnnl::matmul(pd), dnnl::memory(ad, engine(), DNNL_MEMORY_NONE),
                  dnnl::memory(bd, engine(), DNNL_MEMORY_NONE),
                  dnnl::memory(cd, engine(), DNNL_MEMORY_NONE)};
    it = cache.emplace(key, std::move(e)).first;
  }
  MatmulEntry& e = it->second;
  e.a.set_data_handle(a.data.raw());
  e.b.set_data_handle(b.data.raw());
  e.c.set_data_handle(out.raw());
  e.primitive.execute(stream, {{DNNL_ARG_SRC, e.a}, {DNNL_ARG_WEIGHTS, e.b}, {DNNL_ARG_DST, e.c}});
  stream.wait();
}

// Reference loop for f64 and integers: y[b, m, n] = sum_k a[b, m, k] * b[b, k, n].
template <typename T>
void run_reference(const Matrix3& a, const Matrix3& b, Array& out) {
  const T* ap = a.data.data<T>();
  const T* bp = b.data.data<T>();
  T* cp = out.data<T>();
  const int64_t B = a.b, M = a.r, K = a.c, N = b.c;
#pragma omp parallel for collapse(2) if (B * M * N * K > (1 << 18))
  for (int64_t bb = 0; bb < B; ++bb) {
    for (int64_t m = 0; m < M; ++m) {
      T* row = cp + (bb * M + m) * N;
      for (int64_t n = 0; n < N; ++n) row[n] = T(0);
      for (int64_t k = 0; k < K; ++k) {
        T av = ap[bb * (a.b > 1 ? a.sb : 0) + m * a.sr + k * a.sc];
        const T* brow = bp + bb * (b.b > 1 ? b.sb : 0) + k * b.sr;
        for (int64_t n = 0; n < N; ++n) row[n] += av * brow[n * b.sc];
      }
    }
  }
}

}  // namespace

void DotGeneral::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const Array &a = in[0], &b = in[1];
  std::vector<int> a_free, b_free;
  for (int d = 0; d < a.ndim(); ++d) {
    if (std::find(dims_.lhs_batch.begin(), dims_.lhs_batch.end(), d) == dims_.lhs_batch.end() &&
        std::find(dims_.lhs_contract.begin(), dims_.lhs_contract.end(), d) ==
            dims_.lhs_contract.end()) {
      a_free.push_back(d);
    }
  }
  for (int d = 0; d < b.ndim(); ++d) {
    if (std::find(dims_.rhs_batch.begin(), dims_.rhs_batch.end(), d) == dims_.rhs_batch.end() &&
        std::find(dims_.rhs_contract.begin(), dims_.rhs_contract.end(), d) ==
            dims_.rhs_contract.end()) {
      b_free.push_back(d);
    }
  }
  out = Array::empty(out.shape, out.dtype);
  if (out.size() == 0) return;
  int64_t k_size = 1;
  for (int d : dims_.lhs_contract) k_size *= a.shape[d];
  if (k_size == 0) {
    std::memset(out.raw(), 0, out.nbytes());
    return;
  }
  Matrix3 am = as_matrix(a, dims_.lhs_batch, a_free, dims_.lhs_contract);
  Matrix3 bm = as_matrix(b, dims_.rhs_batch, dims_.rhs_contract, b_free);
  switch (out.dtype) {
    case Dtype::kF32:
      run_onednn(am, bm, out, dnnl::memory::data_type::f32);
      return;
    case Dtype::kBF16:
      run_onednn(am, bm, out, dnnl::memory::data_type::bf16);
      return;
    case Dtype::kF16: {
      // Through f32: exact products, f32 accumulation, one rounding at the end.
      auto widen = [](const Matrix3& m) {
        Matrix3 w = m;
        Array dense = Array::empty({m.b, m.r, m.c}, float32);
        float* d = dense.data<float>();
        const float16_t* s = m.data.data<float16_t>();
        for (int64_t i = 0; i < m.b; ++i)
          for (int64_t r = 0; r < m.r; ++r)
            for (int64_t c = 0; c < m.c; ++c)
              d[(i * m.r + r) * m.c + c] = float(s[i * (m.b > 1 ? m.sb : 0) + r * m.sr + c * m.sc]);
        w.data = dense;
        w.sb = m.r * m.c;
        w.sr = m.c;
        w.sc = 1;
        return w;
      };
      Array tmp = Array::empty(out.shape, float32);
      run_onednn(widen(am), widen(bm), tmp, dnnl::memory::data_type::f32);
      cpu::store_chunk<float>(tmp.data<float>(), float16, out.raw(), 0, out.size());
      return;
    }
    case Dtype::kF64:
      run_reference<double>(am, bm, out);
      return;
    case Dtype::kI32:
      run_reference<int32_t>(am, bm, out);
      return;
    case Dtype::kI64:
      run_reference<int64_t>(am, bm, out);
      return;
    case Dtype::kU32:
      run_reference<uint32_t>(am, bm, out);
      return;
    case Dtype::kU8:
      run_reference<uint8_t>(am, bm, out);
      return;
    default:
      fail("dot_general: unsupported dtype ", out.dtype);
  }
}

}  // namespace axlearn
