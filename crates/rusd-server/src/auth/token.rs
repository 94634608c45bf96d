//! Tokens handed out by Authenticate (`--auth-token`): etcd's simple tokens, or signed JWTs.
//!
//! A simple token is `<16 random letters>.<log index>`: the letters are chosen by the member
//! that received Authenticate, the index is the entry's, and every member records the token
//! when it applies the entry, so any member accepts it once it has applied that index. A simple
//! token lives `--auth-token-ttl` seconds (300) after its last use, and dies with its user,
//! a password change, or AuthDisable. A JWT carries its user and auth revision, signed; it
//! lives until its `exp` whatever happens to the store (its revision then goes stale).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng as _;

use super::jwt::Jwt;
use crate::error::ServerError;

/// Length of a simple token's random part (etcd's `defaultSimpleTokenLength`).
const SIMPLE_TOKEN_LETTERS: usize = 16;
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// What applying an auth operation does to the issued tokens.
#[derive(Debug)]
pub enum TokenEffect {
    /// Nothing.
    None,
    /// Authenticate: records `token` for `user`.
    Assign {
        /// The token.
        token: String,
        /// Its user.
        user: String,
    },
    /// UserDelete, UserChangePassword: the user's simple tokens die.
    InvalidateUser(String),
    /// AuthDisable: every simple token dies.
    Clear,
}

/// Who a valid token belongs to.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenOwner {
    /// The user.
    pub username: String,
    /// The auth revision the token carries (JWT), or `None` (simple tokens: the store's
    /// current one).
    pub revision: Option<u64>,
}

/// The token provider of one member.
pub struct Tokens {
    kind: Kind,
}

enum Kind {
    Simple(Mutex<Simple>),
    Jwt(Jwt),
}

struct Simple {
    ttl: Duration,
    enabled: bool,
    /// token -> (user, expiry).
    tokens: HashMap<String, (String, Instant)>,
}

impl Tokens {
    /// Simple tokens living `ttl` after their last use.
    pub fn simple(ttl: Duration) -> Self {
        Self {
            kind: Kind::Simple(Mutex::new(Simple {
                ttl,
                enabled: false,
                tokens: HashMap::new(),
            })),
        }
    }

    /// Builds the provider `--auth-token` names: `simple`, or
    /// `jwt,pub-key=F,priv-key=F,sign-method=M[,ttl=D]`.
    ///
    /// # Errors
    /// An unknown type, a malformed option or an unreadable key (etcd refuses to start then).
    pub fn from_flag(flag: &str, simple_ttl: Duration) -> Result<Self, String> {
        let mut parts = flag.split(',');
        let kind = parts.next().unwrap_or_default();
        let mut options = HashMap::new();
        for part in parts {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid auth token option {part:?}"));
            };
            if options.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("auth token option {k:?} given twice"));
            }
        }
        match kind {
            "simple" => Ok(Self::simple(simple_ttl)),
            "jwt" => Ok(Self {
                kind: Kind::Jwt(Jwt::from_options(&options)?),
            }),
            other => Err(format!("unknown auth token type {other:?}")),
        }
    }

    /// The random part of a new simple token, chosen by the member Authenticate reached
    /// (empty for JWT).
    pub fn prefix(&self) -> String {
        match self.kind {
            Kind::Jwt(_) => String::new(),
            Kind::Simple(_) => {
                let mut rng = rand::rng();
                (0..SIMPLE_TOKEN_LETTERS)
                    .map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())]))
                    .collect()
            }
        }
    }

    /// The token Authenticate at log `index` hands to `user`.
    ///
    /// # Errors
    /// JWT signing failed.
    pub fn make(
        &self,
        prefix: &str,
        index: u64,
        user: &str,
        revision: u64,
    ) -> Result<String, ServerError> {
        match &self.kind {
            Kind::Simple(_) => Ok(format!("{prefix}.{index}")),
            Kind::Jwt(jwt) => jwt.sign(user, revision),
        }
    }

    /// Auth was enabled: simple tokens may be issued.
    pub fn enable(&self) {
        if let Kind::Simple(s) = &self.kind {
            s.lock().enabled = true;
        }
    }

    /// Records what an applied auth operation did.
    pub fn apply(&self, effect: TokenEffect) {
        let Kind::Simple(s) = &self.kind else {
            return;
        };
        let mut s = s.lock();
        let now = Instant::now();
        match effect {
            TokenEffect::None => {}
            TokenEffect::Assign { token, user } => {
                if s.enabled {
                    let ttl = s.ttl;
                    s.tokens.retain(|_, (_, expiry)| *expiry > now);
                    s.tokens.insert(token, (user, now + ttl));
                }
            }
            TokenEffect::InvalidateUser(user) => s.tokens.retain(|_, (u, _)| *u != user),
            TokenEffect::Clear => {
                s.tokens.clear();
                s.enabled = false;
            }
        }
    }

    /// The log index a simple token was issued at: a member must have applied it before it
    /// can know the token.
    pub fn issued_at(&self, token: &str) -> Option<u64> {
        match self.kind {
            Kind::Simple(_) => token.rsplit_once('.')?.1.parse().ok(),
            Kind::Jwt(_) => None,
        }
    }

    /// Who `token` belongs to, if it is valid; a simple token's life is extended.
    pub fn owner(&self, token: &str) -> Option<TokenOwner> {
        match &self.kind {
            Kind::Jwt(jwt) => jwt.verify(token),
            Kind::Simple(s) => {
                let mut s = s.lock();
                let now = Instant::now();
                let ttl = s.ttl;
                let (user, expiry) = s.tokens.get_mut(token)?;
                if *expiry <= now {
                    s.tokens.remove(token);
                    return None;
                }
                *expiry = now + ttl;
                Some(TokenOwner {
                    username: user.clone(),
                    revision: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(t: &Tokens, token: &str, user: &str) {
        t.apply(TokenEffect::Assign {
            token: token.into(),
            user: user.into(),
        });
    }

    #[test]
    fn simple_tokens_live_until_ttl_user_change_or_disable() {
        let t = Tokens::simple(Duration::from_secs(300));
        let prefix = t.prefix();
        assert_eq!(prefix.len(), SIMPLE_TOKEN_LETTERS);
        let token = t.make(&prefix, 7, "alice", 3).expect("token");
        assert_eq!(t.issued_at(&token), Some(7));
        assign(&t, &token, "alice");
        assert!(t.owner(&token).is_none(), "not enabled: not recorded");
        t.enable();
        assign(&t, &token, "alice");
        assign(&t, "other.8", "bob");
        assert_eq!(t.owner(&token).expect("valid").username, "alice");
        t.apply(TokenEffect::InvalidateUser("alice".into()));
        assert!(t.owner(&token).is_none());
        assert!(t.owner("other.8").is_some());
        t.apply(TokenEffect::Clear);
        assert!(t.owner("other.8").is_none());

        let short = Tokens::simple(Duration::from_millis(1));
        short.enable();
        assign(&short, "x.1", "alice");
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.owner("x.1").is_none(), "expired");
    }

    #[test]
    fn the_flag_is_parsed_like_etcd() {
        assert!(Tokens::from_flag("simple", Duration::from_secs(1)).is_ok());
        assert!(Tokens::from_flag("nope", Duration::from_secs(1)).is_err());
        assert!(Tokens::from_flag("jwt,ttl", Duration::from_secs(1)).is_err());
        assert!(Tokens::from_flag("jwt,ttl=1s,ttl=2s", Duration::from_secs(1)).is_err());
    }
}
