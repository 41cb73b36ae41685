//! The per-step training log: CSV (rewritten atomically) and a PNG plot of training and
//! validation loss with the sharing switch points marked; each evaluation also records the
//! validation loss at several sharing depths (the per-ratio curves).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{TrainError, TrainResult};

/// One training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    pub tokens: u64,
    pub loss: f32,
    /// Validation loss at the schedule's current depth (among `val_by_depth`).
    pub val_loss: Option<f32>,
    /// Validation loss at each depth evaluated (empty between evaluations).
    #[serde(default)]
    pub val_by_depth: Vec<DepthLoss>,
    pub lr: f64,
    pub sharing_layers: usize,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
    pub elapsed_s: f64,
}

/// The validation loss when the deepest `sharing_layers` layers share.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DepthLoss {
    pub sharing_layers: usize,
    pub loss: f32,
}

impl DepthLoss {
    pub fn perplexity(&self) -> f64 {
        (self.loss as f64).exp()
    }
}

/// The fixed columns; one `val_ppl_kD` column per depth `D` evaluated follows them.
pub const CSV_HEADER: &str =
    "step,tokens,loss,val_loss,lr,sharing_layers,grad_norm,tokens_per_second,elapsed_s";

/// Every depth evaluated in `records`, in order.
fn evaluated_depths(records: &[StepRecord]) -> Vec<usize> {
    let mut depths: Vec<usize> = records
        .iter()
        .flat_map(|r| r.val_by_depth.iter().map(|d| d.sharing_layers))
        .collect();
    depths.sort_unstable();
    depths.dedup();
    depths
}

/// Writes `path` through a temporary file in the same folder, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> TrainResult<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(TrainError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(TrainError::io(path))
}

pub fn write_csv(path: &Path, records: &[StepRecord]) -> TrainResult<()> {
    let depths = evaluated_depths(records);
    let mut text = String::from(CSV_HEADER);
    for d in &depths {
        text.push_str(&format!(",val_ppl_k{d}"));
    }
    text.push('\n');
    for r in records {
        let val = r.val_loss.map(|v| format!("{v:.5}")).unwrap_or_default();
        text.push_str(&format!(
            "{},{},{:.5},{},{:.3e},{},{:.4},{:.1},{:.2}",
            r.step,
            r.tokens,
            r.loss,
            val,
            r.lr,
            r.sharing_layers,
            r.grad_norm,
            r.tokens_per_second,
            r.elapsed_s
        ));
        for &d in &depths {
            text.push(',');
            if let Some(e) = r.val_by_depth.iter().find(|e| e.sharing_layers == d) {
                text.push_str(&format!("{:.3}", e.perplexity()));
            }
        }
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Registers a system sans-serif font for plot labels; false when none is installed (the plot
/// is then drawn without text).
fn register_font() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        const CANDIDATES: [&str; 4] = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        ];
        for path in CANDIDATES {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
                {
                    return true;
                }
            }
        }
        false
    })
}

/// Training loss (thin), validation loss (points) and vertical lines where the sharing set grew.
pub fn plot_losses(path: &Path, records: &[StepRecord], switches: &[usize]) -> TrainResult<()> {
    use plotters::prelude::*;
    let perr = |e: &dyn std::fmt::Display| TrainError::Plot(e.to_string());
    if records.is_empty() {
        return Ok(());
    }
    let with_text = register_font();
    let (w, h) = (1000u32, 560u32);
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| perr(&e))?;
        let last = records.last().map(|r| r.step).unwrap_or(1).max(1);
        let losses = records
            .iter()
            .map(|r| r.loss)
            .chain(records.iter().filter_map(|r| r.val_loss))
            .chain(
                records
                    .iter()
                    .flat_map(|r| r.val_by_depth.iter().map(|d| d.loss)),
            )
            .filter(|v| v.is_finite());
        let (lo, hi) = losses.fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let (lo, hi) = (lo.max(0.0) * 0.95, hi * 1.02 + 1e-3);
        let mut builder = ChartBuilder::on(&root);
        builder.margin(16);
        if with_text {
            builder
                .caption("Training and validation loss", ("sans-serif", 22))
                .x_label_area_size(40)
                .y_label_area_size(56);
        }
        let mut chart = builder
            .build_cartesian_2d(0usize..last, lo..hi)
            .map_err(|e| perr(&e))?;
        if with_text {
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc("loss (nats/token)")
                .draw()
                .map_err(|e| perr(&e))?;
        }
        for &s in switches.iter().filter(|&&s| s <= last) {
            chart
                .draw_series(LineSeries::new(
                    [(s, lo), (s, hi)],
                    RGBColor(200, 120, 0).stroke_width(1),
                ))
                .map_err(|e| perr(&e))?;
        }
        let train = chart
            .draw_series(LineSeries::new(
                records.iter().map(|r| (r.step, r.loss)),
                RGBColor(70, 110, 200).stroke_width(1),
            ))
            .map_err(|e| perr(&e))?;
        if with_text {
            train
                .label("training loss")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
        }
        // One thin line per evaluated depth (the per-ratio curves), shallow to deep.
        let depths = evaluated_depths(records);
        for (i, &depth) in depths.iter().enumerate() {
            let shade = 60 + (150 * i / depths.len().max(1)) as u8;
            let colour = RGBColor(40, shade, 90);
            let line = chart
                .draw_series(LineSeries::new(
                    records.iter().filter_map(|r| {
                        let e = r.val_by_depth.iter().find(|e| e.sharing_layers == depth)?;
                        Some((r.step, e.loss))
                    }),
                    colour.stroke_width(1),
                ))
                .map_err(|e| perr(&e))?;
            if with_text {
                line.label(format!("validation, {depth} sharing layers"))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
            }
        }
        let val = chart
            .draw_series(LineSeries::new(
                records
                    .iter()
                    .filter_map(|r| r.val_loss.map(|v| (r.step, v))),
                RED.stroke_width(3),
            ))
            .map_err(|e| perr(&e))?;
        if with_text {
            val.label("validation loss (the schedule's depth)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
            chart
                .draw_series(std::iter::once(Text::new(
                    "orange lines: a sharing layer added",
                    (last / 2, hi - (hi - lo) * 0.04),
                    ("sans-serif", 14),
                )))
                .map_err(|e| perr(&e))?;
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|e| perr(&e))?;
        }
        root.present().map_err(|e| perr(&e))?;
    }
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| perr(&e))?;
        writer.write_image_data(&pixels).map_err(|e| perr(&e))?;
    }
    write_atomic(path, &png)
}
