//! Message buttons. Mattermost calls a button's `integration.url` with the `context` we put
//! there and the clicking user's id, and signs nothing; so each context carries our own seal:
//! the action (which names the request or job it acts on), an expiry and an HMAC over both
//! with `PANTHEON_MATTERMOST_ACTION_SECRET`. A context that was changed, has expired, or is not
//! ours is refused. (Mattermost strips `integration` from the posts it shows to clients, so a
//! context is seen only by the server and us.) Each click carries its own `trigger_id`, which
//! is claimed like a Slack signature, so a click sent twice is acted on once.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use time::OffsetDateTime;
use url::Url;

use crate::{chat::Action, signature::HmacKey};

/// What separates our seals from any other HMAC made with the same key.
const DOMAIN: &[u8] = b"pantheon:mattermost-button:";

/// The key of a button's context that holds our seal.
pub const CONTEXT_KEY: &str = "pantheon";

/// Why a click's context was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the button's context is not one Pantheon made, or was changed")]
    Forged,
    #[error("the button has expired")]
    Expired,
}

pub struct Buttons {
    key: HmacKey,
    /// Where clicks go: `{PUBLIC_URL}/mattermost/actions`.
    url: Url,
    ttl: Duration,
}

impl Buttons {
    pub fn new(secret: &[u8], public_url: &Url, ttl: Duration) -> Self {
        let url = public_url
            .join("mattermost/actions")
            .unwrap_or_else(|_| public_url.clone());
        Self {
            key: HmacKey::new(secret),
            url,
            ttl,
        }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The sealed context of a button that does `action`, good until `now` + the TTL.
    pub fn seal(&self, action: &Action, now: OffsetDateTime) -> String {
        let json = serde_json::to_string(action).unwrap_or_default();
        let exp = (now + self.ttl).unix_timestamp();
        let sig = self
            .key
            .sign_hex(&[DOMAIN, format!("{exp}.").as_bytes(), json.as_bytes()]);
        format!("{exp}.{}.{sig}", URL_SAFE_NO_PAD.encode(json))
    }

    /// The action sealed in `sealed`, if it is ours, unchanged and not expired.
    pub fn unseal(&self, sealed: &str, now: OffsetDateTime) -> Result<Action, Refused> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(exp), Some(body), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Refused::Forged);
        };
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| Refused::Forged)?;
        let mut tag = [0u8; 32];
        hex::decode_to_slice(sig, &mut tag).map_err(|_| Refused::Forged)?;
        if !self
            .key
            .verify_tag(&[DOMAIN, format!("{exp}.").as_bytes(), &json], &tag)
        {
            return Err(Refused::Forged);
        }
        let exp: i64 = exp.parse().map_err(|_| Refused::Forged)?;
        if exp < now.unix_timestamp() {
            return Err(Refused::Expired);
        }
        serde_json::from_slice(&json).map_err(|_| Refused::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::approval::Decision;

    fn buttons() -> Buttons {
        Buttons::new(
            b"0123456789abcdef0123456789abcdef",
            &Url::parse("https://pantheon.example.com/").unwrap(),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn a_seal_opens_until_it_expires_and_not_after() {
        let b = buttons();
        let now = OffsetDateTime::now_utc();
        let action = Action::Vote {
            request: 42,
            decision: Decision::Approve,
        };
        let sealed = b.seal(&action, now);
        assert_eq!(b.unseal(&sealed, now), Ok(action));
        assert_eq!(
            b.unseal(&sealed, now + time::Duration::hours(2)),
            Err(Refused::Expired)
        );
        assert_eq!(
            b.url().as_str(),
            "https://pantheon.example.com/mattermost/actions"
        );
    }

    #[test]
    fn a_changed_seal_is_refused() {
        let b = buttons();
        let now = OffsetDateTime::now_utc();
        let sealed = b.seal(
            &Action::Vote {
                request: 42,
                decision: Decision::Approve,
            },
            now,
        );
        let (exp, rest) = sealed.split_once('.').unwrap();
        let (body, sig) = rest.split_once('.').unwrap();
        // Another request, the same signature.
        let other = URL_SAFE_NO_PAD.encode(r#"{"do":"vote","request":43,"decision":"approve"}"#);
        assert_eq!(
            b.unseal(&format!("{exp}.{other}.{sig}"), now),
            Err(Refused::Forged)
        );
        // A later expiry, the same signature.
        let later = exp.parse::<i64>().unwrap() + 86_400;
        assert_eq!(
            b.unseal(&format!("{later}.{body}.{sig}"), now),
            Err(Refused::Forged)
        );
        // Another key.
        let theirs = Buttons::new(
            b"another key entirely, 32 bytes!!",
            b.url(),
            Duration::from_secs(60),
        );
        assert_eq!(theirs.unseal(&sealed, now), Err(Refused::Forged));
        for junk in ["", "1.2", "x.y.z", &format!("{exp}.{body}.00")] {
            assert_eq!(b.unseal(junk, now), Err(Refused::Forged), "{junk}");
        }
    }
}
