//! Reading a homeserver's `/metrics` in tests: one scrape, and the value of one
//! sample in it.

use std::net::SocketAddr;

/// `GET /metrics` on the HTTP listener at `address`: the status code and the
/// body. Panics when the server does not answer (a test's bug, or its failure).
pub async fn scrape(address: SocketAddr) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"));
    let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
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
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
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
