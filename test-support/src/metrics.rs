//! Reading a homeserver's `/metrics` in tests: one scrape, and the value of one
//! sample in it; and `promtool check metrics` over a scrape.

use std::net::SocketAddr;

/// `GET /metrics` on the HTTP listener at `address`: the status code and the
/// body. Panics when the server does not answer (a test's bug, or its failure).
pub async fn scrape(address: SocketAddr) -> (u16, String) {
    let (status, _content_type, body) = get(address, "/metrics", None).await;
    (status, body)
}

/// `GET /metrics` with `Accept: accept`: the status code, the `Content-Type`
/// and the body.
pub async fn scrape_accepting(address: SocketAddr, accept: &str) -> (u16, String, String) {
    get(address, "/metrics", Some(accept)).await
}

/// `GET path` (with its query) over HTTP/1.1 at `address`, with an `Accept`
/// header when given: the status code, the `Content-Type` (empty when none) and
/// the body. Panics when the server does not answer.
pub async fn get(address: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"));
    let accept = accept.map_or(String::new(), |accept| format!("Accept: {accept}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read the response");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, content_type, body)
}

/// Runs `promtool check metrics` (Debian's `prometheus` package) over the
/// exposition `text`: whether it exited 0, and what it printed (its lint
/// findings and errors). Panics, saying what to install, when `promtool` is
/// missing.
pub fn promtool_check_metrics(text: &str) -> (bool, String) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "this test needs promtool: install Debian's prometheus package (apt-get install -y --no-install-recommends prometheus; scripts/services does): {error}"
            )
        });
    let mut stdin = child.stdin.take().expect("promtool's stdin is piped");
    stdin
        .write_all(text.as_bytes())
        .expect("cannot write to promtool");
    drop(stdin);
    let output = child.wait_with_output().expect("promtool did not finish");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The metrics text at `address`, which must answer 200.
pub async fn scrape_ok(address: SocketAddr) -> String {
    let (status, body) = scrape(address).await;
    assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
    body
}

/// The value of the sample `series` in the metrics `text`: the name and, if
/// the sample has labels, the labels exactly as rendered, e.g.
/// `conclave_messages_accepted_total{kind="application"}`. `None` when there is
/// no such sample.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        // The series must end here: `x_total` is not a sample of `x_total_more`.
        let value = rest.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

/// The sum of every sample of the metric `name` whose labels contain all of
/// `labels` (`key="value"` pairs as rendered); 0 when there is none.
pub fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|label| label_text.split(',').any(|pair| pair == *label))
                .then(|| value.split(' ').next()?.parse::<f64>().ok())?
        })
        .sum()
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
