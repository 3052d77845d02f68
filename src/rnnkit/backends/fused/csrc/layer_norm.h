// Layer norm over one row, forward and backward, and the layer-norm LSTM's pointwise passes:
//   pre = LN_ih(x_t W_ih^T) + b_ih + b_hh + LN_hh(h_{t-1} W_hh^T),  gates and c_t as the plain LSTM,
//   m = o * tanh(LN_c(c_t))
// Each row is one unit of work: LN_ih and LN_hh reduce over the row's 4H values, LN_c over its H.
// LN_ih normalizes the raw input projection here, per step, so the layer forms no normalized (T, B, 4H) copy.
// LNFwdRow serves training and float64 (it saves what backward needs); LNInferRow is float32 inference's pass 2
// of the tiled step (tile.h's tiled_raw is pass 1): both biases and both LN biases in one vector, only o kept,
// the statistics summed in four independent chains.
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>

#include "gates.h"

namespace rnnkit_fused {

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
  V s_g(T(0)), s_gx(T(0));
  for_lanes<T>(0, n, [&](const Lanes<T>& l) {  // a partial load zero-fills: the sums stay exact
    const V d = l.ld(dy), x = l.ld(x_hat);
    const V g = d * l.ld(gain);
    s_g = s_g + g;
    s_gx = s_gx + g * x;
    l.st(l.ld(dgain) + d * x, dgain);
    l.st(l.ld(dbias) + d, dbias);
  });
  const auto add = [](const V& a, const V& b) { return a + b; };
  const V r(rstd), mg(at::vec::vec_reduce_all<T>(add, s_g) / T(n)), mgx(at::vec::vec_reduce_all<T>(add, s_gx) / T(n));
  at::vec::map3<T>([&](const V& d, const V& g, const V& x) { return r * (d * g - mg - x * mgx); }, dx, dy, gain,
                   x_hat, n);
}

// Forward of one whole row.
template <typename T>
struct LNFwdRow {
  const T* gx;       // (G) x_t W_ih^T, raw
  const T* g_ih;     // (G) LN_ih gain
  const T* b_ih;     // (G) LN_ih bias + b_ih
  const T* raw;      // (G) h_{t-1} W_hh^T
  const T* bias;     // (G) b_hh, or null
  const T* g_hh;     // (G) LN_hh gain
  const T* b_hh;     // (G) LN_hh bias
  const T* g_c;      // (H) LN_c gain
  const T* b_c;      // (H) LN_c bias
  const T* c_prev;   // (H)
  const T* h_prev;   // (R) only read without projection, for a finished row
  T* act;            // (G) activated gates (a scratch row in inference)
  T* mean_ih;        // (1) or null (inference): backward recomputes LN_ih's x_hat from gx
  T* rstd_ih;        // (1) or null (inference)
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
    using Gk = Gates<T, kLSTM>;
    const V zero(T(0));
    const auto [mean_x, rs_x] = mean_rstd(gx, 4 * H, eps);
    if (rstd_ih) {
      *mean_ih = mean_x;
      *rstd_ih = rs_x;
    }
    const auto [mean_h, rs_h] = mean_rstd(raw, 4 * H, eps);
    if (rstd_hh) *rstd_hh = rs_h;
    const V mx(mean_x), rx(rs_x), mh(mean_h), rh(rs_h);
    for_lanes<T>(0, H, [&](const Lanes<T>& l) {
      V a[4];
      for (int k = 0; k < 4; ++k) {
        const V xh = (l.ld(raw + k * H) - mh) * rh;
        if (xhat_hh) l.st(xh, xhat_hh + k * H);
        const V gn = l.ld(b_ih + k * H) + (l.ld(gx + k * H) - mx) * rx * l.ld(g_ih + k * H);
        const V gxb = bias ? gn + l.ld(bias + k * H) : gn;
        a[k] = gxb + (l.ld(b_hh + k * H) + xh * l.ld(g_hh + k * H));
      }
      const V cp = l.ld(c_prev);
      const V c = Gk::forward(a, cp, nullptr);
      for (int k = 0; k < 4; ++k) l.st(a[k], act + k * H);
      l.st(c, xhat_c);
      l.st(active ? c : cp, c_next);
    });
    const auto [mean_c_, rs_c] = mean_rstd(static_cast<const T*>(xhat_c), H, eps);
    if (rstd_c) {
      *mean_c = mean_c_;
      *rstd_c = rs_c;
    }
    const V mc(mean_c_), rc(rs_c);
    for_lanes<T>(0, H, [&](const Lanes<T>& l) {
      const V xc = (l.ld(xhat_c) - mc) * rc;
      l.st(xc, xhat_c);
      const V t = Act<T>::tanh(l.ld(b_c) + xc * l.ld(g_c));
      if (tc) l.st(t, tc);
      const V mv = l.ld(act + 3 * H) * t;
      if (proj) {
        l.st(mv, m);
      } else {
        l.st(active ? mv : l.ld(h_prev), m);
        l.st(active ? mv : zero, out);
      }
    });
  }
};

// Sums over x (n) with four independent chains of vector adds: one chain (at::vec::reduce_all) waits on the
// add's latency at every vector, ~3x slower over a row of 4H floats.
template <typename T>
T sum4(const T* x, int64_t n) {
  using V = Vectorized<T>;
  constexpr int64_t w = V::size();
  V s[4] = {V(T(0)), V(T(0)), V(T(0)), V(T(0))};
  int64_t j = 0;
  for (; j + 4 * w <= n; j += 4 * w) {
    for (int k = 0; k < 4; ++k) s[k] = s[k] + V::loadu(x + j + k * w);
  }
  for (; j < n; j += w) s[0] = s[0] + V::loadu(x + j, std::min(w, n - j));  // a partial load zero-fills
  const auto add = [](const V& a, const V& b) { return a + b; };
  return at::vec::vec_reduce_all<T>(add, (s[0] + s[1]) + (s[2] + s[3]));
}

// sum over x (n) of (x - mean)^2, four chains as sum4.
template <typename T>
T sum_sq_dev4(const T* x, int64_t n, T mean) {
  using V = Vectorized<T>;
  constexpr int64_t w = V::size();
  const V m(mean);
  V s[4] = {V(T(0)), V(T(0)), V(T(0)), V(T(0))};
  int64_t j = 0;
  for (; j + 4 * w <= n; j += 4 * w) {
    for (int k = 0; k < 4; ++k) {
      const V d = V::loadu(x + j + k * w) - m;
      s[k] = at::vec::fmadd(d, d, s[k]);
    }
  }
  for (; j < n; j += w) {
    const int64_t cnt = std::min(w, n - j);
    const V d = V::loadu(x + j, cnt) - m;
    s[0] = s[0] + V::set(V(T(0)), d * d, cnt);  // the zero-filled lanes would add mean^2
  }
  const auto add = [](const V& a, const V& b) { return a + b; };
  return at::vec::vec_reduce_all<T>(add, (s[0] + s[1]) + (s[2] + s[3]));
}

// Mean and 1 / sqrt(var + eps) of x (n), two passes (as mean_rstd), four chains each.
template <typename T>
std::pair<T, T> mean_rstd4(const T* x, int64_t n, T eps) {
  const T mean = sum4(x, n) / T(n);
  return {mean, T(1) / std::sqrt(sum_sq_dev4(x, n, mean) / T(n) + eps)};
}

// Inference of one whole row, pass 2 of the tiled step (tile.h's tiled_raw is pass 1): nothing is saved, so
// the gates are not stored (only o, for the output) and a finished row only keeps its state:
//
//   pre  = LN_ih(gx) + LN_hh(raw) + beta,  beta = ln_ih_bias + b_ih + ln_hh_bias + b_hh (one vector, G)
//        = (gx - mean_ih) * rstd_ih * g_ih + (raw - mean_hh) * rstd_hh * g_hh + beta
//   c_t  as the plain LSTM;  h_t = o * tanh(LN_c(c_t)), LN_c's mean summed in the gate pass
//
// Passes over the row: two over gx and two over raw (their statistics), the gate pass (c_t to c_next, o to
// o_buf), one over c_t (its variance), the output pass.
template <typename T>
struct LNInferRow {
  const T* gx;      // (G) x_t W_ih^T, raw
  const T* raw;     // (G) h_{t-1} W_hh^T
  const T* g_ih;    // (G) LN_ih gain
  const T* g_hh;    // (G) LN_hh gain
  const T* beta;    // (G) ln_ih_bias + b_ih + ln_hh_bias + b_hh
  const T* g_c;     // (H) LN_c gain
  const T* b_c;     // (H) LN_c bias
  const T* c_prev;  // (H)
  const T* h_prev;  // (H)
  T* o_buf;         // (H) scratch: the output gate
  T* c_next;        // (H)
  T* h_next;        // (H)
  T* out;           // (H)
  bool active;
  T eps;

  void operator()(int64_t H) const {
    using V = Vectorized<T>;
    using Gk = Gates<T, kLSTM>;
    if (!active) {  // a finished row keeps its state and outputs zeros
      std::copy(c_prev, c_prev + H, c_next);
      std::copy(h_prev, h_prev + H, h_next);
      std::fill(out, out + H, T(0));
      return;
    }
    const int64_t G = 4 * H;
    const auto [mean_x, rs_x] = mean_rstd4(gx, G, eps);
    const auto [mean_h, rs_h] = mean_rstd4(raw, G, eps);
    const V mx(mean_x), rx(rs_x), mh(mean_h), rh(rs_h);
    V sum_c(T(0));
    for_lanes<T>(0, H, [&](const Lanes<T>& l) {
      V a[4];
      for (int k = 0; k < 4; ++k) {
        const V nx = (l.ld(gx + k * H) - mx) * l.ld(g_ih + k * H);
        const V nh = (l.ld(raw + k * H) - mh) * l.ld(g_hh + k * H);
        a[k] = at::vec::fmadd(nh, rh, at::vec::fmadd(nx, rx, l.ld(beta + k * H)));
      }
      const V c = Gk::forward(a, l.ld(c_prev), nullptr);
      // past H, a partial load zero-filled every input (gains and beta too): a = 0 there, so c = 0.5 * 0 +
      // 0.5 * tanh(0) = 0 exactly, and the sum holds the row's H values only
      sum_c = sum_c + c;
      l.st(c, c_next);
      l.st(a[Gk::o], o_buf);
    });
    const T mean_c = at::vec::vec_reduce_all<T>([](const V& a, const V& b) { return a + b; }, sum_c) / T(H);
    const T rs_c = T(1) / std::sqrt(sum_sq_dev4(static_cast<const T*>(c_next), H, mean_c) / T(H) + eps);
    const V mc(mean_c), rc(rs_c);
    for_lanes<T>(0, H, [&](const Lanes<T>& l) {
      const V t = Act<T>::tanh(at::vec::fmadd((l.ld(c_next) - mc) * rc, l.ld(g_c), l.ld(b_c)));
      const V m = l.ld(o_buf) * t;
      l.st(m, h_next);
      l.st(m, out);
    });
  }
};

// Backward of one whole active row: the gate pass with LN_c's backward in it, then LN_hh's backward,
// da -> d(raw), then LN_ih's backward, da -> d gx (in place: da holds d(x_t W_ih^T) when it returns).
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
  const T* gx;       // (G) x_t W_ih^T, raw: LN_ih's x_hat is recomputed from it
  T mean_ih;
  T rstd_ih;
  const T* g_ih;     // (G) LN_ih gain
  T* da;             // (G) gradient of the pre-activation gates, then of x_t W_ih^T
  T* draw;           // (G) gradient of h_{t-1} W_hh^T
  T* scratch;        // (3H + G) gradient of LN_c(c_t), LN_c's dx, LN_c's x_hat, LN_ih's x_hat
  T* dc;             // (H) in: dL/dc_t from step t+1; out: dL/dc_{t-1}
  T* sums;           // (4G + 2H) this thread's sums: d ln_hh_weight, d ln_hh_bias, d ln_c_weight, d ln_c_bias,
                     // d ln_ih_weight, d ln_ih_bias

  void operator()(int64_t H) const {
    using V = Vectorized<T>;
    using Gk = Gates<T, kLSTM>;
    T* dcn = scratch;
    T* dcc = scratch + H;
    T* xhat_c = scratch + 2 * H;
    const int64_t G = 4 * H;
    const V mc(mean_c), rc(rstd_c);
    for_lanes<T>(0, H, [&](const Lanes<T>& l) {
      const V d = dm ? l.ld(dm) : l.ld(dh) + l.ld(gout);
      V dtc;
      l.st(Gk::output_backward(d, l.ld(tc), l.ld(act + 3 * H), dtc), da + 3 * H);
      l.st(dtc, dcn);
      l.st((l.ld(c) - mc) * rc, xhat_c);
    });
    layer_norm_backward(static_cast<const T*>(dcn), g_c, static_cast<const T*>(xhat_c), rstd_c, dcc, sums + 2 * G,
                        sums + 2 * G + H, H);
    for_lanes<T>(0, H, [&](const Lanes<T>& l) {
      V a[4], d[4];
      for (int k = 0; k < 3; ++k) a[k] = l.ld(act + k * H);
      l.st(Gk::cell_backward(a, l.ld(c_prev), l.ld(dc) + l.ld(dcc), nullptr, d), dc);
      for (int k = 0; k < 3; ++k) l.st(d[k], da + k * H);
    });
    layer_norm_backward(static_cast<const T*>(da), g_hh, xhat_hh, rstd_hh, draw, sums, sums + G, G);
    T* xhat_ih = scratch + 3 * H;
    const V mx(mean_ih), rx(rstd_ih);
    for_lanes<T>(0, G, [&](const Lanes<T>& l) { l.st((l.ld(gx) - mx) * rx, xhat_ih); });
    // in place: layer_norm_backward reads all of dy before it writes dx, element by element
    layer_norm_backward(static_cast<const T*>(da), g_ih, static_cast<const T*>(xhat_ih), rstd_ih, da,
                        sums + 2 * G + 2 * H, sums + 3 * G + 2 * H, G);
  }
};

}  // namespace rnnkit_fused
