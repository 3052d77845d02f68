// y = x w^T (+ bias) for x (B, K), w (N, K): the per-step GEMMs of the loops.
//
// `mkldnn::_linear_pointwise` with the weight packed once per call by `mkldnn::_reorder_linear_weight`
// (private ops of torch, looked up through the dispatcher, checked by `packed_gemm_status`); float64
// and any machine without them use at::addmm.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/CPUBlas.h>

#include <optional>
#include <string>

namespace rnnkit_fused {

using at::Tensor;

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

}  // namespace rnnkit_fused
