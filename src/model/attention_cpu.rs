//! The attention of the CPU in f32, forward and backward, fused and tiled over queries.
//!
//! Each task takes one head and a block of `BLOCK` queries: it multiplies them with the
//! keys, exponentiates the scores row by row in place ([`kernels::exp_row`]), multiplies them
//! with the values and divides each output row by its scores' sum (`depth` divisions where a
//! softmax first would make `keys`), all in one scratch buffer of `block × keys` scores that
//! stays in the cache. Nothing of `queries × keys` size is ever allocated, and the tasks run
//! in parallel with single-threaded matrix products (the `gemm` crate that candle's matmul
//! uses), where candle's batched matmul parallelises each small product on its own, zero-fills
//! every output and leaves the softmax between them to a second parallel pass.
//!
//! The backward pass recomputes each block's probabilities instead of keeping them (as
//! flash-attention does), in one pass per row from the largest score and the sum the forward
//! pass found ([`kernels::probabilities_row`]), and runs one task per head, which owns that
//! head's key and value gradients: `dV += Pᵀ dO`, `dS = scale · P ∘ (dO Vᵀ − rowsum(dO Vᵀ ∘
//! P))`, `dQ = dS K`, `dK += dSᵀ Q`.

use std::cell::RefCell;

use gemm::Parallelism;
use rayon::prelude::*;

use super::kernels;

/// Queries a task takes at most: 128 rows of 1024 keys' scores are 512 KiB, within a core's L2
/// cache; larger blocks repack the keys and values for fewer products (128 was faster than 64
/// by 3-9 % at 64 px, `train_step` child, three alternating runs).
const BLOCK: usize = 128;

/// One attention call on contiguous split heads: queries [heads, queries, depth], keys and
/// values [heads, keys, depth].
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    /// Heads times batch.
    pub heads: usize,
    /// Queries a head has.
    pub queries: usize,
    /// Keys (and values) a head has.
    pub keys: usize,
    /// Channels of a head.
    pub depth: usize,
    /// The factor of the scores before the softmax.
    pub scale: f32,
    /// Whether query `i` sees keys `0..=i` only.
    pub causal: bool,
    /// Queries a task takes at most (at most `BLOCK` are used).
    pub block: usize,
}

/// A matrix view on a slice: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// `rows × cols` values stored row by row.
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose (no copy).
    fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// `c = a·b`, or `c += a·b` with `add`; `c` holds `a.rows × b.cols` values row by row.
fn product(c: &mut [f32], a: Mat, b: Mat, add: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions of a product");
    assert!(c.len() >= a.rows * b.cols, "product's output too short");
    if a.rows == 0 || b.cols == 0 {
        return;
    }
    for m in [a, b] {
        let last = (m.rows - 1) * m.rs + m.cols.saturating_sub(1) * m.cs;
        assert!(m.cols == 0 || last < m.data.len(), "product's operand too short");
    }
    if a.cols == 0 {
        if !add {
            c[..a.rows * b.cols].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every index gemm reads or writes within the slices.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            c.as_mut_ptr(),
            1,
            b.cols as isize,
            add,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

thread_local! {
    /// Each thread's score buffer, kept between tasks.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of at least `len` values (their contents are
/// left over from earlier tasks).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

impl Attention {
    fn block(&self) -> usize {
        self.block.clamp(1, BLOCK)
    }

    /// The keys query `query` sees (all but the masked ones).
    fn valid(&self, query: usize) -> usize {
        if self.causal { (query + 1).min(self.keys) } else { self.keys }
    }

    /// `s` = the scores of the queries `q` of one head over its keys `k`.
    fn scores(&self, q: &[f32], k: &[f32], s: &mut [f32]) {
        product(s, Mat::rows(q, q.len() / self.depth, self.depth), Mat::rows(k, self.keys, self.depth).t(), false);
    }

    /// The output [heads, queries, depth], and the statistics of each query's softmax
    /// [heads, queries, 2] that [`Self::backward`] takes: its largest score and the inverse
    /// of its sum.
    pub fn forward(&self, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (d, nk) = (self.depth, self.keys);
        let mut out = vec![0f32; self.heads * self.queries * d];
        let mut stats = vec![0f32; self.heads * self.queries * 2];
        if out.is_empty() || nk == 0 {
            return (out, stats);
        }
        let block = self.block();
        let heads = out.par_chunks_mut(self.queries * d).zip(stats.par_chunks_mut(self.queries * 2));
        heads.enumerate().for_each(|(h, (out, stats))| {
            let (q, k, v) = (self.head(q, self.queries, h), self.head(k, nk, h), self.head(v, nk, h));
            let blocks = out.par_chunks_mut(block * d).zip(stats.par_chunks_mut(block * 2));
            blocks.enumerate().for_each(|(i, (out, stats))| {
                let rows = out.len() / d;
                with_scratch(rows * nk, |e| {
                    self.scores(&q[i * block * d..][..rows * d], k, e);
                    for (r, (row, stat)) in e.chunks_exact_mut(nk).zip(stats.chunks_exact_mut(2)).enumerate() {
                        let (top, sum) = kernels::exp_row(row, self.valid(i * block + r), self.scale);
                        stat.copy_from_slice(&[top, 1.0 / sum]);
                    }
                    product(out, Mat::rows(e, rows, nk), Mat::rows(v, nk, d), false);
                    for (row, stat) in out.chunks_exact_mut(d).zip(stats.chunks_exact(2)) {
                        row.iter_mut().for_each(|x| *x *= stat[1]);
                    }
                });
            });
        });
        (out, stats)
    }

    /// The gradients of the queries, keys and values from the output's gradient `grad` and
    /// the statistics [`Self::forward`] returned.
    pub fn backward(&self, q: &[f32], k: &[f32], v: &[f32], grad: &[f32], stats: &[f32]) -> [Vec<f32>; 3] {
        let (d, nq, nk) = (self.depth, self.queries, self.keys);
        let mut dq = vec![0f32; self.heads * nq * d];
        let mut dk = vec![0f32; self.heads * nk * d];
        let mut dv = vec![0f32; self.heads * nk * d];
        if dq.is_empty() || dk.is_empty() {
            return [dq, dk, dv];
        }
        assert_eq!(stats.len(), self.heads * nq * 2, "attention statistics of another shape");
        let block = self.block();
        let heads = dq.par_chunks_mut(nq * d).zip(dk.par_chunks_mut(nk * d)).zip(dv.par_chunks_mut(nk * d));
        heads.enumerate().for_each(|(h, ((dq, dk), dv))| {
            let (q, k, v, grad) =
                (self.head(q, nq, h), self.head(k, nk, h), self.head(v, nk, h), self.head(grad, nq, h));
            let stats = &stats[h * nq * 2..][..nq * 2];
            with_scratch(2 * block * nk, |scratch| {
                let (p, ds) = scratch.split_at_mut(block * nk);
                for (i, dq) in dq.chunks_mut(block * d).enumerate() {
                    let rows = dq.len() / d;
                    let (p, ds) = (&mut p[..rows * nk], &mut ds[..rows * nk]);
                    let (q, g) = (&q[i * block * d..][..rows * d], &grad[i * block * d..][..rows * d]);
                    self.scores(q, k, p);
                    for (r, (row, stat)) in
                        p.chunks_exact_mut(nk).zip(stats[i * block * 2..].chunks_exact(2)).enumerate()
                    {
                        kernels::probabilities_row(row, self.valid(i * block + r), self.scale, stat[0], stat[1]);
                    }
                    product(dv, Mat::rows(p, rows, nk).t(), Mat::rows(g, rows, d), true);
                    product(ds, Mat::rows(g, rows, d), Mat::rows(v, nk, d).t(), false);
                    for (p, ds) in p.chunks_exact(nk).zip(ds.chunks_exact_mut(nk)) {
                        kernels::softmax_backward_row(p, ds, self.scale);
                    }
                    product(dq, Mat::rows(ds, rows, nk), Mat::rows(k, nk, d), false);
                    product(dk, Mat::rows(ds, rows, nk).t(), Mat::rows(q, rows, d), true);
                }
            });
        });
        [dq, dk, dv]
    }

    /// Head `h` of `x` [heads, n, depth].
    fn head<'a>(&self, x: &'a [f32], n: usize, h: usize) -> &'a [f32] {
        &x[h * n * self.depth..][..n * self.depth]
    }
}
