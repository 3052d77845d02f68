// The tiled inference step (float32, lstm / peephole / cifg without projection): per step and per block
// of NB = Vectorized<float>::size() hidden units, the tile of all gates of the block (rows x gates x NB)
//
//     a = b_ih + b_hh + x_t W_ih^T + h_{t-1} W_hh^T        (the block's columns of each gate)
//
// accumulates in registers, and the gates, c_t and h_t are computed on it at once: no (B, G) product goes
// through memory, and each block's weights are read from one contiguous slab. The input projection is
// part of the tile (K = I + R rows of the slab) when the loop is given x; given a precomputed
// gx = x W_ih^T + b_ih (T, B, G) instead (I = 0), the tile starts from gx_t, read each step: streaming gx
// through memory costs ~5-10% of the step (design section 4), so the x form is the one the layer runs.
// Blocks are split over threads; each thread runs every row of its blocks. The same step serves generation:
// lstm.cpp's lstm_step runs it once per layer for `Recurrent.step` (batch 1, one token), on slabs packed once.
//
// layernorm_lstm cannot compute its gates on one block's tile (LN_ih and LN_hh need the whole row): its step
// stores the tile h_{t-1} W_hh^T of every block (tiled_raw, pass 1) and normalizes each row after (pass 2, in
// layer_norm.h).
//
// The micro-kernel is ours, at::vec FMAs (8 floats under AVX2, 16 under AVX-512), not
// at::native::cpublas::brgemm: see brgemm_status() for why.
#pragma once

#include <ATen/ATen.h>
#include <ATen/native/CPUBlas.h>

#include <vector>

#include "gates.h"

namespace rnnkit_fused {

// W = [W_ih | W_hh] (G, I + R), gates packed k*H + j (without x: W = W_hh, I = 0), as slabs:
// packed[blk][r][k][v] = W[k*H + blk*NB + v][r], zero past H; the bias b_ih + b_hh (G) or none as
// bias_packed[blk][k][v]. A block's slab is (I + R) * gates * NB floats, its x rows first.
struct TiledWeights {
  at::Tensor w;     // (blocks, I + R, gates, NB)
  at::Tensor bias;  // (blocks, gates, NB), zeros without a bias
  int64_t blocks, nb, gates;
  int64_t I, R;  // the slab's x rows and h rows
};

// w_ih (G, I) or undefined (the caller streams gx), w_hh (G, R), bias (G) or undefined.
inline TiledWeights pack_tiles(const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& bias, int64_t H,
                               int64_t gates) {
  const int64_t nb = Vectorized<float>::size();
  const int64_t blocks = (H + nb - 1) / nb;
  const at::Tensor w_all = w_ih.defined() ? at::cat({w_ih, w_hh}, 1) : w_hh;  // (G, I + R)
  const int64_t K = w_all.size(1);
  // (gates, H, K) -> zero-pad H to blocks * nb -> (gates, blocks, nb, K) -> (blocks, K, gates, nb)
  at::Tensor w = at::zeros({gates, blocks * nb, K}, w_hh.options());
  w.narrow(1, 0, H).copy_(w_all.view({gates, H, K}));
  w = w.view({gates, blocks, nb, K}).permute({1, 3, 0, 2}).contiguous();
  at::Tensor b = at::zeros({gates, blocks * nb}, w_hh.options());
  if (bias.defined()) b.narrow(1, 0, H).copy_(bias.view({gates, H}));
  b = b.view({gates, blocks, nb}).permute({1, 0, 2}).contiguous();
  const int64_t I = w_ih.defined() ? w_ih.size(1) : 0;
  return {w, b, blocks, nb, gates, I, w_hh.size(1)};
}

// One step's inputs and outputs, row-major: x_t (B, I) or gx_t (B, G) (one of the two), h_{t-1} (B, R),
// c_{t-1} (B, H), the peepholes (3, H) or null, active (B) or null; h_t, c_t, out_t (B, H).
struct TileStep {
  const float* x;
  const float* gx;
  const float* h_prev;
  const float* c_prev;
  const float* peep;
  const bool* active;
  float* h_next;
  float* c_next;
  float* out;
};

// acc[m][k] += sum over r in [0, K) of rows[m][r] * slab[r][k][:]: MR rows of one segment (x_t or h_{t-1})
// against K rows of the block's slab. MR x gates accumulators, gates weight vectors, one broadcast.
template <int MR, int NG>
inline void accumulate(Vectorized<float> (&acc)[MR][NG], const float* const (&rows)[MR], const float* slab,
                       int64_t K) {
  using V = Vectorized<float>;
  constexpr int64_t nb = V::size();  // a constant: the slab's rows are addressed with immediate offsets
  for (int64_t r = 0; r < K; ++r) {
    const float* wr = slab + r * NG * nb;
    V w[NG];
    for (int k = 0; k < NG; ++k) w[k] = V::loadu(wr + k * nb);
    for (int m = 0; m < MR; ++m) {
      const V h(rows[m][r]);
      for (int k = 0; k < NG; ++k) acc[m][k] = at::vec::fmadd(h, w[k], acc[m][k]);
    }
  }
}

// The gates of row b on its tile a (the pre-activations of the block's lanes l): c_t, h_t and the output,
// a finished row (active[b] false) keeping its state and writing zeros.
template <int K>
inline void gates_on_tile(Vectorized<float>* a, const Lanes<float>& l, int64_t b, int64_t H, int64_t R,
                          const Vectorized<float>* pw, const TileStep& s) {
  using V = Vectorized<float>;
  const bool on = s.active ? s.active[b] : true;
  const V cp = l.ld(s.c_prev + b * H);
  const V c = Gates<float, K>::forward(a, cp, pw);
  const V h = a[Gates<float, K>::o] * Act<float>::tanh(c);
  l.st(on ? c : cp, s.c_next + b * H);
  l.st(on ? h : l.ld(s.h_prev + b * R), s.h_next + b * R);
  l.st(on ? h : V(0.f), s.out + b * R);
}

// One step of MR rows (b0 .. b0 + MR - 1) and one block: the tile (bias, then gx_t or the x_t rows against
// the slab's first I rows, then the h_{t-1} rows against its last R), then the gates on it. Never inlined:
// inlined into the step's loop, GCC spilled accumulators inside accumulate's loop (2x slower at
// (32,100,128,256)); on its own it keeps the MR x NG tile in registers (check with objdump -d).
template <int K, int MR>
C10_NOINLINE void tile_rows(const TiledWeights& tw, int64_t blk, int64_t b0, int64_t H, const TileStep& s) {
  using V = Vectorized<float>;
  using Gk = Gates<float, K>;
  constexpr int NG = Gk::count;
  const int64_t G = NG * H, I = tw.I, R = tw.R, nb = tw.nb;
  const int64_t j = blk * nb;
  const Lanes<float> l{j, std::min<int64_t>(nb, H - j)};
  const float* slab = tw.w.data_ptr<float>() + blk * (I + R) * NG * nb;  // (I + R, NG, nb)
  const float* bb = tw.bias.data_ptr<float>() + blk * NG * nb;
  V acc[MR][NG];  // (MR, NG, nb): the tile
  for (int m = 0; m < MR; ++m) {
    for (int k = 0; k < NG; ++k) {
      acc[m][k] = V::loadu(bb + k * nb);
      if (s.gx) acc[m][k] = acc[m][k] + l.ld(s.gx + (b0 + m) * G + k * H);
    }
  }
  const float* rows[MR];
  if (I > 0) {
    for (int m = 0; m < MR; ++m) rows[m] = s.x + (b0 + m) * I;
    accumulate<MR, NG>(acc, rows, slab, I);
  }
  for (int m = 0; m < MR; ++m) rows[m] = s.h_prev + (b0 + m) * R;
  accumulate<MR, NG>(acc, rows, slab + I * NG * nb, R);
  V pw[3];
  Gk::load_peepholes(l, s.peep, H, pw);
  for (int m = 0; m < MR; ++m) gates_on_tile<K>(acc[m], l, b0 + m, H, R, pw, s);
}

// The same block with the tile from at::native::cpublas::brgemm (C = x_t (B, I) x slab[:I] (I, gates*NB),
// then += h_{t-1} (B, R) x slab[I:] (R, gates*NB), into a per-thread buffer), then the gates on it.
template <int K>
inline void brgemm_block(const TiledWeights& tw, int64_t blk, int64_t B, int64_t H, const TileStep& s, float* tile) {
  using V = Vectorized<float>;
  using Gk = Gates<float, K>;
  constexpr int NG = Gk::count;
  const int64_t G = NG * H, N = NG * tw.nb, I = tw.I, R = tw.R;
  const int64_t j = blk * tw.nb;
  const Lanes<float> l{j, std::min<int64_t>(tw.nb, H - j)};
  const float* slab = tw.w.data_ptr<float>() + blk * (I + R) * N;
  if (I > 0) at::native::cpublas::brgemm(B, N, I, I, N, N, false, s.x, slab, tile);
  at::native::cpublas::brgemm(B, N, R, R, N, N, I > 0, s.h_prev, slab + I * N, tile);
  const float* bb = tw.bias.data_ptr<float>() + blk * N;
  V pw[3];
  Gk::load_peepholes(l, s.peep, H, pw);
  for (int64_t b = 0; b < B; ++b) {
    V a[NG];
    for (int k = 0; k < NG; ++k) {
      a[k] = V::loadu(bb + k * tw.nb) + V::loadu(tile + b * N + k * tw.nb);
      if (s.gx) a[k] = a[k] + l.ld(s.gx + b * G + k * H);
    }
    gates_on_tile<K>(a, l, b, H, R, pw, s);
  }
}

// The layer-norm kind's products, pass 1 of its two-pass step (LN_ih and LN_hh need the statistics of the
// whole row, so the gates cannot be computed on one block's tile): for MR rows and one block, the tile
//
//     raw = h_{t-1} W_hh^T      (no bias: LN_hh normalizes the product alone, b_hh comes after it)
//
// is stored at raw[b][k*H + blk*NB + v], the (B, G) layout of a GEMM's output. Pass 2 (LNFwdRow,
// layer_norm.h), once every block of a row is done, normalizes the row and computes the gates on it.
template <int MR>
C10_NOINLINE void raw_rows(const TiledWeights& tw, int64_t blk, int64_t b0, int64_t H, const float* h_prev,
                           float* raw) {
  using V = Vectorized<float>;
  constexpr int NG = 4;
  const int64_t G = NG * H, R = tw.R, nb = tw.nb;
  const int64_t j = blk * nb;
  const Lanes<float> l{j, std::min<int64_t>(nb, H - j)};
  const float* slab = tw.w.data_ptr<float>() + blk * R * NG * nb;  // (R, NG, nb)
  V acc[MR][NG];  // (MR, NG, nb): the tile
  for (int m = 0; m < MR; ++m) {
    for (int k = 0; k < NG; ++k) acc[m][k] = V(0.f);
  }
  const float* rows[MR];
  for (int m = 0; m < MR; ++m) rows[m] = h_prev + (b0 + m) * R;
  accumulate<MR, NG>(acc, rows, slab, R);
  for (int m = 0; m < MR; ++m) {
    for (int k = 0; k < NG; ++k) l.st(acc[m][k], raw + (b0 + m) * G + k * H);
  }
}

// raw_rows<n> for n = 1 .. MR rows.
template <int MR>
inline void raw_group(int64_t n, const TiledWeights& tw, int64_t blk, int64_t b0, int64_t H, const float* h_prev,
                      float* raw) {
  if constexpr (MR > 1) {
    if (n < MR) return raw_group<MR - 1>(n, tw, blk, b0, H, h_prev, raw);
  }
  raw_rows<MR>(tw, blk, b0, H, h_prev, raw);
}

// Pass 1 of the layer-norm kind's step for every row and block: raw (B, G) = h_{t-1} (B, R) W_hh^T, the
// weights packed by pack_tiles(undefined, w_hh, undefined, H, 4).
inline void tiled_raw(const TiledWeights& tw, int64_t B, int64_t H, const float* h_prev, float* raw) {
  constexpr int MR = 3;  // 12 accumulators, as tiled_step
  const int64_t grain = B * H < 8192 ? tw.blocks : 1;  // tiny problems (the tests) stay on one thread
  at::parallel_for(0, tw.blocks, grain, [&](int64_t blk0, int64_t blk1) {
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      int64_t b = 0;
      while (b < B) {  // rows grouped as in tiled_step
        const int64_t left = B - b;
        const int64_t n = left == MR + 1 ? MR - 1 : std::min<int64_t>(left, MR);
        raw_group<MR>(n, tw, blk, b, H, h_prev, raw);
        b += n;
      }
    }
  });
}

// tile_rows<K, n> for n = 1 .. MR rows.
template <int K, int MR>
inline void tile_group(int64_t n, const TiledWeights& tw, int64_t blk, int64_t b0, int64_t H, const TileStep& s) {
  if constexpr (MR > 1) {
    if (n < MR) return tile_group<K, MR - 1>(n, tw, blk, b0, H, s);
  }
  tile_rows<K, MR>(tw, blk, b0, H, s);
}

// One step of every row and block: h_t, c_t and out_t (B, H), from x_t (B, I) or gx_t (B, G).
template <int K>
void tiled_step(const TiledWeights& tw, bool brgemm, int64_t B, int64_t H, const TileStep& s) {
  constexpr int MR = Gates<float, K>::count == 3 ? 4 : 3;  // 12 accumulators: 12 of the 16 vector registers
  // tiny problems (the tests) stay on one thread; batch 1 does not (H = 256: 1.3 MB of slabs, which two cores' L2
  // hold between them)
  const int64_t grain = B * (tw.I + tw.R) * tw.gates * H < (int64_t(1) << 16) ? tw.blocks : 1;
  at::parallel_for(0, tw.blocks, grain, [&](int64_t blk0, int64_t blk1) {
    if (brgemm) {
      thread_local std::vector<float> tile;
      tile.resize(B * tw.gates * tw.nb);
      for (int64_t blk = blk0; blk < blk1; ++blk) brgemm_block<K>(tw, blk, B, H, s, tile.data());
      at::native::cpublas::brgemm_release(false);
      return;
    }
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      // rows in groups of MR; MR + 1 rows left go as MR - 1 and 2, fewer than MR as one group: a group of
      // one row runs at about half the FMA rate (one broadcast per NG loads)
      int64_t b = 0;
      while (b < B) {
        const int64_t left = B - b;
        const int64_t n = left == MR + 1 ? MR - 1 : std::min<int64_t>(left, MR);
        tile_group<K, MR>(n, tw, blk, b, H, s);
        b += n;
      }
    }
  });
}

}  // namespace rnnkit_fused
