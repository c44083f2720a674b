// Linear-algebra ops: dot_general, matmul (numpy semantics) and einsum, all lowered to the
// DotGeneral primitive plus transposes, reductions and broadcasts.
#include <algorithm>
#include <map>
#include <numeric>

#include "axlearn/core/ops.h"
#include "axlearn/core/primitives.h"

namespace axlearn {

Tensor dot_general(const Tensor& a, const Tensor& b, const std::vector<int>& lhs_contract,
                   const std::vector<int>& rhs_contract, const std::vector<int>& lhs_batch,
                   const std::vector<int>& rhs_batch) {
  Dtype d = promote_types(a.dtype(), b.dtype());
  DotDimensions dims{lhs_batch, rhs_batch, lhs_contract, rhs_contract};
  return Tensor::make(std::make_shared<DotGeneral>(dims), {astype(a, d), astype(b, d)});
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  if (a.ndim() == 0 || b.ndim() == 0) {
    fail("matmul: operands must be at least 1-D, got ", shape_str(a.shape()), " and ",
         shape_str(b.shape()));
  }
  Tensor x = a.ndim() == 1 ? reshape(a, {1, a.shape()[0]}) : a;
  Tensor y = b.ndim() == 1 ? reshape(b, {b.shape()[0], 1}) : b;
  if (x.shape(-1) != y.shape(-2)) {
    fail("matmul: inner dimensions differ: ", shape_str(a.shape()), " @ ", shape_str(b.shape()));
  }
  Shape xb(x.shape().begin(), x.shape().end() - 2), yb(y.shape().begin(), y.shape().end() - 2);
  Shape batch;
  try {
    batch = broadcast_shapes(xb, yb, "matmul");
  } catch (const Error&) {
    fail("matmul: batch dimensions of ", shape_str(a.shape()), " and ", shape_str(b.shape()),
         " cannot be broadcast together");
  }
  Tensor r;
  if (yb.empty()) {
    // (..., m, k) @ (k, n): contract directly, no batch dims needed.
    r = dot_general(x, y, {x.ndim() - 1}, {0});
  } else {
    Shape xs = batch, ys = batch;
    xs.insert(xs.end(), x.shape().end() - 2, x.shape().end());
    ys.insert(ys.end(), y.shape().end() - 2, y.shape().end());
    x = broadcast_to(x, xs);
    y = broadcast_to(y, ys);
    int nb = int(batch.size());
    std::vector<int> bd(nb);
    std::iota(bd.begin(), bd.end(), 0);
    r = dot_general(x, y, {nb + 1}, {nb}, bd, bd);
  }
  if (a.ndim() == 1) r = squeeze(r, {-2});
  if (b.ndim() == 1) r = squeeze(r, {-1});
  return r;
}

namespace {

struct EinsumTerm {
  std::string labels;  // one char per axis; '.'-expanded ellipsis uses upper-case placeholders
};

std::vector<std::string> split_inputs(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    size_t c = s.find(',', pos);
    out.push_back(s.substr(pos, c == std::string::npos ? std::string::npos : c - pos));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  return out;
}

// Replaces "..." with placeholder labels (digits) covering `n` axes.
std::string expand_ellipsis(const std::string& term, int ndim, int& ell_rank,
                            const std::string& spec) {
  size_t p = term.find("...");
  if (p == std::string::npos) return term;
  int named = int(term.size()) - 3;
  int n = ndim - named;
  if (n < 0)
    fail("einsum: '", term, "' has more labels than the operand's ", ndim, " axes (", spec, ")");
  if (ell_rank >= 0 && ell_rank != n)
    fail("einsum: ellipses cover different ranks in '", spec, "'");
  ell_rank = n;
  std::string e;
  for (int i = 0; i < n; ++i) e += char('0' + i);
  return term.substr(0, p) + e + term.substr(p + 3);
}

// Sums away axes whose label appears in no other operand and not in the output.
Tensor sum_private(const Tensor& x, std::string& labels, const std::string& keep) {
  std::vector<int> axes;
  std::string rest;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (keep.find(labels[i]) == std::string::npos) {
      axes.push_back(int(i));
    } else {
      rest += labels[i];
    }
  }
  labels = rest;
  return axes.empty() ? x : sum(x, axes);
}

// Contracts a (labels la) with b (labels lb): shared labels kept in `keep` become batch dims,
// the other shared labels are summed. Returns the result and sets la to its labels.
Tensor einsum_pair(Tensor a, std::string& la, Tensor b, const std::string& lb,
                   const std::string& keep, const std::string& spec) {
  std::vector<int> lc, rc, lbatch, rbatch;
  std::string batch_labels;
  for (size_t i = 0; i < la.size(); ++i) {
    size_t j = lb.find(la[i]);
    if (j == std::string::npos) continue;
    int64_t da = a.shape()[i], db = b.shape()[j];
    if (da != db) {
      if (da != 1 && db != 1) {
        fail("einsum: label '", la[i], "' has sizes ", da, " and ", db, " in '", spec, "' (shapes ",
             shape_str(a.shape()), " and ", shape_str(b.shape()), ")");
      }
      Shape s = da == 1 ? a.shape() : b.shape();
      if (da == 1) {
        s[i] = db;
        a = broadcast_to(a, s);
      } else {
        s[j] = da;
        b = broadcast_to(b, s);
      }
    }
    if (keep.find(la[i]) != std::string::npos) {
      lbatch.push_back(int(i));
      rbatch.push_back(int(j));
      batch_labels += la[i];
    } else {
      lc.push_back(int(i));
      rc.push_back(int(j));
    }
  }
  Tensor r = dot_general(a, b, lc, rc, lbatch, rbatch);
  std::string rl = batch_labels;
  for (char c : la) {
    if (lb.find(c) == std::string::npos) rl += c;
  }
  for (char c : lb) {
    if (la.find(c) == std::string::npos) rl += c;
  }
  la = rl;
  return r;
}

}  // namespace

Tensor einsum(const std::string& spec_in, const std::vector<Tensor>& operands) {
  std::string spec;
  for (char c : spec_in) {
    if (c != ' ') spec += c;
  }
  size_t arrow = spec.find("->");
  std::vector<std::string> terms = split_inputs(spec.substr(0, arrow));
  if (terms.size() != operands.size()) {
    fail("einsum: '", spec_in, "' names ", terms.size(), " operands but ", operands.size(),
         " were given");
  }
  if (operands.empty()) fail("einsum: needs at least one operand");
  int ell_rank = -1;
  for (size_t i = 0; i < terms.size(); ++i) {
    terms[i] = expand_ellipsis(terms[i], operands[i].ndim(), ell_rank, spec_in);
    if (int(terms[i].size()) != operands[i].ndim()) {
      fail("einsum: term '", terms[i], "' has ", terms[i].size(), " labels for operand ", i,
           " of shape ", shape_str(operands[i].shape()), " in '", spec_in, "'");
    }
    for (size_t a = 0; a < terms[i].size(); ++a) {
      if (terms[i].find(terms[i][a]) != a) {
        fail("einsum: repeated label '", terms[i][a], "' within one operand is not supported ('",
             spec_in, "')");
      }
    }
  }
  std::string out;
  if (arrow == std::string::npos) {
    // Implicit output: ellipsis dims, then labels appearing once, sorted.
    std::map<char, int> count;
    for (auto& t : terms) {
      for (char c : t) ++count[c];
    }
    for (auto& [c, n] : count) {
      if (c >= '0' && c <= '9') out += c;
    }
    for (auto& [c, n] : count) {
      if (n == 1 && !(c >= '0' && c <= '9')) out += c;
    }
  } else {
    int dummy = ell_rank;
    out = spec.substr(arrow + 2);
    if (out.find("...") != std::string::npos) {
      out = expand_ellipsis(out, int(out.size()) - 3 + std::max(ell_rank, 0), dummy, spec_in);
    }
  }
  for (char c : out) {
    bool found = false;
    for (auto& t : terms) found = found || t.find(c) != std::string::npos;
    if (!found)
      fail("einsum: output label '", c, "' does not appear in any input ('", spec_in, "')");
  }

  // Contract left to right; after each step keep only labels still needed later or in `out`.
  Tensor cur = operands[0];
  std::string cl = terms[0];
  for (size_t k = 1; k < operands.size(); ++k) {
    std::string later = out;
    for (size_t j = k + 1; j < terms.size(); ++j) later += terms[j];
    std::string lb = terms[k];
    cur = sum_private(cur, cl, lb + later);
    Tensor b = sum_private(operands[k], lb, cl + later);
    cur = einsum_pair(cur, cl, b, lb, later, spec_in);
  }
  cur = sum_private(cur, cl, out);
  std::vector<int> perm;
  for (char c : out) perm.push_back(int(cl.find(c)));
  return transpose(cur, perm);
}

Tensor einsum(const std::string& spec, const Tensor& a, const Tensor& b) {
  return einsum(spec, {a, b});
}
Tensor einsum(const std::string& spec, const Tensor& a) {
  return einsum(spec, std::vector<Tensor>{a});
}

}  // namespace axlearn
