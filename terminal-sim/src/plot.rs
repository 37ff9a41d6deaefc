//! PNG plots of a run, for people: the latency distribution (CDF) and
//! deliveries over time.
//!
//! Text is drawn with a TrueType font read at run time (DejaVu Sans, which
//! `scripts/setup.sh` installs); without one, plots are skipped with a
//! warning rather than failing the run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

use crate::report::Latency;

/// Where the plots' font is looked for.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers the plots' font once; false if none was found.
fn font() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        for path in FONTS {
            if let Ok(bytes) = std::fs::read(path) {
                // Registered for the process's lifetime.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One curve of a CDF plot.
#[derive(Debug)]
pub struct Curve<'a> {
    /// Legend.
    pub label: &'a str,
    /// The distribution, in the units the histogram holds (microseconds).
    pub latency: &'a Latency,
}

/// Draws the cumulative distribution of each curve, latency in
/// milliseconds on a logarithmic axis.
pub fn latency_cdf(path: &Path, title: &str, curves: &[Curve<'_>]) -> anyhow::Result<()> {
    let points: Vec<(&str, Vec<(f64, f64)>)> = curves
        .iter()
        .filter(|c| !c.latency.is_empty())
        .map(|c| (c.label, c.latency.cdf_ms()))
        .collect();
    if points.is_empty() {
        return Ok(());
    }
    let lo = points
        .iter()
        .flat_map(|(_, p)| p.first().map(|(x, _)| *x))
        .fold(f64::MAX, f64::min)
        .max(0.001);
    let hi = points
        .iter()
        .flat_map(|(_, p)| p.last().map(|(x, _)| *x))
        .fold(0.0, f64::max)
        .max(lo * 10.0);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("share of deliveries at or below")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (label, p)) in points.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(p, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws counts per second over the run.
pub fn over_time(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[(&str, &[u64])],
) -> anyhow::Result<()> {
    let len = series.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
    if len == 0 {
        return Ok(());
    }
    let top = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..len as f64, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since every terminal was connected")
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (label, s)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = s
            .iter()
            .enumerate()
            .map(|(t, n)| (t as f64 + 0.5, *n as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// What a run can plot.
#[derive(Debug, Default)]
pub struct Figures<'a> {
    /// Scenario name, for titles.
    pub scenario: &'a str,
    /// Voice send-to-receive latency.
    pub voice_latency: Option<&'a Latency>,
    /// Voice frames received per second.
    pub voice_per_second: &'a [u64],
    /// Alert creation-to-shown latency.
    pub alert_latency: Option<&'a Latency>,
}

/// Writes the plots of a run into `dir`; returns the files written.
pub fn write(dir: &Path, f: &Figures<'_>) -> anyhow::Result<Vec<PathBuf>> {
    if !font() {
        tracing::warn!(
            "no DejaVu Sans font found ({}): plots skipped",
            FONTS.join(", ")
        );
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut curves = Vec::new();
    if let Some(l) = f.voice_latency.filter(|l| !l.is_empty()) {
        curves.push(Curve {
            label: "voice: talker send -> listener receive",
            latency: l,
        });
    }
    if let Some(l) = f.alert_latency.filter(|l| !l.is_empty()) {
        curves.push(Curve {
            label: "alerts: created -> shown",
            latency: l,
        });
    }
    if !curves.is_empty() {
        let path = dir.join("latency-cdf.png");
        latency_cdf(
            &path,
            &format!("{}: latency distribution", f.scenario),
            &curves,
        )?;
        written.push(path);
    }
    if f.voice_per_second.iter().any(|n| *n > 0) {
        let path = dir.join("delivery-over-time.png");
        over_time(
            &path,
            &format!("{}: voice frames delivered per second", f.scenario),
            "frames received per second",
            &[("received by listeners", f.voice_per_second)],
        )?;
        written.push(path);
    }
    Ok(written)
}
