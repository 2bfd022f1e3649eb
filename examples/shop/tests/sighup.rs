//! SIGHUP reloads the configuration file at once. A test binary of its own:
//! the signal goes to the whole process.

#![cfg(unix)]

use std::time::Duration;

use palisade_shop::{SETTLE, ShopOptions, start};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn sighup_reloads_the_file_before_the_watcher_would() {
    let path = std::env::temp_dir().join(format!("palisade-shop-{}-hup.toml", std::process::id()));
    std::fs::write(&path, "[gateway.rate_limit]\nlimit = 10\n").unwrap();
    let running = start(ShopOptions {
        base_port: 0,
        config_file: Some(path.clone()),
        reload_on_sighup: true,
        ..ShopOptions::default()
    })
    .await
    .expect("the shop starts");
    // Let the signal handler be installed.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    std::fs::write(&path, "[gateway.rate_limit]\nlimit = 20\n").unwrap();
    let asked = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    // Only yielding: virtual time does not move, so the file watcher
    // (which waits for the file to stay the same for SETTLE) cannot be
    // what reloads it.
    let mut yields = 0;
    while running.control.config().rate_limit().0 != 20 {
        assert!(yields < 1_000_000, "SIGHUP did not reload the file");
        yields += 1;
        tokio::task::yield_now().await;
    }
    assert!(asked.elapsed() < SETTLE);
    assert_eq!(
        running.control.config().rate_limit(),
        (20, Duration::from_secs(60))
    );
    running.shutdown().await.unwrap();
    let _ = std::fs::remove_file(&path);
}
