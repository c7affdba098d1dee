//! Drawing `observer top`: a pure function of [`App`], so the test backend can check it.

use std::time::Duration;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize as _},
    text::{Line, Span},
    widgets::{Block, Cell, Clear, Paragraph, Row as TableRow, Table},
};

use super::app::{App, Row, Slot, Source};
use crate::{
    hist::Bucket,
    render::{ns, octaves},
};

/// The key bindings, as the help screen lists them.
pub const KEYS: [(&str, &str); 12] = [
    ("q, Ctrl-C", "quit"),
    ("p, space", "pause / resume"),
    (
        "+ / -",
        "refresh longer / shorter (250ms..10s; not with an agent)",
    ),
    ("Tab, ->", "next signal"),
    ("Shift-Tab, <-", "previous signal"),
    ("1-5", "select signal by number"),
    ("b", "next breakdown table (processes, cgroups, ...)"),
    ("s", "sort the breakdown by count, p50, p99"),
    ("Up / Down", "select a breakdown row"),
    ("Enter", "drill into the selected row"),
    ("Esc", "clear the drill-down"),
    ("?, h", "this help (any key closes it)"),
];

const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub fn render(app: &App, frame: &mut Frame) {
    let [header, summary, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(app.slots.len() as u16 + 3),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(header_line(app), header);
    render_summary(app, frame, summary);
    render_body(app, frame, body);
    frame.render_widget(footer_line(app), footer);
    if app.help {
        render_help(frame);
    }
}

fn header_line(app: &App) -> Line<'static> {
    let mut spans = vec![
        Span::from("observer top").bold(),
        Span::from(format!("  every {}", interval(app.interval))),
    ];
    if app.paused {
        spans.push(Span::from("  PAUSED").reversed());
    }
    if let Some(scope) = &app.scope {
        spans.push(Span::from(format!("  cgroup {scope}")).bold());
    }
    // The source before the help hint: at 80 columns the end of a long socket path, then the
    // hint (which the footer repeats), are what get cut.
    spans.push(Span::from(format!("  {}", source(&app.source))).dim());
    spans.push(Span::from("  ? help"));
    Line::from(spans)
}

/// Where the numbers come from.
pub fn source(source: &Source) -> String {
    match source {
        Source::Local => "source: programs loaded by this process".to_owned(),
        Source::Agent { pid, socket } => {
            format!("source: agent pid {pid} ({})", socket.display())
        }
    }
}

/// A refresh interval: `250ms`, `1s`, `2.5s`.
fn interval(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Events per second, short: 3 significant digits with k/M.
fn rate(v: f64) -> String {
    let (v, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if v >= 100.0 || unit.is_empty() && v == v.trunc() {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// The last `width` values as a sparkline, scaled between their minimum and maximum on a log
/// scale (latencies spread over orders of magnitude).
fn sparkline(values: impl DoubleEndedIterator<Item = f64>, width: usize) -> String {
    let mut recent: Vec<f64> = values.rev().take(width).collect();
    recent.reverse();
    let log = |v: f64| (v.max(1.0)).log2();
    let lo = recent
        .iter()
        .copied()
        .map(log)
        .fold(f64::INFINITY, f64::min);
    let hi = recent.iter().copied().map(log).fold(0.0, f64::max);
    recent
        .iter()
        .map(|&v| {
            if hi <= lo {
                SPARK[0]
            } else {
                let i = ((log(v) - lo) / (hi - lo) * (SPARK.len() - 1) as f64).round() as usize;
                SPARK[i.min(SPARK.len() - 1)]
            }
        })
        .collect()
}

fn render_summary(app: &App, frame: &mut Frame, area: Rect) {
    const FIXED: [u16; 5] = [10, 8, 8, 8, 8];
    let spark_width =
        area.width
            .saturating_sub(2 + FIXED.iter().sum::<u16>() + FIXED.len() as u16) as usize;
    let rows = app.slots.iter().enumerate().map(|(i, slot)| {
        let name = format!("{} {}", i + 1, slot.signal.name());
        let style = if i == app.selected {
            Style::new().reversed()
        } else {
            Style::new()
        };
        let cells = match (&slot.error, &slot.view) {
            // In the wide last column, where the reason has room.
            (Some(e), _) => vec![
                Cell::from(name),
                Cell::from("-"),
                Cell::from(""),
                Cell::from(""),
                Cell::from(""),
                Cell::from(format!("not running: {e}")).dim(),
            ],
            (None, None) => vec![Cell::from(name), Cell::from("waiting...").dim()],
            (None, Some(v)) => {
                let pct = |f: fn(&crate::hist::Summary) -> f64| {
                    v.latency.as_ref().map_or("-".to_owned(), |s| ns(f(s)))
                };
                vec![
                    Cell::from(name),
                    Cell::from(rate(app.rate(v.count))),
                    Cell::from(pct(|s| s.p50_ns)),
                    Cell::from(pct(|s| s.p99_ns)),
                    Cell::from(pct(|s| s.p999_ns)),
                    Cell::from(sparkline(slot.history.iter().copied(), spark_width)),
                ]
            }
        };
        TableRow::new(cells).style(style)
    });
    let widths = FIXED
        .map(Constraint::Length)
        .into_iter()
        .chain([Constraint::Fill(1)]);
    let header = TableRow::new(["signal", "events/s", "p50", "p99", "p99.9", "p99 history"])
        .style(Style::new().bold());
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(" signals (Tab / 1-5 to select) "));
    frame.render_widget(table, area);
}

fn render_body(app: &App, frame: &mut Frame, area: Rect) {
    let slot = app.current();
    let name = slot.signal.name();
    let Some(view) = &slot.view else {
        let text = match &slot.error {
            Some(e) => format!("{name} is not running: {e}"),
            None => format!(
                "{name}: waiting for the first interval ({})",
                interval(app.interval)
            ),
        };
        frame.render_widget(
            Paragraph::new(text).block(Block::bordered().title(format!(" {name} "))),
            area,
        );
        return;
    };
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(area);
    // Drilling into a row shows that row's histogram.
    let drilled = app.filtered().and_then(|r| Some((r, r.latency.as_ref()?)));
    let (title, buckets) = match drilled {
        Some((row, l)) => (format!(" {} histogram ", row.name), &l.buckets),
        None => (format!(" {name} histogram "), &view.buckets),
    };
    let hist_block = Block::bordered().title(title);
    let hist = if view.latency.is_some() {
        histogram(app, buckets, hist_block.inner(left))
    } else {
        vec![
            Line::from("counted events:").dim(),
            Line::from("no latency histogram").dim(),
        ]
    };
    frame.render_widget(Paragraph::new(hist).block(hist_block), left);
    render_breakdown(app, slot, frame, right);
}

/// `colour` as the foreground, unless colour is off (`NO_COLOR`): then the terminal's own.
fn fg(app: &App, colour: Color) -> Style {
    if app.colour {
        Style::new().fg(colour)
    } else {
        Style::new()
    }
}

/// Octave rows of a histogram, as bars, trimmed at the quieter end until they fit.
fn histogram(app: &App, buckets: &[Bucket], area: Rect) -> Vec<Line<'static>> {
    let mut rows = octaves(buckets);
    if rows.is_empty() {
        return vec![Line::from("no events in this interval").dim()];
    }
    let height = usize::from(area.height.max(1));
    while rows.len() > height {
        let (first, last) = (rows[0].2, rows[rows.len() - 1].2);
        if first <= last {
            rows.remove(0);
        } else {
            rows.pop();
        }
    }
    let peak = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1);
    let bar_width = usize::from(area.width).saturating_sub(24);
    rows.into_iter()
        .map(|(lower, upper, count)| {
            let range = if upper == 0.0 {
                "0".to_owned()
            } else {
                format!("{}-{}", ns(lower), ns(upper))
            };
            let bar = (count as u128 * bar_width as u128).div_ceil(peak as u128) as usize;
            Line::from(vec![
                Span::from(format!("{range:>15} {count:>7} ")),
                Span::from("█".repeat(bar)).style(fg(app, Color::Cyan)),
            ])
        })
        .collect()
}

/// `s` with a leading ellipsis when it is wider than `width`: the end of a cgroup path or
/// endpoint says the most.
fn fit(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width || width == 0 {
        return s.to_owned();
    }
    let tail: String = s.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

fn render_breakdown(app: &App, slot: &Slot, frame: &mut Frame, area: Rect) {
    let tables = slot.view.as_ref().map_or(0, |v| v.tables.len());
    let Some(table) = app.current_table() else {
        frame.render_widget(
            Paragraph::new("no breakdown for this signal").block(Block::bordered()),
            area,
        );
        return;
    };
    let title = format!(
        " by {} ({}/{tables}, b: next) sort {} ",
        table.title,
        app.table + 1,
        app.sort.name()
    );
    let rows = app.rows();
    let block = Block::bordered().title(title);
    if rows.is_empty() {
        frame.render_widget(
            Paragraph::new("no events in this interval")
                .dim()
                .block(block),
            area,
        );
        return;
    }
    const NUM: u16 = 8;
    // Counted events (TCP) have no percentiles: their names get the room instead.
    let latency = rows.iter().any(|r| r.latency.is_some());
    let columns = if latency { 3 } else { 1 };
    let name_width = usize::from(area.width.saturating_sub(2 + columns * (NUM + 1)));
    // Keeps the selected row on screen: the table shows a window of the sorted rows.
    let visible = usize::from(area.height.saturating_sub(3)).max(1);
    let skip = app.row.saturating_sub(visible - 1);
    let body = rows.iter().enumerate().skip(skip).map(|(i, row)| {
        let mut style = Style::new();
        if app.filter.as_deref() == Some(row.name.as_str()) {
            style = style
                .add_modifier(Modifier::BOLD)
                .patch(fg(app, Color::Yellow));
        }
        if i == app.row {
            style = style.reversed();
        }
        let pct = |f: fn(&crate::hist::Summary) -> f64| {
            row.latency
                .as_ref()
                .map_or("-".to_owned(), |l| ns(f(&l.summary)))
        };
        let cells = [
            Cell::from(fit(&row.name, name_width)),
            Cell::from(rate(app.rate(row.count))),
            Cell::from(pct(|s| s.p50_ns)),
            Cell::from(pct(|s| s.p99_ns)),
        ];
        TableRow::new(cells.into_iter().take(1 + columns as usize)).style(style)
    });
    let widths = [Constraint::Fill(1)].into_iter().chain(
        [Constraint::Length(NUM); 3]
            .into_iter()
            .take(columns as usize),
    );
    let header = TableRow::new(
        ["", "events/s", "p50", "p99"]
            .into_iter()
            .take(1 + columns as usize),
    )
    .style(Style::new().bold());
    frame.render_widget(Table::new(body, widths).header(header).block(block), area);
}

/// The drill-down row's summary, else the collector's error, else a note, else the keys.
fn footer_line(app: &App) -> Line<'static> {
    if let Some(name) = &app.filter {
        return match app.filtered() {
            Some(row) => Line::from(detail(app, row))
                .style(fg(app, Color::Yellow))
                .bold(),
            None => Line::from(format!("> {name}: no events in this interval (Esc clears)"))
                .style(fg(app, Color::Yellow)),
        };
    }
    if let Some(e) = &app.error {
        return Line::from(format!("error: {e}")).style(fg(app, Color::Red));
    }
    if let Some(note) = app
        .current()
        .view
        .as_ref()
        .and_then(|v| v.notes.first().cloned())
    {
        return Line::from(note).dim();
    }
    Line::from("q quit  p pause  Tab signal  b table  s sort  ↑↓ row  Enter drill  ? help").dim()
}

fn detail(app: &App, row: &Row) -> String {
    let events = rate(app.rate(row.count));
    match row.latency.as_ref().map(|l| &l.summary) {
        Some(s) => format!(
            "> {}: {events}/s  p50 {}  p90 {}  p99 {}  p99.9 {}  max<={}  (Esc clears)",
            row.name,
            ns(s.p50_ns),
            ns(s.p90_ns),
            ns(s.p99_ns),
            ns(s.p999_ns),
            ns(s.max_ns)
        ),
        None => format!(
            "> {}: {events}/s ({} events)  (Esc clears)",
            row.name, row.count
        ),
    }
}

fn render_help(frame: &mut Frame) {
    let area = frame.area();
    let height = (KEYS.len() as u16 + 4).min(area.height);
    let width = 70.min(area.width);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::from(format!("{key:>14}  ")).bold(),
                Span::from(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from("rates and percentiles cover the last refresh interval").dim());
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" observer top: keys ")),
        popup,
    );
}
