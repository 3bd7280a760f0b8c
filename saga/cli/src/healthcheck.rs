//! `choreo healthcheck`: the container image's health check, for runtime images without a shell
//! or curl. It asks one URL — by default `/healthz` on the configured `http.listen` — and exits
//! 0 on a 2xx answer, 1 otherwise, with one line saying what it asked and what came back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// `choreo healthcheck [--url URL] [--timeout 5s] [--config FILE]`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// The URL to ask. Default: `/healthz` on `http.listen` of the configuration (file and
    /// `CHOREO__…` variables, as `choreo run` reads them); an unspecified address such as
    /// 0.0.0.0 is asked on loopback.
    #[arg(long)]
    pub url: Option<String>,
    /// How long to wait for the answer, e.g. 5s or 500ms.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// The configuration file whose `http.listen` is asked when --url is not given.
    #[arg(long, short, env = "CHOREO_CONFIG")]
    pub config: Option<PathBuf>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    choreo_saga::parse_duration(s)
        .map_err(|_| format!("\"{s}\" is not a duration (e.g. 5s, 500ms)"))
}

/// The URL of `/healthz` on a listen address: an unspecified address (0.0.0.0, ::) is asked on
/// the loopback address of its family.
pub fn healthz_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(ip, listen.port()))
}

/// Asks the URL; `Ok` with the answer's status line when it is 2xx, else `Err` saying why.
pub async fn check(args: &HealthcheckArgs) -> Result<String, String> {
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let cfg = choreo_coordinator::config::Config::load(args.config.as_deref())
                .map_err(|e| format!("cannot read the configuration: {e}"))?;
            healthz_url(cfg.http.listen)
        }
    };
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .map_err(|e| format!("{url}: {e}"))?;
    let answer = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: no answer: {e}"))?;
    let status = answer.status();
    if status.is_success() {
        Ok(format!("{url}: {status}"))
    } else {
        Err(format!("{url}: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        let at = |s: &str| healthz_url(s.parse().expect("address"));
        assert_eq!(at("0.0.0.0:8080"), "http://127.0.0.1:8080/healthz");
        assert_eq!(at("[::]:8080"), "http://[::1]:8080/healthz");
        assert_eq!(at("10.1.2.3:9000"), "http://10.1.2.3:9000/healthz");
    }
}
