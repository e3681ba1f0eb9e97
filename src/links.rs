//! Signed, expiring links to pages: no login, nothing guessable.
//!
//! - `/jobs/{id}?for=<user>&exp=<unix seconds>&sig=<hex HMAC(key, "job:{id}:{user}:{exp}")>`,
//!   handed out only in the private reply of someone who may see the job (`job <id>`, `jobs`,
//!   the "Log" button), valid for `[jobs] link_ttl`; the page checks again that its user may see
//!   the job, and audits the view;
//! - `/audit?for=<user>&exp=<unix seconds>&sig=<hex HMAC(key, "audit:{user}:{exp}")>`, handed
//!   out only to those who may run `audit`, in their own (ephemeral) reply, valid for at most an
//!   hour. The user it was issued to is part of what is signed, so views are attributed.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use url::Url;

use crate::{config::Settings, domain::form::Purpose, signature::HmacKey};

#[derive(Clone, Debug)]
pub struct Links {
    key: HmacKey,
    public_url: Url,
    ttl: time::Duration,
}

impl Links {
    /// The key is PANTHEON_LINK_SECRET, else derived from the Slack signing secret (so every
    /// replica agrees), else random for this process (links then die with it).
    pub fn new(settings: &Settings, ttl: std::time::Duration) -> Self {
        let key = if let Some(secret) = &settings.link_secret {
            HmacKey::new(secret.expose_secret().as_bytes())
        } else if let Some(secret) = &settings.slack_signing_secret {
            let derived = HmacKey::new(secret.expose_secret().as_bytes())
                .sign_hex(&[b"pantheon job links v1"]);
            HmacKey::new(derived.as_bytes())
        } else {
            HmacKey::new(uuid::Uuid::new_v4().as_bytes())
        };
        Self {
            key,
            public_url: settings.public_url.clone(),
            ttl: time::Duration::try_from(ttl).unwrap_or(time::Duration::days(7)),
        }
    }

    fn link(
        &self,
        path: &str,
        subject: &str,
        extra: &[(&str, &str)],
        ttl: time::Duration,
        now: OffsetDateTime,
    ) -> String {
        let exp = (now + ttl).unix_timestamp();
        let mut url = self
            .public_url
            .join(path)
            .unwrap_or_else(|_| self.public_url.clone());
        url.query_pairs_mut()
            .extend_pairs(extra)
            .append_pair("exp", &exp.to_string())
            .append_pair(
                "sig",
                &self.key.sign_hex(&[format!("{subject}:{exp}").as_bytes()]),
            );
        url.to_string()
    }

    fn verify_subject(&self, subject: &str, exp: i64, sig: &str, now: OffsetDateTime) -> bool {
        if exp < now.unix_timestamp() {
            return false;
        }
        let mut tag = [0u8; 32];
        if hex::decode_to_slice(sig, &mut tag).is_err() {
            return false;
        }
        self.key
            .verify_tag(&[format!("{subject}:{exp}").as_bytes()], &tag)
    }

    /// A link to job `id` for `user`, valid for the configured time from `now`.
    pub fn job_url(&self, id: i64, user: &str, now: OffsetDateTime) -> String {
        self.link(
            &format!("jobs/{id}"),
            &format!("job:{id}:{user}"),
            &[("for", user)],
            self.ttl,
            now,
        )
    }

    /// Whether `sig` is our signature for `user`'s link to job `id` until `exp`, and `exp` has
    /// not passed.
    pub fn verify(&self, id: i64, user: &str, exp: i64, sig: &str, now: OffsetDateTime) -> bool {
        self.verify_subject(&format!("job:{id}:{user}"), exp, sig, now)
    }

    /// How long an audit link stays valid: the whole trail is behind it, so it is short-lived
    /// whatever `link_ttl` says.
    pub fn audit_ttl(&self) -> time::Duration {
        self.ttl.min(AUDIT_LINK_TTL)
    }

    /// A link to the audit trail page for `user`.
    pub fn audit_url(&self, user: &str, now: OffsetDateTime) -> String {
        let subject = format!("audit:{user}");
        self.link("audit", &subject, &[("for", user)], self.audit_ttl(), now)
    }

    /// Whether `sig` is our signature for `user`'s audit link until `exp`, and `exp` has not
    /// passed.
    pub fn verify_audit(&self, user: &str, exp: i64, sig: &str, now: OffsetDateTime) -> bool {
        self.verify_subject(&format!("audit:{user}"), exp, sig, now)
    }
}

const AUDIT_LINK_TTL: time::Duration = time::Duration::hours(1);

/// How long a form stays good to submit once opened.
pub const FORM_TTL: time::Duration = time::Duration::hours(24);

/// Why a sealed form purpose was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the form's state is not one Pantheon made, or was changed")]
    Forged,
    #[error("the form was opened more than a day ago; open it again")]
    Expired,
}

impl Links {
    /// What a form does, sealed for `user` until [`FORM_TTL`] from `now`:
    /// `{exp}.{base64url(json)}.{hex HMAC(key, "form:{user}:{exp}:{json}")}`. The platform
    /// carries it with the form (Slack's `private_metadata`, at most 3000 characters) and gives
    /// it back on submission.
    pub fn seal(&self, purpose: &Purpose, user: &str, now: OffsetDateTime) -> String {
        let json = serde_json::to_string(purpose).unwrap_or_default();
        let exp = (now + FORM_TTL).unix_timestamp();
        let sig = self
            .key
            .sign_hex(&[format!("form:{user}:{exp}:").as_bytes(), json.as_bytes()]);
        format!("{exp}.{}.{sig}", URL_SAFE_NO_PAD.encode(json))
    }

    /// The purpose sealed in `sealed` for `user`, if it is ours, unchanged and not expired.
    pub fn unseal(
        &self,
        sealed: &str,
        user: &str,
        now: OffsetDateTime,
    ) -> Result<Purpose, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(exp), Some(body), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Forged);
        };
        let exp: i64 = exp.parse().map_err(|_| SealError::Forged)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Forged)?;
        let mut tag = [0u8; 32];
        hex::decode_to_slice(sig, &mut tag).map_err(|_| SealError::Forged)?;
        if !self
            .key
            .verify_tag(&[format!("form:{user}:{exp}:").as_bytes(), &json], &tag)
        {
            return Err(SealError::Forged);
        }
        if exp < now.unix_timestamp() {
            return Err(SealError::Expired);
        }
        serde_json::from_slice(&json).map_err(|_| SealError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_verify_until_they_expire_and_only_for_their_job() {
        let settings = Settings::from_lookup(|k| match k {
            "SLACK_SIGNING_SECRET" => Some("s3cret-s3cret".into()),
            "PUBLIC_URL" => Some("https://ops.example.com/pantheon".into()),
            _ => None,
        })
        .unwrap();
        let links = Links::new(&settings, std::time::Duration::from_secs(3600));
        let now = OffsetDateTime::now_utc();
        let url = Url::parse(&links.job_url(42, "U01ALICE", now)).unwrap();
        assert!(
            url.as_str()
                .starts_with("https://ops.example.com/pantheon/jobs/42?for=U01ALICE&exp=")
        );
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        let exp: i64 = q["exp"].parse().unwrap();
        assert!(links.verify(42, "U01ALICE", exp, &q["sig"], now));
        assert!(!links.verify(43, "U01ALICE", exp, &q["sig"], now));
        assert!(
            !links.verify(42, "U02JANE", exp, &q["sig"], now),
            "bound to its viewer"
        );
        assert!(!links.verify(42, "U01ALICE", exp + 1, &q["sig"], now));
        assert!(!links.verify(
            42,
            "U01ALICE",
            exp,
            &q["sig"],
            now + time::Duration::hours(2)
        ));
        assert!(!links.verify(42, "U01ALICE", exp, "zz", now));
    }

    #[test]
    fn audit_links_are_short_lived_and_not_job_links() {
        let settings = Settings::from_lookup(|k| match k {
            "SLACK_SIGNING_SECRET" => Some("s3cret-s3cret".into()),
            "PUBLIC_URL" => Some("https://ops.example.com/pantheon/".into()),
            _ => None,
        })
        .unwrap();
        let links = Links::new(&settings, std::time::Duration::from_secs(24 * 3600));
        let now = OffsetDateTime::now_utc();
        let url = Url::parse(&links.audit_url("U03JOE", now)).unwrap();
        assert!(
            url.as_str()
                .starts_with("https://ops.example.com/pantheon/audit?for=U03JOE&exp=")
        );
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        let exp: i64 = q["exp"].parse().unwrap();
        assert_eq!(exp, (now + time::Duration::hours(1)).unix_timestamp());
        assert!(links.verify_audit("U03JOE", exp, &q["sig"], now));
        assert!(!links.verify_audit("U03JOE", exp, &q["sig"], now + time::Duration::minutes(61)));
        assert!(!links.verify_audit("U03JOE", exp + 1, &q["sig"], now));
        assert!(
            !links.verify_audit("U01ALICE", exp, &q["sig"], now),
            "bound to its user"
        );
        // A job link's signature does not open the audit page, nor the other way round.
        let job = Url::parse(&links.job_url(1, "U03JOE", now)).unwrap();
        let jq: std::collections::HashMap<_, _> = job.query_pairs().into_owned().collect();
        let jexp: i64 = jq["exp"].parse().unwrap();
        assert!(!links.verify_audit("U03JOE", jexp, &jq["sig"], now));
        assert!(!links.verify(1, "U03JOE", exp, &q["sig"], now));
        // A shorter link_ttl wins.
        let short = Links::new(&settings, std::time::Duration::from_secs(60));
        assert_eq!(short.audit_ttl(), time::Duration::minutes(1));
    }

    #[test]
    fn a_sealed_form_opens_only_unchanged_for_its_user_and_in_time() {
        let settings = crate::config::Settings::from_lookup(|name| {
            (name == "SLACK_SIGNING_SECRET").then(|| "s3cret".to_owned())
        })
        .unwrap();
        let links = Links::new(&settings, std::time::Duration::from_secs(3600));
        let now = time::macros::datetime!(2026-12-04 12:00 UTC);
        let purpose = Purpose::Comment {
            request: 7,
            channel: "C1".into(),
        };
        let sealed = links.seal(&purpose, "U1", now);
        assert_eq!(links.unseal(&sealed, "U1", now), Ok(purpose.clone()));
        assert_eq!(links.unseal(&sealed, "U2", now), Err(SealError::Forged));
        let later = now + FORM_TTL + time::Duration::seconds(1);
        assert_eq!(links.unseal(&sealed, "U1", later), Err(SealError::Expired));
        // Another request id in the same envelope: the signature no longer fits.
        let mut parts: Vec<String> = sealed.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(r#"{"do":"comment","request":8,"channel":"C1"}"#);
        assert_eq!(
            links.unseal(&parts.join("."), "U1", now),
            Err(SealError::Forged)
        );
        // A later expiry with the old signature, or no seal at all.
        parts[1] = sealed.split('.').nth(1).unwrap().to_owned();
        parts[0] = (now + FORM_TTL + FORM_TTL).unix_timestamp().to_string();
        assert_eq!(
            links.unseal(&parts.join("."), "U1", now),
            Err(SealError::Forged)
        );
        for bad in ["", "x", "1.2", "1.!!.00", "{\"do\":\"page\"}"] {
            assert_eq!(
                links.unseal(bad, "U1", now),
                Err(SealError::Forged),
                "{bad}"
            );
        }
    }
}
