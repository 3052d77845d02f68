// Vector lanes and activations of the C++ loops (at::vec::Vectorized: 8 floats under AVX2, 16 under
// AVX-512, as CPU_CAPABILITY says), and the split of a step's pointwise work over threads.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

namespace rnnkit_fused {

using at::vec::Vectorized;

// Activations. float: exp_u20, a polynomial exp (max error ~20 ulp) that is ~2.7x faster than Sleef's;
// tanh(x) = 1 - 2 / (exp(2x) + 1), absolute error ~1e-7. exp_u20 clamps its input, which turns a NaN into
// a finite number, so a NaN input is put back (as torch's activations give NaN for NaN: a NaN in the data
// must reach the loss, where the Trainer's guard sees it). double: Sleef's 1-ulp exp and tanh (NaN in, NaN
// out), so float64 stays within 1e-10 of the reference.
template <typename T>
struct Act;

template <>
struct Act<float> {
  using V = Vectorized<float>;
  static V sigmoid(const V& x) {
    const V one(1.f);
    return keep_nan(one / (one + x.neg().exp_u20()), x);
  }
  static V tanh(const V& x) {
    const V one(1.f), two(2.f);
    return keep_nan(one - two / ((x * two).exp_u20() + one), x);
  }
  static V keep_nan(const V& y, const V& x) { return V::blendv(y, x, x.isnan()); }
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

// One vector of a row: units [j, j + cnt), cnt < size() only at the row's tail (a partial load
// zero-fills the rest, a partial store leaves it alone).
template <typename T>
struct Lanes {
  using V = Vectorized<T>;
  int64_t j;
  int64_t cnt;
  V ld(const T* p) const { return cnt == V::size() ? V::loadu(p + j) : V::loadu(p + j, cnt); }
  void st(const V& v, T* p) const {
    if (cnt == V::size()) {
      v.store(p + j);
    } else {
      v.store(p + j, cnt);
    }
  }
};

// f(Lanes) for the vectors covering units [j0, j1).
template <typename T, typename F>
inline void for_lanes(int64_t j0, int64_t j1, const F& f) {
  constexpr int64_t n = Vectorized<T>::size();
  for (int64_t j = j0; j < j1; j += n) f(Lanes<T>{j, std::min(n, j1 - j)});
}

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

}  // namespace rnnkit_fused
