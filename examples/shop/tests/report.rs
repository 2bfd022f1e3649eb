//! The demo's picture: what a run records, and the page drawn from it
//! opened in headless Chromium, where it loads without a script error and
//! names every phase.
//!
//! The browser's tests need `chromium` on the PATH (Debian's and Ubuntu's
//! package of that name; `.ci/run` installs it): without it they fail,
//! saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use palisade_shop::{ShopOptions, demo, report, start};

#[tokio::test(start_paused = true)]
async fn the_recording_holds_every_request_and_each_breakers_changes() {
    use report::BreakerState::{Closed, HalfOpen, Open};
    let running = start(demo::with_demo_key(ShopOptions {
        base_port: 0,
        ..ShopOptions::default()
    }))
    .await
    .expect("the shop starts");
    let (reports, recording) = demo::run_recorded(&running, &mut Vec::new(), false).await;
    running.shutdown().await.unwrap();

    // The phases in order, each request within its own, as many as the
    // phase's table counts.
    assert_eq!(recording.phases.len(), reports.len());
    for (phase, report) in recording.phases.iter().zip(&reports) {
        assert_eq!(phase.title, report.title);
        assert_eq!(phase.checks, report.checks);
        assert!(phase.start <= phase.end);
        let requests: Vec<_> = recording
            .requests
            .iter()
            .filter(|r| r.phase == phase.number)
            .collect();
        assert_eq!(requests.len(), report.requests, "phase {}", phase.number);
        assert!(
            requests
                .iter()
                .all(|r| phase.start <= r.at && r.at <= phase.end),
            "phase {}",
            phase.number
        );
    }
    assert!(recording.phases.windows(2).all(|w| w[0].end <= w[1].start));
    // Outcomes by status and the error's kind.
    let outcomes = |number: usize, outcome: &str| {
        recording
            .requests
            .iter()
            .filter(|r| r.phase == number && r.outcome == outcome)
            .count()
    };
    assert_eq!(outcomes(1, "ok"), reports[0].requests);
    assert!(outcomes(2, "503 circuit_open") > 0);
    assert_eq!(outcomes(4, "504 timeout"), 3);
    assert_eq!(outcomes(5, "429 rate_limited"), 10);
    assert_eq!(outcomes(6, "402 payment_failed"), 5);
    // The product breaker's changes, with when they happened: the
    // half-open state its first probe ends within one request is there
    // too.
    let product: Vec<_> = recording
        .breakers
        .iter()
        .filter(|s| s.upstream == "gateway→product")
        .collect();
    let states: Vec<_> = product.iter().map(|s| s.state).collect();
    // Opened and closed again in phase 2 and 3, and again in phase 9.
    assert_eq!(
        states,
        [Closed, Open, HalfOpen, Closed, Open, HalfOpen, Closed]
    );
    let during = |number: usize| &recording.phases[number - 1];
    assert!(product[1].at >= during(2).start && product[1].at <= during(2).end);
    assert!(product[2].at >= during(3).start && product[3].at <= during(3).end);
    assert!(product[4].at >= during(9).start && product[6].at <= during(9).end);
    // Phase 8's replicas, from its start: the failing one's breaker opens
    // when the phase says it ejected it.
    let phase_8 = during(8);
    for n in 1..=3 {
        let failing = if n == 3 { " (failing)" } else { "" };
        let upstream = format!("gateway→product replica {n}{failing}");
        let samples: Vec<_> = recording
            .breakers
            .iter()
            .filter(|s| s.upstream == upstream)
            .collect();
        assert!(
            samples
                .first()
                .is_some_and(|s| s.state == Closed && s.at >= phase_8.start)
        );
        let opened = samples.iter().any(|s| s.state == Open);
        assert_eq!(opened, n == 3 && reports[7].checks[0].1, "{upstream}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_demos_report_loads_in_chromium_and_names_every_phase() {
    // Before the demo's run: a missing browser fails at once.
    let version = chromium_version();
    let running = start(demo::with_demo_key(ShopOptions {
        base_port: 0,
        ..ShopOptions::default()
    }))
    .await
    .expect("the shop starts");
    let (reports, recording) = demo::run_recorded(&running, &mut Vec::new(), false).await;
    running.shutdown().await.unwrap();
    let dir = TempDir::new("demo");
    let page = dir.0.join("demo.html");
    report::write(&page, &recording).expect("the report is written");

    let opened = open_in_chromium(&page, &dir.0.join("profile"));
    let dom = String::from_utf8_lossy(&opened.stdout);
    let log = String::from_utf8_lossy(&opened.stderr);
    assert!(
        opened.status.success(),
        "{version}: {}\n{log}",
        opened.status
    );
    assert_eq!(
        console_messages(&log, &page),
        Vec::<&str>::new(),
        "{version}"
    );
    // The browser's view of the page: every phase named, with its band
    // and its latencies, and every breaker watched.
    assert_eq!(reports.len(), 9);
    for (i, phase) in reports.iter().enumerate() {
        let n = i + 1;
        assert!(dom.contains(&format!("{n}. {}", phase.title)), "phase {n}");
        assert!(
            dom.contains(&format!("<g class=\"phase-band\" data-phase=\"{n}\">")),
            "phase {n}'s band"
        );
        assert!(
            dom.contains(&format!("<g class=\"latency-group\" data-phase=\"{n}\">")),
            "phase {n}'s latencies"
        );
    }
    // Whether each phase passed is tests/demo.rs's business; the page says.
    assert!(dom.contains(" of 9 phases showed what they should."));
    for upstream in [
        "gateway→user",
        "gateway→order",
        "gateway→product",
        "gateway→payment",
        "order→payment",
        "gateway→product replica 3 (failing)",
    ] {
        assert!(
            dom.contains(&format!(
                "<g class=\"breaker-band\" data-upstream=\"{upstream}\">"
            )),
            "{upstream}"
        );
    }
}

/// The check above can fail: a page whose script throws is caught.
#[test]
fn a_script_error_in_the_page_is_seen() {
    let dir = TempDir::new("throws");
    let page = dir.0.join("throws.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><p>hello</p><script>throw new Error(\"drawn wrong\")</script>",
    )
    .unwrap();
    let opened = open_in_chromium(&page, &dir.0.join("profile"));
    let log = String::from_utf8_lossy(&opened.stderr);
    let messages = console_messages(&log, &page);
    assert_eq!(messages.len(), 1, "{log}");
    assert!(messages[0].contains("Uncaught Error: drawn wrong"), "{log}");
}

/// `chromium --version`; fails the test, saying how to install it, when
/// there is none.
fn chromium_version() -> String {
    match Command::new("chromium").arg("--version").output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        Err(error) => panic!(
            "this test opens the demo's report in headless Chromium, and `chromium` cannot be \
             run ({error}): install it, e.g. `sudo apt-get install chromium` on Debian or \
             Ubuntu (.ci/run does this), and put it on the PATH"
        ),
    }
}

/// Opens `page` in headless Chromium with a fresh profile at `profile` and
/// answers what it printed: the DOM after loading on standard output, its
/// log (the page's console among it) on standard error. Nothing is fetched:
/// the page is a file, and the browser's own background traffic is off.
fn open_in_chromium(page: &Path, profile: &Path) -> Output {
    chromium_version();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url(page))
        .output()
        .expect("chromium runs")
}

/// The console messages `page` logged, as Chromium writes them to its log
/// (`...:INFO:CONSOLE:1] "Uncaught Error: ...", source: file:///... (1)`).
fn console_messages<'a>(log: &'a str, page: &Path) -> Vec<&'a str> {
    let source = format!("source: {}", url(page));
    log.lines()
        .filter(|line| line.contains(":CONSOLE") && line.contains(&source))
        .collect()
}

fn url(page: &Path) -> String {
    format!("file://{}", page.display())
}

/// A directory of its own under the system's temporary one, removed when
/// dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("palisade-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
