// The gate math of each LSTM kind on one vector of hidden units, forward and backward, and the
// pointwise pass of one row that runs it. A new kind is one more case in Gates (and its number in
// Kind and in ../extension.py's KINDS); the loops in lstm.cpp do not change.
//
//   lstm      i, f, g, o = sigma, sigma, tanh, sigma of the pre-activations;  c = f c_{t-1} + i g
//   peephole  i and f also read w_ci c_{t-1}, w_cf c_{t-1}; o reads w_co c_t
//   cifg      f, g, o (i = 1 - f);  c = f c_{t-1} + (1 - f) g
//   all       m = o tanh(c)  (layer norm: o tanh(LN_c(c)), in layer_norm.h)
#pragma once

#include "vec.h"

namespace rnnkit_fused {

enum Kind : int64_t { kLSTM = 0, kPeephole = 1, kCIFG = 2, kLayerNorm = 3 };

// Gates per hidden unit: G = gates(K) * H.
constexpr int64_t gates(int64_t kind) { return kind == kCIFG ? 3 : 4; }

template <typename T, int K>
struct Gates {
  using V = Vectorized<T>;
  using A = Act<T>;
  static constexpr int count = static_cast<int>(gates(K));
  static constexpr int o = count - 1;  // index of the output gate

  // a: in the pre-activations, out the activated gates (packed as the weights: i|f|g|o, cifg f|g|o);
  // cp = c_{t-1}; w = the peepholes w_ci, w_cf, w_co (peephole only). Returns c_t.
  static V forward(V* a, const V& cp, const V* w) {
    const V one(T(1));
    if constexpr (K == kCIFG) {
      a[0] = A::sigmoid(a[0]);
      a[1] = A::tanh(a[1]);
      a[2] = A::sigmoid(a[2]);
      return a[0] * cp + (one - a[0]) * a[1];
    } else {
      if constexpr (K == kPeephole) {
        a[0] = a[0] + w[0] * cp;
        a[1] = a[1] + w[1] * cp;
      }
      a[0] = A::sigmoid(a[0]);
      a[1] = A::sigmoid(a[1]);
      a[2] = A::tanh(a[2]);
      const V c = a[1] * cp + a[0] * a[2];
      if constexpr (K == kPeephole) a[3] = a[3] + w[2] * c;
      a[3] = A::sigmoid(a[3]);
      return c;
    }
  }

  // Backward through m = o * t, t = tanh(c~): returns da_o, sets dtc = dL/dc~ (through the tanh).
  static V output_backward(const V& dm, const V& t, const V& o_act, V& dtc) {
    const V one(T(1));
    dtc = dm * o_act * (one - t * t);
    return dm * t * (o_act * (one - o_act));
  }

  // dL/dc_t from the step above (dc), the output path (dtc) and, with peepholes, o's w_co c_t.
  static V cell_grad(const V& dc, const V& dtc, const V& da_o, const V* w) {
    V dct = dc + dtc;
    if constexpr (K == kPeephole) dct = dct + da_o * w[2];
    return dct;
  }

  // Backward through c_t = f c_{t-1} + ...: given dct = dL/dc_t, writes da of every gate but o and
  // returns dL/dc_{t-1}.
  static V cell_backward(const V* a, const V& cp, const V& dct, const V* w, V* da) {
    const V one(T(1));
    if constexpr (K == kCIFG) {
      const V f = a[0], g = a[1];
      da[0] = dct * (cp - g) * (f * (one - f));
      da[1] = dct * (one - f) * (one - g * g);
      return dct * f;
    } else {
      const V i = a[0], f = a[1], g = a[2];
      da[0] = dct * g * (i * (one - i));
      da[1] = dct * cp * (f * (one - f));
      da[2] = dct * i * (one - g * g);
      V dcp = dct * f;
      if constexpr (K == kPeephole) dcp = dcp + da[0] * w[0] + da[1] * w[1];
      return dcp;
    }
  }

  // The peepholes at these lanes (peephole only; w_ci, w_cf, w_co rows of peep (3, H)).
  static void load_peepholes(const Lanes<T>& l, const T* peep, int64_t H, V* w) {
    if constexpr (K == kPeephole) {
      for (int k = 0; k < 3; ++k) w[k] = l.ld(peep + k * H);
    }
  }
};

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
    using Gk = Gates<T, K>;
    const V zero(T(0));
    for_lanes<T>(j0, j1, [&](const Lanes<T>& l) {
      V a[Gk::count], w[3];
      for (int k = 0; k < Gk::count; ++k) a[k] = l.ld(gx + k * H) + l.ld(gh + k * H);
      Gk::load_peepholes(l, peep, H, w);
      const V cp = l.ld(c_prev);
      const V c = Gk::forward(a, cp, w);
      if (act) {
        for (int k = 0; k < Gk::count; ++k) l.st(a[k], act + k * H);
      }
      const V t = Act<T>::tanh(c);
      const V mv = a[Gk::o] * t;
      if (tc) l.st(t, tc);
      l.st(active ? c : cp, c_next);
      if (proj) {
        l.st(mv, m);
      } else {
        l.st(active ? mv : l.ld(h_prev), m);  // m is h_t's row here
        l.st(active ? mv : zero, out);
      }
    });
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
  const T* c_now;   // (H) c_t (peephole only: w_co reads it)
  T* dpeep;         // (3, H) peephole only: this thread's running sums of da_i c_{t-1}, da_f c_{t-1}, da_o c_t

  void operator()(int64_t H, int64_t j0, int64_t j1) const {
    using V = Vectorized<T>;
    using Gk = Gates<T, K>;
    for_lanes<T>(j0, j1, [&](const Lanes<T>& l) {
      V a[Gk::count], d[Gk::count], w[3], dtc;
      for (int k = 0; k < Gk::count; ++k) a[k] = l.ld(act + k * H);
      Gk::load_peepholes(l, peep, H, w);
      const V cp = l.ld(c_prev);
      const V dmv = dm ? l.ld(dm) : l.ld(dh) + l.ld(gout);
      d[Gk::o] = Gk::output_backward(dmv, l.ld(tc), a[Gk::o], dtc);
      const V dct = Gk::cell_grad(l.ld(dc), dtc, d[Gk::o], w);
      l.st(Gk::cell_backward(a, cp, dct, w, d), dc);
      for (int k = 0; k < Gk::count; ++k) l.st(d[k], da + k * H);
      if constexpr (K == kPeephole) {  // dw_ci, dw_cf, dw_co: summed here while the operands are in registers
        l.st(at::vec::fmadd(d[0], cp, l.ld(dpeep)), dpeep);
        l.st(at::vec::fmadd(d[1], cp, l.ld(dpeep + H)), dpeep + H);
        l.st(at::vec::fmadd(d[3], l.ld(c_now), l.ld(dpeep + 2 * H)), dpeep + 2 * H);
      }
    });
  }
};

}  // namespace rnnkit_fused
