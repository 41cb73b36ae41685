//! The `--plot` chart: output tokens/s, TTFT p50 and TPOT p50 side by side, one line per
//! server label and ratio over the sweep points (or, with a single point, over the ratios).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{LoadtestError, Result};
use crate::load::trim_number;
use crate::output::write_atomic;
use crate::pixel_font::{text_size, PixelTextBackend};
use crate::report::Report;
use crate::stats::Summary;

const WIDTH: u32 = 1500;
const HEIGHT: u32 = 520;
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

type Metric = (&'static str, fn(&Summary) -> Option<f64>);

const METRICS: [Metric; 3] = [
    ("output tokens/s", |s| Some(s.output_throughput)),
    ("TTFT p50 (ms)", |s| s.ttft_ms.p50),
    ("TPOT p50 (ms)", |s| s.tpot_ms.p50),
];

/// What is drawn: x categories and named series of `(category, summary)` points.
pub struct ChartData<'a> {
    pub x_title: String,
    pub categories: Vec<String>,
    pub series: Vec<(String, Vec<(usize, &'a Summary)>)>,
}

fn index_of(list: &mut Vec<String>, item: String) -> usize {
    match list.iter().position(|x| *x == item) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

impl<'a> ChartData<'a> {
    pub fn of(report: &'a Report) -> ChartData<'a> {
        let mut loads = Vec::new();
        let mut labels = Vec::new();
        for run in &report.runs {
            index_of(&mut loads, run.load.label());
            index_of(&mut labels, run.label.clone());
        }
        let over_loads = loads.len() > 1;
        let mut data = ChartData {
            x_title: if over_loads {
                "sweep point".into()
            } else {
                format!(
                    "sharing ratio ({})",
                    loads.first().map_or("", String::as_str)
                )
            },
            categories: Vec::new(),
            series: Vec::new(),
        };
        let mut names = Vec::new();
        for run in &report.runs {
            for row in &run.by_ratio {
                let ratio = row
                    .sharing_ratio
                    .map(|r| format!("ratio {}", trim_number(r)));
                let (category, name) = if over_loads {
                    let parts: Vec<String> = [(labels.len() > 1).then(|| run.label.clone()), ratio]
                        .into_iter()
                        .flatten()
                        .collect();
                    let name = if parts.is_empty() {
                        "all requests".into()
                    } else {
                        parts.join(" ")
                    };
                    (run.load.label(), name)
                } else {
                    (
                        ratio.unwrap_or_else(|| "no ratio".into()),
                        run.label.clone(),
                    )
                };
                let x = index_of(&mut data.categories, category);
                let s = index_of(&mut names, name.clone());
                if s == data.series.len() {
                    data.series.push((name, Vec::new()));
                }
                data.series[s].1.push((x, &row.summary));
            }
        }
        data
    }
}

fn plot_error(e: impl std::fmt::Display) -> LoadtestError {
    LoadtestError::Plot(e.to_string())
}

pub fn write_png(report: &Report, path: &Path) -> Result<()> {
    let data = ChartData::of(report);
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let backend = PixelTextBackend {
            inner: BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)),
        };
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let legend = legend_layout(&data);
        let legend_bottom = legend
            .iter()
            .map(|&(_, y)| y + LEGEND_ROW)
            .max()
            .unwrap_or(40);
        let (head, body) = root.split_vertically(legend_bottom as u32 + 6);
        draw_legend(&head, &data, &legend).map_err(plot_error)?;
        for (panel, metric) in body.split_evenly((1, METRICS.len())).iter().zip(METRICS) {
            draw_panel(panel, &data, metric).map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(plot_error)?;
        writer.write_image_data(&pixels).map_err(plot_error)?;
        writer.finish().map_err(plot_error)?;
    }
    write_atomic(path, &png_bytes)
}

type Area<'b> = DrawingArea<PixelTextBackend<BitMapBackend<'b>>, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

const LEGEND_FONT: f64 = 16.0;
const LEGEND_ROW: i32 = 22;

/// Top-left corners of the legend entries: left to right, wrapping at the chart's width.
fn legend_layout(data: &ChartData) -> Vec<(i32, i32)> {
    let (mut x, mut y) = (16, 40);
    let mut out = Vec::new();
    for (name, _) in &data.series {
        let width = 32 + text_size(name, LEGEND_FONT).0 + 28;
        if x > 16 && x + width > WIDTH as i32 - 16 {
            (x, y) = (16, y + LEGEND_ROW);
        }
        out.push((x, y));
        x += width;
    }
    out
}

fn draw_legend(area: &Area, data: &ChartData, layout: &[(i32, i32)]) -> DrawResult {
    let title = format!("epas-loadtest: throughput and latency per {}", data.x_title);
    area.draw_text(
        &title,
        &("sans-serif", 22).into_font().color(&BLACK),
        (16, 8),
    )?;
    for (i, ((name, _), &(x, y))) in data.series.iter().zip(layout).enumerate() {
        let color = COLORS[i % COLORS.len()];
        area.draw(&Rectangle::new(
            [(x, y + 5), (x + 24, y + 9)],
            color.filled(),
        ))?;
        let font = ("sans-serif", LEGEND_FONT).into_font().color(&BLACK);
        area.draw_text(name, &font, (x + 32, y))?;
    }
    Ok(())
}

fn draw_panel(area: &Area, data: &ChartData, (title, value): Metric) -> DrawResult {
    let n = data.categories.len().max(1);
    let top = data
        .series
        .iter()
        .flat_map(|(_, pts)| pts.iter().filter_map(|(_, s)| value(s)))
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(30)
        .y_label_area_size(72)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..top)?;
    let categories = &data.categories;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(1)
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => categories.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| trim_number((*v * 10.0).round() / 10.0))
        .label_style(("sans-serif", 16))
        .draw()?;
    for (i, (_, points)) in data.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(SegmentValue<usize>, f64)> = points
            .iter()
            .filter_map(|&(x, s)| value(s).map(|v| (SegmentValue::CenterOf(x), v)))
            .collect();
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    Ok(())
}
