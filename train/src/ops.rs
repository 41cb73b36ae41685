//! Fused training ops with a backward pass: RMS norm, softmax over the last axis and mean
//! cross-entropy. candle-nn's fused versions have no backward and silently drop gradients; its
//! slow versions are differentiable but make several passes. Each op here is checked against
//! finite differences in the tests below. With `fused` false (training on a GPU, or checking that
//! path on the CPU) and for non-CPU tensors, candle's generic differentiable ops run instead.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

fn to_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// Rows whose work is worth a rayon task.
const ROWS_PER_TASK: usize = 16;

struct RmsNorm {
    eps: f32,
}

impl RmsNorm {
    fn inv_rms(&self, row: &[f32]) -> f32 {
        epas_model::inv_rms(row, self.eps)
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "epas-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "rms_norm")?;
        let w = contiguous_f32(s2, l2, "rms_norm weight")?;
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(o, xs)| {
                for (orow, xrow) in o.chunks_mut(d).zip(xs.chunks(d)) {
                    let r = self.inv_rms(xrow);
                    for ((o, &v), &g) in orow.iter_mut().zip(xrow).zip(w) {
                        *o = v * r * g;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (xs, ws, gs) = (to_vec(x)?, to_vec(w)?, to_vec(grad)?);
        let d = ws.len();
        let mut gx = vec![0f32; xs.len()];
        // Per-task partial sums of the weight gradient, added at the end.
        let partial: Vec<Vec<f32>> = gx
            .par_chunks_mut(d * ROWS_PER_TASK)
            .zip(xs.par_chunks(d * ROWS_PER_TASK))
            .zip(gs.par_chunks(d * ROWS_PER_TASK))
            .map(|((gxc, xc), gc)| {
                let mut gw = vec![0f32; d];
                for ((gxr, xr), gr) in gxc.chunks_mut(d).zip(xc.chunks(d)).zip(gc.chunks(d)) {
                    let r = self.inv_rms(xr);
                    let mut dot = 0f32;
                    for i in 0..d {
                        dot += gr[i] * ws[i] * xr[i];
                        gw[i] += gr[i] * xr[i] * r;
                    }
                    let c = r * r * r * dot / d as f32;
                    for i in 0..d {
                        gxr[i] = r * gr[i] * ws[i] - c * xr[i];
                    }
                }
                gw
            })
            .collect();
        let mut gw = vec![0f32; d];
        for p in partial {
            for (a, b) in gw.iter_mut().zip(p) {
                *a += b;
            }
        }
        Ok((
            Some(Tensor::from_vec(gx, x.shape(), x.device())?),
            Some(Tensor::from_vec(gw, w.shape(), w.device())?),
        ))
    }
}

/// Whether the fused CPU op can take `x`.
fn fusable(fused: bool, x: &Tensor) -> bool {
    fused && x.device().is_cpu() && x.dtype() == DType::F32
}

/// RMS norm over the last axis of `x`, scaled by `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, fused: bool) -> candle_core::Result<Tensor> {
    if !fusable(fused, x) {
        return candle_nn::ops::rms_norm_slow(x, w, eps);
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "epas-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "softmax")?;
        let d = l.dims().last().copied().unwrap_or(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(o, xs)| {
                for (orow, xrow) in o.chunks_mut(d).zip(xs.chunks(d)) {
                    let max = xrow.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &v) in orow.iter_mut().zip(xrow) {
                        *o = (v - max).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    orow.iter_mut().for_each(|o| *o *= inv);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (p, g) = (to_vec(res)?, to_vec(grad)?);
        let d = res.dims().last().copied().unwrap_or(1);
        let mut gx = vec![0f32; p.len()];
        gx.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(p.par_chunks(d * ROWS_PER_TASK))
            .zip(g.par_chunks(d * ROWS_PER_TASK))
            .for_each(|((gxc, pc), gc)| {
                for ((gxr, pr), gr) in gxc.chunks_mut(d).zip(pc.chunks(d)).zip(gc.chunks(d)) {
                    let dot: f32 = pr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for i in 0..d {
                        gxr[i] = pr[i] * (gr[i] - dot);
                    }
                }
            });
        Ok(Some(Tensor::from_vec(gx, res.shape(), res.device())?))
    }
}

/// Softmax over the last axis (`-inf` entries get probability 0).
pub fn softmax_last_dim(x: &Tensor, fused: bool) -> candle_core::Result<Tensor> {
    if !fusable(fused, x) {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    x.contiguous()?.apply_op1(Softmax)
}

struct CrossEntropy;

fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
    max + sum.ln()
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "epas-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let logits = contiguous_f32(s1, l1, "cross_entropy")?;
        let targets = match l2.contiguous_offsets() {
            Some((a, b)) => &s2.as_slice::<u32>()?[a..b],
            None => candle_core::bail!("cross_entropy: targets must be contiguous"),
        };
        let v = l1.dims()[1];
        let n = targets.len();
        if let Some(&bad) = targets.iter().find(|&&t| t as usize >= v) {
            candle_core::bail!("cross_entropy: target {bad} outside the vocabulary of {v}");
        }
        // Collected, then summed in order: the loss must not depend on thread scheduling
        // (a resumed run reproduces an uninterrupted one bit for bit).
        let per_row: Vec<f64> = logits
            .par_chunks(v)
            .zip(targets.par_iter())
            .map(|(row, &t)| (log_sum_exp(row) - row[t as usize]) as f64)
            .collect();
        let total: f64 = per_row.iter().sum();
        Ok((
            CpuStorage::F32(vec![(total / n as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let x = to_vec(logits)?;
        let t = targets.flatten_all()?.to_vec1::<u32>()?;
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let v = logits.dims()[1];
        let scale = g / t.len() as f32;
        let mut gx = vec![0f32; x.len()];
        gx.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .zip(t.par_iter())
            .for_each(|((gr, xr), &target)| {
                let lse = log_sum_exp(xr);
                for (o, &val) in gr.iter_mut().zip(xr) {
                    *o = (val - lse).exp() * scale;
                }
                gr[target as usize] -= scale;
            });
        Ok((
            Some(Tensor::from_vec(gx, logits.shape(), logits.device())?),
            None,
        ))
    }
}

/// Mean cross-entropy of `logits` `(n, vocab)` against `targets` `(n,)` (u32), as a scalar.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    fused: bool,
) -> candle_core::Result<Tensor> {
    if !fusable(fused, logits) {
        return candle_nn::loss::cross_entropy(logits, targets);
    }
    logits
        .contiguous()?
        .apply_op2(&targets.to_dtype(DType::U32)?.contiguous()?, CrossEntropy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut StdRng, shape: (usize, usize)) -> Var {
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        Var::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// Checks d(sum(f(x) * weights))/dx of the op against central differences, in f64 terms.
    fn check_gradient(var: &Var, f: &dyn Fn(&Tensor) -> Tensor, tol: f32) {
        let out = f(var.as_tensor());
        let mut rng = StdRng::seed_from_u64(9);
        let weights: Vec<f32> = (0..out.elem_count())
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let weights = Tensor::from_vec(weights, out.shape(), &Device::Cpu).unwrap();
        let objective = |t: &Tensor| -> f32 {
            (f(t) * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let grads = (f(var.as_tensor()) * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let analytic = to_vec(grads.get(var).expect("gradient reaches the input")).unwrap();
        let base = to_vec(var.as_tensor()).unwrap();
        let h = 1e-2f32;
        for i in (0..base.len()).step_by(7) {
            let mut plus = base.clone();
            plus[i] += h;
            let mut minus = base.clone();
            minus[i] -= h;
            let tp = Tensor::from_vec(plus, var.shape(), &Device::Cpu).unwrap();
            let tm = Tensor::from_vec(minus, var.shape(), &Device::Cpu).unwrap();
            let numeric = (objective(&tp) - objective(&tm)) / (2.0 * h);
            let diff = (numeric - analytic[i]).abs();
            assert!(
                diff <= tol * (1.0 + numeric.abs()),
                "element {i}: numeric {numeric} analytic {}",
                analytic[i]
            );
        }
    }

    #[test]
    fn rms_norm_matches_the_reference_and_its_gradients_are_right() {
        let mut rng = StdRng::seed_from_u64(1);
        let x = random(&mut rng, (37, 19));
        let w = random(&mut rng, (1, 19));
        let w1 = w.as_tensor().flatten_all().unwrap();
        let fast = rms_norm(x.as_tensor(), &w1, 1e-5, true).unwrap();
        let slow = candle_nn::ops::rms_norm_slow(x.as_tensor(), &w1, 1e-5).unwrap();
        let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        let wv = Var::from_tensor(&w1).unwrap();
        let xt = x.as_tensor().clone();
        for fused in [true, false] {
            check_gradient(
                &x,
                &|t| rms_norm(t, wv.as_tensor(), 1e-5, fused).unwrap(),
                2e-2,
            );
            check_gradient(&wv, &|t| rms_norm(&xt, t, 1e-5, fused).unwrap(), 2e-2);
        }
    }

    #[test]
    fn softmax_matches_the_reference_and_its_gradient_is_right() {
        let mut rng = StdRng::seed_from_u64(2);
        let x = random(&mut rng, (23, 41));
        let fast = softmax_last_dim(x.as_tensor(), true).unwrap();
        let slow = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
        let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        for fused in [true, false] {
            check_gradient(&x, &|t| softmax_last_dim(t, fused).unwrap(), 2e-2);
        }
    }

    #[test]
    fn cross_entropy_matches_the_reference_and_its_gradient_is_right() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = random(&mut rng, (29, 53));
        let targets: Vec<u32> = (0..29).map(|_| rng.random_range(0..53)).collect();
        let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
        let fast = cross_entropy(x.as_tensor(), &targets, true).unwrap();
        let slow = candle_nn::loss::cross_entropy(x.as_tensor(), &targets).unwrap();
        let (a, b) = (
            fast.to_scalar::<f32>().unwrap(),
            slow.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        for fused in [true, false] {
            check_gradient(&x, &|t| cross_entropy(t, &targets, fused).unwrap(), 2e-2);
        }
        let bad = Tensor::new(&[53u32], &Device::Cpu).unwrap();
        let one = x.as_tensor().narrow(0, 0, 1).unwrap();
        assert!(cross_entropy(&one, &bad, true).is_err());
    }
}
