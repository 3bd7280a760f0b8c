//! Bearer tokens per source: each token (from the configuration) names the `ce-source` and
//! `ce-type` values it may send. Tokens are compared in constant time, against every
//! configured token, so neither timing nor order tells a caller how close a guess came.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

/// A `source` or `type` pattern: exact, a prefix ending in `*`, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern from its text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => self.0 == value,
        }
    }
}

/// One token and what it may send.
#[derive(Clone)]
pub struct Grant {
    /// The token's name (in logs and metrics; never the secret).
    pub name: String,
    /// The secret.
    pub secret: String,
    /// The `ce-source` values it may send.
    pub sources: Vec<Pattern>,
    /// The `ce-type` values it may send.
    pub types: Vec<Pattern>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("name", &self.name)
            .field("sources", &self.sources)
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

/// How the ingest authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Anyone may send anything (`choreo dev`, or `ingest.allow_anonymous`).
    Off,
    /// A bearer token is required.
    Tokens(Vec<Grant>),
}

/// Why a request may not send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no token, or no such token.
    Unauthenticated(String),
    /// 403: the token may not send this source or type.
    Forbidden(String),
}

impl Auth {
    /// Who the request's bearer token is (`None` when authentication is off).
    pub fn identify(&self, headers: &HeaderMap) -> Result<Option<&Grant>, Denied> {
        let Auth::Tokens(grants) = self else {
            return Ok(None);
        };
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                Denied::Unauthenticated(
                    "an Authorization: Bearer <token> header is required".into(),
                )
            })?;
        // Every token is compared, whichever matches.
        let mut found = None;
        for g in grants {
            let same: bool = g.secret.as_bytes().ct_eq(presented.as_bytes()).into();
            if same && found.is_none() {
                found = Some(g);
            }
        }
        found
            .map(Some)
            .ok_or_else(|| Denied::Unauthenticated("the bearer token is not valid".into()))
    }
}

/// Whether `grant` (none: authentication off) may send an event of `event_type` from `source`.
pub fn allows(grant: Option<&Grant>, source: &str, event_type: &str) -> Result<(), Denied> {
    let Some(g) = grant else { return Ok(()) };
    if !g.sources.iter().any(|p| p.matches(source)) {
        return Err(Denied::Forbidden(format!(
            "token \"{}\" may not send from source \"{source}\"",
            g.name
        )));
    }
    if !g.types.iter().any(|p| p.matches(event_type)) {
        return Err(Denied::Forbidden(format!(
            "token \"{}\" may not send events of type {event_type}",
            g.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth::Tokens(vec![
            Grant {
                name: "checkout".into(),
                secret: "s3cret-checkout".into(),
                sources: vec![Pattern::new("/shop/checkout")],
                types: vec![Pattern::new("io.choreo.orders.OrderPlaced")],
            },
            Grant {
                name: "payments".into(),
                secret: "s3cret-payments".into(),
                sources: vec![Pattern::new("/shop/payments/*")],
                types: vec![Pattern::new("*")],
            },
        ])
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(t).expect("header"));
        h
    }

    #[test]
    fn patterns_match_exactly_by_prefix_or_anything() {
        assert!(Pattern::new("/a").matches("/a"));
        assert!(!Pattern::new("/a").matches("/ab"));
        assert!(Pattern::new("/a/*").matches("/a/b"));
        assert!(!Pattern::new("/a/*").matches("/b"));
        assert!(Pattern::new("*").matches("anything"));
    }

    #[test]
    fn a_token_is_found_and_limited_to_its_sources_and_types() {
        let a = auth();
        let g = a
            .identify(&bearer("Bearer s3cret-checkout"))
            .expect("known");
        assert_eq!(g.map(|g| g.name.as_str()), Some("checkout"));
        assert_eq!(
            allows(g, "/shop/checkout", "io.choreo.orders.OrderPlaced"),
            Ok(())
        );
        assert!(
            matches!(allows(g, "/shop/payments/eu", "io.choreo.orders.OrderPlaced"), Err(Denied::Forbidden(m)) if m.contains("source"))
        );
        assert!(
            matches!(allows(g, "/shop/checkout", "io.choreo.orders.OrderCancelled"), Err(Denied::Forbidden(m)) if m.contains("type"))
        );
        let g = a
            .identify(&bearer("Bearer s3cret-payments"))
            .expect("known");
        assert_eq!(allows(g, "/shop/payments/eu", "any.Type"), Ok(()));
    }

    #[test]
    fn no_token_or_a_wrong_one_is_unauthenticated() {
        let a = auth();
        assert!(matches!(
            a.identify(&HeaderMap::new()),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            a.identify(&bearer("Bearer s3cret-checkou")),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            a.identify(&bearer("Basic czNjcmV0")),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(Auth::Off.identify(&HeaderMap::new()), Ok(None)));
    }
}
