//! Prometheus metrics, in the text exposition format: requests by route, method and status,
//! request latency by route, commit latency, and the store's size.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use parking_lot::Mutex;

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    total: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.total += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.total);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.total);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    commits: Histogram,
    rejected_overload: u64,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// One finished request on `route` (the route's pattern, not the raw path, so that ids do
    /// not make a label each).
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut m = self.inner.lock();
        *m.requests.entry((route.to_string(), method.to_string(), status)).or_default() += 1;
        m.latency.entry(route.to_string()).or_default().observe(elapsed.as_secs_f64());
    }

    /// One store commit (a write call) and how long it took.
    pub fn commit(&self, elapsed: Duration) {
        self.inner.lock().commits.observe(elapsed.as_secs_f64());
    }

    /// One request turned away by the concurrency cap.
    pub fn overloaded(&self) {
        self.inner.lock().rejected_overload += 1;
    }

    /// The exposition text, with the store's current size.
    pub fn render(&self, arrays: usize, index_bytes: usize) -> String {
        let m = self.inner.lock();
        let mut out = String::new();
        out.push_str("# HELP teleo_http_requests_total Requests handled, by route, method and status.\n");
        out.push_str("# TYPE teleo_http_requests_total counter\n");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "teleo_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP teleo_http_request_duration_seconds Request latency, by route.\n");
        out.push_str("# TYPE teleo_http_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            h.render(
                &mut out,
                "teleo_http_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
            );
        }
        out.push_str("# HELP teleo_commit_duration_seconds Store write calls (one atomic commit each).\n");
        out.push_str("# TYPE teleo_commit_duration_seconds histogram\n");
        m.commits.render(&mut out, "teleo_commit_duration_seconds", "");
        out.push_str("# HELP teleo_http_overloaded_total Requests refused by the concurrency cap (503).\n");
        out.push_str("# TYPE teleo_http_overloaded_total counter\n");
        let _ = writeln!(out, "teleo_http_overloaded_total {}", m.rejected_overload);
        out.push_str("# HELP teleo_store_arrays Arrays stored.\n# TYPE teleo_store_arrays gauge\n");
        let _ = writeln!(out, "teleo_store_arrays {arrays}");
        out.push_str("# HELP teleo_index_memory_bytes Memory held by the 13 indices.\n");
        out.push_str("# TYPE teleo_index_memory_bytes gauge\n");
        let _ = writeln!(out, "teleo_index_memory_bytes {index_bytes}");
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_requests_and_fills_cumulative_buckets() {
        let m = Metrics::default();
        m.request("/v1/arrays/{id}", "GET", 200, Duration::from_micros(300));
        m.request("/v1/arrays/{id}", "GET", 200, Duration::from_millis(30));
        m.request("/v1/arrays/{id}", "GET", 404, Duration::from_micros(50));
        m.commit(Duration::from_millis(2));
        let text = m.render(5, 100);
        assert!(text.contains(
            "teleo_http_requests_total{route=\"/v1/arrays/{id}\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains("status=\"404\"} 1"));
        assert!(text.contains(
            "teleo_http_request_duration_seconds_bucket{route=\"/v1/arrays/{id}\",le=\"0.0005\"} 2"
        ));
        assert!(text.contains("teleo_http_request_duration_seconds_count{route=\"/v1/arrays/{id}\"} 3"));
        assert!(text.contains("teleo_commit_duration_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("teleo_store_arrays 5"));
    }
}
