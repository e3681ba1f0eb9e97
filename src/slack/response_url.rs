//! Replies through `response_url`: only to allow-listed hosts, https unless the host is this
//! machine, retried with backoff, never following a redirect to another host.

use std::net::IpAddr;

use url::Url;

use crate::{
    chat::Message,
    clients::{Outbound, TransportError},
};

/// Which `response_url`s we will post to.
#[derive(Debug, Clone)]
pub struct ResponseUrlPolicy {
    hosts: Vec<String>,
}

impl ResponseUrlPolicy {
    pub fn new(hosts: Vec<String>) -> Self {
        Self {
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// The URL, if we may post to it; otherwise why not.
    pub fn check(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw).map_err(|_| "response_url is not a URL".to_owned())?;
        let host = url
            .host_str()
            .ok_or_else(|| "response_url has no host".to_owned())?
            .to_ascii_lowercase();
        if !url.username().is_empty() || url.password().is_some() {
            return Err("response_url may not carry credentials".to_owned());
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !self.hosts.iter().any(|h| h == bare) {
            return Err(format!(
                "response_url host `{bare}` is not on the allow-list (RESPONSE_URL_HOSTS)"
            ));
        }
        match url.scheme() {
            "https" => Ok(url),
            "http" if is_loopback(bare) => Ok(url),
            "http" => Err("response_url must use https".to_owned()),
            other => Err(format!("response_url scheme `{other}` is not allowed")),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("Slack answered {status}: {body}")]
    Rejected { status: u16, body: String },
}

/// Post a message to a `response_url` that passed the policy.
pub async fn post_response(
    outbound: &Outbound,
    url: &Url,
    message: &Message,
) -> Result<(), DeliveryError> {
    let resp = outbound
        .send(|client| {
            client
                .post(url.clone())
                .json(&super::blocks::reply(message))
        })
        .await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    Err(DeliveryError::Rejected {
        status: status.as_u16(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_listed_hosts_and_https_except_loopback() {
        let policy = ResponseUrlPolicy::new(vec![
            "hooks.slack.com".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ]);
        assert!(
            policy
                .check("https://hooks.slack.com/commands/T1/2/3")
                .is_ok()
        );
        assert!(
            policy
                .check("https://HOOKS.slack.com/commands/T1/2/3")
                .is_ok()
        );
        assert!(policy.check("http://127.0.0.1:9/hook").is_ok());
        assert!(policy.check("http://[::1]:9/hook").is_ok());
        for bad in [
            "http://hooks.slack.com/commands/x",
            "https://evil.example/commands",
            "https://hooks.slack.com.evil.example/x",
            "https://user:pw@hooks.slack.com/x",
            "ftp://hooks.slack.com/x",
            "not a url",
            "https://10.0.0.1/x",
        ] {
            assert!(policy.check(bad).is_err(), "{bad}");
        }
        let default = ResponseUrlPolicy::new(vec!["hooks.slack.com".into()]);
        let err = default.check("http://127.0.0.1:9/hook").unwrap_err();
        assert!(err.contains("not on the allow-list"), "{err}");
    }
}
