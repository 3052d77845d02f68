// The time loops of the fused LSTM family (lstm, peephole_lstm, cifg_lstm, layernorm_lstm) on CPU, forward and
// BPTT backward. The math, the saved tensors and their layouts are those of the Python loops in
// ../lstm.py (`_LSTMFamily`), which stay the readable reference and the fallback.
//
// Per step, forward:  gh = h_{t-1} W_hh^T + b_hh        one GEMM (packed oneDNN weights, or addmm)
//                     gates, c_t, tanh(c_t), m_t         one vectorized pass over all gates
//                     h_t = m_t W_hr^T                    one GEMM, only with a projection
// Per step, backward: dm = dh_t W_hr                      one GEMM, only with a projection
//                     da (all gates), dc_{t-1}            one vectorized pass
//                     dh_{t-1} = da W_hh                   one GEMM
// The weight gradients stay in Python: one GEMM each over all T*B rows.
//
// layernorm_lstm: the recurrent GEMM has no bias (LN_hh normalizes h_{t-1} W_hh^T alone, b_hh is
// added after it), and each row is one unit of work, because both layer norms need the statistics
// of the whole row: LN_hh's over 4H, then LN_c's over H. Forward saves x_hat and rstd of both (as
// the Python loop does, except LN_c's x_hat: its mean is saved, and backward recomputes x_hat from
// c_t); backward runs LN_c's backward inside the gate pass and LN_hh's after it,
// and returns d(h W_hh^T) and d LN_c(c_t) beside the gate gradients, for the LN weight gradients.
//
// Lengths arrive as a (T, B) bool mask: a finished row keeps its state and outputs zeros; in the
// backward its state gradients pass through unchanged and its gate gradients are zero.
//
// The GEMMs use `mkldnn::_linear_pointwise` with the weight packed once per call by
// `mkldnn::_reorder_linear_weight` (private ops of torch, looked up through the dispatcher, checked
// by `packed_gemm_status`); float64 and any machine without them use at::addmm.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rnnkit_fused {
namespace {

using at::Tensor;
using at::vec::Vectorized;

enum Kind : int64_t { kLSTM = 0, kPeephole = 1, kCIFG = 2, kLayerNorm = 3 };

// ---------------------------------------------------------------------------------------------
// Activations. float: exp_u20, a polynomial exp (max error ~20 ulp) that is ~2.7x faster than
// Sleef's; tanh(x) = 1 - 2 / (exp(2x) + 1), absolute error ~1e-7. double: Sleef's 1-ulp exp and
// tanh, so float64 stays within 1e-10 of the reference.

template <typename T>
struct Act;

template <>
struct Act<float> {
  using V = Vectorized<float>;
  static V sigmoid(const V& x) {
    const V one(1.f);
    return one / (one + x.neg().exp_u20());
  }
  static V tanh(const V& x) {
    const V one(1.f), two(2.f);
    return one - two / ((x * two).exp_u20() + one);
  }
};

template <>
struct Act<double> {
  using V = Vectorized<double>;
  static V sigmoid(const V& x) {
    const V one(1.0);
    return one / (one + x.neg().exp());
  }
  static V tanh(const V& x) { return x.tanh(); }
};

// ---------------------------------------------------------------------------------------------
// Work split: units are (row, block of hidden units); whole rows when the batch is large enough,
// blocks of >= 64 units when it is not (batch 1 generation), so both threads have work.

template <typename F>
void for_rows(int64_t B, int64_t N, int64_t vec, const F& f) {
  const int64_t threads = at::get_num_threads();
  int64_t blocks = 1;
  if (B < 4 * threads) {
    blocks = std::max<int64_t>(1, std::min<int64_t>(N / 64, (4 * threads + B - 1) / B));
  }
  int64_t width = (N + blocks - 1) / blocks;
  width = (width + vec - 1) / vec * vec;
  blocks = (N + width - 1) / width;
  const int64_t units = B * blocks;
  // tiny problems (the tests) run on the calling thread: a fork/join costs more than the work
  const int64_t grain = B * N < 8192 ? units : 1;
  at::parallel_for(0, units, grain, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / blocks, j0 = (u % blocks) * width;
      f(b, j0, std::min(N, j0 + width));
    }
  });
}

// The layer-norm kind: one unit per row, since its layer norms reduce over the whole row.
template <typename F>
void for_whole_rows(int64_t B, int64_t N, const F& f) {
  const int64_t grain = B * N < 8192 ? B : 1;
  at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) f(b);
  });
}

// Mean and 1 / sqrt(var + eps) of x (n), two passes as torch's var(unbiased=False).
template <typename T>
std::pair<T, T> mean_rstd(const T* x, int64_t n, T eps) {
  using V = Vectorized<T>;
  const auto add = [](const V& a, const V& b) { return a + b; };
  const T mean = at::vec::reduce_all<T>(add, x, n) / T(n);
  const T var = at::vec::map_reduce_all<T>([mean](const V& a) { const V d = a - V(mean); return d * d; }, add, x,
                                           n) / T(n);
  return {mean, T(1) / std::sqrt(var + eps)};
}

// LayerNorm's backward over one row: dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)) with
// g = dy * gain; adds dy * x_hat and dy to this thread's sums for the gain's and bias's gradients.
template <typename T>
void layer_norm_backward(const T* dy, const T* gain, const T* x_hat, T rstd, T* dx, T* dgain, T* dbias, int64_t n) {
  using V = Vectorized<T>;
  constexpr int64_t w = V::size();
  V s_g(T(0)), s_gx(T(0));
  for (int64_t j = 0; j < n; j += w) {
    const int64_t cnt = std::min(w, n - j);  // a partial load zero-fills: the sums stay exact
    const V d = V::loadu(dy + j, cnt), x = V::loadu(x_hat + j, cnt);
    const V g = d * V::loadu(gain + j, cnt);
    s_g = s_g + g;
    s_gx = s_gx + g * x;
    (V::loadu(dgain + j, cnt) + d * x).store(dgain + j, cnt);
    (V::loadu(dbias + j, cnt) + d).store(dbias + j, cnt);
  }
  const auto add = [](const V& a, const V& b) { return a + b; };
  const V r(rstd), mg(at::vec::vec_reduce_all<T>(add, s_g) / T(n)), mgx(at::vec::vec_reduce_all<T>(add, s_gx) / T(n));
  at::vec::map3<T>([&](const V& d, const V& g, const V& x) { return r * (d * g - mg - x * mgx); }, dx, dy, gain,
                   x_hat, n);
}

// ---------------------------------------------------------------------------------------------
// y = x w^T (+ bias) for x (B, K), w (N, K).

using LinearPointwiseFn = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, std::string_view,
                                 c10::List<std::optional<at::Scalar>>, std::optional<std::string_view>);

const c10::OperatorHandle& linear_pointwise_op() {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  return op;
}

// The typed call is the cheap one; if this torch registered the op with other C++ types, the
// boxed call still works.
const std::optional<c10::TypedOperatorHandle<LinearPointwiseFn>>& linear_pointwise_typed() {
  static const std::optional<c10::TypedOperatorHandle<LinearPointwiseFn>> typed =
      []() -> std::optional<c10::TypedOperatorHandle<LinearPointwiseFn>> {
    try {
      return linear_pointwise_op().typed<LinearPointwiseFn>();
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }();
  return typed;
}

Tensor reorder_linear_weight(const Tensor& w, int64_t batch) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_reorder_linear_weight", "");
  torch::jit::Stack stack{w, c10::IValue(batch)};
  op.callBoxed(stack);
  return stack[0].toTensor();
}

Tensor linear_pointwise(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias) {
  const auto& typed = linear_pointwise_typed();
  if (typed) {
    return typed->call(x, w, bias, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
  }
  torch::jit::Stack stack{x, w, bias ? c10::IValue(*bias) : c10::IValue(), c10::IValue(std::string("none")),
                          c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue()};
  linear_pointwise_op().callBoxed(stack);
  return stack[0].toTensor();
}

class Linear {
 public:
  Linear(const Tensor& w, const std::optional<Tensor>& bias, int64_t batch, bool packed)
      : bias_(bias), packed_(packed) {
    if (packed_) {
      w_ = reorder_linear_weight(w.contiguous(), batch);
    } else {
      w_t_ = w.t();
      // two buffers: a result stays valid until the call after next (backward reads dh_t while
      // computing dh_{t-1})
      buf_[0] = at::empty({batch, w.size(0)}, w.options());
      buf_[1] = at::empty({batch, w.size(0)}, w.options());
    }
  }

  Tensor operator()(const Tensor& x) {
    if (packed_) return linear_pointwise(x, w_, bias_);
    Tensor& y = buf_[next_];
    next_ ^= 1;
    if (bias_) {
      at::addmm_out(y, *bias_, x, w_t_);
    } else {
      at::mm_out(y, x, w_t_);
    }
    return y;
  }

 private:
  Tensor w_, w_t_;
  std::optional<Tensor> bias_;
  bool packed_;
  Tensor buf_[2];
  int next_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Forward pointwise pass of one row over hidden units [j0, j1).

template <typename T, int K>
struct FwdRow {
  const T* gx;      // (G) this step's input projection
  const T* gh;      // (G) h_{t-1} W_hh^T + b_hh
  const T* c_prev;  // (H)
  const T* h_prev;  // (R) only read without projection, for a finished row
  const T* peep;    // (3, H) w_ci, w_cf, w_co, or null
  T* act;           // (G) activated gates, or null (inference)
  T* tc;            // (H) tanh(c_t), or null (inference)
  T* c_next;        // (H)
  T* m;             // (H) o * tanh(c_t): h_t without projection, else the projection's input
  T* out;           // (R) the output row, only written here without projection
  bool active;      // step t is inside this row's sequence
  bool proj;

  void operator()(int64_t H, int64_t j0, int64_t j1) const {
    using V = Vectorized<T>;
    using A = Act<T>;
    constexpr int64_t n = V::size();
    const V one(T(1)), zero(T(0));
    for (int64_t j = j0; j < j1; j += n) {
      const int64_t cnt = std::min(n, j1 - j);
      auto ld = [&](const T* p) { return cnt == n ? V::loadu(p + j) : V::loadu(p + j, cnt); };
      auto st = [&](const V& v, T* p) {
        if (cnt == n) {
          v.store(p + j);
        } else {
          v.store(p + j, cnt);
        }
      };
      const V cp = ld(c_prev);
      V c, o;
      if constexpr (K == kCIFG) {
        const V f = A::sigmoid(ld(gx) + ld(gh));
        const V g = A::tanh(ld(gx + H) + ld(gh + H));
        o = A::sigmoid(ld(gx + 2 * H) + ld(gh + 2 * H));
        c = f * cp + (one - f) * g;
        if (act) {
          st(f, act);
          st(g, act + H);
          st(o, act + 2 * H);
        }
      } else {
        V pi = ld(gx) + ld(gh), pf = ld(gx + H) + ld(gh + H);
        if constexpr (K == kPeephole) {
          pi = pi + ld(peep) * cp;
          pf = pf + ld(peep + H) * cp;
        }
        const V i = A::sigmoid(pi), f = A::sigmoid(pf), g = A::tanh(ld(gx + 2 * H) + ld(gh + 2 * H));
        c = f * cp + i * g;
        V po = ld(gx + 3 * H) + ld(gh + 3 * H);
        if constexpr (K == kPeephole) po = po + ld(peep + 2 * H) * c;
        o = A::sigmoid(po);
        if (act) {
          st(i, act);
          st(f, act + H);
          st(g, act + 2 * H);
          st(o, act + 3 * H);
        }
      }
      const V t = A::tanh(c);
      const V mv = o * t;
      if (tc) st(t, tc);
      st(active ? c : cp, c_next);
      if (proj) {
        st(mv, m);
      } else {
        st(active ? mv : ld(h_prev), m);  // m is h_t's row here
        st(active ? mv : zero, out);
      }
    }
  }
};

// Backward pointwise pass of one active row over hidden units [j0, j1).

template <typename T, int K>
struct BwdRow {
  const T* dm;      // (H) dL/dm, or null: then dm = dh + gout (no projection)
  const T* dh;      // (R)
  const T* gout;    // (R)
  const T* act;     // (G)
  const T* tc;      // (H)
  const T* c_prev;  // (H)
  const T* peep;    // (3, H) or null
  T* da;            // (G) gradient of the pre-activation gates
  T* dc;            // (H) in: dL/dc_t from step t+1; out: dL/dc_{t-1}

  void operator()(int64_t H, int64_t j0, int64_t j1) const {
    using V = Vectorized<T>;
    constexpr int64_t n = V::size();
    const V one(T(1));
    for (int64_t j = j0; j < j1; j += n) {
      const int64_t cnt = std::min(n, j1 - j);
      auto ld = [&](const T* p) { return cnt == n ? V::loadu(p + j) : V::loadu(p + j, cnt); };
      auto st = [&](const V& v, T* p) {
        if (cnt == n) {
          v.store(p + j);
        } else {
          v.store(p + j, cnt);
        }
      };
      const V d = dm ? ld(dm) : ld(dh) + ld(gout);
      const V t = ld(tc), cp = ld(c_prev);
      constexpr int64_t go = K == kCIFG ? 2 : 3;  // gate index of o
      const V o = ld(act + go * H);
      const V da_o = d * t * (o * (one - o));
      V dcn = ld(dc) + d * o * (one - t * t);
      if constexpr (K == kPeephole) dcn = dcn + da_o * ld(peep + 2 * H);
      st(da_o, da + go * H);
      if constexpr (K == kCIFG) {
        const V f = ld(act), g = ld(act + H);
        st(dcn * (cp - g) * (f * (one - f)), da);
        st(dcn * (one - f) * (one - g * g), da + H);
        st(dcn * f, dc);
      } else {
        const V i = ld(act), f = ld(act + H), g = ld(act + 2 * H);
        const V da_i = dcn * g * (i * (one - i));
        const V da_f = dcn * cp * (f * (one - f));
        st(da_i, da);
        st(da_f, da + H);
        st(dcn * i * (one - g * g), da + 2 * H);
        V dcp = dcn * f;
        if constexpr (K == kPeephole) dcp = dcp + da_i * ld(peep) + da_f * ld(peep + H);
        st(dcp, dc);
      }
    }
  }
};

// Layer-norm LSTM, forward of one whole row:
//   pre = gx + b_hh + LN_hh(raw),  gates and c_t as the plain LSTM,  h~ = o * tanh(LN_c(c_t))

template <typename T>
struct LNFwdRow {
  const T* gx;       // (G) LN_ih(W_ih x_t) + b_ih
  const T* raw;      // (G) h_{t-1} W_hh^T
  const T* bias;     // (G) b_hh, or null
  const T* g_hh;     // (G) LN_hh gain
  const T* b_hh;     // (G) LN_hh bias
  const T* g_c;      // (H) LN_c gain
  const T* b_c;      // (H) LN_c bias
  const T* c_prev;   // (H)
  const T* h_prev;   // (R) only read without projection, for a finished row
  T* act;            // (G) activated gates (a scratch row in inference)
  T* xhat_hh;        // (G) normalized raw, or null (inference)
  T* rstd_hh;        // (1) or null (inference)
  T* xhat_c;         // (H) scratch: c_t first, then LN_c's normalized c_t
  T* mean_c;         // (1) or null (inference)
  T* rstd_c;         // (1) or null (inference)
  T* tc;             // (H) tanh(LN_c(c_t)), or null (inference)
  T* c_next;         // (H)
  T* m;              // (H) as FwdRow
  T* out;            // (R) as FwdRow
  bool active;
  bool proj;
  T eps;

  void operator()(int64_t H) const {
    using V = Vectorized<T>;
    using A = Act<T>;
    constexpr int64_t n = V::size();
    const V one(T(1)), zero(T(0));
    const auto [mean_h, rs_h] = mean_rstd(raw, 4 * H, eps);
    if (rstd_hh) *rstd_hh = rs_h;
    const V mh(mean_h), rh(rs_h);
    for (int64_t j = 0; j < H; j += n) {
      const int64_t cnt = std::min(n, H - j);
      auto ld = [&](const T* p) { return cnt == n ? V::loadu(p + j) : V::loadu(p + j, cnt); };
      auto st = [&](const V& v, T* p) {
        if (cnt == n) {
          v.store(p + j);
        } else {
          v.store(p + j, cnt);
        }
      };
      V pre[4];
      for (int k = 0; k < 4; ++k) {
        const V xh = (ld(raw + k * H) - mh) * rh;
        if (xhat_hh) st(xh, xhat_hh + k * H);
        const V gxb = bias ? ld(gx + k * H) + ld(bias + k * H) : ld(gx + k * H);
        pre[k] = gxb + (ld(b_hh + k * H) + xh * ld(g_hh + k * H));
      }
      const V i = A::sigmoid(pre[0]), f = A::sigmoid(pre[1]), g = A::tanh(pre[2]), o = A::sigmoid(pre[3]);
      st(i, act);
      st(f, act + H);
      st(g, act + 2 * H);
      st(o, act + 3 * H);
      const V cp = ld(c_prev);
      const V c = f * cp + i * g;
      st(c, xhat_c);
      st(active ? c : cp, c_next);
    }
    const auto [mean_c_, rs_c] = mean_rstd(static_cast<const T*>(xhat_c), H, eps);
    if (rstd_c) {
      *mean_c = mean_c_;
      *rstd_c = rs_c;
    }
    const V mc(mean_c_), rc(rs_c);
    for (int64_t j = 0; j < H; j += n) {
      const int64_t cnt = std::min(n, H - j);
      auto ld = [&](const T* p) { return cnt == n ? V::loadu(p + j) : V::loadu(p + j, cnt); };
      auto st = [&](const V& v, T* p) {
        if (cnt == n) {
          v.store(p + j);
        } else {
          v.store(p + j, cnt);
        }
      };
      const V xc = (ld(xhat_c) - mc) * rc;
      st(xc, xhat_c);
      const V t = A::tanh(ld(b_c) + xc * ld(g_c));
      if (tc) st(t, tc);
      const V mv = ld(act + 3 * H) * t;
      if (proj) {
        st(mv, m);
      } else {
        st(active ? mv : ld(h_prev), m);
        st(active ? mv : zero, out);
      }
    }
  }
};

// Layer-norm LSTM, backward of one whole active row: the gate pass with LN_c's backward in it,
// then LN_hh's backward, da -> d(raw).

template <typename T>
struct LNBwdRow {
  const T* dm;       // (H) dL/dm, or null: then dm = dh + gout (no projection)
  const T* dh;       // (R)
  const T* gout;     // (R)
  const T* act;      // (G)
  const T* tc;       // (H) tanh(LN_c(c_t))
  const T* c_prev;   // (H)
  const T* xhat_hh;  // (G)
  T rstd_hh;
  const T* c;        // (H) c_t: LN_c's x_hat is recomputed from it, as the forward computed it
  T mean_c;
  T rstd_c;
  const T* g_hh;     // (G) LN_hh gain
  const T* g_c;      // (H) LN_c gain
  T* da;             // (G) gradient of the pre-activation gates (= d gx)
  T* draw;           // (G) gradient of h_{t-1} W_hh^T
  T* scratch;        // (3H) gradient of LN_c(c_t), LN_c's dx, LN_c's x_hat
  T* dc;             // (H) in: dL/dc_t from step t+1; out: dL/dc_{t-1}
  T* sums;           // (2G + 2H) this thread's sums: d ln_hh_weight, d ln_hh_bias, d ln_c_weight, d ln_c_bias

  void operator()(int64_t H) const {
    using V = Vectorized<T>;
    constexpr int64_t n = V::size();
    const V one(T(1));
    T* dcn = scratch;
    T* dcc = scratch + H;
    T* xhat_c = scratch + 2 * H;
    const int64_t G = 4 * H;
    const V mc(mean_c), rc(rstd_c);
    for (int64_t j = 0; j < H; j += n) {
      const int64_t cnt = std::min(n, H - j);
      auto ld = [&](const T* p) { return cnt == n ? V::loadu(p + j) : V::loadu(p + j, cnt); };
      auto st = [&](const V& v, T* p) {
        if (cnt == n) {
          v.store(p + j);
        } else {
          v.store(p + j, cnt);
        }
      };
      const V d = dm ? ld(dm) : ld(dh) + ld(gout);
      const V t = ld(tc), o = ld(act + 3 * H);
      st(d * t * (o * (one - o)), da + 3 * H);
      st(d * o * (one - t * t), dcn);
      st((ld(c) - mc) * rc, xhat_c);
    }
    layer_norm_backward(static_cast<const T*>(dcn), g_c, static_cast<const T*>(xhat_c), rstd_c, dcc, sums + 2 * G, sums + 2 * G + H, H);
    for (int64_t j = 0; j < H; j += n) {
      const int64_t cnt = std::min(n, H - j);
      auto ld = [&](const T* p) { return cnt == n ? V::loadu(p + j) : V::loadu(p + j, cnt); };
      auto st = [&](const V& v, T* p) {
        if (cnt == n) {
          v.store(p + j);
        } else {
          v.store(p + j, cnt);
        }
      };
      const V dcv = ld(dc) + ld(dcc);
      const V i = ld(act), f = ld(act + H), g = ld(act + 2 * H), cp = ld(c_prev);
      st(dcv * g * (i * (one - i)), da);
      st(dcv * cp * (f * (one - f)), da + H);
      st(dcv * i * (one - g * g), da + 2 * H);
      st(dcv * f, dc);
    }
    layer_norm_backward(static_cast<const T*>(da), g_hh, xhat_hh, rstd_hh, draw, sums, sums + G, G);
  }
};

// ---------------------------------------------------------------------------------------------

// A (T, B, G) buffer for d(h W_hh^T), reused by the calls of one thread: the caller only forms dW_hh
// from it and drops it, and a fresh tensor of that size costs its page faults on every call (~2 us
// per 4 KiB page on these machines, 8% of nn.LSTM's training time at (32,100,128,256)). A buffer
// still referenced (use_count > 1) is never reused; the largest one asked for stays allocated.
Tensor reusable_buffer(at::IntArrayRef sizes, const at::TensorOptions& opt) {
  thread_local Tensor cache;
  int64_t numel = 1;
  for (int64_t n : sizes) numel *= n;
  if (!cache.defined() || cache.scalar_type() != opt.dtype().toScalarType() || cache.numel() < numel ||
      cache.storage().use_count() > 1) {
    cache = at::empty({numel}, opt);
  }
  return cache.narrow(0, 0, numel).view(sizes);
}

Tensor optional_contiguous(const std::optional<Tensor>& t, const Tensor& like) {
  return t ? t->to(like.scalar_type()).contiguous() : Tensor();
}

void check_inputs(int64_t kind, const Tensor& gx, const Tensor& h0, const Tensor& c0, const Tensor& w) {
  TORCH_CHECK(kind == kLSTM || kind == kPeephole || kind == kCIFG || kind == kLayerNorm,
              "rnnkit_fused: unknown kind ", kind);
  TORCH_CHECK(gx.device().is_cpu(), "rnnkit_fused: CPU tensors only");
  TORCH_CHECK(gx.dim() == 3 && h0.dim() == 2 && c0.dim() == 2 && w.dim() == 2, "rnnkit_fused: bad ranks");
  TORCH_CHECK(gx.scalar_type() == at::kFloat || gx.scalar_type() == at::kDouble,
              "rnnkit_fused: float32 or float64 only, got ", gx.scalar_type());
}

// The layer-norm kind's gains and biases: ln_hh_weight, ln_hh_bias, ln_c_weight, ln_c_bias.
struct LNParams {
  std::vector<Tensor> w;
  double eps = 0.0;
};

template <typename T, int K>
std::vector<Tensor> forward_impl(const Tensor& gx, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
                                 const std::optional<Tensor>& bias, const Tensor& w_hr, const Tensor& peep,
                                 const Tensor& mask, bool training, bool packed, const LNParams& ln) {
  const int64_t T_ = gx.size(0), B = gx.size(1), G = gx.size(2), H = c0.size(1), R = h0.size(1);
  const bool proj = w_hr.defined();
  const auto opt = gx.options();
  constexpr bool is_ln = K == kLayerNorm;
  // layer norm: b_hh is added after LN_hh, so not in the GEMM
  Linear gemm_hh(w_hh, is_ln ? std::nullopt : bias, B, packed);
  std::optional<Linear> gemm_hr;
  if (proj) gemm_hr.emplace(w_hr, std::nullopt, B, packed);

  Tensor out = at::empty({T_, B, R}, opt);
  Tensor acts, tcs, hs, cs, ms, m_buf;
  Tensor h_buf[2], c_buf[2];
  if (training) {
    acts = at::empty({T_, B, G}, opt);
    tcs = at::empty({T_, B, H}, opt);
    hs = at::empty({T_ + 1, B, R}, opt);
    cs = at::empty({T_ + 1, B, H}, opt);
    hs[0].copy_(h0);
    cs[0].copy_(c0);
    if (proj) ms = at::empty({T_, B, H}, opt);
  } else {
    for (int k = 0; k < 2; ++k) {
      h_buf[k] = at::empty({B, R}, opt);
      c_buf[k] = at::empty({B, H}, opt);
    }
    h_buf[0].copy_(h0);
    c_buf[0].copy_(c0);
    if (proj) m_buf = at::empty({B, H}, opt);
  }
  // layer norm: x_hat and rstd of both norms per step (saved), or scratch rows (inference)
  Tensor xhat_hh, rstd_hh, mean_c, rstd_c, act_buf, xc_buf;
  const T *bias_p = nullptr, *g_hh_p = nullptr, *b_hh_p = nullptr, *g_c_p = nullptr, *b_c_p = nullptr;
  if constexpr (is_ln) {
    if (training) {
      xhat_hh = at::empty({T_, B, G}, opt);
      rstd_hh = at::empty({T_, B, 1}, opt);
      mean_c = at::empty({T_, B, 1}, opt);  // LN_c's x_hat is recomputed from c_t: one (T, B, H) less
      rstd_c = at::empty({T_, B, 1}, opt);
    } else {
      act_buf = at::empty({B, G}, opt);
    }
    xc_buf = at::empty({B, H}, opt);
    bias_p = bias ? bias->data_ptr<T>() : nullptr;
    g_hh_p = ln.w[0].data_ptr<T>();
    b_hh_p = ln.w[1].data_ptr<T>();
    g_c_p = ln.w[2].data_ptr<T>();
    b_c_p = ln.w[3].data_ptr<T>();
  }
  const T eps = static_cast<T>(ln.eps);
  const T* gx_p = gx.data_ptr<T>();
  const T* peep_p = peep.defined() ? peep.data_ptr<T>() : nullptr;
  const bool* mask_p = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  T* out_p = out.data_ptr<T>();
  constexpr int64_t vec = Vectorized<T>::size();

  for (int64_t t = 0; t < T_; ++t) {
    const Tensor h_prev = training ? hs[t] : h_buf[t % 2];
    const Tensor h_next = training ? hs[t + 1] : h_buf[(t + 1) % 2];
    const Tensor c_prev = training ? cs[t] : c_buf[t % 2];
    const Tensor c_next = training ? cs[t + 1] : c_buf[(t + 1) % 2];
    const Tensor m_all = proj ? (training ? ms[t] : m_buf) : h_next;
    const Tensor gh = gemm_hh(h_prev).contiguous();  // (B, G)
    const T* gh_p = gh.data_ptr<T>();
    const T* hp_p = h_prev.data_ptr<T>();
    const T* cp_p = c_prev.data_ptr<T>();
    T* hn_p = h_next.data_ptr<T>();
    T* cn_p = c_next.data_ptr<T>();
    T* m_p = m_all.data_ptr<T>();
    T* act_p = training ? acts.data_ptr<T>() + t * B * G : nullptr;
    T* tc_p = training ? tcs.data_ptr<T>() + t * B * H : nullptr;
    const bool* active_p = mask_p ? mask_p + t * B : nullptr;
    T* out_t = out_p + t * B * R;
    if constexpr (is_ln) {
      T* a_p = training ? act_p : act_buf.data_ptr<T>();
      T* xh_p = training ? xhat_hh.data_ptr<T>() + t * B * G : nullptr;
      T* rh_p = training ? rstd_hh.data_ptr<T>() + t * B : nullptr;
      T* xc_p = xc_buf.data_ptr<T>();
      T* mc_p = training ? mean_c.data_ptr<T>() + t * B : nullptr;
      T* rc_p = training ? rstd_c.data_ptr<T>() + t * B : nullptr;
      for_whole_rows(B, G, [&](int64_t b) {
        LNFwdRow<T> row{gx_p + (t * B + b) * G, gh_p + b * G, bias_p, g_hh_p, b_hh_p, g_c_p, b_c_p,
                        cp_p + b * H, hp_p + b * R, a_p + b * G, xh_p ? xh_p + b * G : nullptr,
                        rh_p ? rh_p + b : nullptr, xc_p + b * H, mc_p ? mc_p + b : nullptr,
                        rc_p ? rc_p + b : nullptr,
                        tc_p ? tc_p + b * H : nullptr, cn_p + b * H, m_p + b * H, out_t + b * R,
                        active_p ? active_p[b] : true, proj, eps};
        row(H);
      });
    } else {
      for_rows(B, H, vec, [&](int64_t b, int64_t j0, int64_t j1) {
        FwdRow<T, K> row{gx_p + (t * B + b) * G, gh_p + b * G, cp_p + b * H, hp_p + b * R, peep_p,
                         act_p ? act_p + b * G : nullptr, tc_p ? tc_p + b * H : nullptr, cn_p + b * H,
                         m_p + b * H, out_t + b * R, active_p ? active_p[b] : true, proj};
        row(H, j0, j1);
      });
    }
    if (proj) {
      const Tensor hp = (*gemm_hr)(m_all).contiguous();  // (B, R)
      const T* hpr = hp.data_ptr<T>();
      for (int64_t b = 0; b < B; ++b) {
        const bool active = active_p ? active_p[b] : true;
        std::memcpy(hn_p + b * R, active ? hpr + b * R : hp_p + b * R, R * sizeof(T));
        if (active) {
          std::memcpy(out_t + b * R, hpr + b * R, R * sizeof(T));
        } else {
          std::fill(out_t + b * R, out_t + (b + 1) * R, T(0));
        }
      }
    }
  }
  const Tensor empty = at::empty({0}, opt);
  const Tensor h_T = training ? hs[T_].clone() : h_buf[T_ % 2];
  const Tensor c_T = training ? cs[T_].clone() : c_buf[T_ % 2];
  if (!training) return {out, h_T, c_T, empty, empty, empty, empty, empty};
  if constexpr (is_ln) return {out, h_T, c_T, acts, tcs, hs, cs, proj ? ms : empty, xhat_hh, rstd_hh, mean_c, rstd_c};
  return {out, h_T, c_T, acts, tcs, hs, cs, proj ? ms : empty};
}

template <typename T, int K>
std::vector<Tensor> backward_impl(const Tensor& grad_out, const Tensor& grad_h, const Tensor& grad_c,
                                  const Tensor& w_hh, const Tensor& acts, const Tensor& tcs, const Tensor& cs,
                                  const Tensor& w_hr, const Tensor& peep, const Tensor& mask, bool packed,
                                  at::TensorList ln) {
  const int64_t T_ = acts.size(0), B = acts.size(1), G = acts.size(2), H = tcs.size(2);
  constexpr bool is_ln = K == kLayerNorm;
  const int64_t R = grad_h.size(1);
  const bool proj = w_hr.defined();
  const auto opt = acts.options();
  // dh_{t-1} = da W_hh: a linear layer with weight W_hh^T (R, G); dm = dh W_hr: weight W_hr^T (H, R)
  Linear gemm_hh(w_hh.t().contiguous(), std::nullopt, B, packed);
  std::optional<Linear> gemm_hr;
  if (proj) gemm_hr.emplace(w_hr.t().contiguous(), std::nullopt, B, packed);

  Tensor dpre = at::empty({T_, B, G}, opt);
  Tensor dh_new_all = proj ? at::empty({T_, B, R}, opt) : at::empty({0}, opt);
  // layer norm: ln = x_hat_hh, rstd_hh, mean_c, rstd_c, ln_hh_weight, ln_c_weight
  Tensor draw, scratch, sums;
  const T *xh_p = nullptr, *rh_p = nullptr, *xc_p = nullptr, *rc_p = nullptr, *g_hh_p = nullptr, *g_c_p = nullptr;
  if constexpr (is_ln) {
    draw = reusable_buffer({T_, B, G}, opt);
    scratch = at::empty({B, 3 * H}, opt);
    sums = at::zeros({at::get_num_threads(), 2 * G + 2 * H}, opt);  // one row per thread
    xh_p = ln[0].data_ptr<T>();
    rh_p = ln[1].data_ptr<T>();
    xc_p = ln[2].data_ptr<T>();
    rc_p = ln[3].data_ptr<T>();
    g_hh_p = ln[4].data_ptr<T>();
    g_c_p = ln[5].data_ptr<T>();
  }
  Tensor dh = grad_h.contiguous();
  Tensor dc = grad_c.contiguous().clone();
  const T* gout_p = grad_out.data_ptr<T>();
  const T* act_p = acts.data_ptr<T>();
  const T* tc_p = tcs.data_ptr<T>();
  const T* cs_p = cs.data_ptr<T>();
  const T* peep_p = peep.defined() ? peep.data_ptr<T>() : nullptr;
  const bool* mask_p = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  T* dc_p = dc.data_ptr<T>();
  constexpr int64_t vec = Vectorized<T>::size();

  for (int64_t t = T_ - 1; t >= 0; --t) {
    const bool* active_p = mask_p ? mask_p + t * B : nullptr;
    const T* dh_p = dh.data_ptr<T>();
    const T* gout_t = gout_p + t * B * R;
    Tensor dm;
    if (proj) {  // dh_new = dh_t + grad_out_t on active rows, 0 on finished ones; dm = dh_new W_hr
      Tensor dh_new = dh_new_all[t];
      T* dn_p = dh_new.data_ptr<T>();
      using V = Vectorized<T>;
      for (int64_t b = 0; b < B; ++b) {
        T* dst = dn_p + b * R;
        if (active_p && !active_p[b]) {
          std::fill(dst, dst + R, T(0));
          continue;
        }
        at::vec::map2([](V a, V c) { return a + c; }, dst, dh_p + b * R, gout_t + b * R, R);
      }
      dm = (*gemm_hr)(dh_new).contiguous();  // (B, H)
    }
    const T* dm_p = proj ? dm.data_ptr<T>() : nullptr;
    T* da_t = dpre.data_ptr<T>() + t * B * G;
    const T* act_t = act_p + t * B * G;
    const T* tc_t = tc_p + t * B * H;
    const T* cp_t = cs_p + t * B * H;
    if constexpr (is_ln) {
      T* draw_t = draw.data_ptr<T>() + t * B * G;
      T* scratch_p = scratch.data_ptr<T>();
      T* sums_p = sums.data_ptr<T>();
      const int64_t threads = sums.size(0);
      for_whole_rows(B, G, [&](int64_t b) {
        if (active_p && !active_p[b]) {  // a finished row: no gate gradient, dc passes through
          std::fill(da_t + b * G, da_t + (b + 1) * G, T(0));
          std::fill(draw_t + b * G, draw_t + (b + 1) * G, T(0));
          return;
        }
        const int64_t bt = t * B + b;
        const int64_t thread = std::min<int64_t>(at::get_thread_num(), threads - 1);
        LNBwdRow<T> row{dm_p ? dm_p + b * H : nullptr, dh_p + b * R, gout_t + b * R, act_t + b * G, tc_t + b * H,
                        cp_t + b * H, xh_p + bt * G, rh_p[bt], cs_p + (bt + B) * H, xc_p[bt], rc_p[bt], g_hh_p,
                        g_c_p,
                        da_t + b * G, draw_t + b * G, scratch_p + b * 3 * H, dc_p + b * H,
                        sums_p + thread * (2 * G + 2 * H)};
        row(H);
      });
    } else {
      for_rows(B, H, vec, [&](int64_t b, int64_t j0, int64_t j1) {
        T* da = da_t + b * G;
        if (active_p && !active_p[b]) {  // a finished row: no gate gradient, dc passes through
          const int64_t gates = G / H;
          for (int64_t k = 0; k < gates; ++k) std::fill(da + k * H + j0, da + k * H + j1, T(0));
          return;
        }
        BwdRow<T, K> row{dm_p ? dm_p + b * H : nullptr, dh_p + b * R, gout_t + b * R, act_t + b * G,
                         tc_t + b * H, cp_t + b * H, peep_p, da, dc_p + b * H};
        row(H, j0, j1);
      });
    }
    // dh_{t-1} = d(h W_hh^T) W_hh: the gate gradients, or LN_hh's backward of them
    Tensor dh_prev = gemm_hh(is_ln ? draw[t] : dpre[t]).contiguous();  // (B, R)
    if (active_p) {  // a finished row's dh passes through
      T* dp = dh_prev.data_ptr<T>();
      for (int64_t b = 0; b < B; ++b) {
        if (!active_p[b]) std::memcpy(dp + b * R, dh_p + b * R, R * sizeof(T));
      }
    }
    dh = dh_prev;
  }
  if constexpr (is_ln) {  // the LN parameters' gradients: the per-thread sums, added
    const Tensor total = sums.sum(0);
    return {dpre, T_ > 0 ? dh : dh.clone(), dc, dh_new_all, draw, total.narrow(0, 0, G), total.narrow(0, G, G),
            total.narrow(0, 2 * G, H), total.narrow(0, 2 * G + H, H)};
  }
  return {dpre, T_ > 0 ? dh : dh.clone(), dc, dh_new_all};  // T = 0: dh is still grad_h
}

template <typename F>
auto dispatch_kind(int64_t kind, const F& f) {
  switch (kind) {
    case kPeephole:
      return f(std::integral_constant<int, kPeephole>());
    case kCIFG:
      return f(std::integral_constant<int, kCIFG>());
    case kLayerNorm:
      return f(std::integral_constant<int, kLayerNorm>());
    default:
      return f(std::integral_constant<int, kLSTM>());
  }
}

std::vector<Tensor> lstm_forward(int64_t kind, const Tensor& gx_in, const Tensor& h0_in, const Tensor& c0_in,
                                 const Tensor& w_hh_in, const std::optional<Tensor>& bias_in,
                                 const std::optional<Tensor>& w_hr_in, const std::optional<Tensor>& peep_in,
                                 const std::optional<Tensor>& mask_in, bool training, bool packed,
                                 at::TensorList ln_in, double eps) {
  check_inputs(kind, gx_in, h0_in, c0_in, w_hh_in);
  const Tensor gx = gx_in.contiguous();
  const auto dt = gx.scalar_type();
  const Tensor h0 = h0_in.to(dt).contiguous(), c0 = c0_in.to(dt).contiguous();
  const Tensor w_hh = w_hh_in.to(dt).contiguous();
  std::optional<Tensor> bias;
  if (bias_in) bias = bias_in->to(dt).contiguous();
  const Tensor w_hr = optional_contiguous(w_hr_in, gx);
  const Tensor peep = optional_contiguous(peep_in, gx);
  const Tensor mask = mask_in ? mask_in->to(at::kBool).contiguous() : Tensor();
  TORCH_CHECK(kind != kPeephole || peep.defined(), "rnnkit_fused: peephole_lstm needs weight_peephole");
  LNParams ln;
  if (kind == kLayerNorm) {
    TORCH_CHECK(ln_in.size() == 4, "rnnkit_fused: layernorm_lstm needs ln = [ln_hh_weight, ln_hh_bias, "
                "ln_c_weight, ln_c_bias], got ", ln_in.size(), " tensors");
    TORCH_CHECK(gx.size(2) == 4 * c0.size(1) && ln_in[0].numel() == gx.size(2) && ln_in[1].numel() == gx.size(2) &&
                    ln_in[2].numel() == c0.size(1) && ln_in[3].numel() == c0.size(1),
                "rnnkit_fused: layernorm_lstm's norms must be (4H,) and (H,)");
    for (const Tensor& w : ln_in) ln.w.push_back(w.to(dt).contiguous());
    ln.eps = eps;
  }
  TORCH_CHECK(!mask.defined() || (mask.size(0) == gx.size(0) && mask.numel() == gx.size(0) * gx.size(1)),
              "rnnkit_fused: mask must be (T, B)");
  packed = packed && dt == at::kFloat;  // oneDNN's linear runs float32 (and bf16), not float64
  return AT_DISPATCH_FLOATING_TYPES(dt, "rnnkit_fused_lstm_forward", [&] {
    return dispatch_kind(kind, [&](auto k) {
      return forward_impl<scalar_t, decltype(k)::value>(gx, h0, c0, w_hh, bias, w_hr, peep, mask, training,
                                                        packed, ln);
    });
  });
}

std::vector<Tensor> lstm_backward(int64_t kind, const Tensor& grad_out, const Tensor& grad_h, const Tensor& grad_c,
                                  const Tensor& w_hh, const Tensor& acts, const Tensor& tcs, const Tensor& cs,
                                  const std::optional<Tensor>& w_hr_in, const std::optional<Tensor>& peep_in,
                                  const std::optional<Tensor>& mask_in, bool packed, at::TensorList ln_in) {
  check_inputs(kind, acts, grad_h, grad_c, w_hh);
  const auto dt = acts.scalar_type();
  TORCH_CHECK(acts.is_contiguous() && tcs.is_contiguous() && cs.is_contiguous(),
              "rnnkit_fused: saved tensors must be contiguous");
  const Tensor w_hr = optional_contiguous(w_hr_in, acts);
  const Tensor peep = optional_contiguous(peep_in, acts);
  const Tensor mask = mask_in ? mask_in->to(at::kBool).contiguous() : Tensor();
  std::vector<Tensor> ln;
  if (kind == kLayerNorm) {
    TORCH_CHECK(ln_in.size() == 6, "rnnkit_fused: layernorm_lstm's backward needs ln = [x_hat_hh, rstd_hh, "
                "mean_c, rstd_c, ln_hh_weight, ln_c_weight], got ", ln_in.size(), " tensors");
    for (const Tensor& x : ln_in) ln.push_back(x.to(dt).contiguous());
  }
  packed = packed && dt == at::kFloat;
  return AT_DISPATCH_FLOATING_TYPES(dt, "rnnkit_fused_lstm_backward", [&] {
    return dispatch_kind(kind, [&](auto k) {
      return backward_impl<scalar_t, decltype(k)::value>(
          grad_out.to(dt).contiguous(), grad_h.to(dt), grad_c.to(dt), w_hh.to(dt).contiguous(), acts, tcs, cs,
          w_hr, peep, mask, packed, ln);
    });
  });
}

// "" when the packed oneDNN GEMM is usable here, else the reason it is not. Checks that the private
// ops exist and that a small packed product equals addmm.
std::string packed_gemm_status() {
  try {
    if (!at::hasMKLDNN()) return "torch was built without oneDNN (mkldnn)";
    if (!at::globalContext().userEnabledMkldnn()) return "oneDNN is disabled (torch.backends.mkldnn.enabled)";
    auto& dispatcher = c10::Dispatcher::singleton();
    for (const char* name : {"mkldnn::_linear_pointwise", "mkldnn::_reorder_linear_weight"}) {
      auto op = dispatcher.findSchema({name, ""});
      if (!op || !op->hasKernelForDispatchKey(c10::DispatchKey::CPU)) {
        return std::string("torch has no CPU kernel for the private op ") + name;
      }
    }
    const Tensor x = at::arange(5 * 24, at::kFloat).reshape({5, 24}).sin();
    const Tensor w = at::arange(40 * 24, at::kFloat).reshape({40, 24}).cos();
    const Tensor b = at::arange(40, at::kFloat).sin();
    const Tensor got = linear_pointwise(x, reorder_linear_weight(w, 5), b);
    const Tensor expected = at::addmm(b, x, w.t());
    if (!at::allclose(got, expected, 1e-4, 1e-4)) return "mkldnn::_linear_pointwise disagrees with addmm";
  } catch (const std::exception& e) {
    return std::string("packed oneDNN GEMM failed: ") + e.what();
  }
  return "";
}

}  // namespace
}  // namespace rnnkit_fused

// Registered as plain (catch-all) kernels: the autograd.Function calls them with grad mode off.
TORCH_LIBRARY(rnnkit_fused, m) {
  m.def(
      "lstm_forward(int kind, Tensor gx, Tensor h0, Tensor c0, Tensor weight_hh, Tensor? bias_hh, "
      "Tensor? weight_hr, Tensor? weight_peephole, Tensor? mask, bool training, bool packed, Tensor[] ln, "
      "float eps) -> Tensor[]",
      TORCH_FN(rnnkit_fused::lstm_forward));
  m.def(
      "lstm_backward(int kind, Tensor grad_out, Tensor grad_h, Tensor grad_c, Tensor weight_hh, Tensor acts, "
      "Tensor tcs, Tensor cs, Tensor? weight_hr, Tensor? weight_peephole, Tensor? mask, bool packed, "
      "Tensor[] ln) -> Tensor[]",
      TORCH_FN(rnnkit_fused::lstm_backward));
  m.def("packed_gemm_status() -> str", TORCH_FN(rnnkit_fused::packed_gemm_status));
}
