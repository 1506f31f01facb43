//! Prometheus metrics, hand-rolled text exposition: requests by route and status, denials
//! by reason code, verification and upstream latency histograms, JWKS fetches. Every label
//! set is bounded (routes come from config, statuses and reasons from fixed sets).
//!
//! What every request counts is counted per thread, in shards on their own cache lines,
//! and summed when rendered: one shared counter would be a cache line bouncing between the
//! workers on every request.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// A fixed-bucket latency histogram in seconds. Each observation counts in its own bucket
/// only (three atomic adds, not one per bucket: every request observes twice, from every
/// core); the cumulative counts Prometheus wants are summed when rendered.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The sum of `parts` as one histogram.
    fn render<'a>(
        parts: impl Iterator<Item = &'a Histogram> + Clone,
        out: &mut String,
        name: &str,
        help: &str,
    ) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += parts.clone().map(|h| load(&h.counts[i])).sum::<u64>();
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = parts.clone().map(|h| load(&h.count)).sum::<u64>();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = parts.map(|h| load(&h.sum_nanos)).sum::<u64>() as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Shards: more than the workers a machine usually runs, so threads rarely share one.
const SHARDS: usize = 8;

thread_local! {
    /// This thread's shard, handed out round-robin on first use.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

/// What one thread counts per request. Aligned so that two shards never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// route -> status -> count; looked up by `&str`, so counting allocates nothing.
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    denials: Mutex<BTreeMap<&'static str, u64>>,
    verify_latency: Histogram,
    upstream_latency: Histogram,
}

/// The gateway's counters. Shared by every connection (`Arc`).
#[derive(Debug, Default)]
pub struct Metrics {
    shards: [Shard; SHARDS],
    /// Connections open on each worker, once the workers run.
    worker_connections: OnceLock<Arc<[AtomicUsize]>>,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

/// Bounds the `route` label: route names come from config, but a config can be large
/// (statuses per route are bounded by the status codes hyper can send).
const MAX_REQUEST_SERIES: usize = 4096;

impl Metrics {
    fn shard(&self) -> &Shard {
        &self.shards[SHARD.with(|i| *i)]
    }

    pub fn request(&self, route: &str, status: u16) {
        let mut map = self.shard().requests.lock();
        if let Some(statuses) = map.get_mut(route) {
            *statuses.entry(status).or_insert(0) += 1;
        } else if map.len() < MAX_REQUEST_SERIES {
            map.insert(route.to_owned(), BTreeMap::from([(status, 1)]));
        }
    }

    /// A refusal (or a token that did not verify on a public route), by reason code.
    pub fn denial(&self, reason: &'static str) {
        *self.shard().denials.lock().entry(reason).or_insert(0) += 1;
    }

    pub fn denials(&self, reason: &str) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| s.denials.lock().get(reason).copied())
            .sum()
    }

    /// How long a token took to verify (a cache hit included; a connection's repeated token,
    /// recalled without a lookup, is not verified and not counted).
    pub fn verified(&self, took: Duration) {
        self.shard().verify_latency.observe(took);
    }

    /// How long the upstream took to send its response head.
    pub fn upstream_answered(&self, took: Duration) {
        self.shard().upstream_latency.observe(took);
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Where the workers count their open connections.
    pub(crate) fn watch_workers(&self, open: Arc<[AtomicUsize]>) {
        let _ = self.worker_connections.set(open);
    }

    pub fn reloaded(&self, ok: bool) {
        if ok {
            self.reloads.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The text exposition; `jwks` lists (url, fetch attempts) of the key caches in use.
    pub fn render(&self, jwks: &[(String, u64)]) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP gatehouse_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE gatehouse_requests_total counter\n");
        let mut requests: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
        let mut denials: BTreeMap<&'static str, u64> = BTreeMap::new();
        for shard in &self.shards {
            for (route, statuses) in shard.requests.lock().iter() {
                let total = requests.entry(route.clone()).or_default();
                for (status, n) in statuses {
                    *total.entry(*status).or_insert(0) += n;
                }
            }
            for (reason, n) in shard.denials.lock().iter() {
                *denials.entry(reason).or_insert(0) += n;
            }
        }
        for (route, statuses) in &requests {
            for (status, n) in statuses {
                let _ = writeln!(
                    out,
                    "gatehouse_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP gatehouse_denials_total Requests refused (or tokens not admitted), by reason code.\n");
        out.push_str("# TYPE gatehouse_denials_total counter\n");
        for (reason, n) in &denials {
            let _ = writeln!(out, "gatehouse_denials_total{{reason=\"{reason}\"}} {n}");
        }
        Histogram::render(
            self.shards.iter().map(|s| &s.verify_latency),
            &mut out,
            "gatehouse_verify_duration_seconds",
            "Token verification time (cache hits included; a token a connection repeats is recalled, not counted).",
        );
        Histogram::render(
            self.shards.iter().map(|s| &s.upstream_latency),
            &mut out,
            "gatehouse_upstream_duration_seconds",
            "Time from forwarding a request to the upstream's response head.",
        );
        out.push_str(
            "# HELP gatehouse_jwks_fetches_total Key document fetches attempted, by URL.\n",
        );
        out.push_str("# TYPE gatehouse_jwks_fetches_total counter\n");
        for (url, n) in jwks {
            let _ = writeln!(
                out,
                "gatehouse_jwks_fetches_total{{url=\"{}\"}} {n}",
                escape(url)
            );
        }
        let keys_unavailable = denials.get("keys_unavailable").copied().unwrap_or(0);
        out.push_str("# HELP gatehouse_jwks_failures_total Requests refused because issuer keys could not be fetched.\n");
        out.push_str("# TYPE gatehouse_jwks_failures_total counter\n");
        let _ = writeln!(out, "gatehouse_jwks_failures_total {keys_unavailable}");
        out.push_str("# TYPE gatehouse_connections_open gauge\n");
        let _ = writeln!(
            out,
            "gatehouse_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        if let Some(workers) = self.worker_connections.get() {
            out.push_str(
                "# HELP gatehouse_worker_connections_open Connections open, by worker thread.\n",
            );
            out.push_str("# TYPE gatehouse_worker_connections_open gauge\n");
            for (worker, open) in workers.iter().enumerate() {
                let open = open.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "gatehouse_worker_connections_open{{worker=\"{worker}\"}} {open}"
                );
            }
        }
        out.push_str("# TYPE gatehouse_connections_total counter\n");
        let _ = writeln!(
            out,
            "gatehouse_connections_total {}",
            self.connections_total.load(Ordering::Relaxed)
        );
        out.push_str("# TYPE gatehouse_config_reloads_total counter\n");
        let _ = writeln!(
            out,
            "gatehouse_config_reloads_total{{result=\"ok\"}} {}",
            self.reloads.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "gatehouse_config_reloads_total{{result=\"error\"}} {}",
            self.reload_failures.load(Ordering::Relaxed)
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("api", 200);
        m.request("api", 200);
        m.denial("expired");
        m.verified(Duration::from_micros(300));
        let text = m.render(&[("http://k/certs".into(), 2)]);
        assert!(text.contains("gatehouse_requests_total{route=\"api\",status=\"200\"} 2"));
        assert!(text.contains("gatehouse_denials_total{reason=\"expired\"} 1"));
        assert!(text.contains("gatehouse_verify_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("gatehouse_verify_duration_seconds_bucket{le=\"0.00025\"} 0"));
        assert!(text.contains("gatehouse_jwks_fetches_total{url=\"http://k/certs\"} 2"));
        // Cumulative: every bucket above the observation counts it.
        // From another thread (another shard): still one series.
        std::thread::scope(|s| {
            s.spawn(|| {
                m.verified(Duration::from_secs(2));
                m.request("api", 200);
            });
        });
        let text = m.render(&[]);
        assert!(text.contains("gatehouse_verify_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("gatehouse_verify_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("gatehouse_verify_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("gatehouse_requests_total{route=\"api\",status=\"200\"} 3"));
        assert_eq!(
            text.matches("gatehouse_requests_total{route=\"api\"")
                .count(),
            1
        );
    }
}
