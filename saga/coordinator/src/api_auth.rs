//! Who may use the operator API: bearer tokens with a role, kept as their SHA-256.
//!
//! - `viewer` may read (`GET /api/…`); `operator` may also act (`POST …/commands`).
//! - The configuration holds each token's SHA-256 (hex), never the token: a leaked
//!   configuration file does not leak a token. A presented token is hashed and compared with
//!   every configured hash in constant time.
//! - The token's name is who acted: it is recorded in the saga's timeline with the command.
//! - Tokens travel in `Authorization: Bearer …`, never in a cookie, so no cross-site request
//!   can carry one.
//! - [`ApiAuth::Open`] (no tokens) is for `choreo dev` and for an API on a network the operator
//!   trusts (`http.trusted_network = true`); `choreo run` refuses to start the API without
//!   tokens otherwise.

use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read sagas.
    Viewer,
    /// Read sagas and send commands.
    Operator,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        })
    }
}

/// One configured token.
#[derive(Clone)]
pub struct ApiToken {
    /// Who it is (recorded with every command it sends).
    pub name: String,
    /// What it may do.
    pub role: Role,
    sha256: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// A token from its SHA-256 in hex (64 characters).
    pub fn from_sha256_hex(name: &str, role: Role, hex: &str) -> Result<Self, String> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "must be the token's SHA-256 as 64 hex digits (printf %s \"$TOKEN\" | sha256sum), got {} characters",
                hex.len()
            ));
        }
        let mut sha256 = [0u8; 32];
        for (i, byte) in sha256.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("not hex: {e}"))?;
        }
        Ok(Self {
            name: name.to_owned(),
            role,
            sha256,
        })
    }

    /// A token from the secret itself (for tests and embedding programs that hold the secret).
    pub fn from_secret(name: &str, role: Role, secret: &str) -> Self {
        Self {
            name: name.to_owned(),
            role,
            sha256: Sha256::digest(secret.as_bytes()).into(),
        }
    }
}

/// The SHA-256 of `secret` in hex, as `[[http.tokens]] sha256` wants it.
pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a request may not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no token, or not one of ours.
    Unauthenticated(String),
    /// 403: a token whose role does not allow this.
    Forbidden(String),
}

/// The API's access rule.
#[derive(Debug, Clone)]
pub enum ApiAuth {
    /// Anyone who reaches the port may read and act (`choreo dev`, a trusted network).
    Open,
    /// Only these tokens.
    Tokens(Vec<ApiToken>),
}

impl ApiAuth {
    /// Who sent `headers`, if they may do what needs `need`: the token's name, or `None` for
    /// an open API.
    pub fn check(&self, headers: &HeaderMap, need: Role) -> Result<Option<String>, Refusal> {
        let ApiAuth::Tokens(tokens) = self else {
            return Ok(None);
        };
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err(Refusal::Unauthenticated(
                "this API needs Authorization: Bearer <token>".into(),
            ));
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every token is compared, so the time does not say which one matched.
        let mut found: Option<&ApiToken> = None;
        for t in tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        let Some(token) = found else {
            return Err(Refusal::Unauthenticated("unknown token".into()));
        };
        if token.role < need {
            return Err(Refusal::Forbidden(format!(
                "token \"{}\" is a {}; this needs the {need} role",
                token.name, token.role
            )));
        }
        Ok(Some(token.name.clone()))
    }
}

/// The header naming who acts on an API without tokens (free text, recorded with the action).
pub const OPERATOR_HEADER: &str = "x-operator";

/// The longest [`OPERATOR_HEADER`] accepted.
pub const MAX_OPERATOR_LEN: usize = 200;

/// What [`OPERATOR_HEADER`] says, if anything (trimmed; an error for a value that is not
/// visible ASCII or is too long).
pub fn operator_named(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(v) = headers.get(OPERATOR_HEADER) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| "X-Operator must be visible ASCII text".to_owned())?
        .trim();
    if v.len() > MAX_OPERATOR_LEN {
        return Err(format!(
            "X-Operator is longer than {MAX_OPERATOR_LEN} characters"
        ));
    }
    Ok(Some(v.to_owned()).filter(|v| !v.is_empty()))
}

/// Whether the body is declared `application/json`. Every action takes JSON only: a form or a
/// text body (what a cross-site page can send without asking first) is refused before it is
/// read.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
        );
        h
    }

    fn auth() -> ApiAuth {
        ApiAuth::Tokens(vec![
            ApiToken::from_sha256_hex("alice", Role::Operator, &sha256_hex("alice-secret"))
                .expect("hex"),
            ApiToken::from_secret("victor", Role::Viewer, "victor-secret"),
        ])
    }

    #[test]
    fn a_token_is_known_by_its_hash_and_acts_by_its_role() {
        let a = auth();
        assert_eq!(
            a.check(&bearer("alice-secret"), Role::Operator),
            Ok(Some("alice".into()))
        );
        assert_eq!(
            a.check(&bearer("victor-secret"), Role::Viewer),
            Ok(Some("victor".into()))
        );
        assert!(matches!(
            a.check(&bearer("victor-secret"), Role::Operator),
            Err(Refusal::Forbidden(m)) if m.contains("victor") && m.contains("operator")
        ));
        assert!(matches!(
            a.check(&bearer("alice-secreT"), Role::Viewer),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            a.check(&HeaderMap::new(), Role::Viewer),
            Err(Refusal::Unauthenticated(_))
        ));
        assert_eq!(
            ApiAuth::Open.check(&HeaderMap::new(), Role::Operator),
            Ok(None)
        );
    }

    #[test]
    fn a_hash_must_be_64_hex_digits() {
        assert!(ApiToken::from_sha256_hex("a", Role::Viewer, "abc").is_err());
        assert!(ApiToken::from_sha256_hex("a", Role::Viewer, &"g".repeat(64)).is_err());
        // The hash printf %s secret | sha256sum prints.
        assert_eq!(
            sha256_hex("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }
}
