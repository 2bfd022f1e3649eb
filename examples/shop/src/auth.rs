//! Who is calling: customers' bearer tokens, checked at the gateway, and
//! the order service's signed grants for the payment service.
//!
//! A customer's token is a JWT (HS256 or RS256) from the shop's identity
//! provider, its `sub` the customer's user id. The gateway checks it
//! against the keys of `[gateway.auth]` ([`AuthConfig`]), several at once
//! so that keys can rotate, and tells the services who the caller is in
//! the [`CUSTOMER`] header, which it always strips from what the client
//! sent. The services trust that header: only the gateway faces clients.
//!
//! The payment service trusts nothing of the sort for money: each charge
//! and each void carries a short-lived HS256 grant ([`Grants`]) that the
//! order service signs for that order and amount, with a secret only the
//! two of them hold (`[charges] secret`).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind as JwtError;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::api::ApiError;

/// The header in which the gateway names the verified caller (the token's
/// `sub`) to the services behind it.
pub const CUSTOMER: &str = "x-shop-customer";

/// The shortest HS256 secret taken, in bytes: as long as the hash (RFC 7518,
/// section 3.2). A secret of that length is only as strong as it is
/// random: 32 hex digits carry 128 bits.
pub const MIN_SECRET: usize = 32;

/// The longest `sub` taken: it keys the rate limit and owns orders.
const MAX_SUBJECT: usize = 128;

/// `[gateway.auth]`: the keys customers' tokens may be signed with, and
/// what their `iss` and `aud` must be, if anything.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
}

/// One key: `alg = "HS256"` with a `secret`, or `alg = "RS256"` with a
/// `public_key` in PEM. A token whose header names a `kid` is checked
/// only against the key of that `kid`.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    #[serde(default)]
    pub kid: Option<String>,
    pub alg: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub public_key: Option<String>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A key ready to check tokens with.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Checks customers' tokens against the configured keys.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<Key>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// What a customer's token must hold.
#[derive(Debug, Deserialize, Serialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header on a route that needs one.
    Missing,
    /// Its `exp` has passed.
    Expired,
    /// Anything else: malformed, unknown key, bad signature, wrong
    /// issuer or audience, no usable `sub`.
    Invalid(&'static str),
}

/// The 401, with the `WWW-Authenticate` challenge of RFC 6750.
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (error, message, challenge) = match &self {
            AuthError::Missing => (
                "unauthorized",
                "this route needs `Authorization: Bearer <token>`",
                "Bearer".to_owned(),
            ),
            AuthError::Expired => (
                "token_expired",
                "the token has expired",
                r#"Bearer error="invalid_token", error_description="the token has expired""#
                    .to_owned(),
            ),
            AuthError::Invalid(why) => (
                "invalid_token",
                *why,
                format!(r#"Bearer error="invalid_token", error_description="{why}""#),
            ),
        };
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, error, message).into_response();
        if let Ok(challenge) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl Verifier {
    /// Checks `config` (a field's error names it under `at`) and builds
    /// the verifier. No keys is allowed: every token is then refused.
    pub fn new(config: &AuthConfig, at: &str) -> Result<Verifier, String> {
        let mut keys: Vec<Key> = Vec::with_capacity(config.keys.len());
        for (i, key) in config.keys.iter().enumerate() {
            let at = format!("{at}.keys[{i}]");
            let built = decoding_key(key, &at)?;
            if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
                return Err(format!("{at}.kid: another key has this kid"));
            }
            keys.push(built);
        }
        Ok(Verifier {
            keys,
            ..Verifier::without_keys(config)
        })
    }

    /// A verifier that refuses every token (there is no key to check one
    /// with), holding `config`'s issuer and audience.
    pub fn without_keys(config: &AuthConfig) -> Verifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token not yet valid (`nbf`) is refused too; jsonwebtoken does
        // not check it unless asked.
        validation.validate_nbf = true;
        // The identity provider's clock and ours may differ a little.
        validation.leeway = 30;
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Verifier {
            keys: Vec::new(),
            validation,
        }
    }

    /// The caller's identity from `headers`: `Ok(None)` without an
    /// `Authorization` header, the token's `sub` with a good token.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Option<String>, AuthError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(AuthError::Invalid(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        self.verify(token).map(Some)
    }

    /// The `sub` of `token`, if one of the keys signed it and it is in
    /// date.
    pub fn verify(&self, token: &str) -> Result<String, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("the token is not a well-formed JWT"))?;
        // With a kid, only that key; without, every key of the algorithm.
        let candidates = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg && (header.kid.is_none() || k.kid == header.kid));
        let mut refusal = AuthError::Invalid("no configured key signed the token");
        for key in candidates {
            // One algorithm at a time: jsonwebtoken refuses a validation
            // that names algorithms of another family than the key's.
            let mut validation = self.validation.clone();
            validation.algorithms = vec![key.algorithm];
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return subject(data.claims.sub),
                Err(e) => {
                    refusal = match e.kind() {
                        JwtError::InvalidSignature => continue,
                        JwtError::ExpiredSignature => AuthError::Expired,
                        JwtError::InvalidIssuer => AuthError::Invalid("wrong issuer"),
                        JwtError::InvalidAudience => AuthError::Invalid("wrong audience"),
                        JwtError::MissingRequiredClaim(_) => {
                            AuthError::Invalid("the token needs `sub` and `exp` claims")
                        }
                        _ => AuthError::Invalid("the token is not valid"),
                    };
                    // The signature held: another key will not do better.
                    break;
                }
            }
        }
        Err(refusal)
    }
}

fn subject(sub: String) -> Result<String, AuthError> {
    if sub.is_empty() || sub.len() > MAX_SUBJECT || sub.chars().any(char::is_control) {
        return Err(AuthError::Invalid(
            "the token's `sub` is empty, too long or not text",
        ));
    }
    Ok(sub)
}

fn decoding_key(key: &KeyConfig, at: &str) -> Result<Key, String> {
    let (algorithm, decoding) = match (key.alg.as_str(), &key.secret, &key.public_key) {
        ("HS256", Some(secret), None) => {
            if secret.len() < MIN_SECRET {
                return Err(format!("{at}.secret: must be at least {MIN_SECRET} bytes"));
            }
            (
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            )
        }
        ("HS256", _, _) => return Err(format!("{at}: HS256 takes a `secret` (and no public_key)")),
        ("RS256", None, Some(pem)) => {
            let decoding = DecodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| format!("{at}.public_key: not an RSA public key in PEM ({e})"))?;
            (Algorithm::RS256, decoding)
        }
        ("RS256", _, _) => {
            return Err(format!(
                "{at}: RS256 takes a `public_key` in PEM (and no secret)"
            ));
        }
        (other, _, _) => return Err(format!("{at}.alg: must be HS256 or RS256, got {other:?}")),
    };
    Ok(Key {
        kid: key.kid.clone(),
        algorithm,
        key: decoding,
    })
}

/// Signs a customer's token with an HS256 `secret`: `sub`, expiring in
/// `ttl`, with `kid` in its header when given. For the demo and tests,
/// which play the identity provider.
pub fn mint_hs256(secret: &[u8], kid: Option<&str>, sub: &str, ttl: Duration) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let claims = Claims {
        sub: sub.to_owned(),
        exp: jsonwebtoken::get_current_timestamp() + ttl.as_secs(),
    };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
        .expect("HMAC signing of a small JSON document does not fail")
}

/// A 32-byte random secret, hex-encoded: for a shop started without one.
pub fn random_secret() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How long a grant from the order service holds: its calls to the payment
/// service, retries included, end well within it.
pub const GRANT_TTL: Duration = Duration::from_secs(60);

/// What a grant allows: one action on one order, for one amount.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Grant {
    /// `charge` or `void`.
    pub act: String,
    pub order_id: u64,
    pub amount: u64,
    pub exp: u64,
}

/// The secret the order service signs grants with and the payment service
/// checks them with.
#[derive(Clone)]
pub struct Grants {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants").finish_non_exhaustive()
    }
}

/// The audience of every grant: a token minted for anything else (a
/// customer's, say, if the secrets were ever shared) is no grant.
const GRANT_AUDIENCE: &str = "payment";

#[derive(Serialize, Deserialize)]
struct GrantToken {
    aud: String,
    #[serde(flatten)]
    grant: Grant,
}

impl Grants {
    /// Grants signed with `secret` (at least [`MIN_SECRET`] bytes; checked
    /// with the configuration).
    pub fn new(secret: &str) -> Grants {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[GRANT_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        // Both services share a machine or a network's time source.
        validation.leeway = 5;
        Grants {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// A grant for `act` on `order_id` for `amount`, valid [`GRANT_TTL`].
    pub fn sign(&self, act: &str, order_id: u64, amount: u64) -> String {
        let token = GrantToken {
            aud: GRANT_AUDIENCE.to_owned(),
            grant: Grant {
                act: act.to_owned(),
                order_id,
                amount,
                exp: jsonwebtoken::get_current_timestamp() + GRANT_TTL.as_secs(),
            },
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &token, &self.encoding)
            .expect("HMAC signing of a small JSON document does not fail")
    }

    /// `Ok` when `headers` carry a grant of ours, in date, for exactly
    /// `act` on `order_id` for `amount`; else the 403 saying why not.
    pub fn check(
        &self,
        headers: &HeaderMap,
        act: &str,
        order_id: u64,
        amount: u64,
    ) -> Result<(), ApiError> {
        let refused = |why: &str| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "not_granted",
                format!("a {act} needs the order service's grant for this order and amount: {why}"),
            )
        };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| refused("none was sent"))?;
        let grant = jsonwebtoken::decode::<GrantToken>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                JwtError::ExpiredSignature => refused("it has expired"),
                _ => refused("it is not valid"),
            })?
            .claims
            .grant;
        if grant.act != act || grant.order_id != order_id || grant.amount != amount {
            return Err(refused("it is for another order, amount or action"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier(keys: Vec<KeyConfig>) -> Verifier {
        Verifier::new(
            &AuthConfig {
                keys,
                ..AuthConfig::default()
            },
            "gateway.auth",
        )
        .unwrap()
    }

    fn hs256(kid: Option<&str>, secret: &str) -> KeyConfig {
        KeyConfig {
            kid: kid.map(str::to_owned),
            alg: "HS256".into(),
            secret: Some(secret.into()),
            public_key: None,
        }
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        let verifier = verifier(vec![hs256(None, SECRET)]);
        let now = jsonwebtoken::get_current_timestamp();
        let token = |nbf: u64| {
            let claims = serde_json::json!({"sub": "7", "exp": now + 3600, "nbf": nbf});
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        assert!(matches!(
            verifier.verify(&token(now + 600)),
            Err(AuthError::Invalid(_))
        ));
        // Within the leeway for clocks that differ, and in the past: taken.
        assert_eq!(verifier.verify(&token(now + 10)), Ok("7".to_owned()));
        assert_eq!(verifier.verify(&token(now - 10)), Ok("7".to_owned()));
    }

    #[test]
    fn a_kid_picks_its_key_and_without_one_every_key_is_tried() {
        let other = "fedcba9876543210fedcba9876543210";
        let verifier = verifier(vec![hs256(Some("old"), SECRET), hs256(Some("new"), other)]);
        let hour = Duration::from_secs(3600);
        for kid in [Some("new"), None] {
            let token = mint_hs256(other.as_bytes(), kid, "7", hour);
            assert_eq!(verifier.verify(&token), Ok("7".to_owned()), "{kid:?}");
        }
        // The right secret under another key's kid is refused.
        let token = mint_hs256(other.as_bytes(), Some("old"), "7", hour);
        assert!(matches!(
            verifier.verify(&token),
            Err(AuthError::Invalid(_))
        ));
        let token = mint_hs256(other.as_bytes(), Some("gone"), "7", hour);
        assert!(matches!(
            verifier.verify(&token),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn bad_keys_are_refused_naming_the_field() {
        for (key, named) in [
            (hs256(None, "short"), "gateway.auth.keys[0].secret"),
            (
                KeyConfig {
                    alg: "none".into(),
                    ..KeyConfig::default()
                },
                "gateway.auth.keys[0].alg",
            ),
            (
                KeyConfig {
                    alg: "RS256".into(),
                    public_key: Some("not a key".into()),
                    ..KeyConfig::default()
                },
                "gateway.auth.keys[0].public_key",
            ),
        ] {
            let error = Verifier::new(
                &AuthConfig {
                    keys: vec![key],
                    ..AuthConfig::default()
                },
                "gateway.auth",
            )
            .unwrap_err();
            assert!(error.starts_with(named), "{error}");
        }
    }

    #[test]
    fn a_grant_holds_for_its_own_order_amount_and_action_only() {
        let grants = Grants::new(SECRET);
        let mut headers = HeaderMap::new();
        let token = grants.sign("charge", 5, 100);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        assert!(grants.check(&headers, "charge", 5, 100).is_ok());
        assert!(grants.check(&headers, "charge", 6, 100).is_err());
        assert!(grants.check(&headers, "charge", 5, 1).is_err());
        assert!(grants.check(&headers, "void", 5, 100).is_err());
        // Another secret's grant is none.
        let other = Grants::new("fedcba9876543210fedcba9876543210");
        assert!(other.check(&headers, "charge", 5, 100).is_err());
        // Nor is a customer's token signed with the same secret.
        let customer = mint_hs256(SECRET.as_bytes(), None, "5", Duration::from_secs(60));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {customer}")).unwrap(),
        );
        assert!(grants.check(&headers, "charge", 5, 100).is_err());
    }
}
