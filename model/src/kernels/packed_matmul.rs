//! `y = x W^T` over packed matrices on the kernel pool. Several matrices that read the same
//! activations (Q/K/V, gate/up) run in one parallel region; tasks are (matrix, activation-row
//! chunk, group range), so both decode (one row, many groups) and prefill (many rows) split
//! evenly across threads.

use super::packed::{tile_scalar, PackedMatrix, GROUP};
use super::pool::{DisjointMut, SpinPool};
use super::q8::{BlockQ8_1, QK};
use super::KernelLevel;

/// Activation rows one kernel call holds in registers.
const TILE_ROWS: usize = 8;

/// Activation rows per task: their quantized blocks stay in L2 while a task's groups pass.
const ROW_CHUNK: usize = 64;

/// Parallel tasks per thread per region: small enough pieces to even out the threads.
const TASKS_PER_THREAD: usize = 8;

/// One matrix of a region: `out` receives `rows` rows of `matrix.rows()` floats computed from
/// the first `rows` activation rows.
pub(crate) struct MatmulJob<'a> {
    pub matrix: &'a PackedMatrix,
    pub rows: usize,
    pub out: &'a mut [f32],
}

#[derive(Clone, Copy)]
struct Task {
    job: usize,
    rows: (usize, usize),
    groups: (usize, usize),
}

/// Runs every job at this CPU's kernel level; `acts` holds activation rows of `cols / 32`
/// blocks each (all matrices must have the same `cols`), at least as many rows as any job uses.
pub(crate) fn matmul_jobs(acts: &[BlockQ8_1], jobs: &mut [MatmulJob<'_>]) {
    matmul_jobs_at(super::kernel_level(), acts, jobs)
}

/// [`matmul_jobs`] at `level`, which the CPU must support (tests compare levels).
pub(crate) fn matmul_jobs_at(level: KernelLevel, acts: &[BlockQ8_1], jobs: &mut [MatmulJob<'_>]) {
    for job in jobs.iter() {
        let nb = job.matrix.cols() / QK;
        assert!(acts.len() >= job.rows * nb, "activation rows");
        assert_eq!(job.out.len(), job.rows * job.matrix.rows(), "output shape");
    }
    let pool = SpinPool::global();
    let units: usize = jobs
        .iter()
        .map(|j| j.matrix.groups() * j.rows.div_ceil(ROW_CHUNK))
        .sum();
    let per_task = units.div_ceil(pool.threads() * TASKS_PER_THREAD).max(1);
    let mut tasks = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let groups = job.matrix.groups();
        for r0 in (0..job.rows).step_by(ROW_CHUNK) {
            for g0 in (0..groups).step_by(per_task) {
                tasks.push(Task {
                    job: i,
                    rows: (r0, (r0 + ROW_CHUNK).min(job.rows)),
                    groups: (g0, (g0 + per_task).min(groups)),
                });
            }
        }
    }
    // Tasks write disjoint (row, column) ranges of the output buffers.
    let outs: Vec<DisjointMut<f32>> = jobs.iter_mut().map(|j| DisjointMut::new(j.out)).collect();
    let (jobs, outs, tasks) = (&*jobs, &outs, &tasks);
    pool.run(tasks.len(), &|t| {
        let task = tasks[t];
        let job = &jobs[task.job];
        let m = job.matrix;
        let (n_total, nb) = (m.rows(), m.cols() / QK);
        for g in task.groups.0..task.groups.1 {
            let (quants, scales) = (m.group_quants(g), m.group_scales(g));
            let lanes = GROUP.min(n_total - g * GROUP);
            let mut r = task.rows.0;
            while r < task.rows.1 {
                let take = TILE_ROWS.min(task.rows.1 - r);
                let mut tile = [[0f32; GROUP]; TILE_ROWS];
                let rows = |i: usize| &acts[(r + i) * nb..(r + i + 1) * nb];
                run_tile(level, m, quants, scales, take, rows, &mut tile);
                for (i, values) in tile.iter().take(take).enumerate() {
                    // SAFETY: row r+i < job.rows and columns g*16..g*16+lanes < n_total;
                    // only this task writes them.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            values.as_ptr(),
                            outs[task.job].ptr().add((r + i) * n_total + g * GROUP),
                            lanes,
                        );
                    }
                }
                r += take;
            }
        }
    });
}

fn run_tile<'a>(
    level: KernelLevel,
    m: &PackedMatrix,
    quants: &[u8],
    scales: &[u16],
    take: usize,
    rows: impl Fn(usize) -> &'a [BlockQ8_1],
    out: &mut [[f32; GROUP]; TILE_ROWS],
) {
    macro_rules! with_rows {
        ($($r:literal)*) => {
            match take {
                $($r => {
                    let acts: [&[BlockQ8_1]; $r] = std::array::from_fn(&rows);
                    out[..$r].copy_from_slice(&tile::<$r>(level, m, quants, scales, acts));
                })*
                n => unreachable!("tile of {n} rows"),
            }
        };
    }
    with_rows!(1 2 3 4 5 6 7 8);
}

#[inline]
fn tile<const R: usize>(
    level: KernelLevel,
    m: &PackedMatrix,
    quants: &[u8],
    scales: &[u16],
    acts: [&[BlockQ8_1]; R],
) -> [[f32; GROUP]; R] {
    #[cfg(target_arch = "x86_64")]
    {
        use super::packed_x86::{tile_avx2, tile_avx512};
        // SAFETY: the level was chosen by run-time feature detection; the slices are whole
        // (group, block) units and every activation row has the matrix's block count.
        unsafe {
            match level {
                KernelLevel::Avx512Vnni => return tile_avx512(m.format(), quants, scales, acts),
                KernelLevel::Avx2 => return tile_avx2(m.format(), quants, scales, acts),
                KernelLevel::Scalar => {}
            }
        }
    }
    let _ = level;
    tile_scalar(m.format(), quants, scales, acts)
}

impl PackedMatrix {
    /// `x` holds `m` rows of `cols` floats; returns `m` rows of `rows` floats.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(super::kernel_level(), x, m)
    }

    pub(crate) fn matmul_with(&self, level: KernelLevel, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols(), "activation shape");
        let acts = super::quantize_q8_1(x, self.cols());
        let mut out = vec![0f32; m * self.rows()];
        matmul_jobs_at(
            level,
            &acts,
            &mut [MatmulJob {
                matrix: self,
                rows: m,
                out: &mut out,
            }],
        );
        out
    }
}
