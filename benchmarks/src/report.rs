//! Figures and their presentation: percentiles of measured durations and
//! Markdown tables.

use std::fmt;
use std::time::Duration;

/// Sorted durations, for percentiles.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples(Vec<Duration>);

impl Samples {
    pub(crate) fn new(mut durations: Vec<Duration>) -> Samples {
        durations.sort_unstable();
        Samples(durations)
    }

    /// The nearest-rank percentile (`fraction` in 0..=1); zero when empty.
    pub(crate) fn percentile(&self, fraction: f64) -> Duration {
        let Some(last) = self.0.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        // Nearest rank: the smallest sample with at least `fraction` of all samples
        // at or below it.
        let rank = (fraction * self.0.len() as f64).ceil() as usize;
        self.0[rank.saturating_sub(1).min(last)]
    }

    pub(crate) fn median(&self) -> Duration {
        self.percentile(0.5)
    }

    pub(crate) fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn min(&self) -> Duration {
        self.0.first().copied().unwrap_or_default()
    }
}

/// Milliseconds with a precision that suits the magnitude.
pub(crate) fn ms(duration: Duration) -> String {
    let millis = duration.as_secs_f64() * 1000.0;
    if millis >= 100.0 {
        format!("{millis:.0}")
    } else if millis >= 10.0 {
        format!("{millis:.1}")
    } else {
        format!("{millis:.2}")
    }
}

/// Seconds with one decimal.
pub(crate) fn seconds(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64())
}

/// A number with thousands separators: 10000 -> "10,000".
pub(crate) fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A Markdown table.
pub(crate) struct Table {
    title: String,
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(title: impl Into<String>, headers: Vec<&'static str>) -> Table {
        Table {
            title: title.into(),
            headers,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "### {}", self.title)?;
        writeln!(f)?;
        writeln!(f, "| {} |", self.headers.join(" | "))?;
        let rule: Vec<&str> = self.headers.iter().map(|_| "---").collect();
        writeln!(f, "|{}|", rule.join("|"))?;
        for row in &self.rows {
            writeln!(f, "| {} |", row.join(" | "))?;
        }
        Ok(())
    }
}
