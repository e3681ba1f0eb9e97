//! Signature checks for everything that calls us: Slack, GitHub, PagerDuty and Zendesk.
//!
//! Each check is a pure function of the secret(s), the headers' values, the raw body bytes and
//! (where the scheme has a timestamp) the current time, so the rules can be tested against the
//! vendors' published vectors. Every comparison goes through `Mac::verify_slice`, which is
//! constant time; the expected tag is never formatted as text to be compared.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Slack and Zendesk reject requests whose timestamp is further than this from our clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;

/// Why a request was not accepted as genuine. The variants are for logs and metrics; callers
/// answer every one of them with the same 401 so a forger learns nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header missing")]
    MissingSignature,
    #[error("timestamp header missing")]
    MissingTimestamp,
    #[error("timestamp header is not a valid timestamp")]
    MalformedTimestamp,
    #[error("timestamp is outside the 5-minute window")]
    StaleTimestamp,
    #[error("signature header is malformed")]
    MalformedSignature,
    #[error("signature does not match")]
    Mismatch,
}

/// A secret keyed into HMAC-SHA256 once; each request clones the keyed state, which is cheaper
/// than keying again.
#[derive(Clone)]
pub struct HmacKey(HmacSha256);

impl HmacKey {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length; this cannot fail for Hmac<Sha256>.
        match HmacSha256::new_from_slice(secret) {
            Ok(mac) => Self(mac),
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        }
    }

    fn mac(&self) -> HmacSha256 {
        self.0.clone()
    }

    /// Lowercase hex HMAC of `parts`, for signing test requests and outgoing links.
    pub fn sign_hex(&self, parts: &[&[u8]]) -> String {
        let mut mac = self.mac();
        for part in parts {
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// Constant-time check of a raw 32-byte tag over `parts`.
    pub fn verify_tag(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }

    fn verify_hex(&self, parts: &[&[u8]], tag_hex: &[u8]) -> Result<(), SignatureError> {
        let mut tag = [0u8; 32];
        hex::decode_to_slice(tag_hex, &mut tag).map_err(|_| SignatureError::MalformedSignature)?;
        let mut mac = self.mac();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey([REDACTED])")
    }
}

/// Slack: `X-Slack-Signature: v0=hex(HMAC(secret, "v0:" + ts + ":" + body))` and
/// `X-Slack-Request-Timestamp` within five minutes of `now` (either direction; exactly 300 s is
/// still accepted, as Slack's SDKs do).
pub fn verify_slack(
    key: &HmacKey,
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    let signature = signature.ok_or(SignatureError::MissingSignature)?;
    let ts = parse_unix_seconds(timestamp)?;
    if (now - ts).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(SignatureError::StaleTimestamp);
    }
    let tag = signature
        .strip_prefix(b"v0=")
        .ok_or(SignatureError::MalformedSignature)?;
    key.verify_hex(&[b"v0:", timestamp, b":", body], tag)
}

/// Whether `a` equals `b`, in time that depends on neither (both are hashed first, so not even
/// their lengths show), for comparing a presented bearer token with the configured one.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest as _;
    let (da, db) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    let diff = da
        .iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

/// The `X-Slack-Signature` value Slack would send; used by tests and the console.
pub fn sign_slack(key: &HmacKey, timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        key.sign_hex(&[b"v0:", timestamp.as_bytes(), b":", body])
    )
}

/// GitHub: `X-Hub-Signature-256: sha256=hex(HMAC(secret, body))`. Any of `keys` may match, so a
/// secret can be rotated without dropping deliveries.
pub fn verify_github(
    keys: &[HmacKey],
    signature: Option<&[u8]>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::MissingSignature)?;
    let tag = signature
        .strip_prefix(b"sha256=")
        .ok_or(SignatureError::MalformedSignature)?;
    any_key(keys, |key| key.verify_hex(&[body], tag))
}

/// PagerDuty V3: `X-PagerDuty-Signature: v1=hex,v1=hex` (several during PagerDuty's own secret
/// rotation). Accepted when any listed `v1` signature matches any configured secret.
pub fn verify_pagerduty(
    keys: &[HmacKey],
    signature: Option<&[u8]>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::MissingSignature)?;
    let mut result = Err(SignatureError::MalformedSignature);
    for entry in signature.split(|&b| b == b',') {
        let entry = entry.trim_ascii();
        let Some(tag) = entry.strip_prefix(b"v1=") else {
            continue;
        };
        match any_key(keys, |key| key.verify_hex(&[body], tag)) {
            Ok(()) => return Ok(()),
            // Remember the most telling failure: a well-formed mismatch beats a malformed entry.
            Err(SignatureError::Mismatch) => result = Err(SignatureError::Mismatch),
            Err(_) => {}
        }
    }
    result
}

/// Zendesk: `X-Zendesk-Webhook-Signature: base64(HMAC(secret, timestamp + body))` with the
/// timestamp from `X-Zendesk-Webhook-Signature-Timestamp` (ISO-8601), which must be within
/// five minutes of `now`. The secret is used as the string Zendesk shows, not base64-decoded.
pub fn verify_zendesk(
    keys: &[HmacKey],
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    let signature = signature.ok_or(SignatureError::MissingSignature)?;
    let ts = std::str::from_utf8(timestamp)
        .ok()
        .and_then(|s| {
            time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
                .ok()
        })
        .ok_or(SignatureError::MalformedTimestamp)?;
    if (now - ts.unix_timestamp()).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(SignatureError::StaleTimestamp);
    }
    let tag = base64::engine::general_purpose::STANDARD
        .decode(signature.trim_ascii())
        .map_err(|_| SignatureError::MalformedSignature)?;
    any_key(keys, |key| {
        let mut mac = key.mac();
        mac.update(timestamp);
        mac.update(body);
        mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
    })
}

fn any_key(
    keys: &[HmacKey],
    check: impl Fn(&HmacKey) -> Result<(), SignatureError>,
) -> Result<(), SignatureError> {
    let mut result = Err(SignatureError::Mismatch);
    for key in keys {
        result = check(key);
        if result.is_ok() {
            break;
        }
    }
    result
}

fn parse_unix_seconds(raw: &[u8]) -> Result<i64, SignatureError> {
    if raw.is_empty() || raw.len() > 12 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(SignatureError::MalformedTimestamp);
    }
    raw.iter()
        .try_fold(0i64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
        .ok_or(SignatureError::MalformedTimestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's published example (api.slack.com/authentication/verifying-requests-from-slack).
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: &str = "1531420618";
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const SLACK_NOW: i64 = 1531420618;

    fn slack(ts: &str, sig: &str, body: &str, now: i64) -> Result<(), SignatureError> {
        verify_slack(
            &HmacKey::new(SLACK_SECRET.as_bytes()),
            Some(ts.as_bytes()),
            Some(sig.as_bytes()),
            body.as_bytes(),
            now,
        )
    }

    #[test]
    fn slack_published_vector_verifies() {
        assert_eq!(slack(SLACK_TS, SLACK_SIG, SLACK_BODY, SLACK_NOW), Ok(()));
        assert_eq!(
            sign_slack(
                &HmacKey::new(SLACK_SECRET.as_bytes()),
                SLACK_TS,
                SLACK_BODY.as_bytes()
            ),
            SLACK_SIG
        );
    }

    fn flip_byte(s: &str, i: usize) -> String {
        let mut bytes = s.as_bytes().to_vec();
        // Flip to another printable byte so the string stays UTF-8 and the length stays put.
        bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn slack_any_changed_byte_fails() {
        for i in 0..SLACK_BODY.len() {
            let body = flip_byte(SLACK_BODY, i);
            assert!(
                slack(SLACK_TS, SLACK_SIG, &body, SLACK_NOW).is_err(),
                "body byte {i}"
            );
        }
        for i in 0..SLACK_TS.len() {
            let ts = flip_byte(SLACK_TS, i);
            // A changed timestamp must fail on the MAC, so check with a clock that accepts it.
            let now = ts.parse::<i64>().unwrap();
            assert!(
                slack(&ts, SLACK_SIG, SLACK_BODY, now).is_err(),
                "ts byte {i}"
            );
        }
        for i in 0..SLACK_SIG.len() {
            let sig = flip_byte(SLACK_SIG, i);
            assert!(
                slack(SLACK_TS, &sig, SLACK_BODY, SLACK_NOW).is_err(),
                "sig byte {i}"
            );
        }
    }

    #[test]
    fn slack_window_is_five_minutes_both_ways() {
        let ok = |now| slack(SLACK_TS, SLACK_SIG, SLACK_BODY, now);
        assert_eq!(ok(SLACK_NOW + 300), Ok(()));
        assert_eq!(ok(SLACK_NOW - 300), Ok(()));
        assert_eq!(ok(SLACK_NOW + 301), Err(SignatureError::StaleTimestamp));
        assert_eq!(ok(SLACK_NOW - 301), Err(SignatureError::StaleTimestamp));
    }

    #[test]
    fn slack_malformed_headers_are_refused() {
        let key = HmacKey::new(SLACK_SECRET.as_bytes());
        let body = SLACK_BODY.as_bytes();
        let check = |ts: Option<&str>, sig: Option<&str>| {
            verify_slack(
                &key,
                ts.map(str::as_bytes),
                sig.map(str::as_bytes),
                body,
                SLACK_NOW,
            )
        };
        assert_eq!(
            check(None, Some(SLACK_SIG)),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            check(Some(SLACK_TS), None),
            Err(SignatureError::MissingSignature)
        );
        for ts in [
            "",
            "abc",
            "-1531420618",
            "1531420618.5",
            "99999999999999999999",
        ] {
            assert_eq!(
                check(Some(ts), Some(SLACK_SIG)),
                Err(SignatureError::MalformedTimestamp),
                "{ts:?}"
            );
        }
        for sig in [
            "",
            "v0=",
            "v1=a2114d57",
            "v0=zz",
            &SLACK_SIG[..20],
            &SLACK_SIG[3..],
        ] {
            assert!(check(Some(SLACK_TS), Some(sig)).is_err(), "{sig:?}");
        }
    }

    #[test]
    fn github_published_vector_verifies_and_rotation_works() {
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let good = HmacKey::new(b"It's a Secret to Everybody");
        let old = HmacKey::new(b"old secret");
        let body = b"Hello, World!";
        assert_eq!(
            verify_github(std::slice::from_ref(&good), Some(sig.as_bytes()), body),
            Ok(())
        );
        assert_eq!(
            verify_github(&[old.clone(), good], Some(sig.as_bytes()), body),
            Ok(())
        );
        assert_eq!(
            verify_github(&[old], Some(sig.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_github(&[], Some(sig.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn pagerduty_any_listed_signature_matches() {
        let key = HmacKey::new(b"secret-a");
        let body = br#"{"event":{}}"#;
        let good = format!("v1={}", key.sign_hex(&[body]));
        let other = format!("v1={}", HmacKey::new(b"secret-b").sign_hex(&[body]));
        let both = format!("{other}, {good}");
        assert_eq!(
            verify_pagerduty(std::slice::from_ref(&key), Some(both.as_bytes()), body),
            Ok(())
        );
        assert_eq!(
            verify_pagerduty(std::slice::from_ref(&key), Some(other.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_pagerduty(std::slice::from_ref(&key), Some(b"v2=abcd"), body),
            Err(SignatureError::MalformedSignature)
        );
        assert_eq!(
            verify_pagerduty(&[key], None, body),
            Err(SignatureError::MissingSignature)
        );
    }

    #[test]
    fn zendesk_signs_timestamp_then_body() {
        // Self-computed check value from protocols.md §4.1 (current docs' test secret).
        let key = HmacKey::new(b"dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==");
        let ts = "2021-07-25T10:00:00Z";
        let now = 1627207200; // 2021-07-25T10:00:00Z
        let body = br#"{"say": "hello"}"#;
        let sig = "gf3v0LzLRHPUnIdhbvwRDVEvzSb07/QN0GYjSNlkBT0=";
        let check = |sig: &str, now: i64| {
            verify_zendesk(
                std::slice::from_ref(&key),
                Some(ts.as_bytes()),
                Some(sig.as_bytes()),
                body,
                now,
            )
        };
        assert_eq!(check(sig, now), Ok(()));
        assert_eq!(check(sig, now + 301), Err(SignatureError::StaleTimestamp));
        assert_eq!(
            check("not base64!", now),
            Err(SignatureError::MalformedSignature)
        );
    }

    #[test]
    fn zendesk_old_docs_vector_is_body_then_timestamp_and_must_fail() {
        // The older Zendesk docs' vector signs BODY+TIMESTAMP; we implement TIMESTAMP+BODY.
        let key = HmacKey::new(b"HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=");
        let result = verify_zendesk(
            &[key],
            Some(b"2021-07-25T10:00:00Z"),
            Some(b"tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw="),
            br#"{"say": "hello"}"#,
            1627207200,
        );
        assert_eq!(result, Err(SignatureError::Mismatch));
    }
}
