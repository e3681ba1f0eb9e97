//! Signed, expiring links to job pages: no login, nothing guessable.
//!
//! `/jobs/{id}?exp=<unix seconds>&sig=<hex HMAC(key, "job:{id}:{exp}")>`.

use secrecy::ExposeSecret;
use time::OffsetDateTime;
use url::Url;

use crate::{config::Settings, signature::HmacKey};

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

    fn signature(&self, id: i64, exp: i64) -> String {
        self.key.sign_hex(&[format!("job:{id}:{exp}").as_bytes()])
    }

    /// A link to job `id`, valid for the configured time from `now`.
    pub fn job_url(&self, id: i64, now: OffsetDateTime) -> String {
        let exp = (now + self.ttl).unix_timestamp();
        let mut url = self
            .public_url
            .join(&format!("jobs/{id}"))
            .unwrap_or_else(|_| self.public_url.clone());
        url.query_pairs_mut()
            .append_pair("exp", &exp.to_string())
            .append_pair("sig", &self.signature(id, exp));
        url.to_string()
    }

    /// Whether `sig` is our signature for job `id` until `exp`, and `exp` has not passed.
    pub fn verify(&self, id: i64, exp: i64, sig: &str, now: OffsetDateTime) -> bool {
        if exp < now.unix_timestamp() {
            return false;
        }
        let mut tag = [0u8; 32];
        if hex::decode_to_slice(sig, &mut tag).is_err() {
            return false;
        }
        self.key
            .verify_tag(&[format!("job:{id}:{exp}").as_bytes()], &tag)
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
        let url = Url::parse(&links.job_url(42, now)).unwrap();
        assert!(
            url.as_str()
                .starts_with("https://ops.example.com/pantheon/jobs/42?exp=")
        );
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        let exp: i64 = q["exp"].parse().unwrap();
        assert!(links.verify(42, exp, &q["sig"], now));
        assert!(!links.verify(43, exp, &q["sig"], now));
        assert!(!links.verify(42, exp + 1, &q["sig"], now));
        assert!(!links.verify(42, exp, &q["sig"], now + time::Duration::hours(2)));
        assert!(!links.verify(42, exp, "zz", now));
    }
}
