// The time loops of the fused LSTM family (lstm, peephole_lstm, cifg_lstm, layernorm_lstm) on CPU, forward and
// BPTT backward, and their registration as torch.ops.rnnkit_fused. The math, the saved tensors and their
// layouts are those of the Python loops in ../lstm.py (`_LSTMFamily`), which stay the readable reference
// and the fallback. The pieces live in headers: vec.h (vector lanes, activations, the split over
// threads), gates.h (each kind's gate math, forward and backward, and the row passes), layer_norm.h
// (the layer-norm kind's row passes), gemm.h (the per-step GEMMs). Also here: generation's one-token step
// of a stack of layers (lstm_step, on tile.h's tiled step) for `Recurrent.step`.
//
// Per step, forward:  gh = h_{t-1} W_hh^T + b_hh        one GEMM (packed oneDNN weights, addmm, or gemv)
//                     gates, c_t, tanh(c_t), m_t         one vectorized pass over all gates
//                     h_t = m_t W_hr^T                    one GEMM, only with a projection
// Per step, backward: dm = dh_t W_hr                      one GEMM, only with a projection
//                     da (all gates), dc_{t-1}            one vectorized pass
//                     dh_{t-1} = da W_hh                   one GEMM
// The weight gradients stay in Python: one GEMM each over all T*B rows. The per-step GEMMs are gemm.h's Linear:
// oneDNN's packed GEMM for float32 batches, at::addmm for float64, rnnkit's own gemv for a few rows (batch 1:
// one oneDNN call per step costs more than the product's arithmetic there); under CPU bf16 autocast, bf16
// operands with float32 accumulation (gemm.h's bf16 and bf16-emulated; the gates, cell state and outputs stay
// float32). ../extension.py's forward_gemm, backward_gemm and autocast_gemm choose.
//
// Shapes: T steps, B rows, H hidden units, R = H or the projection's size, G = 4H (cifg: 3H) gate
// pre-activations per row. Both ops return a fixed number of tensors, empty ones where a kind or mode
// has none (see the schemas at the end).
//
// layernorm_lstm: gx is the raw input projection x_t W_ih^T, normalized here per step by LN_ih (gain
// ln_ih_weight, bias ln_ih_bias + b_ih); the recurrent GEMM has no bias (LN_hh normalizes h_{t-1} W_hh^T
// alone, b_hh is added after it), and each row is one unit of work, because the layer norms need the
// statistics of the whole row: LN_ih's and LN_hh's over 4H, then LN_c's over H. Forward saves x_hat and
// rstd of LN_hh and the means and rstds of LN_c and LN_ih (backward recomputes their x_hat from c_t and
// gx); backward runs LN_c's backward inside the gate pass, LN_hh's and LN_ih's after it, and returns
// d gx (of the raw projection), d(h W_hh^T) and the LN parameters' gradients. Its float32 inference without
// projection (gemm 'tiled', ln_tiled_loop) runs a two-pass step instead: pass 1, h_{t-1} W_hh^T on the tiles of
// tile.h (tiled_raw, no oneDNN call per step: at batch 1 that call cost more than the step's arithmetic);
// pass 2, once a row's blocks are all done, the row's normalize + gates (layer_norm.h's LNInferRow).
//
// Lengths arrive as a (T, B) bool mask: a finished row keeps its state and outputs zeros; in the
// backward its state gradients pass through unchanged and its gate gradients are zero.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "gates.h"
#include "gemm.h"
#include "layer_norm.h"
#include "tile.h"
#include "vec.h"

namespace rnnkit_fused {
namespace {

// out, h_T, c_T, acts, tcs, hs, cs, ms, x_hat_hh, rstd_hh, mean_c, rstd_c, mean_ih, rstd_ih
using Forward = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                           Tensor, Tensor, Tensor>;
// d gx, dh_0, dc_0, dh_new (projection), d(h W_hh^T) (layer norm), d ln_hh_weight (layer norm) or
// d weight_peephole (3, H) (peephole), d ln_hh_bias, d ln_c_weight, d ln_c_bias, d ln_ih_weight, d ln_ih_bias
using Backward = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

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

std::string sizes_string(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "(";
  for (size_t k = 0; k < sizes.size(); ++k) s << (k ? ", " : "") << sizes[k];
  s << (sizes.size() == 1 ? ",)" : ")");
  return s.str();
}

// Raises "rnnkit_fused.lstm_forward: weight_hh must be (G, R) = (28, 7), got (28, 5)" unless t has the
// sizes expected (symbols names them).
void check_sizes(const char* op, const char* name, const Tensor& t, const char* symbols,
                 std::vector<int64_t> expected) {
  TORCH_CHECK(t.sizes() == at::IntArrayRef(expected), "rnnkit_fused.", op, ": ", name, " must be ", symbols, " = ",
              sizes_string(expected), ", got ", sizes_string(t.sizes()));
}

void check_kind_and_type(const char* op, int64_t kind, const Tensor& x) {
  TORCH_CHECK(kind == kLSTM || kind == kPeephole || kind == kCIFG || kind == kLayerNorm, "rnnkit_fused.", op,
              ": kind must be 0 (lstm), 1 (peephole), 2 (cifg) or 3 (layer norm), got ", kind);
  TORCH_CHECK(x.device().is_cpu(), "rnnkit_fused.", op, ": CPU tensors only, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "rnnkit_fused.", op,
              ": float32 or float64 only, got ", x.scalar_type());
}

// The sizes every call has: T, B, G from a (T, B, G) tensor, H from c (B, H), R from h (B, R); checks
// G = gates(kind) * H, weight_hh (G, R), weight_hr (R, H) or R = H, weight_peephole (3, H).
struct Sizes {
  int64_t T, B, G, H, R;
};

Sizes check_sizes_of(const char* op, int64_t kind, const char* gates_name, const Tensor& gates_t, const char* c_name,
                     const Tensor& c, const char* h_name, const Tensor& h, const Tensor& w_hh, const Tensor& w_hr,
                     const Tensor& peep, const Tensor& mask) {
  check_kind_and_type(op, kind, gates_t);
  TORCH_CHECK(gates_t.dim() == 3, "rnnkit_fused.", op, ": ", gates_name, " must be (T, B, G), got ",
              sizes_string(gates_t.sizes()));
  TORCH_CHECK(c.dim() == 2, "rnnkit_fused.", op, ": ", c_name, " must be (B, H), got ", sizes_string(c.sizes()));
  TORCH_CHECK(h.dim() == 2, "rnnkit_fused.", op, ": ", h_name, " must be (B, R), got ", sizes_string(h.sizes()));
  const Sizes s{gates_t.size(0), gates_t.size(1), gates_t.size(2), c.size(1), h.size(1)};
  check_sizes(op, c_name, c, "(B, H)", {s.B, s.H});
  check_sizes(op, h_name, h, "(B, R)", {s.B, s.R});
  TORCH_CHECK(s.G == gates(kind) * s.H, "rnnkit_fused.", op, ": ", gates_name, "'s last size G must be ",
              gates(kind), "H = ", gates(kind) * s.H, " (H = ", s.H, " from ", c_name, "), got ", s.G);
  check_sizes(op, "weight_hh", w_hh, "(G, R)", {s.G, s.R});
  if (w_hr.defined()) {
    check_sizes(op, "weight_hr", w_hr, "(R, H)", {s.R, s.H});
  } else {
    TORCH_CHECK(s.R == s.H, "rnnkit_fused.", op, ": without weight_hr, ", h_name, " must be (B, H) = ",
                sizes_string({s.B, s.H}), ", got ", sizes_string(h.sizes()));
  }
  TORCH_CHECK(kind != kPeephole || peep.defined(), "rnnkit_fused.", op, ": peephole_lstm needs weight_peephole");
  if (peep.defined()) check_sizes(op, "weight_peephole", peep, "(3, H)", {3, s.H});
  if (mask.defined()) check_sizes(op, "mask", mask, "(T, B)", {s.T, s.B});
  return s;
}

// How the loop forms its per-step products: 'packed' runs oneDNN in float32 only (its linear has no float64
// kernel here), so float64 asked for 'packed' runs addmm; 'bf16' and 'bf16-emulated' (gemm.h) run float32 loops
// only, and are refused for float64.
GemmMode gemm_mode(const char* op, c10::string_view gemm, at::ScalarType dt) {
  if (gemm == "bf16" || gemm == "bf16-emulated") {
    TORCH_CHECK(dt == at::kFloat, "rnnkit_fused.", op, ": gemm='", gemm, "' runs float32 loops (CPU bf16 autocast), "
                "got ", dt);
    return gemm == "bf16" ? GemmMode::kBf16 : GemmMode::kBf16Emulated;
  }
  if (gemm == "gemv") return GemmMode::kGemv;
  return gemm == "packed" && dt == at::kFloat ? GemmMode::kPacked : GemmMode::kAddmm;
}

// The layer-norm kind's gains and biases: ln_hh_weight, ln_hh_bias, ln_c_weight, ln_c_bias, ln_ih_weight and
// ln_ih_bias (with b_ih added).
struct LNParams {
  std::vector<Tensor> w;
  double eps = 0.0;
};

template <typename T, int K>
Forward forward_impl(const Tensor& gx, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
                                 const std::optional<Tensor>& bias, const Tensor& w_hr, const Tensor& peep,
                                 const Tensor& mask, bool training, GemmMode mode, const LNParams& ln) {
  const int64_t T_ = gx.size(0), B = gx.size(1), G = gx.size(2), H = c0.size(1), R = h0.size(1);
  const bool proj = w_hr.defined();
  const auto opt = gx.options();
  constexpr bool is_ln = K == kLayerNorm;
  // layer norm: b_hh is added after LN_hh, so not in the GEMM
  Linear gemm_hh(w_hh, is_ln ? std::nullopt : bias, B, mode);
  std::optional<Linear> gemm_hr;
  if (proj) gemm_hr.emplace(w_hr, std::nullopt, B, mode);

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
  Tensor xhat_hh, rstd_hh, mean_c, rstd_c, mean_ih, rstd_ih, act_buf, xc_buf;
  const T *bias_p = nullptr, *g_hh_p = nullptr, *b_hh_p = nullptr, *g_c_p = nullptr, *b_c_p = nullptr;
  const T *g_ih_p = nullptr, *b_ih_p = nullptr;
  if constexpr (is_ln) {
    if (training) {
      mean_ih = at::empty({T_, B, 1}, opt);  // LN_ih's x_hat is recomputed from gx: one (T, B, G) less
      rstd_ih = at::empty({T_, B, 1}, opt);
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
    g_ih_p = ln.w[4].data_ptr<T>();
    b_ih_p = ln.w[5].data_ptr<T>();
  }
  const T eps = static_cast<T>(ln.eps);
  const T* gx_p = gx.data_ptr<T>();
  const T* peep_p = peep.defined() ? peep.data_ptr<T>() : nullptr;
  const bool* mask_p = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  T* out_p = out.data_ptr<T>();
  constexpr int64_t vec = Vectorized<T>::size();
  T* hs_p = training ? hs.data_ptr<T>() : nullptr;
  T* cs_p = training ? cs.data_ptr<T>() : nullptr;
  T* ms_p = training && proj ? ms.data_ptr<T>() : nullptr;
  T* hb_p[2] = {training ? nullptr : h_buf[0].data_ptr<T>(), training ? nullptr : h_buf[1].data_ptr<T>()};
  T* cb_p[2] = {training ? nullptr : c_buf[0].data_ptr<T>(), training ? nullptr : c_buf[1].data_ptr<T>()};
  T* mb_p = !training && proj ? m_buf.data_ptr<T>() : nullptr;

  for (int64_t t = 0; t < T_; ++t) {
    // h_{t-1}, h_t (B, R), c_{t-1}, c_t (B, H): the saved hs[t], hs[t + 1], ... or the two inference buffers
    // (raw pointers: a select per step costs ~1 us, a few percent of a batch-1 step)
    const T* hp_p = training ? hs_p + t * B * R : hb_p[t % 2];
    T* hn_p = training ? hs_p + (t + 1) * B * R : hb_p[(t + 1) % 2];
    const T* cp_p = training ? cs_p + t * B * H : cb_p[t % 2];
    T* cn_p = training ? cs_p + (t + 1) * B * H : cb_p[(t + 1) % 2];
    T* m_p = proj ? (training ? ms_p + t * B * H : mb_p) : hn_p;  // (B, H)
    const T* gh_p = gemm_hh(hp_p);  // (B, G)
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
      T* mi_p = training ? mean_ih.data_ptr<T>() + t * B : nullptr;
      T* ri_p = training ? rstd_ih.data_ptr<T>() + t * B : nullptr;
      for_whole_rows(B, G, [&](int64_t b) {
        LNFwdRow<T> row{gx_p + (t * B + b) * G, g_ih_p, b_ih_p, gh_p + b * G, bias_p, g_hh_p, b_hh_p, g_c_p, b_c_p,
                        cp_p + b * H, hp_p + b * R, a_p + b * G, mi_p ? mi_p + b : nullptr,
                        ri_p ? ri_p + b : nullptr, xh_p ? xh_p + b * G : nullptr,
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
      const T* hpr = (*gemm_hr)(static_cast<const T*>(m_p));  // (B, R)
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
  if (!training) return {out, h_T, c_T, empty, empty, empty, empty, empty, empty, empty, empty, empty, empty, empty};
  if constexpr (is_ln) {
    return {out, h_T, c_T, acts, tcs, hs, cs, proj ? ms : empty, xhat_hh, rstd_hh, mean_c, rstd_c, mean_ih, rstd_ih};
  }
  return {out, h_T, c_T, acts, tcs, hs, cs, proj ? ms : empty, empty, empty, empty, empty, empty, empty};
}

template <typename T, int K>
Backward backward_impl(const Tensor& grad_out, const Tensor& grad_h, const Tensor& grad_c,
                                  const Tensor& w_hh, const Tensor& acts, const Tensor& tcs, const Tensor& cs,
                                  const Tensor& w_hr, const Tensor& peep, const Tensor& mask, GemmMode mode,
                                  at::TensorList ln) {
  const int64_t T_ = acts.size(0), B = acts.size(1), G = acts.size(2), H = tcs.size(2);
  constexpr bool is_ln = K == kLayerNorm;
  constexpr bool is_peephole = K == kPeephole;
  const int64_t R = grad_h.size(1);
  const bool proj = w_hr.defined();
  const auto opt = acts.options();
  // dh_{t-1} = da W_hh: a linear layer with weight W_hh^T (R, G); dm = dh W_hr: weight W_hr^T (H, R)
  Linear gemm_hh(w_hh.t(), std::nullopt, B, mode);
  std::optional<Linear> gemm_hr;
  if (proj) gemm_hr.emplace(w_hr.t(), std::nullopt, B, mode);

  Tensor dpre = at::empty({T_, B, G}, opt);
  Tensor dh_new_all = proj ? at::empty({T_, B, R}, opt) : at::empty({0}, opt);
  // layer norm: ln = x_hat_hh, rstd_hh, mean_c, rstd_c, ln_hh_weight, ln_c_weight, gx, mean_ih, rstd_ih,
  // ln_ih_weight
  // peephole: d weight_peephole's running sums, one (3, H) row per thread
  const Tensor peep_sums = is_peephole ? at::zeros({at::get_num_threads(), 3 * H}, opt) : Tensor();
  Tensor draw, scratch, sums;
  const T *xh_p = nullptr, *rh_p = nullptr, *xc_p = nullptr, *rc_p = nullptr, *g_hh_p = nullptr, *g_c_p = nullptr;
  const T *gx_p = nullptr, *mi_p = nullptr, *ri_p = nullptr, *g_ih_p = nullptr;
  if constexpr (is_ln) {
    draw = reusable_buffer({T_, B, G}, opt);
    scratch = at::empty({B, 3 * H + G}, opt);
    sums = at::zeros({at::get_num_threads(), 4 * G + 2 * H}, opt);  // one row per thread
    xh_p = ln[0].data_ptr<T>();
    rh_p = ln[1].data_ptr<T>();
    xc_p = ln[2].data_ptr<T>();
    rc_p = ln[3].data_ptr<T>();
    g_hh_p = ln[4].data_ptr<T>();
    g_c_p = ln[5].data_ptr<T>();
    gx_p = ln[6].data_ptr<T>();
    mi_p = ln[7].data_ptr<T>();
    ri_p = ln[8].data_ptr<T>();
    g_ih_p = ln[9].data_ptr<T>();
  }
  const Tensor grad_h_c = grad_h.contiguous();
  const T* dh_p = grad_h_c.data_ptr<T>();  // dL/dh_t from the steps above: grad_h, then gemm_hh's results
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
    const T* gout_t = gout_p + t * B * R;
    const T* dm_p = nullptr;
    if (proj) {  // dh_new = dh_t + grad_out_t on active rows, 0 on finished ones; dm = dh_new W_hr
      T* dn_p = dh_new_all.data_ptr<T>() + t * B * R;
      using V = Vectorized<T>;
      for (int64_t b = 0; b < B; ++b) {
        T* dst = dn_p + b * R;
        if (active_p && !active_p[b]) {
          std::fill(dst, dst + R, T(0));
          continue;
        }
        at::vec::map2([](V a, V c) { return a + c; }, dst, dh_p + b * R, gout_t + b * R, R);
      }
      dm_p = (*gemm_hr)(static_cast<const T*>(dn_p));  // (B, H)
    }
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
                        g_c_p, gx_p + bt * G, mi_p[bt], ri_p[bt], g_ih_p,
                        da_t + b * G, draw_t + b * G, scratch_p + b * (3 * H + G), dc_p + b * H,
                        sums_p + thread * (4 * G + 2 * H)};
        row(H);
      });
    } else {
      T* peep_sums_p = is_peephole ? peep_sums.data_ptr<T>() : nullptr;
      const int64_t threads = is_peephole ? peep_sums.size(0) : 1;
      for_rows(B, H, vec, [&](int64_t b, int64_t j0, int64_t j1) {
        T* da = da_t + b * G;
        if (active_p && !active_p[b]) {  // a finished row: no gate gradient, dc passes through
          const int64_t gates = G / H;
          for (int64_t k = 0; k < gates; ++k) std::fill(da + k * H + j0, da + k * H + j1, T(0));
          return;
        }
        const int64_t thread = std::min<int64_t>(at::get_thread_num(), threads - 1);
        BwdRow<T, K> row{dm_p ? dm_p + b * H : nullptr, dh_p + b * R, gout_t + b * R, act_t + b * G,
                         tc_t + b * H, cp_t + b * H, peep_p, da, dc_p + b * H, cp_t + (B + b) * H,
                         peep_sums_p ? peep_sums_p + thread * 3 * H : nullptr};
        row(H, j0, j1);
      });
    }
    // dh_{t-1} = d(h W_hh^T) W_hh: the gate gradients, or LN_hh's backward of them
    T* dp = gemm_hh(static_cast<const T*>(is_ln ? draw.data_ptr<T>() + t * B * G : da_t));  // (B, R)
    if (active_p) {  // a finished row's dh passes through
      for (int64_t b = 0; b < B; ++b) {
        if (!active_p[b]) std::memcpy(dp + b * R, dh_p + b * R, R * sizeof(T));
      }
    }
    dh_p = dp;
  }
  Tensor dh = at::empty({B, R}, opt);  // dh_0 (grad_h itself when T = 0)
  std::memcpy(dh.data_ptr<T>(), dh_p, B * R * sizeof(T));
  if constexpr (is_ln) {  // the LN parameters' gradients: the per-thread sums, added
    const Tensor total = sums.sum(0);
    return {dpre, dh, dc, dh_new_all, draw, total.narrow(0, 0, G), total.narrow(0, G, G),
            total.narrow(0, 2 * G, H), total.narrow(0, 2 * G + H, H), total.narrow(0, 2 * G + 2 * H, G),
            total.narrow(0, 3 * G + 2 * H, G)};
  }
  const Tensor empty = at::empty({0}, opt);
  if constexpr (is_peephole) {  // d weight_peephole (3, H): the per-thread sums, added
    return {dpre, dh, dc, dh_new_all, empty, peep_sums.sum(0).view({3, H}), empty, empty, empty, empty, empty};
  }
  return {dpre, dh, dc, dh_new_all, empty, empty, empty, empty, empty, empty, empty};
}

// Inference through the tiled step (tile.h): float32, lstm / peephole / cifg, no projection. `in` is x (T, B, I)
// with w_ih (G, I) (the input projection inside the tile), or gx (T, B, G) with w_ih undefined; bias is
// b_ih + b_hh, b_hh or undefined. Returns out (T, B, H), h_T and c_T (B, H).
template <int K>
std::tuple<Tensor, Tensor, Tensor> tiled_loop(const Tensor& in, const Tensor& w_ih, const Tensor& h0, const Tensor& c0,
                                              const Tensor& w_hh, const Tensor& bias, const Tensor& peep,
                                              const Tensor& mask, bool brgemm) {
  const int64_t T_ = in.size(0), B = in.size(1), H = c0.size(1);
  const TiledWeights tw = pack_tiles(w_ih, w_hh, bias, H, gates(K));
  const auto opt = in.options();
  Tensor out = at::empty({T_, B, H}, opt);
  Tensor h_buf[2] = {h0.clone(), at::empty({B, H}, opt)}, c_buf[2] = {c0.clone(), at::empty({B, H}, opt)};
  const float* in_p = in.data_ptr<float>();
  const int64_t step = B * in.size(2);  // floats of x_t or gx_t
  const float* peep_p = peep.defined() ? peep.data_ptr<float>() : nullptr;
  const bool* mask_p = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  for (int64_t t = 0; t < T_; ++t) {
    const int64_t now = t % 2, next = (t + 1) % 2;
    const float* in_t = in_p + t * step;
    const TileStep s{w_ih.defined() ? in_t : nullptr, w_ih.defined() ? nullptr : in_t, h_buf[now].data_ptr<float>(),
                     c_buf[now].data_ptr<float>(), peep_p, mask_p ? mask_p + t * B : nullptr,
                     h_buf[next].data_ptr<float>(), c_buf[next].data_ptr<float>(), out.data_ptr<float>() + t * B * H};
    tiled_step<K>(tw, brgemm, B, H, s);
  }
  return {out, h_buf[T_ % 2], c_buf[T_ % 2]};
}

// Inference of layernorm_lstm through its two-pass tiled step: float32, no projection. gx (T, B, G) is the raw
// x W_ih^T, bias b_hh or none, ln as in lstm_forward. Per step, pass 1: raw = h_{t-1} W_hh^T on the tiles of
// tile.h (tiled_raw: blocks of hidden units over threads, no GEMM call); pass 2, once every block of a row is
// done (LN_hh's statistics need the whole row): the row's normalize + gates (layer_norm.h's LNInferRow, rows
// over threads). Returns out (T, B, H), h_T and c_T (B, H).
std::tuple<Tensor, Tensor, Tensor> ln_tiled_loop(const Tensor& gx, const Tensor& h0, const Tensor& c0,
                                                 const Tensor& w_hh, const std::optional<Tensor>& bias,
                                                 const Tensor& mask, const LNParams& ln) {
  const int64_t T_ = gx.size(0), B = gx.size(1), G = gx.size(2), H = c0.size(1);
  const auto opt = gx.options();
  const TiledWeights tw = pack_tiles(Tensor(), w_hh, Tensor(), H, 4);  // no bias: b_hh comes after LN_hh
  Tensor beta = ln.w[5] + ln.w[1];  // (G) ln_ih_bias + b_ih + ln_hh_bias (+ b_hh)
  if (bias) beta = beta + *bias;
  Tensor raw = at::empty({B, G}, opt), o_buf = at::empty({B, H}, opt);
  Tensor out = at::empty({T_, B, H}, opt);
  Tensor h_buf[2] = {h0.clone(), at::empty({B, H}, opt)}, c_buf[2] = {c0.clone(), at::empty({B, H}, opt)};
  const float *gx_p = gx.data_ptr<float>(), *beta_p = beta.data_ptr<float>();
  const float *g_hh = ln.w[0].data_ptr<float>(), *g_c = ln.w[2].data_ptr<float>(), *b_c = ln.w[3].data_ptr<float>();
  const float* g_ih = ln.w[4].data_ptr<float>();
  float *raw_p = raw.data_ptr<float>(), *o_p = o_buf.data_ptr<float>(), *out_p = out.data_ptr<float>();
  const bool* mask_p = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  const float eps = static_cast<float>(ln.eps);
  for (int64_t t = 0; t < T_; ++t) {
    const float *hp = h_buf[t % 2].data_ptr<float>(), *cp = c_buf[t % 2].data_ptr<float>();
    float *hn = h_buf[(t + 1) % 2].data_ptr<float>(), *cn = c_buf[(t + 1) % 2].data_ptr<float>();
    const bool* active = mask_p ? mask_p + t * B : nullptr;
    tiled_raw(tw, B, H, hp, raw_p);  // (B, G)
    for_whole_rows(B, G, [&](int64_t b) {
      LNInferRow<float> row{gx_p + (t * B + b) * G, raw_p + b * G, g_ih, g_hh, beta_p, g_c, b_c, cp + b * H,
                            hp + b * H, o_p + b * H, cn + b * H, hn + b * H, out_p + (t * B + b) * H,
                            active ? active[b] : true, eps};
      row(H);
    });
  }
  return {out, h_buf[T_ % 2], c_buf[T_ % 2]};
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

Forward lstm_forward(int64_t kind, const Tensor& gx_in, const Tensor& h0_in, const Tensor& c0_in, const Tensor& w_hh_in,
                     const std::optional<Tensor>& bias_in, const std::optional<Tensor>& w_hr_in,
                     const std::optional<Tensor>& peep_in, const std::optional<Tensor>& mask_in, bool training,
                     c10::string_view gemm, at::TensorList ln_in, double eps) {
  check_kind_and_type("lstm_forward", kind, gx_in);
  const Tensor gx = gx_in.contiguous();
  const auto dt = gx.scalar_type();
  const Tensor h0 = h0_in.to(dt).contiguous(), c0 = c0_in.to(dt).contiguous();
  const Tensor w_hh = w_hh_in.to(dt).contiguous();
  std::optional<Tensor> bias;
  if (bias_in) bias = bias_in->to(dt).contiguous();
  const Tensor w_hr = optional_contiguous(w_hr_in, gx);
  const Tensor peep = optional_contiguous(peep_in, gx);
  const Tensor mask = mask_in ? mask_in->to(at::kBool).contiguous() : Tensor();
  const Sizes s = check_sizes_of("lstm_forward", kind, "gx", gx, "c0", c0, "h0", h0, w_hh, w_hr, peep, mask);
  if (bias) check_sizes("lstm_forward", "bias_hh", *bias, "(G,)", {s.G});
  LNParams ln;
  if (kind == kLayerNorm) {
    TORCH_CHECK(ln_in.size() == 6, "rnnkit_fused.lstm_forward: layernorm_lstm needs ln = [ln_hh_weight, ln_hh_bias, "
                "ln_c_weight, ln_c_bias, ln_ih_weight, ln_ih_bias], got ", ln_in.size(), " tensors");
    const char* names[] = {"ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias", "ln_ih_weight", "ln_ih_bias"};
    for (int k = 0; k < 6; ++k) {
      const bool per_cell = k == 2 || k == 3;
      check_sizes("lstm_forward", names[k], ln_in[k], per_cell ? "(H,)" : "(G,)", {per_cell ? s.H : s.G});
      ln.w.push_back(ln_in[k].to(dt).contiguous());
    }
    ln.eps = eps;
  }
  TORCH_CHECK(gemm == "addmm" || gemm == "packed" || gemm == "gemv" || gemm == "tiled" || gemm == "brgemm" ||
              gemm == "bf16" || gemm == "bf16-emulated", "rnnkit_fused.lstm_forward: gemm must be 'addmm', 'packed', "
              "'gemv', 'tiled', 'brgemm', 'bf16' or 'bf16-emulated', got '", gemm, "'");
  if (kind == kLayerNorm && gemm == "tiled") {
    TORCH_CHECK(!training && dt == at::kFloat && !w_hr.defined(), "rnnkit_fused.lstm_forward: gemm='tiled' runs "
                "layernorm_lstm's float32 inference without weight_hr; got training=", training, ", ", dt,
                w_hr.defined() ? ", weight_hr" : "");
    const auto [out, h, c] = ln_tiled_loop(gx, h0, c0, w_hh, bias, mask, ln);
    const Tensor empty = at::empty({0}, gx.options());
    return Forward{out, h, c, empty, empty, empty, empty, empty, empty, empty, empty, empty, empty, empty};
  }
  if (gemm == "tiled" || gemm == "brgemm") {
    TORCH_CHECK(!training && dt == at::kFloat && kind != kLayerNorm && !w_hr.defined(), "rnnkit_fused.lstm_forward: "
                "gemm='tiled' runs float32 inference of lstm, peephole and cifg without weight_hr; got training=",
                training, ", ", dt, ", kind ", kind, w_hr.defined() ? ", weight_hr" : "");
    return dispatch_kind(kind, [&](auto k) {
      constexpr int K = decltype(k)::value;
      if constexpr (K == kLayerNorm) {
        return Forward();  // refused above
      } else {
        const auto [out, h, c] = tiled_loop<K>(gx, Tensor(), h0, c0, w_hh, bias ? *bias : Tensor(), peep, mask,
                                               gemm == "brgemm");
        const Tensor empty = at::empty({0}, gx.options());
        return Forward{out, h, c, empty, empty, empty, empty, empty, empty, empty, empty, empty, empty, empty};
      }
    });
  }
  const GemmMode mode = gemm_mode("lstm_forward", gemm, dt);
  return AT_DISPATCH_FLOATING_TYPES(dt, "rnnkit_fused_lstm_forward", [&] {
    return dispatch_kind(kind, [&](auto k) {
      return forward_impl<scalar_t, decltype(k)::value>(gx, h0, c0, w_hh, bias, w_hr, peep, mask, training,
                                                        mode, ln);
    });
  });
}

Backward lstm_backward(int64_t kind, const Tensor& grad_out_in, const Tensor& grad_h_in, const Tensor& grad_c_in,
                       const Tensor& w_hh_in, const Tensor& acts, const Tensor& tcs, const Tensor& cs,
                       const std::optional<Tensor>& w_hr_in, const std::optional<Tensor>& peep_in,
                       const std::optional<Tensor>& mask_in, c10::string_view gemm, at::TensorList ln_in) {
  check_kind_and_type("lstm_backward", kind, acts);
  TORCH_CHECK(gemm == "addmm" || gemm == "packed" || gemm == "gemv" || gemm == "bf16" || gemm == "bf16-emulated",
              "rnnkit_fused.lstm_backward: gemm must be 'addmm', 'packed', 'gemv', 'bf16' or 'bf16-emulated', got '",
              gemm, "'");
  const auto dt = acts.scalar_type();
  TORCH_CHECK(acts.is_contiguous() && tcs.is_contiguous() && cs.is_contiguous(),
              "rnnkit_fused.lstm_backward: the saved acts, tcs and cs must be contiguous");
  const Tensor grad_out = grad_out_in.to(dt).contiguous(), grad_h = grad_h_in.to(dt), grad_c = grad_c_in.to(dt);
  const Tensor w_hh = w_hh_in.to(dt).contiguous();
  const Tensor w_hr = optional_contiguous(w_hr_in, acts);
  const Tensor peep = optional_contiguous(peep_in, acts);
  const Tensor mask = mask_in ? mask_in->to(at::kBool).contiguous() : Tensor();
  const Sizes s =
      check_sizes_of("lstm_backward", kind, "acts", acts, "grad_c", grad_c, "grad_h", grad_h, w_hh, w_hr, peep, mask);
  check_sizes("lstm_backward", "grad_out", grad_out, "(T, B, R)", {s.T, s.B, s.R});
  check_sizes("lstm_backward", "tcs", tcs, "(T, B, H)", {s.T, s.B, s.H});
  check_sizes("lstm_backward", "cs", cs, "(T + 1, B, H)", {s.T + 1, s.B, s.H});
  std::vector<Tensor> ln;
  if (kind == kLayerNorm) {
    TORCH_CHECK(ln_in.size() == 10, "rnnkit_fused.lstm_backward: layernorm_lstm's backward needs ln = [x_hat_hh, "
                "rstd_hh, mean_c, rstd_c, ln_hh_weight, ln_c_weight, gx, mean_ih, rstd_ih, ln_ih_weight], got ",
                ln_in.size(), " tensors");
    const char* names[] = {"x_hat_hh", "rstd_hh", "mean_c", "rstd_c", "ln_hh_weight", "ln_c_weight", "gx", "mean_ih",
                           "rstd_ih", "ln_ih_weight"};
    const char* symbols[] = {"(T, B, G)", "(T, B, 1)", "(T, B, 1)", "(T, B, 1)", "(G,)", "(H,)", "(T, B, G)",
                             "(T, B, 1)", "(T, B, 1)", "(G,)"};
    const std::vector<int64_t> expected[] = {{s.T, s.B, s.G}, {s.T, s.B, 1}, {s.T, s.B, 1}, {s.T, s.B, 1}, {s.G},
                                             {s.H}, {s.T, s.B, s.G}, {s.T, s.B, 1}, {s.T, s.B, 1}, {s.G}};
    for (int k = 0; k < 10; ++k) {
      check_sizes("lstm_backward", names[k], ln_in[k], symbols[k], expected[k]);
      ln.push_back(ln_in[k].to(dt).contiguous());
    }
  }
  const GemmMode mode = gemm_mode("lstm_backward", gemm, dt);
  return AT_DISPATCH_FLOATING_TYPES(dt, "rnnkit_fused_lstm_backward", [&] {
    return dispatch_kind(kind, [&](auto k) {
      return backward_impl<scalar_t, decltype(k)::value>(grad_out, grad_h, grad_c, w_hh, acts, tcs, cs, w_hr, peep,
                                                         mask, mode, ln);
    });
  });
}

// Float32 inference of lstm, peephole and cifg without projection from x itself: the tiled step with the input
// projection x_t W_ih^T inside each step's tile (tile.h), so no (T, B, G) gx is formed.
std::tuple<Tensor, Tensor, Tensor> lstm_forward_tiled(int64_t kind, const Tensor& x_in, const Tensor& h0_in,
                                                      const Tensor& c0_in, const Tensor& w_ih_in,
                                                      const std::optional<Tensor>& b_ih_in, const Tensor& w_hh_in,
                                                      const std::optional<Tensor>& b_hh_in,
                                                      const std::optional<Tensor>& peep_in,
                                                      const std::optional<Tensor>& mask_in, c10::string_view gemm) {
  const char* op = "lstm_forward_tiled";
  check_kind_and_type(op, kind, x_in);
  TORCH_CHECK(kind != kLayerNorm, "rnnkit_fused.lstm_forward_tiled: runs lstm (0), peephole (1) and cifg (2), got "
              "kind 3 (layer norm)");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat, "rnnkit_fused.lstm_forward_tiled: float32 only, got ",
              x_in.scalar_type());
  TORCH_CHECK(gemm == "tiled" || gemm == "brgemm", "rnnkit_fused.lstm_forward_tiled: gemm must be 'tiled' or "
              "'brgemm', got '", gemm, "'");
  TORCH_CHECK(x_in.dim() == 3, "rnnkit_fused.lstm_forward_tiled: x must be (T, B, I), got ",
              sizes_string(x_in.sizes()));
  TORCH_CHECK(c0_in.dim() == 2, "rnnkit_fused.lstm_forward_tiled: c0 must be (B, H), got ",
              sizes_string(c0_in.sizes()));
  const Tensor x = x_in.contiguous();
  const auto f = [](const Tensor& t) { return t.to(at::kFloat).contiguous(); };
  const Tensor h0 = f(h0_in), c0 = f(c0_in), w_ih = f(w_ih_in), w_hh = f(w_hh_in);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = c0.size(1), G = gates(kind) * H;
  check_sizes(op, "c0", c0, "(B, H)", {B, H});
  check_sizes(op, "h0", h0, "(B, H)", {B, H});
  check_sizes(op, "weight_ih", w_ih, "(G, I)", {G, I});
  check_sizes(op, "weight_hh", w_hh, "(G, H)", {G, H});
  Tensor bias;  // b_ih + b_hh
  for (const auto* b : {&b_ih_in, &b_hh_in}) {
    if (!*b) continue;
    const Tensor bf = f(**b);
    check_sizes(op, b == &b_ih_in ? "bias_ih" : "bias_hh", bf, "(G,)", {G});
    bias = bias.defined() ? bias + bf : bf;
  }
  TORCH_CHECK(kind != kPeephole || peep_in, "rnnkit_fused.lstm_forward_tiled: peephole_lstm needs weight_peephole");
  const Tensor peep = peep_in ? f(*peep_in) : Tensor();
  if (peep.defined()) check_sizes(op, "weight_peephole", peep, "(3, H)", {3, H});
  const Tensor mask = mask_in ? mask_in->to(at::kBool).contiguous() : Tensor();
  if (mask.defined()) check_sizes(op, "mask", mask, "(T, B)", {T_, B});
  return dispatch_kind(kind, [&](auto k) {
    constexpr int K = decltype(k)::value;
    if constexpr (K == kLayerNorm) {
      return std::tuple<Tensor, Tensor, Tensor>();  // refused above
    } else {
      return tiled_loop<K>(x, w_ih, h0, c0, w_hh, bias, peep, mask, gemm == "brgemm");
    }
  });
}

// Generation (`Recurrent.step` without gradients, ../../../stepper.py): one float32 step of a stack of L layers of
// lstm, peephole or cifg without projection, each on the tiled step (tile.h) with x_t W_ih^T inside the tile. The
// weights are arranged once per layer by lstm_step_pack: (w, bias) = the tiles' slabs of [W_ih | W_hh] and
// b_ih + b_hh. Per layer and block of hidden units one pass over its slab and the gates on the tile: no (B, G)
// product goes through memory, and one call steps every layer (the Python around about ten ATen calls per layer
// cost more than a batch-1 layer's GEMV at H = 256).
std::tuple<Tensor, Tensor> lstm_step_pack(int64_t kind, const Tensor& w_ih_in, const std::optional<Tensor>& b_ih_in,
                                          const Tensor& w_hh_in, const std::optional<Tensor>& b_hh_in) {
  const char* op = "lstm_step_pack";
  check_kind_and_type(op, kind, w_hh_in);
  TORCH_CHECK(kind != kLayerNorm && w_hh_in.scalar_type() == at::kFloat && w_ih_in.scalar_type() == at::kFloat,
              "rnnkit_fused.lstm_step_pack: runs float32 lstm (0), peephole (1) and cifg (2), got kind ", kind, ", ",
              w_ih_in.scalar_type(), " weight_ih, ", w_hh_in.scalar_type(), " weight_hh");
  TORCH_CHECK(w_hh_in.dim() == 2 && w_ih_in.dim() == 2, "rnnkit_fused.lstm_step_pack: weight_ih must be (G, I) and "
              "weight_hh (G, H), got ", sizes_string(w_ih_in.sizes()), " and ", sizes_string(w_hh_in.sizes()));
  const Tensor w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const int64_t H = w_hh.size(1), G = gates(kind) * H;
  check_sizes(op, "weight_hh", w_hh, "(G, H)", {G, H});
  check_sizes(op, "weight_ih", w_ih, "(G, I)", {G, w_ih.size(1)});
  Tensor bias;  // b_ih + b_hh
  for (const auto* b : {&b_ih_in, &b_hh_in}) {
    if (!*b) continue;
    check_sizes(op, b == &b_ih_in ? "bias_ih" : "bias_hh", **b, "(G,)", {G});
    bias = bias.defined() ? bias + **b : (*b)->to(at::kFloat);
  }
  const TiledWeights tw = pack_tiles(w_ih, w_hh, bias, H, gates(kind));
  return {tw.w, tw.bias};
}

// x (B, I), h and c (L, B, H); w, bias: L of lstm_step_pack's; weight_peephole: L (3, H) for peephole, else none.
// Returns y (B, H) (the last layer's h_t, its own tensor), h_t and c_t (L, B, H).
std::tuple<Tensor, Tensor, Tensor> lstm_step(int64_t kind, const Tensor& x_in, const Tensor& h_in, const Tensor& c_in,
                                             at::TensorList w, at::TensorList bias, at::TensorList peep_in) {
  const char* op = "lstm_step";
  check_kind_and_type(op, kind, x_in);
  TORCH_CHECK(kind != kLayerNorm && x_in.scalar_type() == at::kFloat, "rnnkit_fused.lstm_step: runs float32 lstm (0), "
              "peephole (1) and cifg (2), got kind ", kind, ", ", x_in.scalar_type());
  TORCH_CHECK(x_in.dim() == 2 && h_in.dim() == 3 && c_in.dim() == 3, "rnnkit_fused.lstm_step: x must be (B, I), h "
              "and c (L, B, H), got ", sizes_string(x_in.sizes()), ", ", sizes_string(h_in.sizes()), " and ",
              sizes_string(c_in.sizes()));
  const Tensor x = x_in.contiguous(), h = h_in.to(at::kFloat).contiguous(), c = c_in.to(at::kFloat).contiguous();
  const int64_t L = c.size(0), B = x.size(0), I = x.size(1), H = c.size(2), NG = gates(kind);
  const int64_t nb = Vectorized<float>::size(), blocks = (H + nb - 1) / nb;
  check_sizes(op, "c", c, "(L, B, H)", {L, B, H});
  check_sizes(op, "h", h, "(L, B, H)", {L, B, H});
  TORCH_CHECK(int64_t(w.size()) == L && int64_t(bias.size()) == L, "rnnkit_fused.lstm_step: w and bias must hold L = ",
              L, " layers' lstm_step_pack results, got ", w.size(), " and ", bias.size());
  TORCH_CHECK(int64_t(peep_in.size()) == (kind == kPeephole ? L : 0), "rnnkit_fused.lstm_step: weight_peephole must "
              "hold ", kind == kPeephole ? L : 0, " tensors (3, H) for kind ", kind, ", got ", peep_in.size());
  std::vector<Tensor> peep;
  for (int64_t k = 0; k < L; ++k) {
    const std::string wk = "w[" + std::to_string(k) + "]", bk = "bias[" + std::to_string(k) + "]";
    check_sizes(op, wk.c_str(), w[k], "(blocks, I + H, gates, NB) of lstm_step_pack", {blocks, (k ? H : I) + H, NG, nb});
    check_sizes(op, bk.c_str(), bias[k], "(blocks, gates, NB) of lstm_step_pack", {blocks, NG, nb});
    TORCH_CHECK(w[k].scalar_type() == at::kFloat && bias[k].scalar_type() == at::kFloat && w[k].is_contiguous() &&
                bias[k].is_contiguous(), "rnnkit_fused.lstm_step: ", wk, " and ", bk, " must be lstm_step_pack's "
                "float32 tensors");
    if (kind == kPeephole) {
      peep.push_back(peep_in[k].to(at::kFloat).contiguous());
      check_sizes(op, "weight_peephole", peep.back(), "(3, H)", {3, H});
    }
  }
  const auto opt = x.options();
  Tensor y = at::empty({B, H}, opt), h_out = at::empty({L, B, H}, opt), c_out = at::empty({L, B, H}, opt);
  for (int64_t k = 0; k < L; ++k) {
    float* h_next = h_out.data_ptr<float>() + k * B * H;
    const TiledWeights tw{w[k], bias[k], blocks, nb, NG, k ? H : I, H};
    const TileStep s{k ? h_out.data_ptr<float>() + (k - 1) * B * H : x.data_ptr<float>(), nullptr,
                     h.data_ptr<float>() + k * B * H, c.data_ptr<float>() + k * B * H,
                     kind == kPeephole ? peep[k].data_ptr<float>() : nullptr, nullptr, h_next,
                     c_out.data_ptr<float>() + k * B * H, k == L - 1 ? y.data_ptr<float>() : h_next};
    dispatch_kind(kind, [&](auto kc) {
      constexpr int K = decltype(kc)::value;
      if constexpr (K != kLayerNorm) tiled_step<K>(tw, false, B, H, s);
    });
  }
  return {y, h_out, c_out};
}

}  // namespace
}  // namespace rnnkit_fused

// Registered as plain (catch-all) kernels: the autograd.Function calls them with grad mode off.
TORCH_LIBRARY(rnnkit_fused, m) {
  m.def(
      "lstm_forward(int kind, Tensor gx, Tensor h0, Tensor c0, Tensor weight_hh, Tensor? bias_hh, "
      "Tensor? weight_hr, Tensor? weight_peephole, Tensor? mask, bool training, str gemm, Tensor[] ln, "
      "float eps) -> (Tensor out, Tensor h, Tensor c, Tensor acts, Tensor tcs, Tensor hs, Tensor cs, Tensor ms, "
      "Tensor x_hat_hh, Tensor rstd_hh, Tensor mean_c, Tensor rstd_c, Tensor mean_ih, Tensor rstd_ih)",
      TORCH_FN(rnnkit_fused::lstm_forward));
  m.def(
      "lstm_backward(int kind, Tensor grad_out, Tensor grad_h, Tensor grad_c, Tensor weight_hh, Tensor acts, "
      "Tensor tcs, Tensor cs, Tensor? weight_hr, Tensor? weight_peephole, Tensor? mask, str gemm, "
      "Tensor[] ln) -> (Tensor grad_gx, Tensor grad_h0, Tensor grad_c0, Tensor grad_h_new, Tensor grad_raw, "
      "Tensor grad_ln_hh_weight, Tensor grad_ln_hh_bias, Tensor grad_ln_c_weight, Tensor grad_ln_c_bias, "
      "Tensor grad_ln_ih_weight, Tensor grad_ln_ih_bias)",
      TORCH_FN(rnnkit_fused::lstm_backward));
  m.def(
      "lstm_forward_tiled(int kind, Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor? bias_ih, "
      "Tensor weight_hh, Tensor? bias_hh, Tensor? weight_peephole, Tensor? mask, str gemm) -> (Tensor out, "
      "Tensor h, Tensor c)",
      TORCH_FN(rnnkit_fused::lstm_forward_tiled));
  m.def(
      "lstm_step_pack(int kind, Tensor weight_ih, Tensor? bias_ih, Tensor weight_hh, Tensor? bias_hh) -> (Tensor w, "
      "Tensor bias)",
      TORCH_FN(rnnkit_fused::lstm_step_pack));
  m.def(
      "lstm_step(int kind, Tensor x, Tensor h, Tensor c, Tensor[] w, Tensor[] bias, Tensor[] weight_peephole) -> "
      "(Tensor y, Tensor h, Tensor c)",
      TORCH_FN(rnnkit_fused::lstm_step));
  m.def("packed_gemm_status() -> str", TORCH_FN(rnnkit_fused::packed_gemm_status));
  m.def("brgemm_status() -> str", TORCH_FN(rnnkit_fused::brgemm_status));
  m.def("bf16_gemm_status() -> str", TORCH_FN(rnnkit_fused::bf16_gemm_status));
}
