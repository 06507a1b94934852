//! The browser harness itself (`conclave_test_support::TestBrowser`) against a
//! tiny page served by axum: loading, typing, a form POST that loads another
//! document, a `<main>` swapped in place (as htmx's boosted forms do), cookies,
//! the phone viewport's overflow check, screenshots, the page's errors, and a
//! wait that times out.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use conclave_test_support::TestBrowser;
use conclave_test_support::wait::within;
use std::net::SocketAddr;
use std::time::Duration;

/// Launching Chromium and a few pages: well under this.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

const FORM_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Form</title></head>
<body><main>
<h1 id="title">A form</h1>
<form method="post" action="/greet">
  <label for="name">Name</label> <input id="name" name="name" value="someone">
  <button id="send" type="submit">Send</button>
</form>
<button id="swap" type="button" onclick="document.querySelector('main').outerHTML = '<main><p id=swapped>swapped in place</p></main>'">Swap</button>
</main></body></html>"#;

const BROKEN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Broken</title>
<script>throw new Error("thrown on purpose");</script></head>
<body><main><p id="broken">a script failed</p></main></body></html>"#;

const WIDE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Wide</title></head>
<body><main><div style="width: 600px">too wide for a phone</div></main></body></html>"#;

async fn greet(body: String) -> impl IntoResponse {
    let name = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="))
        .unwrap_or("")
        .replace('+', " ");
    (
        [(header::SET_COOKIE, "greeted=yes; Path=/; HttpOnly")],
        Html(format!(
            "<!doctype html><html lang=en><head><title>Greeting</title></head>\
             <body><main><p id=greeting>Hello, {name}</p></main></body></html>"
        )),
    )
}

async fn serve_test_pages() -> SocketAddr {
    let router = Router::new()
        .route("/", get(|| async { Html(FORM_PAGE) }))
        .route("/wide", get(|| async { Html(WIDE_PAGE) }))
        .route("/broken", get(|| async { Html(BROKEN_PAGE) }))
        .route("/greet", axum::routing::post(greet));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("cannot bind the test page's listener");
    let address = listener.local_addr().expect("bound socket");
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("the test page's server failed");
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_a_page_through_forms_swaps_cookies_and_viewports() {
    within(TEST_TIMEOUT, "the browser harness's test", async {
        let address = serve_test_pages().await;
        let browser = TestBrowser::launch("browser-harness").await;

        browser.goto(&format!("http://{address}/")).await;
        assert_eq!(browser.text("#title").await, "A form");
        let screenshot = browser.screenshot("form").await;
        let png = std::fs::read(&screenshot).expect("the screenshot was written");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            screenshot.display()
        );

        // Typing replaces the field's value; the POST loads another document.
        browser.fill("#name", "Ada Lovelace").await;
        browser.click_for_new_page("#send").await;
        assert_eq!(browser.text("#greeting").await, "Hello, Ada Lovelace");
        assert!(browser.url().await.ends_with("/greet"));
        assert_eq!(browser.cookie("greeted").await.as_deref(), Some("yes"));
        browser.set_cookie("greeted", "again", "/").await;
        assert_eq!(browser.cookie("greeted").await.as_deref(), Some("again"));

        // A <main> replaced without loading a document counts as a new page.
        browser.goto(&format!("http://{address}/")).await;
        browser.click_for_new_page("#swap").await;
        assert_eq!(browser.text("#swapped").await, "swapped in place");
        assert_eq!(browser.count("#title").await, 0);

        // The phone's width: the form page fits, the wide one scrolls sideways.
        browser.emulate_phone().await;
        browser.goto(&format!("http://{address}/")).await;
        let narrow: u32 = browser
            .evaluate("document.scrollingElement.scrollWidth")
            .await;
        assert!(
            narrow <= 375,
            "the form page is {narrow} px wide on a phone"
        );
        browser.goto(&format!("http://{address}/wide")).await;
        let wide: u32 = browser
            .evaluate("document.scrollingElement.scrollWidth")
            .await;
        assert!(
            wide > 375,
            "the wide page is only {wide} px wide on a phone"
        );
        browser.screenshot("wide-on-a-phone").await;
        browser.emulate_desktop().await;
        let desktop: u32 = browser.evaluate("window.innerWidth").await;
        assert_eq!(desktop, 1280);

        // Nothing went wrong in the pages so far; a script's exception is
        // reported.
        assert_eq!(browser.page_errors(), Vec::<String>::new());
        browser.goto(&format!("http://{address}/broken")).await;
        browser.wait_for("#broken").await;
        conclave_test_support::eventually(TEST_TIMEOUT, "the exception to be reported", || async {
            browser
                .page_errors()
                .iter()
                .any(|error| error.contains("thrown on purpose"))
                .then_some(())
        })
        .await;

        browser.close().await;
    })
    .await;
}

/// A wait for what never comes fails with the selector and a screenshot path,
/// rather than hanging or passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "an element matching #never-there")]
async fn a_selector_that_never_appears_fails_the_test() {
    within(TEST_TIMEOUT, "the browser harness's timeout test", async {
        let address = serve_test_pages().await;
        let browser = TestBrowser::launch("browser-harness/timeout").await;
        browser.goto(&format!("http://{address}/")).await;
        browser.wait_for("#never-there").await;
    })
    .await;
}
