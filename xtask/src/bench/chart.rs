//! The chart, `docs/benchmarks.svg`: every peer's figure as a ratio to glibc's, one group of
//! bars per workload.

use std::fmt::Write as _;

use super::format::ratio;

/// One bar of the chart: a series, the ratio to glibc, and the bar's target if it has one.
pub(super) struct Bar {
    pub(super) series: &'static str,
    pub(super) value: f64,
    pub(super) target: Option<f64>,
}

/// One group of bars in the chart.
pub(super) struct ChartGroup {
    pub(super) label: String,
    pub(super) bars: Vec<Bar>,
}

/// The chart's series, in legend order, with their colours.
const SERIES: [(&str, &str); 10] = [
    ("melon", "#d62728"),
    ("melon_child", "#ff9896"),
    ("shm", "#8c2d04"),
    ("shm-child", "#fd8d3c"),
    ("rts-alloc", "#17becf"),
    ("mimalloc_heap", "#1f77b4"),
    ("mimalloc", "#9ecae1"),
    ("bumpalo", "#2ca02c"),
    ("talc", "#9467bd"),
    ("rlsf", "#8c564b"),
];

/// The legend's text for a series.
fn series_label(series: &str) -> &str {
    match series {
        "melon" => "melon heap pool",
        "melon_child" => "melon child pool",
        "shm" => "melon shared pool",
        "shm-child" => "melon shared child pool",
        other => other,
    }
}

/// The chart series a heap peer belongs to.
pub(super) fn series_of(id: &str) -> &'static str {
    SERIES.iter().map(|(name, _)| *name).find(|name| *name == id).unwrap_or("melon")
}

/// A grouped bar chart of ratios to glibc on a log scale, bars drawn from the line at 1, as SVG.
pub(super) fn svg(groups: &[ChartGroup]) -> String {
    let groups: Vec<&ChartGroup> = groups.iter().filter(|g| !g.bars.is_empty()).collect();
    let values = groups.iter().flat_map(|g| g.bars.iter().flat_map(|b| [Some(b.value), b.target]));
    let values: Vec<f64> = values.flatten().filter(|v| v.is_finite() && *v > 0.0).collect();
    let low = values.iter().copied().fold(1.0, f64::min).log10().floor().min(-1.0);
    let high = values.iter().copied().fold(1.0, f64::max).log10().ceil().max(1.0);

    let (left, right, top, plot_height, bottom) = (70.0, 20.0, 70.0, 360.0, 90.0);
    let group_width = 92.0;
    let width = left + right + group_width * groups.len().max(1) as f64;
    let height = top + plot_height + bottom;
    let y = |value: f64| top + (high - value.log10()) / (high - low) * plot_height;
    let color = |series: &str| {
        SERIES.iter().find(|(name, _)| *name == series).map_or("#777777", |(_, color)| color)
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{:.0}" y="20" text-anchor="middle" font-size="15" font-weight="bold">Time (or memory) relative to glibc in the same run: lower is better</text>"#,
        width / 2.0
    );
    // Legend: every series that has a bar, then the target mark.
    let used: Vec<&str> = SERIES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| groups.iter().any(|g| g.bars.iter().any(|b| b.series == *name)))
        .collect();
    let mut x = left;
    for series in &used {
        let _ = writeln!(
            out,
            r#"<rect x="{x:.0}" y="34" width="12" height="12" fill="{}"/><text x="{:.0}" y="44">{}</text>"#,
            color(series),
            x + 16.0,
            series_label(series)
        );
        x += 24.0 + 7.0 * series_label(series).len() as f64;
    }
    let _ = writeln!(
        out,
        r#"<line x1="{x:.0}" y1="40" x2="{:.0}" y2="40" stroke="black" stroke-width="3"/><text x="{:.0}" y="44">target</text>"#,
        x + 14.0,
        x + 18.0
    );

    // Axis, grid and labels: a line per power of ten, the line at 1 in black.
    let mut decade = low;
    while decade <= high + 1e-9 {
        let value = 10f64.powf(decade);
        let yy = y(value);
        let (stroke, dash) =
            if decade == 0.0 { ("black", "") } else { ("#cccccc", r#" stroke-dasharray="3,3""#) };
        let _ = writeln!(
            out,
            r#"<line x1="{left:.0}" y1="{yy:.1}" x2="{:.0}" y2="{yy:.1}" stroke="{stroke}"{dash}/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
            width - right,
            left - 6.0,
            yy + 4.0,
            if decade >= 0.0 { format!("{value:.0}") } else { format!("{value}") }
        );
        decade += 1.0;
    }
    let _ = writeln!(
        out,
        r##"<text x="{left:.0}" y="{:.1}" font-size="11" fill="#555555">glibc = 1</text>"##,
        y(1.0) - 4.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18,{:.0}) rotate(-90)" text-anchor="middle">ratio to glibc (log scale)</text>"#,
        top + plot_height / 2.0
    );
    let _ = writeln!(
        out,
        r#"<line x1="{left:.0}" y1="{top:.0}" x2="{left:.0}" y2="{:.0}" stroke="black"/>"#,
        top + plot_height
    );

    for (index, group) in groups.iter().enumerate() {
        let x0 = left + group_width * index as f64 + 8.0;
        let bar_width = ((group_width - 16.0) / group.bars.len() as f64).min(16.0);
        let offset = (group_width - 16.0 - bar_width * group.bars.len() as f64) / 2.0;
        for (i, bar) in group.bars.iter().enumerate() {
            let x = x0 + offset + bar_width * i as f64;
            let value = bar.value.clamp(10f64.powf(low), 10f64.powf(high));
            let (y1, y2) = (y(1.0), y(value));
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                y1.min(y2),
                bar_width - 1.0,
                (y1 - y2).abs().max(1.0),
                color(bar.series),
                series_label(bar.series),
                ratio(bar.value)
            );
            if let Some(target) = bar.target.filter(|t| t.is_finite() && *t > 0.0) {
                let yt = y(target.clamp(10f64.powf(low), 10f64.powf(high)));
                let _ = writeln!(
                    out,
                    r#"<line x1="{:.1}" y1="{yt:.1}" x2="{:.1}" y2="{yt:.1}" stroke="black" stroke-width="3"><title>target: {}</title></line>"#,
                    x - 1.0,
                    x + bar_width,
                    ratio(target)
                );
            }
        }
        let cx = left + group_width * (index as f64 + 0.5);
        let label_y = top + plot_height + 16.0;
        let _ = writeln!(
            out,
            r#"<text transform="translate({cx:.1},{label_y:.1}) rotate(-30)" text-anchor="end">{}</text>"#,
            group.label
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">workload (hammer: glibc's operations per second over the pool's)</text>"#,
        width / 2.0,
        height - 8.0
    );
    out.push_str("</svg>\n");
    out
}
