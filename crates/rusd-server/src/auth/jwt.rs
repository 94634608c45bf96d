//! JWT tokens (`--auth-token jwt,pub-key=F,priv-key=F,sign-method=M,ttl=D`): claims
//! `username`, `revision` (the auth revision at Authenticate) and `exp`, as etcd signs them.
//!
//! `pub-key` may be a public key or a certificate (etcd's e2e suite passes a certificate); a
//! member with only `pub-key` verifies tokens but cannot issue them. `ttl` defaults to 5 minutes.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::token::TokenOwner;
use crate::error::ServerError;

/// etcd's default JWT lifetime.
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// A JWT signer and verifier.
pub struct Jwt {
    algorithm: Algorithm,
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
}

impl Jwt {
    /// Builds from `--auth-token`'s options.
    ///
    /// # Errors
    /// A missing or unknown sign method, an unreadable or unparsable key.
    pub fn from_options(options: &HashMap<String, String>) -> Result<Self, String> {
        let method = options
            .get("sign-method")
            .ok_or("jwt: sign-method is required")?;
        let algorithm: Algorithm = method
            .parse()
            .map_err(|_| format!("jwt: invalid sign method {method:?}"))?;
        let ttl = match options.get("ttl") {
            Some(t) => crate::config::parse_go_duration(t)?,
            None => DEFAULT_TTL,
        };
        let read = |name: &str| -> Result<Option<Vec<u8>>, String> {
            options
                .get(name)
                .map(|path| std::fs::read(path).map_err(|e| format!("jwt: {name} {path}: {e}")))
                .transpose()
        };
        let (private, public) = (read("priv-key")?, read("pub-key")?);
        let family = family(algorithm);
        let signing = private
            .as_deref()
            .map(|pem| match family {
                Family::Hmac => Ok(EncodingKey::from_secret(pem)),
                Family::Rsa => EncodingKey::from_rsa_pem(pem),
                Family::Ec => EncodingKey::from_ec_pem(pem),
                Family::Ed => EncodingKey::from_ed_pem(pem),
            })
            .transpose()
            .map_err(|e| format!("jwt: priv-key: {e}"))?;
        let verifying = match (family, public.as_deref(), private.as_deref()) {
            (Family::Hmac, _, Some(secret)) => DecodingKey::from_secret(secret),
            (_, Some(pem), _) => decoding_key(family, pem)?,
            _ => return Err("jwt: pub-key is required".into()),
        };
        Ok(Self {
            algorithm,
            signing,
            verifying,
            ttl,
        })
    }

    /// A token for `username` at auth `revision`, expiring after the TTL.
    ///
    /// # Errors
    /// A verify-only member, or signing failed.
    pub fn sign(&self, username: &str, revision: u64) -> Result<String, ServerError> {
        let key = self.signing.as_ref().ok_or_else(|| {
            ServerError::Internal("auth: token signing attempted with verify-only key".into())
        })?;
        let exp = (SystemTime::now() + self.ttl)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            username: username.to_string(),
            revision,
            exp,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| ServerError::Internal(format!("auth: signing a JWT: {e}")))
    }

    /// The owner of a validly signed, unexpired token.
    pub fn verify(&self, token: &str) -> Option<TokenOwner> {
        let mut validation = Validation::new(self.algorithm);
        // etcd (jwt-go) allows no clock leeway.
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &validation).ok()?;
        Some(TokenOwner {
            username: data.claims.username,
            revision: Some(data.claims.revision),
        })
    }
}

#[derive(Clone, Copy)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family(a: Algorithm) -> Family {
    match a {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
        _ => Family::Rsa,
    }
}

/// A verifying key from a public key PEM or a certificate PEM.
fn decoding_key(family: Family, pem: &[u8]) -> Result<DecodingKey, String> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("BEGIN CERTIFICATE") {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|e| format!("jwt: pub-key: not a PEM certificate: {e}"))?;
        let cert = block
            .parse_x509()
            .map_err(|e| format!("jwt: pub-key: bad certificate: {e}"))?;
        let point = cert.public_key().subject_public_key.data.as_ref();
        return Ok(match family {
            Family::Rsa => DecodingKey::from_rsa_der(point),
            Family::Ec => DecodingKey::from_ec_der(point),
            Family::Ed => DecodingKey::from_ed_der(point),
            Family::Hmac => return Err("jwt: HMAC takes no certificate".into()),
        });
    }
    match family {
        Family::Rsa => DecodingKey::from_rsa_pem(pem),
        Family::Ec => DecodingKey::from_ec_pem(pem),
        Family::Ed => DecodingKey::from_ed_pem(pem),
        Family::Hmac => Ok(DecodingKey::from_secret(pem)),
    }
    .map_err(|e| format!("jwt: pub-key: {e}"))
}
