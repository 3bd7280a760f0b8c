//! `choreo` turns transparent huge pages off for its process before its runtime starts (Linux).
//! With them, mimalloc's heap is resident in 2 MiB pages: an idle coordinator held 19–21 MB of
//! anonymous memory against 8 MB without, and a soak's coordinator ended its lives at 52–63 MiB
//! against 34–42 MiB.

#![cfg(target_os = "linux")]

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::{Duration, Instant};

#[test]
fn the_choreo_process_runs_without_transparent_huge_pages() {
    // A listener that never answers keeps `choreo healthcheck` waiting while its status is read.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("its address");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["healthcheck", "--timeout", "60s", "--url"])
        .arg(format!("http://{addr}/healthz"))
        .env_remove("CHOREO_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("choreo runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let _connection = loop {
        match listener.accept() {
            Ok((connection, _)) => break connection,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                let _ = child.kill();
                panic!("choreo healthcheck never asked {addr}: {e}");
            }
        }
    };
    let thp = choreo_cli::memory::status_figure(child.id(), "THP_enabled:");
    let _ = child.kill();
    let _ = child.wait();
    let thp = thp.expect("THP_enabled in /proc/<pid>/status (Linux 5.0 and later)");
    assert_eq!(
        thp, 0,
        "transparent huge pages are on for the choreo process"
    );
}
