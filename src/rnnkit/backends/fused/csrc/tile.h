// The tiled inference step (float32, lstm / peephole / cifg without projection): per step and per block
// of NB = Vectorized<float>::size() hidden units, the tile gx_t + b_hh + h_{t-1} W_hh^T of all gates of
// the block (rows x gates x NB) accumulates in registers, and the gates, c_t and h_t are computed on it
// at once: no (B, G) product goes through memory, and each block's weights are read from one contiguous
// slab. Blocks are split over threads; each thread runs every row of its blocks.
//
// The micro-kernel is ours, at::vec FMAs (8 floats under AVX2, 16 under AVX-512), not
// at::native::cpublas::brgemm: see brgemm_status() for why.
#pragma once

#include <ATen/ATen.h>
#include <ATen/native/CPUBlas.h>

#include <vector>

#include "gates.h"

namespace rnnkit_fused {

// W_hh (G, R), gates packed k*H + j, as slabs: packed[blk][r][k][v] = W_hh[k*H + blk*NB + v][r], zero
// past H; bias (G) or none as bias_packed[blk][k][v].
struct TiledWeights {
  at::Tensor w;     // (blocks, R, gates, NB)
  at::Tensor bias;  // (blocks, gates, NB), zeros without a bias
  int64_t blocks, nb, gates;
};

inline TiledWeights pack_tiles(const at::Tensor& w_hh, const std::optional<at::Tensor>& bias, int64_t H,
                               int64_t gates) {
  const int64_t nb = Vectorized<float>::size();
  const int64_t blocks = (H + nb - 1) / nb;
  const int64_t R = w_hh.size(1);
  // (gates, H, R) -> zero-pad H to blocks * nb -> (gates, blocks, nb, R) -> (blocks, R, gates, nb)
  at::Tensor w = at::zeros({gates, blocks * nb, R}, w_hh.options());
  w.narrow(1, 0, H).copy_(w_hh.view({gates, H, R}));
  w = w.view({gates, blocks, nb, R}).permute({1, 3, 0, 2}).contiguous();
  at::Tensor b = at::zeros({gates, blocks * nb}, w_hh.options());
  if (bias) b.narrow(1, 0, H).copy_(bias->view({gates, H}));
  b = b.view({gates, blocks, nb}).permute({1, 0, 2}).contiguous();
  return {w, b, blocks, nb, gates};
}

// The gates of row b on its tile a (the pre-activations of the block's lanes l): c_t, h_t and the output,
// a finished row (active[b] false) keeping its state and writing zeros.
template <int K>
inline void gates_on_tile(Vectorized<float>* a, const Lanes<float>& l, int64_t b, int64_t H, int64_t R,
                          const Vectorized<float>* pw, const float* h_prev, const float* c_prev, const bool* active,
                          float* h_next, float* c_next, float* out) {
  using V = Vectorized<float>;
  const bool on = active ? active[b] : true;
  const V cp = l.ld(c_prev + b * H);
  const V c = Gates<float, K>::forward(a, cp, pw);
  const V h = a[Gates<float, K>::o] * Act<float>::tanh(c);
  l.st(on ? c : cp, c_next + b * H);
  l.st(on ? h : l.ld(h_prev + b * R), h_next + b * R);
  l.st(on ? h : V(0.f), out + b * R);
}

// One step of MR rows (b0 .. b0 + MR - 1) and one block: the tile, then the gates on it.
template <int K, int MR>
inline void tile_rows(const TiledWeights& tw, int64_t blk, int64_t b0, int64_t H, int64_t R, const float* gx,
                      const float* h_prev, const float* c_prev, const float* peep, const bool* active, float* h_next,
                      float* c_next, float* out) {
  using V = Vectorized<float>;
  using Gk = Gates<float, K>;
  constexpr int NG = Gk::count;
  const int64_t G = NG * H;
  const int64_t j = blk * tw.nb;
  const Lanes<float> l{j, std::min<int64_t>(tw.nb, H - j)};
  const float* wb = tw.w.data_ptr<float>() + blk * R * NG * tw.nb;
  const float* bb = tw.bias.data_ptr<float>() + blk * NG * tw.nb;
  V acc[MR][NG];
  for (int m = 0; m < MR; ++m) {
    for (int k = 0; k < NG; ++k) acc[m][k] = l.ld(gx + (b0 + m) * G + k * H) + V::loadu(bb + k * tw.nb);
  }
  const float* h_rows[MR];
  for (int m = 0; m < MR; ++m) h_rows[m] = h_prev + (b0 + m) * R;
  for (int64_t r = 0; r < R; ++r) {
    const float* wr = wb + r * NG * tw.nb;
    V w[NG];
    for (int k = 0; k < NG; ++k) w[k] = V::loadu(wr + k * tw.nb);
    for (int m = 0; m < MR; ++m) {
      const V h(h_rows[m][r]);
      for (int k = 0; k < NG; ++k) acc[m][k] = at::vec::fmadd(h, w[k], acc[m][k]);
    }
  }
  V pw[3];
  Gk::load_peepholes(l, peep, H, pw);
  for (int m = 0; m < MR; ++m) {
    gates_on_tile<K>(acc[m], l, b0 + m, H, R, pw, h_prev, c_prev, active, h_next, c_next, out);
  }
}

// The same block with the tile from at::native::cpublas::brgemm (C = h_{t-1} (B, R) x slab (R, gates*NB)
// into a per-thread buffer), then the gates on it.
template <int K>
inline void brgemm_block(const TiledWeights& tw, int64_t blk, int64_t B, int64_t H, int64_t R, const float* gx,
                         const float* h_prev, const float* c_prev, const float* peep, const bool* active,
                         float* h_next, float* c_next, float* out, float* tile) {
  using V = Vectorized<float>;
  using Gk = Gates<float, K>;
  constexpr int NG = Gk::count;
  const int64_t G = NG * H, N = NG * tw.nb;
  const int64_t j = blk * tw.nb;
  const Lanes<float> l{j, std::min<int64_t>(tw.nb, H - j)};
  at::native::cpublas::brgemm(B, N, R, R, N, N, false, h_prev, tw.w.data_ptr<float>() + blk * R * N, tile);
  const float* bb = tw.bias.data_ptr<float>() + blk * N;
  V pw[3];
  Gk::load_peepholes(l, peep, H, pw);
  for (int64_t b = 0; b < B; ++b) {
    V a[NG];
    for (int k = 0; k < NG; ++k) {
      a[k] = l.ld(gx + b * G + k * H) + V::loadu(bb + k * tw.nb) + V::loadu(tile + b * N + k * tw.nb);
    }
    gates_on_tile<K>(a, l, b, H, R, pw, h_prev, c_prev, active, h_next, c_next, out);
  }
}

// One step of every row and block: h_next, c_next and out (B, H), from gx_t (B, G).
template <int K>
void tiled_step(const TiledWeights& tw, bool brgemm, int64_t B, int64_t H, const float* gx, const float* h_prev,
                const float* c_prev, const float* peep, const bool* active, float* h_next, float* c_next,
                float* out) {
  constexpr int MR = Gates<float, K>::count == 3 ? 4 : 3;  // 12 accumulators: 12 of the 16 vector registers
  const int64_t R = H;
  const int64_t grain = B * H < 8192 ? tw.blocks : 1;  // tiny problems (the tests) stay on one thread
  at::parallel_for(0, tw.blocks, grain, [&](int64_t blk0, int64_t blk1) {
    if (brgemm) {
      thread_local std::vector<float> tile;
      tile.resize(B * tw.gates * tw.nb);
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        brgemm_block<K>(tw, blk, B, H, R, gx, h_prev, c_prev, peep, active, h_next, c_next, out, tile.data());
      }
      at::native::cpublas::brgemm_release(false);
      return;
    }
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      int64_t b = 0;
      for (; b + MR <= B; b += MR) {
        tile_rows<K, MR>(tw, blk, b, H, R, gx, h_prev, c_prev, peep, active, h_next, c_next, out);
      }
      for (; b < B; ++b) tile_rows<K, 1>(tw, blk, b, H, R, gx, h_prev, c_prev, peep, active, h_next, c_next, out);
    }
  });
}

}  // namespace rnnkit_fused
