//! Which text format `/metrics` answers in: OpenMetrics 1.0 when the scraper
//! asks for it (Prometheus does, in its `Accept` header), otherwise the
//! classic Prometheus text format 0.0.4, which every other reader parses
//! (`promtool check metrics`, `curl` and older agents). Pure: a header in, a
//! format out.

/// A text exposition format of the same metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    PrometheusText,
}

impl Format {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => super::CONTENT_TYPE,
            Format::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format to answer a request whose `Accept` header is `accept`:
    /// OpenMetrics when it lists `application/openmetrics-text` with a
    /// quality above 0 at least as high as any other media range it lists
    /// (Prometheus prefers it, with the classic text as a fallback at a
    /// lower quality); the classic text otherwise, including without the header.
    pub(crate) fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::PrometheusText;
        };
        let mut openmetrics = 0.0_f64;
        let mut other = 0.0_f64;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let quality = parts
                .filter_map(|parameter| parameter.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, value)| value.trim().parse().unwrap_or(0.0));
            if media == "application/openmetrics-text" {
                openmetrics = openmetrics.max(quality);
            } else if !media.is_empty() {
                other = other.max(quality);
            }
        }
        if openmetrics > 0.0 && openmetrics >= other {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Format::{self, OpenMetrics, PrometheusText};

    #[test]
    fn the_accept_header_chooses_the_format() {
        for (accept, expected) in [
            (None, PrometheusText),
            (Some(""), PrometheusText),
            (Some("*/*"), PrometheusText),
            (Some("text/plain"), PrometheusText),
            (Some("text/plain; version=0.0.4"), PrometheusText),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0; charset=utf-8"),
                OpenMetrics,
            ),
            // What Prometheus 2.42 sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            (
                Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"),
                PrometheusText,
            ),
            (Some("application/openmetrics-text;q=0"), PrometheusText),
            (Some("application/openmetrics-text;q=oops"), PrometheusText),
        ] {
            assert_eq!(Format::negotiate(accept), expected, "{accept:?}");
        }
    }
}
