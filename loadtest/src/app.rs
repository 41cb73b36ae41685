//! The whole invocation: check flags, measure every sweep point and ratio run (or merge saved
//! reports), print the table, write the files, choose the exit status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::args::{Args, Config, PromptSpec, RequestBound};
use crate::client::{first_model, BodyTemplate, Client};
use crate::error::{LoadtestError, Result};
use crate::load::{trim_number, Load};
use crate::output::write_atomic;
use crate::progress::Progress;
use crate::prompts::PromptSource;
use crate::report::{Report, RunReport, Source};
use crate::speculation::{self, Speculation};
use crate::workload::{run_seed, Workload};
use crate::{plot, runner, table};

/// Exit statuses besides 0 (measured), 1 (error) and 2 (usage).
pub const EXIT_NOTHING_COMPLETED: u8 = 3;
pub const EXIT_INTERRUPTED: u8 = 130;

pub fn main_with(args: Args) -> Result<u8> {
    if !args.merge.is_empty() {
        let reports = args
            .merge
            .iter()
            .map(|p| Report::read(p))
            .collect::<Result<Vec<_>>>()?;
        emit(
            &Report::merge(reports),
            &args.json,
            &args.markdown,
            &args.plot,
        )?;
        return Ok(0);
    }
    let config = args.config()?;
    let prompts = Arc::new(match &config.prompts {
        PromptSpec::Synthetic => PromptSource::Synthetic,
        PromptSpec::Corpus(path) => PromptSource::corpus(path)?,
        PromptSpec::Lines(path) => PromptSource::lines(path)?,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadtestError::Server(format!("could not start the async runtime: {e}")))?;
    let (report, interrupted) = runtime.block_on(measure(&config, prompts))?;
    emit(&report, &args.json, &args.markdown, &args.plot)?;
    Ok(if interrupted {
        EXIT_INTERRUPTED
    } else if !report.any_completed() {
        eprintln!("no request completed");
        EXIT_NOTHING_COMPLETED
    } else {
        0
    })
}

fn emit(
    report: &Report,
    json: &Option<PathBuf>,
    markdown: &Option<PathBuf>,
    png: &Option<PathBuf>,
) -> Result<()> {
    print!("{}", table::terminal(report));
    if let Some(path) = json {
        write_atomic(path, report.to_json().as_bytes())?;
    }
    if let Some(path) = markdown {
        write_atomic(path, table::markdown(report).as_bytes())?;
    }
    if let Some(path) = png {
        plot::write_png(report, path)?;
    }
    Ok(())
}

fn mix_label(mix: &[(f64, f64)]) -> String {
    match mix {
        [] => String::new(),
        [(r, _)] => format!(" ratio {}", trim_number(*r)),
        _ => {
            let parts: Vec<String> = mix
                .iter()
                .map(|(r, w)| format!("{}:{}", trim_number(*r), trim_number(*w)))
                .collect();
            format!(" ratios {}", parts.join(","))
        }
    }
}

/// Ctrl-C once: no new requests, running ones cancelled, the report of what ran is written.
/// Twice: exit at once.
fn watch_ctrl_c() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: no new requests; Ctrl-C again to quit without a report");
            let _ = tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(EXIT_INTERRUPTED as i32);
            }
        }
        // Keep the sender alive so that receivers never see it closed.
        std::future::pending::<()>().await;
    });
    rx
}

/// The server's speculative-decoding counters, if it has a `/metrics` page (a page that is slow
/// to answer waits at most 10 s, or `--timeout` when that is shorter).
async fn read_counters(http: &reqwest::Client, config: &Config) -> Option<speculation::Snapshot> {
    let limit = config.timeout.min(Duration::from_secs(10));
    speculation::scrape(http, &config.base_url, config.api_key.as_deref(), limit).await
}

async fn measure(config: &Config, prompts: Arc<PromptSource>) -> Result<(Report, bool)> {
    let http = Client::http(config)?;
    let model = match &config.model {
        Some(m) => m.clone(),
        None => first_model(&http, config).await?,
    };
    let client = Arc::new(Client::new(
        http.clone(),
        config,
        BodyTemplate::new(config, model.clone()),
    ));
    let source = Source::new(config, &model);
    let stop = watch_ctrl_c();

    if config.warmup > 0 {
        let mut warm = Workload::new(
            run_seed(config.seed, usize::MAX >> 32, 0),
            prompts.clone(),
            config.prompt_tokens,
            config.max_tokens,
            config.ratio_runs[0].clone(),
            Some(config.warmup),
        );
        let mut failed = 0;
        while let Some(plan) = warm.next_plan() {
            if let Err(f) = client.send(&plan).await {
                failed += 1;
                eprintln!("warm-up request failed: {} {}", f.kind.key(), f.message);
            }
        }
        eprintln!("warm-up: {} requests, {failed} failed", config.warmup);
    }

    let mut runs = Vec::new();
    'points: for (p, load) in config.loads.iter().enumerate() {
        for (r, mix) in config.ratio_runs.iter().enumerate() {
            if *stop.borrow() {
                break 'points;
            }
            let limit = match (config.requests, load) {
                (Some(RequestBound::Total(n)), _) => Some(n),
                (Some(RequestBound::PerClient(n)), Load::Closed { concurrency }) => {
                    Some(n * concurrency)
                }
                _ => None,
            };
            let workload = Workload::new(
                run_seed(config.seed, p, r),
                prompts.clone(),
                config.prompt_tokens,
                config.max_tokens,
                mix.clone(),
                limit,
            );
            let what = format!("{}{}", load.label(), mix_label(mix));
            let counters_before = read_counters(&http, config).await;
            let progress = Progress::start(config.progress, what.clone(), limit);
            let counters = progress.counters.clone();
            let out = runner::run(
                client.clone(),
                *load,
                workload,
                config.duration,
                stop.clone(),
                counters,
            )
            .await;
            progress.finish();
            let counters_after = read_counters(&http, config).await;
            let spec = Speculation::between(counters_before.as_ref(), counters_after.as_ref());
            let run = RunReport::new(&source.label, *load, mix, &out, &config.slo, spec);
            let o = &run.overall;
            eprintln!(
                "{what}: {} ok, {} failed, {:.1} output tok/s over {:.1} s",
                o.completed, o.failed, o.output_throughput, o.duration_s
            );
            if o.completed > 0 && o.usage_reported < o.completed {
                eprintln!(
                    "  {} of {} completed requests had no usage: their tokens are text chunks",
                    o.completed - o.usage_reported,
                    o.completed
                );
            }
            if let Some(s) = &run.speculation {
                eprintln!(
                    "  speculative decoding: {} of {} draft tokens accepted{}",
                    s.overall.accepted_tokens,
                    s.overall.draft_tokens,
                    s.overall
                        .acceptance_rate
                        .map(|r| format!(" ({:.1}%)", r * 100.0))
                        .unwrap_or_default()
                );
            }
            runs.push(run);
        }
    }
    let interrupted = *stop.borrow();
    Ok((Report::new(vec![source], runs), interrupted))
}
