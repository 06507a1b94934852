//! A real Prometheus for one test (Debian's `prometheus` package): started
//! with a configuration that scrapes the given homeservers' `/metrics` every
//! second, its data in a temporary directory of its own and its HTTP API on a
//! free 127.0.0.1 port; killed when dropped. A test that needs it fails loudly
//! when `prometheus` is not installed; it never skips.
//!
//! The test reads what Prometheus stored through its HTTP API
//! (`/api/v1/query`), exactly as a dashboard would.

use crate::cluster::{LOG_TAIL_LINES, free_address, tail, wait_for_service};
use crate::metrics::get;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Longest a fresh Prometheus may take to answer `/-/ready`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The scrape job's name, the `job` label of every series it stores.
pub const JOB: &str = "conclave-homeserver";

/// A `prometheus` process this test started; killed when dropped.
pub struct TestPrometheus {
    address: SocketAddr,
    child: Child,
    log_path: PathBuf,
    /// Holds the configuration, the data directory and the log.
    _directory: tempfile::TempDir,
}

/// One sample of a query's answer: the series' labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: f64,
}

impl TestPrometheus {
    /// Starts Prometheus scraping `targets` (HTTP listeners serving
    /// `/metrics`) every second, and waits until it is ready.
    pub async fn start(targets: &[SocketAddr]) -> TestPrometheus {
        let directory = tempfile::Builder::new()
            .prefix("conclave-prometheus-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let address = free_address(Ipv4Addr::LOCALHOST);
        let targets: Vec<String> = targets
            .iter()
            .map(|target| format!("\"{target}\""))
            .collect();
        let configuration = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let configuration_path = directory.path().join("prometheus.yml");
        std::fs::write(&configuration_path, configuration)
            .expect("cannot write the Prometheus configuration");
        let log_path = directory.path().join("prometheus.log");
        let log = File::create(&log_path).expect("cannot create the Prometheus log");
        let stderr = log.try_clone().expect("cannot share the Prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", configuration_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                directory.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "this test needs prometheus on the PATH: install Debian's prometheus package (apt-get install -y --no-install-recommends prometheus; scripts/services does): {error}"
                )
            });
        let mut prometheus = TestPrometheus {
            address,
            child,
            log_path,
            _directory: directory,
        };
        prometheus.wait_until_ready().await;
        prometheus
    }

    /// Where its HTTP API listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    async fn wait_until_ready(&mut self) {
        let address = self.address;
        wait_for_service(
            &format!("prometheus at {address}"),
            "answer 200 on /-/ready",
            &mut self.child,
            &self.log_path,
            START_TIMEOUT,
            || async move {
                tokio::net::TcpStream::connect(address).await.is_ok()
                    && get(address, "/-/ready", None).await.0 == 200
            },
        )
        .await;
    }

    /// Evaluates the PromQL `query` now (`/api/v1/query`): the samples of its
    /// instant vector, none when nothing matches yet. Panics on an error
    /// answer, with the end of Prometheus's log.
    pub async fn query(&self, query: &str) -> Vec<QuerySample> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let (status, _, body) = get(self.address, &path, None).await;
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|error| {
            panic!("prometheus answered {status} with no JSON ({error}): {body}")
        });
        if status != 200 || answer["status"] != "success" {
            panic!(
                "prometheus refused the query {query:?} ({status}): {body}; its log ends:\n{}",
                tail(&self.log_path, LOG_TAIL_LINES)
            );
        }
        let Some(results) = answer["data"]["result"].as_array() else {
            panic!("the query {query:?} is not an instant vector: {body}");
        };
        results
            .iter()
            .map(|result| QuerySample {
                labels: result["metric"].as_object().cloned().unwrap_or_default(),
                value: result["value"][1]
                    .as_str()
                    .and_then(|value| value.parse().ok())
                    .unwrap_or_else(|| panic!("a sample without a value: {result}")),
            })
            .collect()
    }

    /// The end of Prometheus's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path, LOG_TAIL_LINES)
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` as a URL query value: every byte but the unreserved ones escaped.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
