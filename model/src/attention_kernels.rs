//! Inner loops of attention over runs of contiguous cache rows. Head widths that are multiples
//! of 16 get fixed-size code the compiler keeps in vector registers: four keys' dot products at
//! once (independent accumulators instead of one latency-bound chain) and two value rows per
//! step. Every key's arithmetic is the same whichever path handles it, so a row's result never
//! depends on how rows are grouped. f16 rows are widened to f32 first (`vcvtph2ps` where the
//! build targets F16C), then take the f32 path's arithmetic.

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod scores_avx512;

use half::f16;

use crate::kv_cache::KvSlice;
use crate::vector_ops::exp_approx;

const LANES: usize = 16;

/// Sum of 16 lanes as a fixed tree (vectorizes; same order everywhere).
#[inline(always)]
fn hsum(mut a: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            a[l] += a[l + w];
        }
        w /= 2;
    }
    a[0]
}

#[inline(always)]
fn dot_lanes<const HD: usize>(q: &[f32; HD], k: &[f32]) -> [f32; LANES] {
    let mut acc = [0f32; LANES];
    for c in 0..HD / LANES {
        for l in 0..LANES {
            acc[l] += q[c * LANES + l] * k[c * LANES + l];
        }
    }
    acc
}

/// Row `j`'s values `off..off + HD` as f32.
#[inline(always)]
fn load_f32<const HD: usize>(run: &[f32], width: usize, off: usize, j: usize) -> [f32; HD] {
    run[j * width + off..][..HD].try_into().expect("head width")
}

#[inline(always)]
fn load_f16<const HD: usize>(run: &[f16], width: usize, off: usize, j: usize) -> [f32; HD] {
    widen(&run[j * width + off..][..HD])
}

/// f16 to f32, eight at a time with F16C when the build targets it.
#[inline(always)]
fn widen<const HD: usize>(src: &[f16]) -> [f32; HD] {
    let mut out = [0f32; HD];
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    if HD.is_multiple_of(16) && src.len() >= HD {
        use std::arch::x86_64::*;
        for c in 0..HD / 16 {
            // SAFETY: the build targets AVX-512F; `src` holds HD values, `out` HD floats.
            unsafe {
                let v = _mm256_loadu_si256(src.as_ptr().add(c * 16) as *const __m256i);
                _mm512_storeu_ps(out.as_mut_ptr().add(c * 16), _mm512_cvtph_ps(v));
            }
        }
        return out;
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "f16c"))]
    if HD.is_multiple_of(8) && src.len() >= HD {
        use std::arch::x86_64::*;
        for c in 0..HD / 8 {
            // SAFETY: the build targets F16C; `src` holds HD values, `out` HD floats.
            unsafe {
                let v = _mm_loadu_si128(src.as_ptr().add(c * 8) as *const __m128i);
                _mm256_storeu_ps(out.as_mut_ptr().add(c * 8), _mm256_cvtph_ps(v));
            }
        }
        return out;
    }
    for (o, s) in out.iter_mut().zip(src) {
        *o = s.to_f32();
    }
    out
}

/// `out[j] = scale * q . row(j)` for the `out.len()` rows that `row` loads.
#[inline(always)]
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "avx512f", not(test)),
    allow(dead_code)
)]
fn scores_fixed<const HD: usize>(
    q: &[f32],
    row: impl Fn(usize) -> [f32; HD],
    scale: f32,
    out: &mut [f32],
) {
    let q: &[f32; HD] = q.try_into().expect("head width");
    let mut j = 0;
    while j + 4 <= out.len() {
        let acc: [[f32; LANES]; 4] = std::array::from_fn(|r| dot_lanes(q, &row(j + r)));
        for (r, a) in acc.into_iter().enumerate() {
            out[j + r] = hsum(a) * scale;
        }
        j += 4;
    }
    while j < out.len() {
        out[j] = hsum(dot_lanes(q, &row(j))) * scale;
        j += 1;
    }
}

fn scores_any(q: &[f32], run: KvSlice<'_>, width: usize, off: usize, scale: f32, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        let k = run
            .slice(j * width + off..j * width + off + q.len())
            .to_f32();
        *o = q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>() * scale;
    }
}

/// Scaled dot products of `q` (one head) with values `off..off + q.len()` of the rows of a run
/// of keys (`width` values per row).
pub(crate) fn scores(
    q: &[f32],
    run: KvSlice<'_>,
    width: usize,
    off: usize,
    scale: f32,
    out: &mut [f32],
) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    macro_rules! fixed {
        ($hd:literal) => {{
            use scores_avx512::{F16Rows, F32Rows};
            let last_end = out.len().checked_sub(1).map(|last| {
                last.checked_mul(width)
                    .and_then(|x| x.checked_add(off + $hd))
                    .unwrap_or(usize::MAX)
            });
            assert!(last_end.is_none_or(|end| end <= run.len()), "key rows");
            // SAFETY: the build targets AVX-512F and the run holds `out.len()` rows of
            // `width` values, each with `off + HD <= width`.
            unsafe {
                match run {
                    KvSlice::F32(run) => {
                        scores_avx512::scores::<$hd>(q, &F32Rows { run, width, off }, scale, out)
                    }
                    KvSlice::F16(run) => {
                        scores_avx512::scores::<$hd>(q, &F16Rows { run, width, off }, scale, out)
                    }
                }
            }
        }};
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    macro_rules! fixed {
        ($hd:literal) => {
            match run {
                KvSlice::F32(r) => {
                    scores_fixed::<$hd>(q, |j| load_f32(r, width, off, j), scale, out)
                }
                KvSlice::F16(r) => {
                    scores_fixed::<$hd>(q, |j| load_f16(r, width, off, j), scale, out)
                }
            }
        };
    }
    match q.len() {
        64 => fixed!(64),
        128 => fixed!(128),
        32 => fixed!(32),
        _ => scores_any(q, run, width, off, scale, out),
    }
}

/// Value rows of even and odd position accumulate separately (two dependency chains instead of
/// one); the pair persists across runs so the sums do not depend on where runs break.
#[inline(always)]
fn apply_fixed<const HD: usize>(
    p: &[f32],
    first: usize,
    row: impl Fn(usize) -> [f32; HD],
    acc: &mut [f32],
) {
    let (even, odd) = acc.split_at_mut(HD);
    let mut a: [f32; HD] = (&*even).try_into().expect("head width");
    let mut b: [f32; HD] = (&*odd).try_into().expect("head width");
    let mut j = 0;
    if !first.is_multiple_of(2) && !p.is_empty() {
        let v = row(0);
        for d in 0..HD {
            b[d] += p[0] * v[d];
        }
        j = 1;
    }
    while j + 2 <= p.len() {
        let (va, vb) = (row(j), row(j + 1));
        for d in 0..HD {
            a[d] += p[j] * va[d];
            b[d] += p[j + 1] * vb[d];
        }
        j += 2;
    }
    if j < p.len() {
        let v = row(j);
        for d in 0..HD {
            a[d] += p[j] * v[d];
        }
    }
    even.copy_from_slice(&a);
    odd.copy_from_slice(&b);
}

fn apply_any(p: &[f32], run: KvSlice<'_>, width: usize, off: usize, acc: &mut [f32]) {
    let hd = acc.len() / 2;
    for (j, &pj) in p.iter().enumerate() {
        let v = run.slice(j * width + off..j * width + off + hd).to_f32();
        for (od, v) in acc[..hd].iter_mut().zip(&v) {
            *od += pj * v;
        }
    }
}

/// Adds `p[j] row_j[off..off + hd]` for the `p.len()` rows of a run of values into `acc`
/// (`2 * hd` floats, zeroed before the first run); `first` is the run's first row index in the
/// whole sequence. After the last run, [`finish_apply`] gives the output.
pub(crate) fn apply(
    p: &[f32],
    first: usize,
    run: KvSlice<'_>,
    width: usize,
    off: usize,
    acc: &mut [f32],
) {
    macro_rules! fixed {
        ($hd:literal) => {
            match run {
                KvSlice::F32(r) => {
                    apply_fixed::<$hd>(p, first, |j| load_f32(r, width, off, j), acc)
                }
                KvSlice::F16(r) => {
                    apply_fixed::<$hd>(p, first, |j| load_f16(r, width, off, j), acc)
                }
            }
        };
    }
    match acc.len() / 2 {
        64 => fixed!(64),
        128 => fixed!(128),
        32 => fixed!(32),
        _ => apply_any(p, run, width, off, acc),
    }
}

/// `out = even + odd` from the accumulators of [`apply`].
pub(crate) fn finish_apply(acc: &[f32], out: &mut [f32]) {
    let (even, odd) = acc.split_at(out.len());
    for ((o, a), b) in out.iter_mut().zip(even).zip(odd) {
        *o = a + b;
    }
}

/// Softmax of a row of scores in place, with 16 partial maxima and sums.
/// Value `i` goes to lane `i % 16` in both passes; whole chunks and the tail run apart so that
/// the lanes stay in registers (a partial chunk in the loop made every step store them).
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in max.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    for (m, &v) in max.iter_mut().zip(chunks.remainder()) {
        *m = if v > *m { v } else { *m };
    }
    let max = max
        .into_iter()
        .fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
    let mut sum = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in sum.iter_mut().zip(chunk.iter_mut()) {
            *v = exp_approx(*v - max);
            *s += *v;
        }
    }
    for (s, v) in sum.iter_mut().zip(chunks.into_remainder()) {
        *v = exp_approx(*v - max);
        *s += *v;
    }
    let inv = 1.0 / hsum(sum);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_random::uniform as lcg;

    #[test]
    fn fixed_width_paths_match_plain_loops() {
        let mut seed = 11;
        for &hd in &[32usize, 64, 128, 48] {
            for &n in &[1usize, 3, 4, 7, 33] {
                let (width, off) = (hd * 3, hd);
                let run: Vec<f32> = (0..n * width).map(|_| lcg(&mut seed)).collect();
                let q: Vec<f32> = (0..hd).map(|_| lcg(&mut seed)).collect();
                let half: Vec<f16> = run.iter().map(|&v| f16::from_f32(v)).collect();
                let rounded: Vec<f32> = half.iter().map(|v| v.to_f32()).collect();
                for (stored, exact) in [
                    (KvSlice::F32(&run), KvSlice::F32(&run)),
                    (KvSlice::F16(&half), KvSlice::F32(&rounded)),
                ] {
                    let (mut got, mut want) = (vec![0f32; n], vec![0f32; n]);
                    scores(&q, stored, width, off, 0.125, &mut got);
                    scores_any(&q, exact, width, off, 0.125, &mut want);
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-5, "{hd}/{n}: {g} vs {w}");
                    }
                    let (mut acc, mut acc_want) = (vec![0.5f32; 2 * hd], vec![0.5f32; 2 * hd]);
                    apply(&want, 0, stored, width, off, &mut acc);
                    apply_any(&want, exact, width, off, &mut acc_want);
                    let (mut o, mut o_want) = (vec![0f32; hd], vec![0f32; hd]);
                    finish_apply(&acc, &mut o);
                    finish_apply(&acc_want, &mut o_want);
                    for (g, w) in o.iter().zip(&o_want) {
                        assert!((g - w).abs() < 1e-5, "{hd}/{n}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_scores_path_gives_the_portable_bits() {
        // The AVX-512 path folds 16 keys at once; each key must still get the portable path's
        // bits (a sequence's output may not depend on the kernel level or on its neighbours).
        let mut seed = 21;
        for &hd in &[32usize, 64, 128] {
            for n in [1usize, 5, 15, 16, 17, 31, 32, 40] {
                let (width, off) = (hd * 3, hd * 2);
                let run: Vec<f32> = (0..n * width).map(|_| lcg(&mut seed)).collect();
                let q: Vec<f32> = (0..hd).map(|_| lcg(&mut seed)).collect();
                let half: Vec<f16> = run.iter().map(|&v| f16::from_f32(v)).collect();
                let mut got = vec![0f32; n];
                let mut want = vec![0f32; n];
                macro_rules! portable {
                    ($hd:literal) => {{
                        scores(&q, KvSlice::F32(&run), width, off, 0.3, &mut got);
                        scores_fixed::<$hd>(&q, |j| load_f32(&run, width, off, j), 0.3, &mut want);
                        assert_eq!(got, want, "f32 {hd}/{n}");
                        scores(&q, KvSlice::F16(&half), width, off, 0.3, &mut got);
                        scores_fixed::<$hd>(&q, |j| load_f16(&half, width, off, j), 0.3, &mut want);
                        assert_eq!(got, want, "f16 {hd}/{n}");
                    }};
                }
                match hd {
                    32 => portable!(32),
                    64 => portable!(64),
                    _ => portable!(128),
                }
            }
        }
    }

    #[test]
    fn softmax_gives_the_bits_of_a_lane_per_index_reference() {
        fn reference(row: &mut [f32]) {
            let mut max = [f32::NEG_INFINITY; LANES];
            for (i, &v) in row.iter().enumerate() {
                max[i % LANES] = if v > max[i % LANES] {
                    v
                } else {
                    max[i % LANES]
                };
            }
            let max = max
                .into_iter()
                .fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
            let mut sum = [0f32; LANES];
            for (i, v) in row.iter_mut().enumerate() {
                *v = exp_approx(*v - max);
                sum[i % LANES] += *v;
            }
            let inv = 1.0 / hsum(sum);
            row.iter_mut().for_each(|v| *v *= inv);
        }
        let mut seed = 4;
        for n in [1usize, 15, 16, 17, 100, 2048] {
            let row: Vec<f32> = (0..n).map(|_| 8.0 * lcg(&mut seed)).collect();
            let (mut got, mut want) = (row.clone(), row);
            softmax_in_place(&mut got);
            reference(&mut want);
            assert_eq!(got, want, "{n} scores");
        }
    }

    #[test]
    fn a_key_scores_the_same_in_a_group_of_four_and_alone() {
        let mut seed = 5;
        let run: Vec<f32> = (0..5 * 64).map(|_| lcg(&mut seed)).collect();
        let q: Vec<f32> = (0..64).map(|_| lcg(&mut seed)).collect();
        let half: Vec<f16> = run.iter().map(|&v| f16::from_f32(v)).collect();
        for stored in [KvSlice::F32(&run), KvSlice::F16(&half)] {
            let mut all = vec![0f32; 5];
            scores(&q, stored, 64, 0, 1.0, &mut all);
            for (j, want) in all.iter().enumerate() {
                let mut one = [0f32];
                scores(&q, stored.slice(j * 64..(j + 1) * 64), 64, 0, 1.0, &mut one);
                assert_eq!(one[0], *want);
            }
        }
    }

    #[test]
    fn apply_does_not_depend_on_where_runs_break() {
        // The paged cache hands rows over in blocks, the contiguous one in one run: the same
        // output bits either way.
        let mut seed = 9;
        let (hd, n) = (64, 37);
        let rows: Vec<f32> = (0..n * hd).map(|_| lcg(&mut seed)).collect();
        let p: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        let half: Vec<f16> = rows.iter().map(|&v| f16::from_f32(v)).collect();
        for stored in [KvSlice::F32(&rows), KvSlice::F16(&half)] {
            let mut whole = vec![0f32; 2 * hd];
            apply(&p, 0, stored, hd, 0, &mut whole);
            for block in [1usize, 3, 4, 16] {
                let mut acc = vec![0f32; 2 * hd];
                for j0 in (0..n).step_by(block) {
                    let j1 = (j0 + block).min(n);
                    apply(
                        &p[j0..j1],
                        j0,
                        stored.slice(j0 * hd..j1 * hd),
                        hd,
                        0,
                        &mut acc,
                    );
                }
                let (mut a, mut b) = (vec![0f32; hd], vec![0f32; hd]);
                finish_apply(&whole, &mut a);
                finish_apply(&acc, &mut b);
                assert_eq!(a, b, "blocks of {block}");
            }
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let before = row.clone();
        softmax_in_place(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let m = before.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = before.iter().map(|v| (v - m).exp()).sum();
        for (p, v) in row.iter().zip(&before) {
            assert!((p - (v - m).exp() / z).abs() < 1e-6);
        }
    }
}
