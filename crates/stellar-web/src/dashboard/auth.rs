//! Who may act on the dashboard: the secret, sessions behind an HttpOnly cookie, CSRF tokens.
//!
//! - No secret configured: anyone who reaches the port may look, nobody may act.
//! - A secret: a login (a form POST of the secret, compared in constant time) opens a session:
//!   a random token in an `HttpOnly; SameSite=Strict` cookie, expiring on the server after
//!   [`SESSION_TTL`], with its own CSRF token that the page sends in [`CSRF_HEADER`] on every
//!   mutating request. The secret never appears in a page, a URL or a log.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, header};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use stellar_core::{DashboardSecret, sync};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "stellar_dashboard";
/// The header carrying the session's CSRF token on mutating requests.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after its login.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// Most sessions held at once; the oldest go first.
const MAX_SESSIONS: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// The login check and the open sessions of one node.
pub(crate) struct Auth {
    /// HMAC of the secret under a key drawn at start: a login is checked with a constant-time
    /// tag comparison, whatever its length. `None`: read-only dashboard.
    secret: Option<(HmacSha256, Vec<u8>)>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Login checks reserved in the current second (successful ones given back), node-wide:
    /// parallel guesses share one budget.
    attempts: Mutex<(Instant, u32)>,
}

/// How many failed logins a node takes per second; more are refused unchecked.
pub(crate) const MAX_LOGIN_FAILURES_PER_S: u32 = 5;

/// What a login attempt may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// Check it: a slot of this second's budget is reserved for it. `first`: the first of its
    /// second (a failure is worth a log line).
    Check {
        /// The first reservation of this second.
        first: bool,
    },
    /// This second's budget is used up: refuse without checking.
    Refuse,
}

/// One logged-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The token the page echoes in [`CSRF_HEADER`].
    pub(crate) csrf: String,
    expires: Instant,
}

/// What a request may do.
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// No secret is configured: look, never act.
    ReadOnly,
    /// A secret is configured and the request has no live session.
    LoggedOut,
    /// A live session.
    LoggedIn(Session),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Checks logins against `secret`; `None` makes the dashboard read-only.
    pub(crate) fn new(secret: Option<&DashboardSecret>) -> Self {
        let secret = secret.map(|secret| {
            let mut key = [0_u8; 32];
            random(&mut key);
            let mac = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length");
            let tag = tag(&mac, secret.expose().as_bytes());
            (mac, tag)
        });
        Self {
            secret,
            sessions: Mutex::new(HashMap::new()),
            attempts: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Whether a secret is configured.
    pub(crate) fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Reserves the check of a login, before the secret is compared: at most
    /// [`MAX_LOGIN_FAILURES_PER_S`] checks a second on this node, whoever sends them. Counted and
    /// checked under one lock, so parallel logins cannot all pass before a failure is counted.
    pub(crate) fn throttle(&self) -> Throttle {
        let mut attempts = sync::lock(&self.attempts);
        if attempts.0.elapsed() >= Duration::from_secs(1) {
            *attempts = (Instant::now(), 0);
        }
        if attempts.1 >= MAX_LOGIN_FAILURES_PER_S {
            return Throttle::Refuse;
        }
        attempts.1 += 1;
        Throttle::Check {
            first: attempts.1 == 1,
        }
    }

    /// Gives back the slot a successful login reserved: only failures use up the budget.
    pub(crate) fn succeeded(&self) {
        let mut attempts = sync::lock(&self.attempts);
        attempts.1 = attempts.1.saturating_sub(1);
    }

    /// Whether `attempt` is the secret, compared in constant time.
    pub(crate) fn check(&self, attempt: &str) -> bool {
        let Some((mac, expected)) = &self.secret else {
            return false;
        };
        let mut mac = mac.clone();
        mac.update(attempt.as_bytes());
        mac.verify_slice(expected).is_ok()
    }

    /// Opens a session: its cookie token and CSRF token.
    pub(crate) fn open(&self) -> (String, Session) {
        let token = random_hex(32);
        let session = Session {
            csrf: random_hex(32),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut sessions = sync::lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => sessions.remove(&key),
                None => break,
            };
        }
        sessions.insert(token.clone(), session.clone());
        (token, session)
    }

    /// Ends the session of `headers`' cookie, if any.
    pub(crate) fn close(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers) {
            sync::lock(&self.sessions).remove(&token);
        }
    }

    /// What the request with `headers` may do.
    pub(crate) fn access(&self, headers: &HeaderMap) -> Access {
        if self.secret.is_none() {
            return Access::ReadOnly;
        }
        let Some(token) = cookie(headers) else {
            return Access::LoggedOut;
        };
        let mut sessions = sync::lock(&self.sessions);
        match sessions.get(&token) {
            Some(session) if session.expires > Instant::now() => Access::LoggedIn(session.clone()),
            Some(_) => {
                sessions.remove(&token);
                Access::LoggedOut
            }
            None => Access::LoggedOut,
        }
    }
}

impl Session {
    /// Whether `headers` carry this session's CSRF token (constant-time comparison).
    pub(crate) fn csrf_matches(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(CSRF_HEADER).map(|v| v.as_bytes()) else {
            return false;
        };
        let expected = self.csrf.as_bytes();
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The `Set-Cookie` value of a new session.
pub(crate) fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session token in the request's cookies.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

fn tag(mac: &HmacSha256, bytes: &[u8]) -> Vec<u8> {
    let mut mac = mac.clone();
    mac.update(bytes);
    mac.finalize().into_bytes().to_vec()
}

/// Fills `bytes` from the operating system's random source.
fn random(bytes: &mut [u8]) {
    // Without the OS's randomness no session could be made safely: a node that cannot read
    // it has bigger problems, and the dashboard must not fall back to guessable tokens.
    getrandom::fill(bytes).expect("the operating system's random source is readable");
}

/// `bytes` random bytes as hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0_u8; bytes];
    random(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_secret_is_checked_and_sessions_carry_their_own_csrf_token() {
        let auth = Auth::new(Some(&DashboardSecret::new("s3cret")));
        assert!(auth.check("s3cret"));
        assert!(!auth.check("s3cre") && !auth.check("s3cret!") && !auth.check(""));
        let mut headers = HeaderMap::new();
        assert!(matches!(auth.access(&headers), Access::LoggedOut));
        let (token, session) = auth.open();
        assert_eq!(token.len(), 64);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={token}")).expect("header"),
        );
        let Access::LoggedIn(found) = auth.access(&headers) else {
            panic!("the cookie opens the session");
        };
        assert_eq!(found.csrf, session.csrf);
        assert!(!found.csrf_matches(&headers));
        headers.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&session.csrf).expect("csrf"),
        );
        assert!(found.csrf_matches(&headers));
        headers.insert(CSRF_HEADER, HeaderValue::from_static("0000"));
        assert!(!found.csrf_matches(&headers));
        auth.close(&headers);
        assert!(matches!(auth.access(&headers), Access::LoggedOut));
    }

    #[test]
    fn a_login_check_is_reserved_before_the_secret_is_compared() {
        let auth = Auth::new(Some(&DashboardSecret::new("s3cret")));
        // No failure is counted in between (as with parallel logins still being checked): the
        // reservations alone use up the second's budget.
        let reserved: Vec<Throttle> = (0..MAX_LOGIN_FAILURES_PER_S + 2)
            .map(|_| auth.throttle())
            .collect();
        assert_eq!(reserved[0], Throttle::Check { first: true });
        assert!(
            reserved[1..MAX_LOGIN_FAILURES_PER_S as usize]
                .iter()
                .all(|t| *t == Throttle::Check { first: false }),
            "{reserved:?}"
        );
        assert!(
            reserved[MAX_LOGIN_FAILURES_PER_S as usize..]
                .iter()
                .all(|t| *t == Throttle::Refuse),
            "{reserved:?}"
        );
        // A successful login gives its slot back.
        auth.succeeded();
        assert_eq!(auth.throttle(), Throttle::Check { first: false });
        assert_eq!(auth.throttle(), Throttle::Refuse);
    }

    #[test]
    fn without_a_secret_nobody_logs_in() {
        let auth = Auth::new(None);
        assert!(!auth.has_secret());
        assert!(!auth.check(""));
        assert!(matches!(auth.access(&HeaderMap::new()), Access::ReadOnly));
    }
}
