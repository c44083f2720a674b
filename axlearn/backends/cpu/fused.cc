// CPU kernel of FusedElementwise (compile.h): a register program run over chunks of kChunk
// elements. Each register holds one value's chunk in its compute type; the ops are the same chunk
// functions the eager kernels call, so the fused loop rounds exactly like the eager ops.
#include <algorithm>
#include <functional>
#include <sstream>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/core/compile.h"

namespace axlearn {

namespace {

using cpu::kChunk;

using cpu::dispatch_compute;

bool is_16bit_float(Dtype d) { return d == Dtype::kBF16 || d == Dtype::kF16; }

// numpy conversion between storage types, with values held in compute types on both sides.
template <typename Cin>
void convert_chunk(const Cin* x, Dtype to, void* y, int64_t n) {
  dispatch_dtype(to, [&](auto s) {
    using S = decltype(s);
    dispatch_compute(to, [&](auto c) {
      using Cout = decltype(c);
      Cout* out = static_cast<Cout*>(y);
      for (int64_t i = 0; i < n; ++i) out[i] = cast_value<Cout>(cast_value<S>(x[i]));
    });
  });
}

}  // namespace

FusedElementwise::FusedElementwise(Shape shape, std::vector<Input> inputs,
                                   std::vector<Instr> instrs, std::vector<int> outputs)
    : shape_(std::move(shape)),
      inputs_(std::move(inputs)),
      instrs_(std::move(instrs)),
      outputs_(std::move(outputs)) {
  const int num_inputs = int(inputs_.size());
  const int num_values = num_inputs + int(instrs_.size());
  AXLEARN_CHECK(!instrs_.empty() && !outputs_.empty(), "empty fused group");
  // Liveness inside one chunk: an input is loaded just before its first reader; outputs are
  // stored after the last instruction (so an output may overwrite a donated input buffer), so
  // their registers stay live to the end.
  const int end = int(instrs_.size());
  std::vector<int> first_use(num_values, end), last_use(num_values, -1);
  for (int k = 0; k < end; ++k) {
    for (int a : instrs_[k].args) {
      AXLEARN_CHECK(a >= 0 && a < num_inputs + k, "fused instruction reads a later value");
      first_use[a] = std::min(first_use[a], k);
      last_use[a] = std::max(last_use[a], k);
    }
    last_use[num_inputs + k] = std::max(last_use[num_inputs + k], k);
  }
  for (int o : outputs_) {
    AXLEARN_CHECK(o >= num_inputs && o < num_values, "fused output is not an instruction");
    last_use[o] = end;
  }
  loads_before_.assign(instrs_.size(), {});
  for (int i = 0; i < num_inputs; ++i) {
    AXLEARN_CHECK(first_use[i] < end, "fused input ", i, " is never read");
    loads_before_[first_use[i]].push_back(i);
  }
  reg_of_.assign(num_values, -1);
  std::vector<int> free_regs;
  auto take = [&]() {
    if (free_regs.empty()) return num_regs_++;
    int r = free_regs.back();
    free_regs.pop_back();
    return r;
  };
  for (int k = 0; k < end; ++k) {
    for (int i : loads_before_[k]) reg_of_[i] = take();
    // The result gets a register distinct from its arguments' (chunk functions may assume
    // non-aliasing pointers); arguments are freed only afterwards.
    reg_of_[num_inputs + k] = take();
    std::vector<int> dead;
    for (int a : instrs_[k].args) {
      if (last_use[a] == k && std::find(dead.begin(), dead.end(), a) == dead.end())
        dead.push_back(a);
    }
    if (last_use[num_inputs + k] == k) dead.push_back(num_inputs + k);
    for (int v : dead) free_regs.push_back(reg_of_[v]);
  }
}

Dtype FusedElementwise::value_dtype(int id) const {
  if (id < int(inputs_.size())) return inputs_[id].dtype;
  return instrs_[id - inputs_.size()].dtype;
}

bool FusedElementwise::supports(const Primitive& p, const std::vector<Dtype>& in) {
  if (dynamic_cast<const Unary*>(&p)) return in.size() == 1;
  if (dynamic_cast<const Binary*>(&p)) return in.size() == 2 && in[0] == in[1];
  if (dynamic_cast<const Select*>(&p)) return in.size() == 3 && in[0] == bool_ && in[1] == in[2];
  if (dynamic_cast<const Convert*>(&p)) return in.size() == 1;
  return false;
}

OutputSpec FusedElementwise::infer(const std::vector<Tensor>& in) const {
  if (in.size() != inputs_.size()) {
    fail("fused_elementwise: expected ", inputs_.size(), " inputs, got ", in.size());
  }
  return {shape_, value_dtype(outputs_[0])};
}

void FusedElementwise::eval_cpu(const std::vector<Array>& in, Array& out) const {
  std::vector<Array> outs(outputs_.size());
  eval_cpu_multi(in, outs);
  out = std::move(outs[0]);
}

namespace {

// Runs one instruction on m elements; args point at the arguments' chunks in their compute types.
void run_instruction(const FusedElementwise& f, const FusedElementwise::Instr& ins,
                     const void* const* args, void* y, int64_t m) {
  using Kind = FusedElementwise::Kind;
  const Dtype arg_dtype = f.value_dtype(ins.args[0]);
  switch (ins.kind) {
    case Kind::kUnary: {
      const auto op = UnaryOp(ins.op);
      dispatch_compute(arg_dtype, [&](auto c) {
        using C = decltype(c);
        const C* x = static_cast<const C*>(args[0]);
        if (op == UnaryOp::kIsFinite) {
          cpu::unary_chunk_to_bool<C>(op, x, static_cast<bool*>(y), m);
        } else {
          cpu::unary_chunk<C>(op, x, static_cast<C*>(y), m);
        }
      });
      break;
    }
    case Kind::kBinary: {
      const auto op = BinaryOp(ins.op);
      dispatch_compute(arg_dtype, [&](auto c) {
        using C = decltype(c);
        const C* a = static_cast<const C*>(args[0]);
        const C* b = static_cast<const C*>(args[1]);
        if (is_comparison(op)) {
          cpu::compare_chunk<C>(op, a, b, static_cast<bool*>(y), m);
        } else {
          cpu::binary_chunk<C>(op, a, b, static_cast<C*>(y), m);
        }
      });
      break;
    }
    case Kind::kSelect:
      dispatch_compute(ins.dtype, [&](auto c) {
        using C = decltype(c);
        cpu::select_chunk<C>(static_cast<const bool*>(args[0]), static_cast<const C*>(args[1]),
                             static_cast<const C*>(args[2]), static_cast<C*>(y), m);
      });
      break;
    case Kind::kConvert:
      dispatch_compute(arg_dtype, [&](auto c) {
        using C = decltype(c);
        convert_chunk<C>(static_cast<const C*>(args[0]), ins.dtype, y, m);
      });
      return;  // cast_value already rounded to the output dtype
  }
  // What storing to the 16-bit output and loading it back would give (a select only picks
  // values that are rounded already).
  if (is_16bit_float(ins.dtype) && ins.kind != Kind::kSelect) {
    cpu::round_chunk(ins.dtype, static_cast<float*>(y), m);
  }
}

// How an input reaches the instructions.
enum class InputMode : uint8_t {
  kLoad,       // converted / gathered into its register chunk by chunk
  kDirect,     // dense and already in its compute type: read in place
  kInvariant,  // one element broadcast everywhere: loaded once per thread
};

}  // namespace

void FusedElementwise::eval_cpu_multi(const std::vector<Array>& in, std::vector<Array>& out) const {
  AXLEARN_CHECK(in.size() == inputs_.size(), "fused_elementwise arity");
  AXLEARN_CHECK(out.size() == outputs_.size(), "fused_elementwise output count");
  const int num_inputs = int(inputs_.size());
  const int num_values = num_inputs + int(instrs_.size());
  std::vector<Array> views(in.size());
  std::vector<InputMode> mode(in.size(), InputMode::kLoad);
  int num_invariant = 0;
  for (int i = 0; i < num_inputs; ++i) {
    views[i] = in[i];
    for (const auto& [shape, dims] : inputs_[i].broadcasts)
      views[i] = cpu::broadcast_view(views[i], shape, dims);
    AXLEARN_CHECK(views[i].shape == shape_ && views[i].dtype == inputs_[i].dtype,
                  "fused_elementwise input ", i, " has shape ", shape_str(views[i].shape));
    const Dtype d = inputs_[i].dtype;
    if (std::all_of(views[i].strides.begin(), views[i].strides.end(),
                    [](int64_t s) { return s == 0; })) {
      mode[i] = InputMode::kInvariant;
      ++num_invariant;
    } else if (compute_dtype(d) == d && views[i].is_contiguous()) {
      mode[i] = InputMode::kDirect;
    }
  }
  // Outputs in their compute type are written in place, except into a donated input buffer:
  // that one is written only after the whole chunk has been read.
  std::vector<char> direct_out(num_values, 0);
  std::vector<void*> out_base(out.size());
  for (size_t k = 0; k < out.size(); ++k) {
    const Dtype d = value_dtype(outputs_[k]);
    if (!out[k].defined()) {
      out[k] = Array::empty(shape_, d);
      direct_out[outputs_[k]] = compute_dtype(d) == d;
    } else {
      AXLEARN_CHECK(out[k].shape == shape_ && out[k].dtype == d && out[k].is_contiguous(),
                    "fused_elementwise output buffer");
    }
    out_base[k] = out[k].raw();
  }
  std::vector<int> out_index(num_values, -1);
  for (size_t k = 0; k < outputs_.size(); ++k) out_index[outputs_[k]] = int(k);
  const int64_t n = num_elements(shape_);
  if (n == 0) return;

  cpu::parallel_chunks(n, int64_t(1) << 14, [&](int64_t begin, int64_t end) {
    // Registers of kChunk 8-byte slots reused by every chunk this thread runs; invariant inputs
    // get their own registers after the planned ones.
    thread_local std::vector<uint64_t> regs;
    thread_local std::vector<void*> ptr;
    const size_t need = size_t(num_regs_ + num_invariant) * kChunk;
    if (regs.size() < need) regs.resize(need);
    ptr.assign(size_t(num_values), nullptr);
    auto reg = [&](int r) -> void* { return regs.data() + size_t(r) * kChunk; };
    int next_invariant = num_regs_;
    for (int i = 0; i < num_inputs; ++i) {
      if (mode[i] != InputMode::kInvariant) continue;
      ptr[i] = reg(next_invariant++);
      dispatch_compute(inputs_[i].dtype, [&](auto c) {
        using C = decltype(c);
        C v;
        cpu::load_chunk<C>(views[i], 0, 1, &v);
        std::fill_n(static_cast<C*>(ptr[i]), kChunk, v);
      });
    }
    const void* args[3];
    for (int64_t start = begin; start < end; start += kChunk) {
      const int64_t m = std::min(kChunk, end - start);
      for (size_t k = 0; k < instrs_.size(); ++k) {
        for (int i : loads_before_[k]) {
          const size_t es = size_of(inputs_[i].dtype);
          if (mode[i] == InputMode::kDirect) {
            ptr[i] = static_cast<char*>(views[i].raw()) + start * es;
          } else if (mode[i] == InputMode::kLoad) {
            ptr[i] = reg(reg_of_[i]);
            dispatch_compute(inputs_[i].dtype, [&](auto c) {
              using C = decltype(c);
              cpu::load_chunk<C>(views[i], start, m, static_cast<C*>(ptr[i]));
            });
          }
        }
        const Instr& ins = instrs_[k];
        const int v = num_inputs + int(k);
        if (direct_out[v]) {
          ptr[v] = static_cast<char*>(out_base[out_index[v]]) + start * size_of(ins.dtype);
        } else {
          ptr[v] = reg(reg_of_[v]);
        }
        for (size_t a = 0; a < ins.args.size(); ++a) args[a] = ptr[ins.args[a]];
        run_instruction(*this, ins, args, ptr[v], m);
      }
      for (size_t k = 0; k < outputs_.size(); ++k) {
        const int v = outputs_[k];
        if (direct_out[v]) continue;
        const Dtype d = value_dtype(v);
        dispatch_compute(d, [&](auto c) {
          using C = decltype(c);
          cpu::store_chunk<C>(static_cast<const C*>(ptr[v]), d, out_base[k], start, m);
        });
      }
    }
  });
}

bool FusedElementwise::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const FusedElementwise*>(&o);
  if (!p || p->shape_ != shape_ || p->outputs_ != outputs_ || p->inputs_.size() != inputs_.size() ||
      p->instrs_.size() != instrs_.size()) {
    return false;
  }
  for (size_t i = 0; i < inputs_.size(); ++i) {
    if (p->inputs_[i].dtype != inputs_[i].dtype ||
        p->inputs_[i].broadcasts != inputs_[i].broadcasts) {
      return false;
    }
  }
  for (size_t k = 0; k < instrs_.size(); ++k) {
    const Instr &a = instrs_[k], &b = p->instrs_[k];
    if (a.kind != b.kind || a.op != b.op || a.args != b.args || a.dtype != b.dtype) return false;
  }
  return true;
}

size_t FusedElementwise::hash() const {
  size_t h = 0x500 + instrs_.size();
  for (const Instr& i : instrs_) h = h * 31 + size_t(i.kind) * 257 + i.op;
  return h;
}

void FusedElementwise::print(std::ostream& os) const {
  os << name() << "[" << shape_str(shape_) << ": ";
  const int num_inputs = int(inputs_.size());
  for (size_t k = 0; k < instrs_.size(); ++k) {
    const Instr& i = instrs_[k];
    os << (k ? "; " : "") << "%" << num_inputs + k << "=";
    switch (i.kind) {
      case Kind::kUnary:
        os << unary_op_name(UnaryOp(i.op));
        break;
      case Kind::kBinary:
        os << binary_op_name(BinaryOp(i.op));
        break;
      case Kind::kSelect:
        os << "select";
        break;
      case Kind::kConvert:
        os << "convert";
        break;
    }
    os << "<" << i.dtype << ">(";
    for (size_t j = 0; j < i.args.size(); ++j) os << (j ? "," : "") << "%" << i.args[j];
    os << ")";
  }
  os << "]";
}

}  // namespace axlearn
