//! A small spinning thread pool for the matmul kernels. Decode runs a few hundred short
//! parallel regions per token; waking sleeping threads for each cost more than the work (perf
//! showed 40% of decode time in the scheduler with rayon). Helpers spin briefly between regions
//! and sleep only when the model is idle.
//!
//! A region waits only for helpers that actually joined it, never for one that is descheduled
//! and has not started: the caller takes every task nobody else took. On a machine where another
//! process holds a core, waiting for absent helpers made 2 threads 2.4x slower than 1.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// How long a helper spins for the next region before it sleeps (iterations of `spin_loop`).
const SPIN_ITERATIONS: usize = 200_000;

/// A spinning helper offers its core to other threads this often (iterations of `spin_loop`).
const YIELD_EVERY_SPINS: usize = 256;

/// Spins of a caller waiting for helpers still inside the region before it yields its core.
const WAIT_SPINS_BEFORE_YIELD: usize = 4_096;

struct Job {
    task: *const (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    /// A task panicked; the caller re-raises once no thread uses the job any more.
    panicked: AtomicBool,
}

struct Shared {
    generation: AtomicUsize,
    job: AtomicPtr<Job>,
    /// Helpers between announcing themselves and finishing with the job they loaded (if any).
    /// A helper increments it before loading `job`; the caller clears `job` and then waits for
    /// zero, so no helper can hold a pointer to a job whose caller has returned.
    active: AtomicUsize,
    sleepers: Mutex<usize>,
    wake: Condvar,
    shutdown: AtomicBool,
}

pub(crate) struct SpinPool {
    shared: Arc<Shared>,
    helpers: usize,
    busy: Mutex<()>,
}

impl SpinPool {
    /// A pool of `threads` threads in all: the caller plus `threads - 1` helpers.
    pub(crate) fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let helpers = threads.max(1) - 1;
        for i in 0..helpers {
            let shared = shared.clone();
            let _ = std::thread::Builder::new()
                .name(format!("epas-kernel-{i}"))
                .spawn(move || helper(shared));
        }
        Self {
            shared,
            helpers,
            busy: Mutex::new(()),
        }
    }

    /// The process-wide pool, sized like rayon's (`--threads` / `RAYON_NUM_THREADS`).
    pub(crate) fn global() -> &'static SpinPool {
        static POOL: OnceLock<SpinPool> = OnceLock::new();
        POOL.get_or_init(|| SpinPool::new(rayon::current_num_threads()))
    }

    pub(crate) fn threads(&self) -> usize {
        self.helpers + 1
    }

    /// Runs `task(i)` for every `i < tasks` on the pool's threads; returns when all are done.
    pub(crate) fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        // One region at a time; a second caller (another engine) runs its tasks inline.
        let guard = match self.busy.try_lock() {
            Ok(g) if self.helpers > 0 && tasks > 1 => g,
            _ => {
                (0..tasks).for_each(task);
                return;
            }
        };
        // SAFETY: helpers dereference the pointer only between incrementing and decrementing
        // `active`, after loading it from `shared.job`; this function clears `shared.job` and
        // waits for `active == 0` before returning, so `task` outlives every use.
        let task: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
        let job = Job {
            task,
            tasks,
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        self.shared
            .job
            .store(&job as *const Job as *mut Job, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        if *self
            .shared
            .sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            > 0
        {
            self.shared.wake.notify_all();
        }
        work(&job);
        // Every task is taken; only helpers already inside can still be running one.
        self.shared
            .job
            .store(std::ptr::null_mut(), Ordering::SeqCst);
        let mut spins = 0;
        while self.shared.active.load(Ordering::SeqCst) > 0 {
            if spins < WAIT_SPINS_BEFORE_YIELD {
                std::hint::spin_loop();
                spins += 1;
            } else {
                // The helper holding the last task was descheduled: give it this core.
                std::thread::yield_now();
            }
        }
        drop(guard);
        if job.panicked.load(Ordering::SeqCst) {
            panic!("a parallel kernel task panicked");
        }
    }
}

/// Runs `f(i, chunk)` over the `chunk_len`-sized chunks of `data` (the last may be shorter) on
/// the global pool.
pub(crate) fn par_chunks_mut<T: Send>(
    data: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunk_len = chunk_len.max(1);
    let len = data.len();
    let base = DisjointMut::new(data);
    let base = &base;
    SpinPool::global().run(len.div_ceil(chunk_len), &|i| {
        let start = i * chunk_len;
        let n = chunk_len.min(len - start);
        // SAFETY: [start, start + n) lies inside `data` and no other task uses it.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(start), n) };
        f(i, chunk);
    });
}

/// A buffer the tasks of one parallel region write through, each only its own disjoint part
/// (every use says which part is whose).
pub(crate) struct DisjointMut<T>(*mut T);

impl<T> DisjointMut<T> {
    pub(crate) fn new(buffer: &mut [T]) -> Self {
        Self(buffer.as_mut_ptr())
    }

    /// The buffer's first element.
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }
}

// SAFETY: the tasks sharing it write disjoint parts of the buffer, which outlives the region.
unsafe impl<T: Send> Send for DisjointMut<T> {}
unsafe impl<T: Send> Sync for DisjointMut<T> {}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        self.shared.wake.notify_all();
    }
}

fn work(job: &Job) {
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.tasks {
            return;
        }
        // A panic must not unwind past the region's clean-up (helpers would keep a pointer to
        // a dead closure) nor kill a helper that holds `active`.
        // SAFETY: see `SpinPool::run`.
        let ran =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*job.task)(i) }));
        if ran.is_err() {
            job.panicked.store(true, Ordering::SeqCst);
        }
    }
}

fn helper(shared: Arc<Shared>) {
    // Generation 0 is the state at creation; a helper that starts late still sees the first job.
    let mut seen = 0;
    loop {
        let mut spins = 0;
        let mut current = shared.generation.load(Ordering::Acquire);
        while current == seen && spins < SPIN_ITERATIONS {
            std::hint::spin_loop();
            spins += 1;
            if spins % YIELD_EVERY_SPINS == 0 {
                // When the machine is oversubscribed the thread that will publish the next
                // region may be waiting for this core.
                std::thread::yield_now();
            }
            current = shared.generation.load(Ordering::Acquire);
        }
        if current == seen {
            let mut sleepers = shared.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            *sleepers += 1;
            while shared.generation.load(Ordering::Acquire) == seen {
                sleepers = shared
                    .wake
                    .wait(sleepers)
                    .unwrap_or_else(|e| e.into_inner());
            }
            *sleepers -= 1;
            current = shared.generation.load(Ordering::Acquire);
        }
        seen = current;
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        let ptr = shared.job.load(Ordering::SeqCst);
        if !ptr.is_null() {
            // SAFETY: the caller keeps the job alive until `active` drops to zero (see `Shared`).
            work(unsafe { &*ptr });
        }
        shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_disjoint_and_complete() {
        let mut data = vec![0usize; 103];
        par_chunks_mut(&mut data, 10, |i, chunk| {
            for v in chunk.iter_mut() {
                *v += i + 1;
            }
        });
        for (j, v) in data.iter().enumerate() {
            assert_eq!(*v, j / 10 + 1);
        }
    }

    #[test]
    fn a_panicking_task_fails_its_region_and_the_pool_keeps_working() {
        let pool = SpinPool::new(2);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(8, &|i| assert!(i != 5, "task 5 fails"));
        }));
        assert!(caught.is_err());
        let hits = AtomicUsize::new(0);
        pool.run(8, &|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn every_task_runs_once_across_many_regions() {
        let pool = SpinPool::new(3);
        for round in 0..300 {
            let hits: Vec<AtomicUsize> = (0..17).map(|_| AtomicUsize::new(0)).collect();
            pool.run(17, &|i| {
                hits[i].fetch_add(round + 1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == round + 1));
        }
    }
}
