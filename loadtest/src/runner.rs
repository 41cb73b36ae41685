//! Runs one sweep point: a closed loop of clients or an open loop of timed arrivals, until
//! the request count or the duration is reached, Ctrl-C, and every sent request has ended
//! (each is bounded by `--timeout`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::arrivals::Arrivals;
use crate::client::Client;
use crate::load::Load;
use crate::outcome::{ErrorKind, Failure, Record};
use crate::progress::Counters;
use crate::workload::{RequestPlan, Workload};

pub struct RunOutput {
    pub records: Vec<Record>,
    /// From the start of the run to the end of its last request, seconds.
    pub duration: f64,
    pub interrupted: bool,
}

/// Shared by every task of a run: the client, the clock, Ctrl-C, the progress counters.
#[derive(Clone)]
struct Ctx {
    client: Arc<Client>,
    start: Instant,
    stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
}

pub async fn run(
    client: Arc<Client>,
    load: Load,
    workload: Workload,
    duration: Option<Duration>,
    stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> RunOutput {
    let ctx = Ctx {
        client,
        start: Instant::now(),
        stop,
        counters,
    };
    let deadline = duration.map(|d| ctx.start + d);
    let mut records = match load {
        Load::Closed { concurrency } => closed_loop(&ctx, concurrency, workload, deadline).await,
        Load::Open {
            rate,
            burstiness,
            max_concurrency,
        } => {
            let arrivals = Arrivals::new(rate, burstiness);
            open_loop(&ctx, arrivals, max_concurrency, workload, deadline).await
        }
    };
    records.sort_by(|a, b| a.sent_at.total_cmp(&b.sent_at));
    let duration = records.iter().map(|r| r.finished_at).fold(0.0, f64::max);
    let interrupted = *ctx.stop.borrow();
    RunOutput {
        records,
        duration,
        interrupted,
    }
}

async fn closed_loop(
    ctx: &Ctx,
    concurrency: usize,
    workload: Workload,
    deadline: Option<Instant>,
) -> Vec<Record> {
    let workload = Arc::new(Mutex::new(workload));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (ctx, workload) = (ctx.clone(), workload.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while !*ctx.stop.borrow() && deadline.is_none_or(|d| Instant::now() < d) {
                    let plan = workload
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .next_plan();
                    let Some(plan) = plan else { break };
                    match measure(&ctx, plan).await {
                        Some(record) => out.push(record),
                        None => break,
                    }
                }
                out
            })
        })
        .collect();
    let mut records = Vec::new();
    for w in workers {
        // A worker only ends by returning; a join error would be a panic inside it.
        if let Ok(out) = w.await {
            records.extend(out);
        }
    }
    records
}

async fn open_loop(
    ctx: &Ctx,
    arrivals: Arrivals,
    max_concurrency: Option<usize>,
    mut workload: Workload,
    deadline: Option<Instant>,
) -> Vec<Record> {
    let mut rng = workload.fork_rng();
    let limit = max_concurrency.map(|n| Arc::new(Semaphore::new(n)));
    let mut stop = ctx.stop.clone();
    let mut tasks = Vec::new();
    let mut next_at = Duration::ZERO;
    while let Some(plan) = workload.next_plan() {
        let at = ctx.start + next_at;
        if deadline.is_some_and(|d| at >= d) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = stopped(&mut stop) => break,
        }
        let (ctx, limit) = (ctx.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            // Past --max-concurrency an arrival waits here; its clock starts when it is sent.
            let _permit = match limit {
                Some(sem) => Some(sem.acquire_owned().await.ok()?),
                None => None,
            };
            measure(&ctx, plan).await
        }));
        next_at += Duration::from_secs_f64(arrivals.next_gap(&mut rng));
    }
    let mut records = Vec::new();
    for t in tasks {
        if let Ok(Some(record)) = t.await {
            records.push(record);
        }
    }
    records
}

/// Sends one request and times it; `None` when Ctrl-C came before it was sent.
async fn measure(ctx: &Ctx, plan: RequestPlan) -> Option<Record> {
    let mut stop = ctx.stop.clone();
    if *stop.borrow() {
        return None;
    }
    let sent_at = ctx.start.elapsed().as_secs_f64();
    ctx.counters.sent.fetch_add(1, Ordering::Relaxed);
    let result = tokio::select! {
        r = ctx.client.send(&plan) => r,
        _ = stopped(&mut stop) => Err(Failure {
            kind: ErrorKind::Cancelled,
            message: "interrupted".into(),
        }),
    };
    match &result {
        Ok(s) => {
            ctx.counters.completed.fetch_add(1, Ordering::Relaxed);
            ctx.counters
                .output_tokens
                .fetch_add(s.output_tokens, Ordering::Relaxed);
        }
        Err(_) => {
            ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Some(Record {
        ratio: plan.ratio,
        sent_at,
        finished_at: ctx.start.elapsed().as_secs_f64(),
        result,
    })
}

/// Resolves when Ctrl-C has been pressed; never, if nobody can press it any more.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
