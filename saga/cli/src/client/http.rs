//! The HTTP side of the operator API's clients (`choreo sagas`, `choreo dlq`): the bearer
//! token, URLs built from segments, JSON answers and the API's error bodies.

use std::time::Duration;

use anyhow::{Context as _, bail};
use choreo_coordinator::http::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The API address used when neither `--api` nor `$CHOREO_API` is given.
pub const DEFAULT_API: &str = "http://127.0.0.1:8080";

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The bearer token every request of this process sends (`--token`, `CHOREO_API_TOKEN`).
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the token every request sends (blank: none).
pub(crate) fn use_token(token: Option<&str>) {
    if let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) {
        let _ = TOKEN.set(t.to_owned());
    }
}

/// An HTTP client that sends the token.
pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = TOKEN.get() {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .context("the API token is not visible ASCII")?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .default_headers(headers)
        .build()
        .context("cannot create an HTTP client")
}

pub(crate) fn unreachable_api(api: &str) -> String {
    format!("cannot reach the choreo API at {api} (set --api or CHOREO_API)")
}

fn base_url(api: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(api)
        .with_context(|| format!("\"{api}\" is not a URL (e.g. {DEFAULT_API})"))?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        bail!("\"{api}\" is not an http:// or https:// URL");
    }
    Ok(url)
}

/// `api` with `segments` appended, each percent-encoded.
pub(crate) fn with_segments(api: &str, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
    let mut url = base_url(api)?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("\"{api}\" cannot be a base URL"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// `url` with the query `pairs` (none: no query at all).
pub(crate) fn with_query(mut url: reqwest::Url, pairs: &[(&str, String)]) -> reqwest::Url {
    if !pairs.is_empty() {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    url
}

pub(crate) async fn get_json<T: DeserializeOwned>(url: &reqwest::Url) -> anyhow::Result<T> {
    let resp = client()?
        .get(url.clone())
        .send()
        .await
        .with_context(|| unreachable_api(url.origin().ascii_serialization().as_str()))?;
    read_json(resp, url).await
}

/// The answer's JSON, or the API's error as an error (`the API answered 404 Not Found: …`).
pub(crate) async fn read_json<T: DeserializeOwned>(
    resp: reqwest::Response,
    url: &reqwest::Url,
) -> anyhow::Result<T> {
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        let why = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
        bail!("the API answered {status}: {why}");
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("{url} answered something that is not the expected JSON"))
}

pub(crate) fn pretty<T: Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_segments() {
        let url = with_segments("http://h:1/base/", &["api", "dlq", "a/b c"]).expect("url");
        assert_eq!(url.as_str(), "http://h:1/base/api/dlq/a%2Fb%20c");
        assert!(base_url("localhost:8080").is_err());
        let url = with_query(url, &[]);
        assert_eq!(url.query(), None);
    }
}
