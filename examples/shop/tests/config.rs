//! Configuration files: read at start, reloaded when they change, refused
//! (naming the field) when invalid, shown by `GET /admin/config`; under
//! tokio's paused clock.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use http::{Request, StatusCode};
use palisade::circuit_breaker::State;
use palisade_shop::{SETTLE, ShopOptions, start};
use support::Shop;
use tokio::time::advance;

/// A file of its own for one test, removed when dropped.
struct File(PathBuf);

impl File {
    fn new(name: &str, text: &str) -> File {
        let path =
            std::env::temp_dir().join(format!("palisade-shop-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        File(path)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn shop_with(file: &File) -> Shop {
    Shop::with(ShopOptions {
        config_file: Some(file.0.clone()),
        ..ShopOptions::default()
    })
    .await
}

/// Writes `text` to the file and waits until the watcher has read it. The
/// file system reports the change from a thread of its own, in real time;
/// this only yields, so that virtual time stands still meanwhile.
async fn write_seen(shop: &Shop, file: &File, text: &str) {
    let reads = shop.running.config_file_reads();
    file.write(text);
    let mut yields = 0;
    while shop.running.config_file_reads() == reads {
        assert!(
            yields < 10_000_000,
            "the watcher was not told of the change"
        );
        yields += 1;
        tokio::task::yield_now().await;
    }
}

/// Lets the watcher find the file unchanged for [`SETTLE`]: it puts new
/// contents in force then.
async fn settle() {
    advance(SETTLE + Duration::from_millis(10)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Writes `text` and lets the watcher put it in force.
async fn write_settled(shop: &Shop, file: &File, text: &str) {
    write_seen(shop, file, text).await;
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn a_changed_file_applies_to_new_calls_while_calls_in_flight_keep_their_settings() {
    let file = File::new("reload", "[upstreams.product]\nattempt_timeout = \"4s\"\n");
    let shop = shop_with(&file).await;
    let upstream = |name| shop.running.control.upstream(name).unwrap();

    shop.faults(shop.running.product, 0.0, 3_000).await;
    let in_flight = shop
        .get_in_flight("/api/products/1", &shop.running.faults.product)
        .await;
    // Breaker states that show which upstreams a reload rebuilds: the
    // product's settings change, the user's stay.
    assert!(upstream("product").breaker.force_open());
    assert!(upstream("user").breaker.force_open());

    write_seen(
        &shop,
        &file,
        "[upstreams.product]\nattempt_timeout = \"1s\"\n\
         [gateway.rate_limit]\nlimit = 50\n",
    )
    .await;
    // The watcher has read the change; it waits to find the same after
    // SETTLE.
    assert_eq!(shop.running.control.config().rate_limit().0, 100);
    settle().await;
    let config = shop.running.control.config();
    assert_eq!(
        config.upstreams["product"].client.attempt_timeout,
        Duration::from_secs(1)
    );
    assert_eq!(config.rate_limit(), (50, Duration::from_secs(60)));
    // The reload came while the first call was still waiting on the product.
    assert!(!in_flight.is_finished());

    // A new call has the new attempt timeout: 3 s is too slow now.
    let answer = shop.get("/api/products/1").await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert_eq!(answer.headers["ratelimit-limit"], "50");
    // The call in flight kept its 4 s and got its answer.
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);

    // The product upstream was rebuilt (its new breaker is closed, which
    // is why the call above reached the service); the user upstream kept
    // its layers and its breaker's state.
    assert_eq!(upstream("product").breaker.state(), State::Closed);
    assert_eq!(upstream("user").breaker.state(), State::ForcedOpen);
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_file_replaced_by_a_rename_is_seen() {
    let file = File::new("rename", "[gateway.rate_limit]\nlimit = 10\n");
    let shop = shop_with(&file).await;
    // As editors save: a new file, renamed over the old one.
    let new = file.0.with_extension("toml.new");
    std::fs::write(&new, "[gateway.rate_limit]\nlimit = 30\n").unwrap();
    let reads = shop.running.config_file_reads();
    std::fs::rename(&new, &file.0).unwrap();
    let mut yields = 0;
    while shop.running.config_file_reads() == reads {
        assert!(
            yields < 10_000_000,
            "the watcher was not told of the rename"
        );
        yields += 1;
        tokio::task::yield_now().await;
    }
    settle().await;
    assert_eq!(shop.running.control.config().rate_limit().0, 30);
    // The file now in place is watched as the old one was.
    write_settled(&shop, &file, "[gateway.rate_limit]\nlimit = 40\n").await;
    assert_eq!(shop.running.control.config().rate_limit().0, 40);
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_invalid_file_is_refused_naming_the_field_and_the_settings_in_force_stay() {
    let file = File::new("invalid", "[upstream.circuit_breaker]\nopen_for = \"7s\"\n");
    let shop = shop_with(&file).await;
    let before = shop.running.control.config();
    assert_eq!(
        before.upstreams["payment"].client.circuit_breaker.open_for,
        Duration::from_secs(7)
    );

    for (text, field) in [
        (
            "[upstream.circuit_breaker]\nfailure_rate = 2.0\n",
            "upstream.circuit_breaker.failure_rate: ",
        ),
        (
            "[upstreams.product.retry]\nmax_attempts = \"three\"\n",
            "upstreams.product.retry.max_attempts",
        ),
        ("[upstream.timeout\n", "line 1"),
    ] {
        write_seen(&shop, &file, text).await;
        let error = shop.running.reload_config().expect_err(text).to_string();
        assert!(error.contains(field), "{error:?} does not name {field}");
        assert!(error.contains(&file.0.display().to_string()), "{error:?}");
        // The watcher refuses it too, and nothing changes.
        settle().await;
        assert_eq!(shop.running.control.config(), before);
        assert_eq!(shop.get_as(1, "/api/users/1").await.status, StatusCode::OK);
    }

    // A good file after a bad one is taken.
    write_settled(
        &shop,
        &file,
        "[upstream.circuit_breaker]\nopen_for = \"9s\"\n",
    )
    .await;
    assert_eq!(
        shop.running.control.config().upstreams["payment"]
            .client
            .circuit_breaker
            .open_for,
        Duration::from_secs(9)
    );
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_bad_file_at_start_is_refused_naming_the_field() {
    let file = File::new("start", "[gateway.rate_limit]\nlimit = 0\n");
    let error = start(ShopOptions {
        base_port: 0,
        config_file: Some(file.0.clone()),
        ..ShopOptions::default()
    })
    .await
    .expect_err("a limit of 0 is refused");
    assert!(
        error.to_string().contains("gateway.rate_limit.limit"),
        "{error}"
    );
    let missing = start(ShopOptions {
        base_port: 0,
        config_file: Some(PathBuf::from("/nonexistent/shop.toml")),
        ..ShopOptions::default()
    })
    .await
    .expect_err("a missing file is refused");
    assert!(missing.to_string().contains("cannot read it"), "{missing}");
}

#[tokio::test(start_paused = true)]
async fn admin_config_shows_the_settings_in_force_to_admins_only() {
    let file = File::new("show", "[upstreams.order.bulkhead]\nmax_concurrent = 8\n");
    let shop = Shop::with(ShopOptions {
        config_file: Some(file.0.clone()),
        admin_token: Some("s3cret".into()),
        ..ShopOptions::default()
    })
    .await;
    let refused = shop.get("/admin/config").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let answer = shop
        .send(
            shop.running.gateway,
            Request::get("/admin/config").header("authorization", "Bearer s3cret"),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["file"], file.0.display().to_string());
    let config = &answer.body["config"];
    // The file's own setting, and the defaults around it.
    assert_eq!(
        config["upstreams"]["order"]["bulkhead"]["max_concurrent"],
        8
    );
    assert_eq!(config["upstream"]["bulkhead"]["max_concurrent"], 64);
    assert_eq!(config["upstream"]["circuit_breaker"]["failure_rate"], 0.9);
    assert_eq!(config["gateway"]["rate_limit"]["limit"], 100);
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_new_limit_keeps_what_each_client_has_spent_and_a_new_algorithm_starts_afresh() {
    let file = File::new(
        "limit",
        "[gateway.rate_limit]\nlimit = 5\nwindow = \"60s\"\n",
    );
    let shop = shop_with(&file).await;
    let as_client = || Request::get("/api/products/1").header("authorization", support::bearer(1));
    let remaining = |answer: &support::Answer| {
        answer.headers["ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    for _ in 0..3 {
        let answer = shop.send(shop.running.gateway, as_client(), None).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    write_settled(
        &shop,
        &file,
        "[gateway.rate_limit]\nlimit = 4\nwindow = \"60s\"\n",
    )
    .await;
    assert_eq!(shop.running.control.config().rate_limit().0, 4);
    // 3 of 4 spent before the change: this is the last one.
    let answer = shop.send(shop.running.gateway, as_client(), None).await;
    assert_eq!(answer.headers["ratelimit-limit"], "4");
    assert_eq!(remaining(&answer), 0);
    let refused = shop.send(shop.running.gateway, as_client(), None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);

    // Another algorithm is another limiter: the client starts afresh.
    write_settled(
        &shop,
        &file,
        "[gateway.rate_limit]\nlimit = 4\nwindow = \"60s\"\nalgorithm = \"sliding_log\"\n",
    )
    .await;
    let answer = shop.send(shop.running.gateway, as_client(), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(remaining(&answer), 3);
    shop.running.shutdown().await.unwrap();
}

/// `[gateway.auth]` with HS256 secrets and RS256 public keys, by kid.
fn keys_file(keys: &[(&str, &str)]) -> String {
    let mut text = String::from("[gateway.auth]\nkeys = [\n");
    for (kid, key) in keys {
        if key.starts_with("-----BEGIN") {
            text +=
                &format!("  {{ kid = \"{kid}\", alg = \"RS256\", public_key = '''{key}''' }},\n");
        } else {
            text += &format!("  {{ kid = \"{kid}\", alg = \"HS256\", secret = \"{key}\" }},\n");
        }
    }
    text + "]\n"
}

fn rs256_token(kid: Option<&str>, sub: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("support/test-rs256-private.pem"))
            .unwrap();
    let claims =
        serde_json::json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 3600});
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test(start_paused = true)]
async fn token_keys_rotate_with_the_file_hs256_and_rs256_by_kid() {
    let old = "old-secret-0123456789abcdef-01234";
    let new = "new-secret-0123456789abcdef-01234";
    let public = include_str!("support/test-rs256-public.pem");
    let file = File::new("keys", &keys_file(&[("old", old), ("idp", public)]));
    let shop = Shop::bare(ShopOptions {
        config_file: Some(file.0.clone()),
        ..ShopOptions::default()
    })
    .await;
    let hs256 = |secret: &str, kid: &str| {
        palisade_shop::auth::mint_hs256(secret.as_bytes(), Some(kid), "1", Duration::from_secs(60))
    };
    let shop = &shop;
    let status = |token: String| {
        let request =
            Request::get("/api/users/1").header("authorization", format!("Bearer {token}"));
        async move { shop.send(shop.running.gateway, request, None).await.status }
    };
    assert_eq!(status(hs256(old, "old")).await, StatusCode::OK);
    assert_eq!(status(rs256_token(Some("idp"), "1")).await, StatusCode::OK);
    // Without a kid, every key of the token's algorithm is tried.
    assert_eq!(status(rs256_token(None, "1")).await, StatusCode::OK);
    assert_eq!(status(hs256(new, "new")).await, StatusCode::UNAUTHORIZED);

    file.write(&keys_file(&[("new", new), ("idp", public)]));
    let changed = shop.running.reload_config().unwrap();
    assert!(changed.contains(&"gateway.auth".to_owned()), "{changed:?}");
    assert_eq!(status(hs256(old, "old")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(hs256(new, "new")).await, StatusCode::OK);
    assert_eq!(status(rs256_token(Some("idp"), "1")).await, StatusCode::OK);

    // An admin sees which keys there are, not their secrets.
    let shown = shop
        .send(shop.running.gateway, Request::get("/admin/config"), None)
        .await;
    let keys = &shown.body["config"]["gateway"]["auth"]["keys"];
    assert_eq!(keys[0]["kid"], "new");
    assert_eq!(keys[0]["secret"], "<redacted>");
    assert!(!shown.body.to_string().contains(new));
}
