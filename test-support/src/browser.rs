//! A headless Chromium driven over the DevTools protocol (chromiumoxide), for
//! the admin console's browser tests: Debian's `chromium` on a private profile
//! in a temporary directory, a 1280x900 window (or a phone's 375 px width on
//! demand), waits for pages and selectors with a deadline, real mouse clicks and
//! key presses, and screenshots kept as test artifacts under
//! `<target>/test-artifacts/`.
//!
//! The browser is killed when a [`TestBrowser`] is dropped, also when a test
//! panics; [`TestBrowser::close`] closes it gracefully.

use crate::wait::Backoff;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::network::CookieParam;
use chromiumoxide::cdp::js_protocol::runtime::EventExceptionThrown;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::{Page, ScreenshotParams};
use futures::StreamExt;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The browser the tests drive, unless [`CHROMIUM_VARIABLE`] names another.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Environment variable naming another Chromium (or Chrome) executable.
pub const CHROMIUM_VARIABLE: &str = "CONCLAVE_CHROMIUM";

/// The window of a desktop browser.
pub const DESKTOP_WIDTH: u32 = 1280;
pub const DESKTOP_HEIGHT: u32 = 900;

/// A small phone's viewport (an iPhone SE's CSS pixels), for
/// [`TestBrowser::emulate_phone`].
pub const PHONE_WIDTH: u32 = 375;
pub const PHONE_HEIGHT: u32 = 667;

/// Longest wait for a page, a selector or a text: a console page is a few
/// in-process calls on a local database, so this is only reached when the
/// awaited thing never comes.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest wait for Chromium to start and open its DevTools endpoint (its
/// first start on a cold disk, two tests starting at once on two cores).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The attribute [`TestBrowser::click_for_new_page`] marks the current page
/// with, to see when another one replaced it.
const STALE_MARKER: &str = "data-test-browser-stale";

/// A headless Chromium with one tab, on a profile of its own.
pub struct TestBrowser {
    /// Declared first, so dropped first: the Chromium process (killed on drop
    /// by chromiumoxide) goes before its profile directory is removed.
    browser: Browser,
    page: Page,
    /// Drives the DevTools connection: every command's answer and event
    /// passes through it.
    handler: JoinHandle<()>,
    /// Collects the tab's errors into `page_errors`.
    error_collector: JoinHandle<()>,
    /// What the tab logged at error level (a CSP violation, a failed load)
    /// and the exceptions its scripts threw, in order.
    page_errors: Arc<Mutex<Vec<String>>>,
    artifacts: PathBuf,
    _profile: tempfile::TempDir,
}

impl TestBrowser {
    /// Starts Chromium headless (`--headless=new`; `--no-sandbox` as root,
    /// where Chromium's sandbox refuses to start) with a 1280x900 window on an
    /// empty tab. Screenshots go to `<target>/test-artifacts/<artifacts>/`.
    ///
    /// Panics, naming the command that installs it, when Chromium is missing:
    /// a browser test never silently skips.
    pub async fn launch(artifacts: impl AsRef<Path>) -> TestBrowser {
        let executable = chromium_executable();
        let profile = tempfile::Builder::new()
            .prefix("conclave-chromium-")
            .tempdir()
            .expect("cannot make Chromium's profile directory");
        let artifacts = artifacts_root().join(artifacts);
        std::fs::create_dir_all(&artifacts)
            .unwrap_or_else(|error| panic!("cannot make {}: {error}", artifacts.display()));
        // A failure's screenshot of an earlier run would mislead.
        let _ = std::fs::remove_file(artifacts.join("failure.png"));
        let mut config = BrowserConfig::builder()
            .chrome_executable(&executable)
            .new_headless_mode()
            .user_data_dir(profile.path())
            .window_size(DESKTOP_WIDTH, DESKTOP_HEIGHT)
            .viewport(desktop_viewport())
            .launch_timeout(LAUNCH_TIMEOUT)
            .request_timeout(PAGE_TIMEOUT)
            // No first-run, sync or component downloads: a test talks to
            // loopback only.
            .args([
                "--no-first-run",
                "--disable-sync",
                "--disable-component-update",
                "--disable-gpu",
            ]);
        if running_as_root() {
            config = config.no_sandbox();
        }
        let config = config
            .build()
            .unwrap_or_else(|error| panic!("cannot configure Chromium: {error}"));
        let (browser, mut handler) = Browser::launch(config).await.unwrap_or_else(|error| {
            panic!("cannot start {} headless: {error}", executable.display())
        });
        // The handler yields an error for a message it cannot read (a newer
        // Chromium's event it does not know) and goes on; it ends when the
        // connection does.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let page = browser
            .new_page("about:blank")
            .await
            .unwrap_or_else(|error| panic!("cannot open a tab in Chromium: {error}"));
        let page_errors = Arc::new(Mutex::new(Vec::new()));
        let error_collector = collect_errors(&page, page_errors.clone()).await;
        TestBrowser {
            browser,
            page,
            handler,
            error_collector,
            page_errors,
            artifacts,
            _profile: profile,
        }
    }

    /// What the pages shown so far logged at error level (a Content Security
    /// Policy violation, a resource that failed to load) and the exceptions
    /// their scripts threw, as Chromium's console would show them. A missing
    /// `/favicon.ico`, which the browser asks for on its own, is left out.
    pub fn page_errors(&self) -> Vec<String> {
        self.page_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Where this browser's screenshots go.
    pub fn artifacts(&self) -> &Path {
        &self.artifacts
    }

    /// The tab, for what this harness does not wrap.
    pub fn page(&self) -> &Page {
        &self.page
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) {
        if let Err(error) = self.page.goto(url).await {
            self.fail(&format!("cannot open {url}: {error}")).await;
        }
        self.wait_until("the page to load", "document.readyState === 'complete'")
            .await;
    }

    /// The address of the page shown now.
    pub async fn url(&self) -> String {
        self.evaluate::<String>("location.href").await
    }

    /// Evaluates a JavaScript expression in the page and returns its value
    /// (JSON-deserialised).
    pub async fn evaluate<T: serde::de::DeserializeOwned>(&self, expression: &str) -> T {
        match self.try_evaluate(expression).await {
            Ok(value) => serde_json::from_value(value.clone()).unwrap_or_else(|error| {
                panic!("`{expression}` gave {value}, which does not fit: {error}")
            }),
            Err(error) => {
                self.fail(&format!("cannot evaluate `{expression}`: {error}"))
                    .await
            }
        }
    }

    /// Waits until `expression` is true in the page, through page loads and
    /// swaps (an evaluation that fails meanwhile counts as "not yet").
    pub async fn wait_until(&self, what: &str, expression: &str) {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        let mut backoff = Backoff::new();
        loop {
            let last = match self.try_evaluate(expression).await {
                Ok(Value::Bool(true)) => return,
                Ok(value) => format!("it was {value}"),
                Err(error) => format!("evaluating it failed: {error}"),
            };
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "waited {} s for {what} (`{expression}`), and {last}",
                    PAGE_TIMEOUT.as_secs()
                ))
                .await;
            }
            backoff.pause().await;
        }
    }

    /// Waits until an element matches `selector`.
    pub async fn wait_for(&self, selector: &str) {
        self.wait_until(
            &format!("an element matching {selector}"),
            &format!("document.querySelector({}) !== null", js_string(selector)),
        )
        .await;
    }

    /// Waits until the first element matching `selector` shows `needle` in
    /// its text, and returns that text.
    pub async fn wait_for_text(&self, selector: &str, needle: &str) -> String {
        self.wait_until(
            &format!("{selector} to show {needle:?}"),
            &format!(
                "(document.querySelector({0})?.innerText ?? '').includes({1})",
                js_string(selector),
                js_string(needle)
            ),
        )
        .await;
        self.text(selector).await
    }

    /// The rendered text of the first element matching `selector` (waiting for
    /// one).
    pub async fn text(&self, selector: &str) -> String {
        self.wait_for(selector).await;
        self.evaluate::<String>(&format!(
            "document.querySelector({}).innerText",
            js_string(selector)
        ))
        .await
    }

    /// How many elements match `selector` now.
    pub async fn count(&self, selector: &str) -> usize {
        self.evaluate::<usize>(&format!(
            "document.querySelectorAll({}).length",
            js_string(selector)
        ))
        .await
    }

    /// Clicks the element matching `selector` (waiting for one) with the
    /// mouse, as a user would: scrolled into view, pressed at its centre.
    pub async fn click(&self, selector: &str) {
        self.wait_for(selector).await;
        let clicked = async {
            self.page
                .find_element(selector)
                .await?
                .click()
                .await
                .map(|_| ())
        }
        .await;
        if let Err(error) = clicked {
            self.fail(&format!("cannot click {selector}: {error}"))
                .await;
        }
    }

    /// Empties the field matching `selector` and types `text` into it, key by
    /// key.
    pub async fn fill(&self, selector: &str, text: &str) {
        self.wait_for(selector).await;
        self.evaluate::<bool>(&format!(
            "(element => {{ element.value = ''; element.focus(); return true; }})(document.querySelector({}))",
            js_string(selector)
        ))
        .await;
        let typed = async {
            self.page
                .find_element(selector)
                .await?
                .type_str(text)
                .await
                .map(|_| ())
        }
        .await;
        if let Err(error) = typed {
            self.fail(&format!("cannot type into {selector}: {error}"))
                .await;
        }
    }

    /// Clicks `selector` (a submit button, a link) and waits until another
    /// page replaced this one: a new document, or a new `<main>` swapped in
    /// by htmx's boosted links and forms (which change the page without
    /// loading a document).
    pub async fn click_for_new_page(&self, selector: &str) {
        self.wait_for(selector).await;
        self.evaluate::<bool>(&format!(
            "(() => {{ document.documentElement.setAttribute('{STALE_MARKER}', ''); \
             document.querySelectorAll('main').forEach(main => main.setAttribute('{STALE_MARKER}', '')); \
             return true; }})()"
        ))
        .await;
        self.click(selector).await;
        self.wait_until(
            &format!("another page after clicking {selector}"),
            &format!(
                "document.readyState === 'complete' && \
                 (!document.documentElement.hasAttribute('{STALE_MARKER}') || \
                  document.querySelector('main:not([{STALE_MARKER}])') !== null) && \
                 document.querySelector('.htmx-request') === null"
            ),
        )
        .await;
    }

    /// The value of the cookie `name` the browser sends to the page shown
    /// now (HttpOnly ones included).
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let cookies = match self.page.get_cookies().await {
            Ok(cookies) => cookies,
            Err(error) => {
                self.fail(&format!("cannot read the cookies: {error}"))
                    .await
            }
        };
        cookies
            .into_iter()
            .find(|cookie| cookie.name == name)
            .map(|cookie| cookie.value)
    }

    /// Sets the cookie `name` for the page shown now (e.g. to present an old
    /// session's cookie again), with `path`.
    pub async fn set_cookie(&self, name: &str, value: &str, path: &str) {
        let url = self.url().await;
        let mut cookie = CookieParam::new(name, value);
        cookie.url = Some(url);
        cookie.path = Some(path.to_owned());
        if let Err(error) = self.page.set_cookie(cookie).await {
            self.fail(&format!("cannot set the cookie {name}: {error}"))
                .await;
        }
    }

    /// Shows pages as a small phone does: 375 CSS pixels wide, mobile
    /// emulation (the viewport meta tag honoured, overlay scrollbars).
    pub async fn emulate_phone(&self) {
        let metrics = SetDeviceMetricsOverrideParams::new(PHONE_WIDTH, PHONE_HEIGHT, 2.0, true);
        if let Err(error) = self.page.execute(metrics).await {
            self.fail(&format!("cannot emulate a phone's screen: {error}"))
                .await;
        }
    }

    /// Back to the 1280x900 desktop window.
    pub async fn emulate_desktop(&self) {
        let metrics =
            SetDeviceMetricsOverrideParams::new(DESKTOP_WIDTH, DESKTOP_HEIGHT, 1.0, false);
        if let Err(error) = self.page.execute(metrics).await {
            self.fail(&format!("cannot restore the desktop window: {error}"))
                .await;
        }
    }

    /// Saves the whole page as `<artifacts>/<name>.png` and returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let path = self.artifacts.join(format!("{name}.png"));
        self.page
            .save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
            .await
            .unwrap_or_else(|error| {
                panic!("cannot save the screenshot {}: {error}", path.display())
            });
        path
    }

    /// Closes Chromium gracefully and waits for it to exit.
    pub async fn close(mut self) {
        // A browser that does not answer is killed when dropped.
        let closed = tokio::time::timeout(PAGE_TIMEOUT, async {
            let _ = self.browser.close().await;
            let _ = self.browser.wait().await;
        })
        .await;
        if closed.is_err() {
            eprintln!(
                "Chromium did not close within {} s; killing it",
                PAGE_TIMEOUT.as_secs()
            );
        }
    }

    async fn try_evaluate(&self, expression: &str) -> Result<Value, String> {
        let result = self
            .page
            .evaluate_expression(expression)
            .await
            .map_err(|error| error.to_string())?;
        Ok(result.value().cloned().unwrap_or(Value::Null))
    }

    /// Panics with `message`, the page's address and a screenshot of what the
    /// browser showed.
    async fn fail(&self, message: &str) -> ! {
        let url = match self.page.url().await {
            Ok(Some(url)) => url,
            _ => "an unknown page".to_owned(),
        };
        let screenshot = self.artifacts.join("failure.png");
        let saved = self
            .page
            .save_screenshot(
                ScreenshotParams::builder().full_page(true).build(),
                &screenshot,
            )
            .await;
        let shown = match saved {
            Ok(_) => format!("the page as shown: {}", screenshot.display()),
            Err(error) => format!("no screenshot ({error})"),
        };
        panic!("{message}\n  at {url}\n  {shown}");
    }
}

impl Drop for TestBrowser {
    fn drop(&mut self) {
        self.handler.abort();
        self.error_collector.abort();
        if std::thread::panicking() {
            eprintln!(
                "the browser's screenshots are in {}",
                self.artifacts.display()
            );
        }
    }
}

/// Enables the tab's log and keeps its error entries and uncaught exceptions
/// in `errors`, until the browser goes.
async fn collect_errors(page: &Page, errors: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    let listening = async {
        page.enable_log().await?;
        let entries = page.event_listener::<EventEntryAdded>().await?;
        let exceptions = page.event_listener::<EventExceptionThrown>().await?;
        Ok::<_, chromiumoxide::error::CdpError>((entries, exceptions))
    };
    let (entries, exceptions) = listening
        .await
        .unwrap_or_else(|error| panic!("cannot listen to the tab's console: {error}"));
    let entries = entries.filter_map(|event| {
        let entry = &event.entry;
        let favicon = entry
            .url
            .as_deref()
            .is_some_and(|url| url.ends_with("/favicon.ico"));
        let error = entry.level == LogEntryLevel::Error && !favicon;
        let text = match &entry.url {
            Some(url) => format!("{} ({url})", entry.text),
            None => entry.text.clone(),
        };
        std::future::ready(error.then_some(text))
    });
    let exceptions = exceptions.map(|event| {
        let details = &event.exception_details;
        let description = details
            .exception
            .as_ref()
            .and_then(|exception| exception.description.clone())
            .unwrap_or_default();
        format!("{} {description}", details.text)
    });
    let mut all = futures::stream::select(entries, exceptions);
    tokio::spawn(async move {
        while let Some(error) = all.next().await {
            errors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(error);
        }
    })
}

/// `<target>/test-artifacts`: `CARGO_TARGET_DIR` when set, or else the target
/// directory the running test executable was built into
/// (`<target>/<profile>/deps/<test>`).
pub fn artifacts_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let executable = std::env::current_exe().ok()?;
            let deps = executable.parent()?;
            deps.ends_with("deps")
                .then(|| deps.parent()?.parent().map(Path::to_path_buf))
                .flatten()
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("test-artifacts")
}

/// The Chromium to run: `$CONCLAVE_CHROMIUM`, or Debian's. Panics with the
/// command that installs it when it is missing.
pub fn chromium_executable() -> PathBuf {
    let executable = std::env::var_os(CHROMIUM_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CHROMIUM));
    assert!(
        executable.is_file(),
        "the browser tests drive Chromium headless, and {} is missing: install it with\n    \
         scripts/services    (or: apt-get install -y chromium)\nor name another one in {CHROMIUM_VARIABLE}",
        executable.display()
    );
    executable
}

fn desktop_viewport() -> Viewport {
    Viewport {
        width: DESKTOP_WIDTH,
        height: DESKTOP_HEIGHT,
        device_scale_factor: Some(1.0),
        emulating_mobile: false,
        is_landscape: true,
        has_touch: false,
    }
}

/// Whether this process runs as root (the owner of `/proc/self` is the
/// effective user), where Chromium's sandbox will not start.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// `text` as a JavaScript string literal (JSON's is one).
fn js_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}
