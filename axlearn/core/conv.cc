// Shape inference and VJP rules of conv_general_dilated and rev, and the user-facing conv ops.
// Kernels are in backends/cpu/conv.cc. The VJP follows jax.lax's transpose rules: the lhs
// cotangent is a conv of the output cotangent with the reversed kernel (lhs-dilated by the forward
// strides), the rhs cotangent a conv of lhs with the output cotangent (rhs-dilated by the
// strides); feature groups become batch groups and back.
#include "axlearn/core/conv.h"

#include <algorithm>
#include <functional>
#include <numeric>
#include <sstream>

#include "axlearn/core/ops.h"

namespace axlearn {

namespace {

template <typename T>
std::string vec_str(const std::vector<T>& v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  os << "]";
  return os.str();
}

std::string pad_str(const ConvPadding& p) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < p.size(); ++i)
    os << (i ? ", " : "") << "(" << p[i].first << ", " << p[i].second << ")";
  os << "]";
  return os.str();
}

bool is_permutation_of_axes(const std::vector<int>& spec, int ndim) {
  if (int(spec.size()) != ndim) return false;
  std::vector<int> s = spec;
  std::sort(s.begin(), s.end());
  for (int i = 0; i < ndim; ++i) {
    if (s[i] != i) return false;
  }
  return true;
}

int64_t dilate_dim(int64_t size, int64_t dilation) {
  return size == 0 ? 0 : 1 + dilation * (size - 1);
}

int64_t spatial_size(const Shape& shape, const std::vector<int>& spec, int i) {
  return shape[spec[2 + i]];
}

// (spec[1], spec[0], spec[2:]...): swaps the roles of the first two axes.
std::vector<int> spec_transpose(std::vector<int> spec) {
  std::swap(spec[0], spec[1]);
  return spec;
}

// Splits axis `src` of size n into (size1, n / size1), the new major part first.
Tensor reshape_axis_out_of(int src, int64_t size1, const Tensor& x) {
  Shape shape = x.shape();
  AXLEARN_CHECK(shape[src] % size1 == 0, "axis ", src, " of ", shape_str(shape), " by ", size1);
  const int64_t size2 = shape[src] / size1;
  shape[src] = size2;
  shape.insert(shape.begin() + src, size1);
  return reshape(x, shape);
}

// Merges axis `src` into axis `dst` (numbered after src is removed) as its major part.
Tensor reshape_axis_into(int src, int dst, const Tensor& x) {
  std::vector<int> perm;
  for (int i = 0; i < x.ndim(); ++i) {
    if (i != src) perm.push_back(i);
  }
  perm.insert(perm.begin() + dst, src);
  Shape shape = x.shape();
  shape.erase(shape.begin() + src);
  shape[dst] *= x.shape()[src];
  return reshape(transpose(x, perm), shape);
}

}  // namespace

ConvDimensionNumbers ConvDimensionNumbers::canonical(int ndim) {
  std::vector<int> s(std::max(ndim, 0));
  std::iota(s.begin(), s.end(), 0);
  return {s, s, s};
}

ConvDimensionNumbers conv_dimension_numbers(const std::string& lhs, const std::string& rhs,
                                            const std::string& out) {
  auto bad = [&](const std::string& why) {
    fail("conv_dimension_numbers: ", why, " in (\"", lhs, "\", \"", rhs, "\", \"", out, "\")");
  };
  if (lhs.size() != rhs.size() || lhs.size() != out.size()) bad("specs differ in length");
  for (const std::string* s : {&lhs, &rhs, &out}) {
    for (char c : *s) {
      if (std::count(s->begin(), s->end(), c) != 1) bad(std::string("letter '") + c + "' repeats");
    }
  }
  // Spatial axes in the order the rhs spec lists them.
  std::string spatial;
  for (char c : rhs) {
    if (c != 'O' && c != 'I') spatial += c;
  }
  auto perm = [&](const std::string& spec, char a, char b) {
    std::vector<int> p;
    for (char c : {a, b}) {
      size_t k = spec.find(c);
      if (k == std::string::npos) bad(std::string("\"") + spec + "\" has no '" + c + "'");
      p.push_back(int(k));
    }
    for (char c : spatial) {
      size_t k = spec.find(c);
      if (k == std::string::npos) {
        bad(std::string("spatial axis '") + c + "' of the rhs spec is missing from \"" + spec +
            "\"");
      }
      p.push_back(int(k));
    }
    return p;
  };
  if (spatial.size() + 2 != rhs.size()) bad("the rhs spec needs exactly one 'O' and one 'I'");
  return {perm(lhs, 'N', 'C'), perm(rhs, 'O', 'I'), perm(out, 'N', 'C')};
}

// ------------------------------------------------------------------ conv_general_dilated

OutputSpec ConvGeneralDilated::infer(const std::vector<Tensor>& in) const {
  if (in.size() != 2) fail("conv_general_dilated: expected 2 inputs, got ", in.size());
  const Shape &ls = in[0].shape(), &rs = in[1].shape();
  const ConvParams& p = params_;
  auto bad = [&](const std::string& why) {
    std::ostringstream os;
    print(os);
    fail("conv_general_dilated: ", why, "; lhs ", shape_str(ls), " ", dtype_name(in[0].dtype()),
         ", rhs ", shape_str(rs), " ", dtype_name(in[1].dtype()), ", ", os.str());
  };
  if (in[0].dtype() != in[1].dtype()) bad("lhs and rhs dtypes differ");
  if (!is_floating(in[0].dtype())) bad("operands must be floating point");
  const int nd = int(ls.size());
  if (int(rs.size()) != nd) bad("lhs and rhs ranks differ");
  if (nd < 2) bad("operands need a batch and a feature axis (rank >= 2)");
  const int ns = nd - 2;
  if (ns > 3) bad("at most 3 spatial axes are supported");
  if (!is_permutation_of_axes(p.dn.lhs_spec, nd) || !is_permutation_of_axes(p.dn.rhs_spec, nd) ||
      !is_permutation_of_axes(p.dn.out_spec, nd)) {
    bad("dimension numbers must each be a permutation of the operand axes");
  }
  if (int(p.window_strides.size()) != ns || int(p.padding.size()) != ns ||
      int(p.lhs_dilation.size()) != ns || int(p.rhs_dilation.size()) != ns) {
    bad("window_strides, padding, lhs_dilation and rhs_dilation need one entry per spatial axis (" +
        std::to_string(ns) + ")");
  }
  for (int i = 0; i < ns; ++i) {
    if (p.window_strides[i] < 1) bad("window strides must be >= 1");
    if (p.lhs_dilation[i] < 1 || p.rhs_dilation[i] < 1) bad("dilations must be >= 1");
  }
  const int64_t fgc = p.feature_group_count, bgc = p.batch_group_count;
  if (fgc < 1 || bgc < 1) bad("group counts must be >= 1");
  if (fgc > 1 && bgc > 1) bad("feature_group_count and batch_group_count cannot both exceed 1");
  const int64_t batch = ls[p.dn.lhs_spec[0]], feat = ls[p.dn.lhs_spec[1]];
  const int64_t out_feat = rs[p.dn.rhs_spec[0]], in_feat = rs[p.dn.rhs_spec[1]];
  if (feat % fgc != 0) {
    bad("lhs feature size " + std::to_string(feat) + " is not a multiple of feature_group_count " +
        std::to_string(fgc));
  }
  if (feat / fgc != in_feat) {
    bad("lhs feature size " + std::to_string(feat) + " / feature_group_count " +
        std::to_string(fgc) + " does not match the rhs in-feature size " + std::to_string(in_feat));
  }
  if (out_feat % fgc != 0) {
    bad("rhs out-feature size " + std::to_string(out_feat) +
        " is not a multiple of feature_group_count " + std::to_string(fgc));
  }
  if (batch % bgc != 0 || out_feat % bgc != 0) {
    bad("lhs batch size " + std::to_string(batch) + " and rhs out-feature size " +
        std::to_string(out_feat) + " must be multiples of batch_group_count " +
        std::to_string(bgc));
  }
  Shape out(nd);
  out[p.dn.out_spec[0]] = batch / bgc;
  out[p.dn.out_spec[1]] = out_feat;
  for (int i = 0; i < ns; ++i) {
    const int64_t padded = dilate_dim(spatial_size(ls, p.dn.lhs_spec, i), p.lhs_dilation[i]) +
                           p.padding[i].first + p.padding[i].second;
    if (padded < 0)
      bad("negative padding removes more than spatial axis " + std::to_string(i) + " has");
    const int64_t window = dilate_dim(spatial_size(rs, p.dn.rhs_spec, i), p.rhs_dilation[i]);
    out[p.dn.out_spec[2 + i]] = padded < window ? 0 : (padded - window) / p.window_strides[i] + 1;
  }
  return {out, in[0].dtype()};
}

bool ConvGeneralDilated::equals(const Primitive& o) const {
  auto* c = dynamic_cast<const ConvGeneralDilated*>(&o);
  return c && c->params_ == params_;
}

size_t ConvGeneralDilated::hash() const {
  size_t h = 0xc0;
  auto mix = [&](int64_t v) { h = h * 1000003u ^ std::hash<int64_t>()(v); };
  for (int64_t v : params_.window_strides) mix(v);
  for (auto [lo, hi] : params_.padding) {
    mix(lo);
    mix(hi);
  }
  for (int64_t v : params_.lhs_dilation) mix(v);
  for (int64_t v : params_.rhs_dilation) mix(v);
  for (const auto* s : {&params_.dn.lhs_spec, &params_.dn.rhs_spec, &params_.dn.out_spec}) {
    for (int v : *s) mix(v);
  }
  mix(params_.feature_group_count);
  mix(params_.batch_group_count);
  return h;
}

void ConvGeneralDilated::print(std::ostream& os) const {
  const ConvParams& p = params_;
  os << name() << "[window_strides=" << vec_str(p.window_strides)
     << ", padding=" << pad_str(p.padding) << ", lhs_dilation=" << vec_str(p.lhs_dilation)
     << ", rhs_dilation=" << vec_str(p.rhs_dilation) << ", dimension_numbers=("
     << vec_str(p.dn.lhs_spec) << ", " << vec_str(p.dn.rhs_spec) << ", " << vec_str(p.dn.out_spec)
     << "), feature_group_count=" << p.feature_group_count
     << ", batch_group_count=" << p.batch_group_count << "]";
}

namespace {

// d(lhs): the output cotangent convolved with the spatially reversed kernel, whose in/out feature
// roles are swapped; forward strides become lhs dilation.
Tensor conv_transpose_lhs(const Tensor& ct, const Tensor& lhs, const Tensor& rhs,
                          const ConvParams& p) {
  const ConvDimensionNumbers& dn = p.dn;
  const int ns = lhs.ndim() - 2;
  int64_t groups = p.feature_group_count;
  Tensor kernel = rhs;
  if (p.feature_group_count > 1 || p.batch_group_count > 1) {
    // Move the group axis from the kernel's out features into its in features.
    groups = std::max(p.feature_group_count, p.batch_group_count);
    kernel = reshape_axis_out_of(dn.rhs_spec[0], groups, kernel);
    kernel = reshape_axis_into(dn.rhs_spec[0], dn.rhs_spec[1], kernel);
  }
  ConvPadding padding(ns);
  std::vector<int> kernel_spatial;
  for (int i = 0; i < ns; ++i) {
    const int64_t lhs_d = dilate_dim(spatial_size(lhs.shape(), dn.lhs_spec, i), p.lhs_dilation[i]);
    const int64_t rhs_d =
        dilate_dim(spatial_size(kernel.shape(), dn.rhs_spec, i), p.rhs_dilation[i]);
    const int64_t out_d = dilate_dim(spatial_size(ct.shape(), dn.out_spec, i), p.window_strides[i]);
    const int64_t before = rhs_d - p.padding[i].first - 1;
    padding[i] = {before, lhs_d + rhs_d - 1 - out_d - before};
    kernel_spatial.push_back(dn.rhs_spec[2 + i]);
  }
  ConvDimensionNumbers t_dn{dn.out_spec, spec_transpose(dn.rhs_spec), dn.lhs_spec};
  Tensor out = conv_general_dilated(ct, rev(kernel, kernel_spatial), p.lhs_dilation, padding,
                                    p.window_strides, p.rhs_dilation, t_dn, groups, 1);
  if (p.batch_group_count > 1) {
    // Batch groups were folded into the features; unfold them back into the batch.
    out = reshape_axis_out_of(dn.lhs_spec[1], p.batch_group_count, out);
    out = reshape_axis_into(dn.lhs_spec[1], dn.lhs_spec[0], out);
  }
  return out;
}

// d(rhs): lhs convolved with the output cotangent as the kernel (batch axes contracted); forward
// strides become rhs dilation, feature groups become batch groups and vice versa.
Tensor conv_transpose_rhs(const Tensor& ct, const Tensor& lhs, const Tensor& rhs,
                          const ConvParams& p) {
  if (ct.size() == 0) return zeros(rhs.shape(), rhs.dtype());
  const ConvDimensionNumbers& dn = p.dn;
  const int ns = lhs.ndim() - 2;
  const int64_t fgc = p.batch_group_count, bgc = p.feature_group_count;
  ConvPadding padding(ns);
  for (int i = 0; i < ns; ++i) {
    const int64_t lhs_d = dilate_dim(spatial_size(lhs.shape(), dn.lhs_spec, i), p.lhs_dilation[i]);
    const int64_t rhs_d = dilate_dim(spatial_size(rhs.shape(), dn.rhs_spec, i), p.rhs_dilation[i]);
    const int64_t out_d = dilate_dim(spatial_size(ct.shape(), dn.out_spec, i), p.window_strides[i]);
    const int64_t lo = p.padding[i].first;
    padding[i] = {lo, (out_d - lhs_d) + (rhs_d - lo - 1)};
  }
  ConvDimensionNumbers t_dn{spec_transpose(dn.lhs_spec), spec_transpose(dn.out_spec),
                            spec_transpose(dn.rhs_spec)};
  return conv_general_dilated(lhs, ct, p.rhs_dilation, padding, p.lhs_dilation, p.window_strides,
                              t_dn, fgc, bgc);
}

}  // namespace

std::vector<Tensor> ConvGeneralDilated::vjp(const std::vector<Tensor>& in, const Tensor&,
                                            const Tensor& ct) const {
  return {conv_transpose_lhs(ct, in[0], in[1], params_),
          conv_transpose_rhs(ct, in[0], in[1], params_)};
}

// ------------------------------------------------------------------ rev

OutputSpec Rev::infer(const std::vector<Tensor>& in) const {
  if (in.size() != 1) fail("rev: expected 1 input, got ", in.size());
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (dims_[i] < 0 || dims_[i] >= in[0].ndim() || (i > 0 && dims_[i] <= dims_[i - 1])) {
      fail("rev: dimensions ", vec_str(dims_), " must be sorted, unique axes of ",
           shape_str(in[0].shape()));
    }
  }
  return {in[0].shape(), in[0].dtype()};
}

bool Rev::equals(const Primitive& o) const {
  auto* r = dynamic_cast<const Rev*>(&o);
  return r && r->dims_ == dims_;
}

void Rev::print(std::ostream& os) const { os << name() << "[dimensions=" << vec_str(dims_) << "]"; }

std::vector<Tensor> Rev::vjp(const std::vector<Tensor>&, const Tensor&, const Tensor& ct) const {
  return {rev(ct, dims_)};
}

// ------------------------------------------------------------------ user ops

Tensor conv_general_dilated(const Tensor& lhs, const Tensor& rhs,
                            const std::vector<int64_t>& window_strides, const ConvPadding& padding,
                            const std::vector<int64_t>& lhs_dilation,
                            const std::vector<int64_t>& rhs_dilation,
                            const ConvDimensionNumbers& dn, int64_t feature_group_count,
                            int64_t batch_group_count) {
  const size_t ns = size_t(std::max(lhs.ndim() - 2, 0));
  ConvParams p;
  p.window_strides = window_strides;
  p.padding = padding;
  p.lhs_dilation = lhs_dilation.empty() ? std::vector<int64_t>(ns, 1) : lhs_dilation;
  p.rhs_dilation = rhs_dilation.empty() ? std::vector<int64_t>(ns, 1) : rhs_dilation;
  const bool default_dn = dn.lhs_spec.empty() && dn.rhs_spec.empty() && dn.out_spec.empty();
  p.dn = default_dn ? ConvDimensionNumbers::canonical(lhs.ndim()) : dn;
  p.feature_group_count = feature_group_count;
  p.batch_group_count = batch_group_count;
  return Tensor::make(std::make_shared<ConvGeneralDilated>(std::move(p)), {lhs, rhs});
}

ConvPadding padtype_to_pads(const std::vector<int64_t>& in_spatial,
                            const std::vector<int64_t>& window, const std::vector<int64_t>& strides,
                            const std::string& padding) {
  const size_t n = in_spatial.size();
  if (window.size() != n || strides.size() != n) {
    fail("padtype_to_pads: input ", vec_str(in_spatial), ", window ", vec_str(window),
         " and strides ", vec_str(strides), " differ in length");
  }
  if (padding == "VALID") return ConvPadding(n, {0, 0});
  if (padding != "SAME")
    fail("padtype_to_pads: unknown padding \"", padding, "\" (use SAME or VALID)");
  ConvPadding out(n);
  for (size_t i = 0; i < n; ++i) {
    if (strides[i] < 1) fail("padtype_to_pads: strides ", vec_str(strides), " must be >= 1");
    const int64_t out_size = (in_spatial[i] + strides[i] - 1) / strides[i];
    const int64_t total =
        std::max<int64_t>((out_size - 1) * strides[i] + window[i] - in_spatial[i], 0);
    out[i] = {total / 2, total - total / 2};
  }
  return out;
}

namespace {

// Layout strings for channels-last operands with `ns` spatial axes: ("NHWC", "HWIO", "NHWC").
ConvDimensionNumbers channels_last(int ns) {
  const std::string spatial = std::string("DHW").substr(size_t(3 - ns));
  return conv_dimension_numbers("N" + spatial + "C", spatial + "IO", "N" + spatial + "C");
}

int channels_last_spatial(const Tensor& x, const Tensor& w) {
  const int ns = x.ndim() - 2;
  if (ns < 1 || ns > 3 || w.ndim() != x.ndim()) {
    fail("conv: expects x (N, [D, H,] W, C) and w ([D, H,] W, I, O) of equal rank 3 to 5; got x ",
         shape_str(x.shape()), " and w ", shape_str(w.shape()));
  }
  return ns;
}

}  // namespace

Tensor conv(const Tensor& x, const Tensor& w, const std::vector<int64_t>& strides,
            const ConvPadding& padding, const std::vector<int64_t>& dilation,
            int64_t feature_group_count) {
  const int ns = channels_last_spatial(x, w);
  std::vector<int64_t> s = strides.empty() ? std::vector<int64_t>(size_t(ns), 1) : strides;
  return conv_general_dilated(x, w, s, padding, {}, dilation, channels_last(ns),
                              feature_group_count);
}

Tensor conv(const Tensor& x, const Tensor& w, const std::vector<int64_t>& strides,
            const std::string& padding, const std::vector<int64_t>& dilation,
            int64_t feature_group_count) {
  const int ns = channels_last_spatial(x, w);
  std::vector<int64_t> s = strides.empty() ? std::vector<int64_t>(size_t(ns), 1) : strides;
  std::vector<int64_t> d = dilation.empty() ? std::vector<int64_t>(size_t(ns), 1) : dilation;
  if (s.size() != size_t(ns) || d.size() != size_t(ns)) {
    fail("conv: strides ", vec_str(s), " and dilation ", vec_str(d),
         " need one entry per spatial "
         "axis of x ",
         shape_str(x.shape()), " and w ", shape_str(w.shape()));
  }
  std::vector<int64_t> in(static_cast<size_t>(ns)), window(static_cast<size_t>(ns));
  for (int i = 0; i < ns; ++i) {
    in[i] = x.shape()[1 + i];
    window[i] = dilate_dim(w.shape()[i], d[i]);
  }
  return conv(x, w, s, padtype_to_pads(in, window, s, padding), d, feature_group_count);
}

Tensor rev(const Tensor& x, const std::vector<int>& dims) {
  std::vector<int> d = normalize_axes(dims, x.ndim(), "rev");
  std::sort(d.begin(), d.end());
  d.erase(std::unique(d.begin(), d.end()), d.end());
  if (d.empty()) return x;
  return Tensor::make(std::make_shared<Rev>(std::move(d)), {x});
}

}  // namespace axlearn
