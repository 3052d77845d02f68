// y = x w^T (+ bias) for x (B, K), w (N, K): the per-step GEMMs of the loops, in one of five ways (GemmMode):
//
//   packed  `mkldnn::_linear_pointwise` with the weight packed once per call by `mkldnn::_reorder_linear_weight`
//           (private ops of torch, looked up through the dispatcher, checked by `packed_gemm_status`); float32
//   addmm   at::addmm: float64, and any machine without the packed ops
//   gemv    rnnkit's own kernel for a few rows (batch 1 training and generation): the weight stored once per
//           call as column slabs, x's rows broadcast against them in registers (gemv_rows). One oneDNN call per
//           step costs more than a batch-1 product's arithmetic (section "Issue 30: batch 1" of
//           docs/results.md); this one is a plain function call into a loop of FMAs. float32 and float64.
//   bf16    float32 loops under CPU bf16 autocast, on a CPU with bf16 instructions (AVX-512 BF16, AMX): w
//           converted to bf16 and packed (VNNI) once per call, x's rows converted to bf16 each step, the
//           product accumulated and returned in float32 by `at::native::cpublas::brgemm` (bf16 x bf16 -> f32,
//           oneDNN's micro-kernel; checked by `bf16_gemm_status`). The pointwise math stays float32.
//   bf16-emulated  the same numbers on any CPU: w and x rounded to bf16 (round to nearest even, as the
//           conversion above) and multiplied by at::addmm in float32. A product of two bf16 values is exact in
//           float32 (8 + 8 significant bits), so this differs from `bf16` only in the order of the float32
//           sums; it is how the bf16 path is tested on CPUs without bf16 instructions (correct, slower).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/CPUBlas.h>

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <optional>
#include <string>
#include <type_traits>

#include "vec.h"

namespace rnnkit_fused {

using at::Tensor;

enum class GemmMode { kAddmm, kPacked, kGemv, kBf16, kBf16Emulated };

inline bool is_bf16(GemmMode mode) { return mode == GemmMode::kBf16 || mode == GemmMode::kBf16Emulated; }

// x rounded to bf16 and back (round to nearest even, as at::Tensor::to(at::kBFloat16)): what a bf16 operand
// holds, as a float.
inline float round_bf16(float x) { return static_cast<float>(c10::BFloat16(x)); }

// The bf16 route's weights: w (N, K) as bf16 column blocks of NB columns for cpublas::brgemm, each in the VNNI
// layout its micro-kernel reads, pairs of k interleaved: block[k / 2][n][k % 2]. cpublas::pack writes it where
// it can (AMX CPUs); elsewhere (AVX-512 BF16 without AMX) it is written here. K is padded to Kp, a multiple of 2,
// with zero rows, N to blocks * NB with zero columns. bf16_gemm_status checks the result against at::mm.
struct Bf16Weights {
  static constexpr int64_t NB = 64;  // columns per block: one brgemm call each, blocks split over threads
  static constexpr int64_t MB = 32;  // rows of x per brgemm call
  Tensor packed;                     // (blocks, Kp * NB) bf16
  int64_t blocks = 0, N = 0, K = 0, Kp = 0;
};

// w (N, K) with any strides (the backward passes W_hh^T as a view).
inline Bf16Weights pack_bf16(const Tensor& w) {
  Bf16Weights bw;
  bw.N = w.size(0);
  bw.K = w.size(1);
  bw.Kp = (bw.K + 1) / 2 * 2;
  bw.blocks = (bw.N + Bf16Weights::NB - 1) / Bf16Weights::NB;
  const int64_t np = bw.blocks * Bf16Weights::NB;
  Tensor wt = at::zeros({bw.Kp, np}, w.options().dtype(at::kBFloat16));  // w^T (Kp, np), zero-padded
  wt.narrow(0, 0, bw.K).narrow(1, 0, bw.N).copy_(w.t());
  bw.packed = at::empty({bw.blocks, bw.Kp * Bf16Weights::NB}, wt.options());
  const auto* src = wt.data_ptr<at::BFloat16>();
  auto* dst = bw.packed.data_ptr<at::BFloat16>();
  constexpr int64_t NB = Bf16Weights::NB;
  const bool cpublas_pack = at::native::cpublas::could_pack(at::kBFloat16);
  for (int64_t blk = 0; blk < bw.blocks; ++blk) {
    at::BFloat16* out = dst + blk * bw.Kp * NB;
    if (cpublas_pack) {
      at::native::cpublas::pack(bw.Kp, NB, np, NB, at::kBFloat16, at::kBFloat16, src + blk * NB, out);
      continue;
    }
    for (int64_t k = 0; k < bw.Kp; ++k) {
      for (int64_t n = 0; n < NB; ++n) out[(k / 2) * NB * 2 + n * 2 + k % 2] = src[k * np + blk * NB + n];
    }
  }
  return bw;
}

// y (B, N) = x_bf16 (B, Kp) w^T on the packed blocks, float32 accumulation; c (B, blocks * NB) float32 scratch,
// bias (N) or null. Blocks are split over threads, each thread releasing the micro-kernel's hardware state (AMX
// tiles) when its share is done; a product under 2^16 multiply-adds stays on the calling thread.
inline void gemm_bf16(const Bf16Weights& bw, const at::BFloat16* x, float* c, const float* bias, float* y,
                      int64_t B) {
  constexpr int64_t NB = Bf16Weights::NB, MB = Bf16Weights::MB;
  const int64_t np = bw.blocks * NB;
  const int64_t grain = B * bw.N * bw.K < (int64_t(1) << 16) ? bw.blocks : 1;
  at::parallel_for(0, bw.blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const at::BFloat16* wb = bw.packed.data_ptr<at::BFloat16>() + blk * bw.Kp * NB;
      for (int64_t m0 = 0; m0 < B; m0 += MB) {
        at::native::cpublas::brgemm(std::min(MB, B - m0), NB, bw.Kp, bw.Kp, NB, np, false, x + m0 * bw.Kp, wb,
                                    c + m0 * np + blk * NB);
      }
    }
    at::native::cpublas::brgemm_release();
  });
  for (int64_t b = 0; b < B; ++b) {  // the padded columns dropped, the bias added
    const float* cr = c + b * np;
    float* yr = y + b * bw.N;
    if (bias) {
      for (int64_t n = 0; n < bw.N; ++n) yr[n] = cr[n] + bias[n];
    } else {
      std::copy(cr, cr + bw.N, yr);
    }
  }
}

// The gemv kernel's weights: w (N, K) as slabs of NG * nb output columns (nb = the vector width), column
// n = (s * NG + g) * nb + v at packed[s][k][g][v], zero past N: one slab is K * NG * nb contiguous values, read
// front to back. The bias (N) or none as bias[s][g][v].
struct GemvWeights {
  static constexpr int NG = 4;  // column vectors per slab: 4 FMAs per broadcast of x
  Tensor w;     // (slabs, K, NG, nb)
  Tensor bias;  // (slabs, NG, nb), or undefined
  int64_t slabs = 0, nb = 0, N = 0, K = 0;
};

// w (N, K) with any strides: the backward passes W_hh^T as the view w_hh.t(), whose columns are then contiguous
// rows of W_hh, so no transposed copy is made first (a 1 MB strided copy cost ~5% of a batch-1 training step).
template <typename T>
void pack_gemv_into(const Tensor& w, T* dst, int64_t slabs, int64_t width) {
  const int64_t N = w.size(0), K = w.size(1), sn = w.stride(0), sk = w.stride(1);
  const T* src = w.data_ptr<T>();
  for (int64_t s = 0; s < slabs; ++s) {
    const int64_t n0 = s * width, cnt = std::max<int64_t>(0, std::min<int64_t>(width, N - n0));
    T* slab = dst + s * K * width;  // (K, width)
    if (sn == 1) {  // the slab's columns are contiguous in w: one run of cnt values per k
      for (int64_t k = 0; k < K; ++k) {
        std::copy(src + n0 + k * sk, src + n0 + k * sk + cnt, slab + k * width);
        std::fill(slab + k * width + cnt, slab + (k + 1) * width, T(0));
      }
    } else {  // a row of w per column: read along k, write with stride width
      for (int64_t c = 0; c < width; ++c) {
        if (c < cnt) {
          const T* row = src + (n0 + c) * sn;
          for (int64_t k = 0; k < K; ++k) slab[k * width + c] = row[k * sk];
        } else {
          for (int64_t k = 0; k < K; ++k) slab[k * width + c] = T(0);
        }
      }
    }
  }
}

inline GemvWeights pack_gemv(const Tensor& w, const std::optional<Tensor>& bias) {
  GemvWeights gw;
  gw.N = w.size(0);
  gw.K = w.size(1);
  const bool f64 = w.scalar_type() == at::kDouble;
  gw.nb = f64 ? Vectorized<double>::size() : Vectorized<float>::size();
  const int64_t width = GemvWeights::NG * gw.nb;
  gw.slabs = (gw.N + width - 1) / width;
  gw.w = at::empty({gw.slabs, gw.K, GemvWeights::NG, gw.nb}, w.options());
  if (f64) {
    pack_gemv_into<double>(w, gw.w.data_ptr<double>(), gw.slabs, width);
  } else {
    pack_gemv_into<float>(w, gw.w.data_ptr<float>(), gw.slabs, width);
  }
  if (bias) {
    Tensor b = at::zeros({gw.slabs * width}, w.options());
    b.narrow(0, 0, gw.N).copy_(*bias);
    gw.bias = b;
  }
  return gw;
}

// y[m] (+)= x[m] w^T over slab s, for MR rows: the MR x NG vectors of the slab's columns accumulate in registers
// (MR = 3: 12 accumulators of the 16 AVX2 vector registers), then go to y (ld values a row), the columns past N
// left alone. Never inlined, as tile.h's tile_rows: inlined into the caller's loop GCC may spill the accumulators.
template <typename T, int MR>
C10_NOINLINE void gemv_rows(const GemvWeights& gw, int64_t s, const T* x, int64_t ldx, T* y, int64_t ldy) {
  using V = Vectorized<T>;
  constexpr int NG = GemvWeights::NG;
  constexpr int64_t nb = V::size();
  const int64_t K = gw.K;
  const T* slab = gw.w.data_ptr<T>() + s * K * NG * nb;  // (K, NG, nb)
  V acc[MR][NG];
  for (int k = 0; k < NG; ++k) {
    const V b = gw.bias.defined() ? V::loadu(gw.bias.data_ptr<T>() + (s * NG + k) * nb) : V(T(0));
    for (int m = 0; m < MR; ++m) acc[m][k] = b;
  }
  for (int64_t r = 0; r < K; ++r) {
    const T* wr = slab + r * NG * nb;
    V w[NG];
    for (int k = 0; k < NG; ++k) w[k] = V::loadu(wr + k * nb);
    for (int m = 0; m < MR; ++m) {
      const V xv(x[m * ldx + r]);
      for (int k = 0; k < NG; ++k) acc[m][k] = at::vec::fmadd(xv, w[k], acc[m][k]);
    }
  }
  for (int k = 0; k < NG; ++k) {
    const int64_t n = (s * NG + k) * nb;
    if (n >= gw.N) break;
    const int64_t cnt = std::min<int64_t>(nb, gw.N - n);
    for (int m = 0; m < MR; ++m) {
      if (cnt == nb) {
        acc[m][k].store(y + m * ldy + n);
      } else {
        acc[m][k].store(y + m * ldy + n, cnt);
      }
    }
  }
}

// y (B, N) = x (B, K) w^T (+ bias), both row-major and contiguous. Slabs are split over threads (each thread
// keeps the same slabs every step, so at batch 1 its share of the weights can stay in its own L2), rows go in
// groups of 3; a product under 2^16 multiply-adds (the tests' shapes) stays on the calling thread.
template <typename T>
void gemv(const GemvWeights& gw, const T* x, T* y, int64_t B) {
  constexpr int MR = 3;
  const int64_t grain = B * gw.N * gw.K < (int64_t(1) << 16) ? gw.slabs : 1;
  at::parallel_for(0, gw.slabs, grain, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      int64_t b = 0;
      for (; b + MR <= B; b += MR) gemv_rows<T, MR>(gw, s, x + b * gw.K, gw.K, y + b * gw.N, gw.N);
      if (B - b == 2) gemv_rows<T, 2>(gw, s, x + b * gw.K, gw.K, y + b * gw.N, gw.N);
      if (B - b == 1) gemv_rows<T, 1>(gw, s, x + b * gw.K, gw.K, y + b * gw.N, gw.N);
    }
  });
}

using LinearPointwiseFn = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, std::string_view,
                                 c10::List<std::optional<at::Scalar>>, std::optional<std::string_view>);

inline const c10::OperatorHandle& linear_pointwise_op() {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  return op;
}

// The typed call is the cheap one; if this torch registered the op with other C++ types, the
// boxed call still works.
inline const std::optional<c10::TypedOperatorHandle<LinearPointwiseFn>>& linear_pointwise_typed() {
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

inline Tensor reorder_linear_weight(const Tensor& w, int64_t batch) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_reorder_linear_weight", "");
  torch::jit::Stack stack{w, c10::IValue(batch)};
  op.callBoxed(stack);
  return stack[0].toTensor();
}

inline Tensor linear_pointwise(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias) {
  const auto& typed = linear_pointwise_typed();
  if (typed) {
    return typed->call(x, w, bias, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
  }
  torch::jit::Stack stack{x, w, bias ? c10::IValue(*bias) : c10::IValue(), c10::IValue(std::string("none")),
                          c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue()};
  linear_pointwise_op().callBoxed(stack);
  return stack[0].toTensor();
}

// One per-step product of a loop, y = x w^T (+ bias) for x (batch, K), formed as `mode` says (packed, bf16 and
// bf16-emulated: float32 only).
// w (N, K) may be a transposed view (the backward's W_hh^T). Called with a pointer to x's rows (contiguous), it
// returns a pointer to y's (batch, N) contiguous rows, valid until the call after next (the backward reads dh_t
// while computing dh_{t-1}).
class Linear {
 public:
  Linear(const Tensor& w, const std::optional<Tensor>& bias, int64_t batch, GemmMode mode)
      : bias_(bias), mode_(mode), batch_(batch), K_(w.size(1)) {
    TORCH_CHECK(!is_bf16(mode_) || w.scalar_type() == at::kFloat, "rnnkit_fused: the bf16 GEMMs run float32 "
                "loops, got ", w.scalar_type());
    if (mode_ == GemmMode::kPacked) {
      w_ = reorder_linear_weight(w.contiguous(), batch);
      return;
    }
    if (mode_ == GemmMode::kGemv) {
      gemv_ = pack_gemv(w, bias);
    } else if (mode_ == GemmMode::kBf16) {
      bf16_ = pack_bf16(w);
      x_bf16_ = at::zeros({batch, bf16_.Kp}, w.options().dtype(at::kBFloat16));  // the pad column stays zero
      c_ = at::empty({batch, bf16_.blocks * Bf16Weights::NB}, w.options());
    } else if (mode_ == GemmMode::kBf16Emulated) {
      w_t_ = w.to(at::kBFloat16).to(at::kFloat).t();  // (K, N): the bf16 weight's values
      x_round_ = at::empty({batch, K_}, w.options());
    } else {
      w_t_ = w.t();
    }
    buf_[0] = at::empty({batch, w.size(0)}, w.options());
    buf_[1] = at::empty({batch, w.size(0)}, w.options());
  }

  template <typename T>
  T* operator()(const T* x) {
    Tensor& y = buf_[next_];
    next_ ^= 1;
    if (mode_ == GemmMode::kGemv) {
      gemv<T>(gemv_, x, y.data_ptr<T>(), batch_);
      return y.data_ptr<T>();
    }
    if constexpr (std::is_same_v<T, float>) {
      if (mode_ == GemmMode::kBf16) {
        at::BFloat16* xb = x_bf16_.data_ptr<at::BFloat16>();
        const int64_t kp = bf16_.Kp;
        for (int64_t b = 0; b < batch_; ++b) {
          for (int64_t k = 0; k < K_; ++k) xb[b * kp + k] = at::BFloat16(x[b * K_ + k]);
        }
        gemm_bf16(bf16_, xb, c_.data_ptr<float>(), bias_ ? bias_->data_ptr<float>() : nullptr, y.data_ptr<float>(),
                  batch_);
        return y.data_ptr<T>();
      }
      if (mode_ == GemmMode::kBf16Emulated) {
        float* xr = x_round_.data_ptr<float>();
        for (int64_t k = 0; k < batch_ * K_; ++k) xr[k] = round_bf16(x[k]);
        x = xr;  // then addmm, as below
      }
    }
    const Tensor xt = at::from_blob(const_cast<T*>(x), {batch_, K_}, at::TensorOptions(c10::CppTypeToScalarType<T>()));
    if (mode_ == GemmMode::kPacked) {
      y = linear_pointwise(xt, w_, bias_).contiguous();  // held here until the call after next
    } else if (bias_) {
      at::addmm_out(y, *bias_, xt, w_t_);
    } else {
      at::mm_out(y, xt, w_t_);
    }
    return y.data_ptr<T>();
  }

 private:
  Tensor w_, w_t_;
  std::optional<Tensor> bias_;
  GemmMode mode_;
  int64_t batch_, K_;
  GemvWeights gemv_;
  Bf16Weights bf16_;
  Tensor x_bf16_, c_, x_round_;  // bf16: x in bf16 and the padded float32 product; bf16-emulated: x rounded
  Tensor buf_[2];
  int next_ = 0;
};

// "" when the packed oneDNN GEMM is usable here, else the reason it is not. Checks that the private
// ops exist and that a small packed product equals addmm.
inline std::string packed_gemm_status() {
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

// "" when at::native::cpublas::brgemm runs float32 here and agrees with at::mm, else the reason it does
// not. The tiled kernel (tile.h) does not call it: this says, in `rnnkit info`, whether it could.
inline std::string brgemm_status() {
  try {
    const int64_t M = 4, N = 16, K = 32;
    const Tensor a = at::arange(M * K, at::kFloat).reshape({M, K}).sin();
    const Tensor b = at::arange(K * N, at::kFloat).reshape({K, N}).cos();
    Tensor c = at::zeros({M, N}, at::kFloat);
    at::native::cpublas::brgemm(M, N, K, K, N, N, false, a.data_ptr<float>(), b.data_ptr<float>(),
                                c.data_ptr<float>());
    at::native::cpublas::brgemm_release(false);
    if (!at::allclose(c, at::mm(a, b), 1e-4, 1e-4)) return "cpublas::brgemm (float32) disagrees with at::mm";
  } catch (const std::exception& e) {
    std::string what = e.what();
    return "cpublas::brgemm (float32) failed: " + what.substr(0, what.find('\n'));
  }
  return "";
}

// "" when the bf16 route (cpublas::pack + cpublas::brgemm, bf16 x bf16 -> float32) runs here and agrees with
// at::mm of the bf16-rounded operands, else the reason it does not. On CPUs without bf16 instructions oneDNN's
// micro-kernel refuses bf16 (the loops then run float32, or bf16-emulated where RNNKIT_BF16_GEMM=1 asks). A
// wrong guess of the VNNI layout above would show here as a disagreement, and the loops would not use it.
inline std::string bf16_gemm_status() {
  try {
    // two blocks of rows (MB), a partial block of columns (NB), an odd K (padded to even)
    const int64_t M = Bf16Weights::MB + 5, N = Bf16Weights::NB + 6, K = 33;
    const Tensor x = at::arange(M * K, at::kFloat).reshape({M, K}).sin();
    const Tensor w = at::arange(N * K, at::kFloat).reshape({N, K}).cos();
    const Tensor b = at::arange(N, at::kFloat).sin();
    Linear linear(w, b, M, GemmMode::kBf16);
    const Tensor got = at::from_blob(linear(x.data_ptr<float>()), {M, N}, at::kFloat).clone();
    const auto r = [](const Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); };
    const Tensor expected = at::addmm(b, r(x), r(w).t());
    if (!at::allclose(got, expected, 1e-4, 1e-4)) return "cpublas::brgemm (bf16) disagrees with at::mm";
  } catch (const std::exception& e) {
    std::string what = e.what();
    return "cpublas::brgemm (bf16) failed: " + what.substr(0, what.find('\n'));
  }
  return "";
}

}  // namespace rnnkit_fused
