//! The two commands the container image needs: `choreo healthcheck` (the image's health check:
//! exit 0 only when the URL — by default `/healthz` on `http.listen` — answers 2xx) and `choreo
//! demo` (the demo services as a process of their own, which refuses knobs out of range before
//! it contacts anything, and stops promptly on SIGTERM even while Kafka does not answer).

use std::process::Command;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// A server answering 200 on /healthz and 503 on /readyz, on a free loopback port.
async fn server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (addr, task)
}

/// `choreo healthcheck` run in a thread (the server stays on the runtime), with `env`.
async fn healthcheck(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_choreo"))
            .arg("healthcheck")
            .args(&args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("choreo runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .expect("joins")
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_passes_only_on_a_2xx_answer_from_the_configured_listen_address() {
    let (addr, task) = server().await;
    // Default: /healthz on http.listen; 0.0.0.0 is asked on loopback.
    let listen = vec![("CHOREO__HTTP__LISTEN", format!("0.0.0.0:{}", addr.port()))];
    let (ok, out) = healthcheck(&[], &listen).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{}/healthz", addr.port())),
        "{out}"
    );

    // A URL that answers 503, and a port nobody listens on, fail with one line saying so.
    let (ok, out) = healthcheck(&["--url", &format!("http://{addr}/readyz")], &[]).await;
    assert!(!ok && out.contains("503"), "{out}");
    let nobody = format!("127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    });
    let (ok, out) = healthcheck(&[], &[("CHOREO__HTTP__LISTEN", nobody.clone())]).await;
    assert!(
        !ok && out.contains("no answer") && out.contains(&nobody),
        "{out}"
    );

    // A configuration that does not load is said to be the reason.
    let (ok, out) = healthcheck(&[], &[("CHOREO__HTTP__LISTN", "x".into())]).await;
    assert!(!ok && out.contains("CHOREO__HTTP__LISTN"), "{out}");
    task.abort();
}

#[test]
fn demo_refuses_rates_out_of_range_before_it_connects() {
    for (flag, value) in [
        ("--decline-rate", "1.5"),
        ("--silent-rate", "-0.1"),
        ("--orders-per-second", "-2"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_choreo"))
            .args(["demo", &format!("{flag}={value}")])
            .env_clear()
            .env("CHOREO__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("choreo runs");
        // A demo that took the value would start and keep trying to reach Kafka.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().expect("waits").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("choreo demo {flag}={value} was accepted and kept running");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} accepted");
        assert!(
            stderr.contains(flag) && stderr.contains(value),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn demo_stops_on_sigterm_even_while_kafka_is_unreachable() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["demo", "--orders-per-second", "20"])
        .env_clear()
        .env("CHOREO__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")
        .env("CHOREO__LOG__LEVEL", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("choreo runs");
    // It waits for the brokers (`Bus::connect` asks again for up to the Kafka timeout, 30 s).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The signal ends the wait at once (and, once running, its services drain for at most 5 s:
    // an order held by an unreachable broker must not keep it for the delivery timeout).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while child.try_wait().expect("waits").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("choreo demo still running 15 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
