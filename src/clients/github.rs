//! GitHub REST: open pull requests for a repository or an organisation, and workflow dispatch.

use reqwest::{RequestBuilder, header::HeaderMap};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use super::{
    Outbound,
    vendor::{Dialect, Listing, MAX_ITEMS, MAX_PAGES, VendorError, checked, decode, same_origin},
};

pub const NAME: &str = "GitHub";

struct Gh;

impl Dialect for Gh {
    const NAME: &'static str = NAME;

    fn error_message(body: &serde_json::Value) -> Option<String> {
        body.get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    }

    fn rate_limit_reset(headers: &HeaderMap, _now: OffsetDateTime) -> Option<OffsetDateTime> {
        let epoch: i64 = headers
            .get("x-ratelimit-reset")?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        OffsetDateTime::from_unix_timestamp(epoch).ok()
    }

    fn forbidden_is_rate_limit(headers: &HeaderMap) -> bool {
        headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Login {
    pub login: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub html_url: String,
    #[serde(default)]
    pub user: Option<Login>,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// For search results: `https://api.github.com/repos/{owner}/{repo}`.
    #[serde(default)]
    pub repository_url: Option<String>,
}

impl Pull {
    /// `owner/repo` of a search result.
    pub fn repository(&self) -> Option<String> {
        let url = self.repository_url.as_deref()?;
        let mut parts = url.rsplit('/');
        let repo = parts.next()?;
        let owner = parts.next()?;
        Some(format!("{owner}/{repo}"))
    }
}

#[derive(Clone)]
pub struct GitHub {
    out: Outbound,
    base: Url,
    token: SecretString,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Pages of 100; search returns at most 1,000 results anyway.
const PER_PAGE: &str = "100";

impl GitHub {
    pub fn new(out: Outbound, base: Url, token: SecretString) -> Self {
        Self { out, base, token }
    }

    fn request(&self, c: &reqwest::Client, method: reqwest::Method, url: Url) -> RequestBuilder {
        c.request(method, url)
            .bearer_auth(self.token.expose_secret())
            .header("Accept", "application/vnd.github+json, application/json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    }

    async fn get(&self, url: Url, what: &str) -> Result<(HeaderMap, bytes::Bytes), VendorError> {
        let resp = self
            .out
            .send(|c| self.request(c, reqwest::Method::GET, url.clone()))
            .await
            .map_err(|e| VendorError::transport(NAME, e))?;
        checked::<Gh>(resp, what).await
    }

    /// Open pull requests of `owner/repo`, oldest first, following `Link: rel="next"`.
    pub async fn pulls(&self, owner: &str, repo: &str) -> Result<Listing<Pull>, VendorError> {
        let mut url = self
            .base
            .join(&format!("repos/{owner}/{repo}/pulls"))
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("state", "open")
            .append_pair("per_page", PER_PAGE)
            .append_pair("page", "1");
        let mut listing = Listing::default();
        for _ in 0..MAX_PAGES {
            let (headers, body) = self
                .get(url.clone(), &format!("repository {owner}/{repo}"))
                .await?;
            let page: Vec<Pull> = decode(NAME, &body)?;
            listing.items.extend(page);
            match next_link(&headers) {
                Some(next) if listing.items.len() < MAX_ITEMS && same_origin(&self.base, &next) => {
                    url = next
                }
                Some(_) => break,
                None => return Ok(listing),
            }
        }
        listing.truncated = true;
        Ok(listing)
    }

    /// Open pull requests across an organisation (the search API; at most 1,000 results).
    pub async fn org_pulls(&self, org: &str) -> Result<Listing<Pull>, VendorError> {
        #[derive(Deserialize)]
        struct Search {
            total_count: u64,
            items: Vec<Pull>,
        }
        let mut listing = Listing::default();
        for page in 1..=MAX_PAGES {
            let mut url = self
                .base
                .join("search/issues")
                .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
            url.query_pairs_mut()
                .append_pair("q", &format!("org:{org} is:pr is:open"))
                .append_pair("sort", "created")
                .append_pair("order", "asc")
                .append_pair("per_page", PER_PAGE)
                .append_pair("page", &page.to_string());
            let (_, body) = self.get(url, &format!("organisation {org}")).await?;
            let result: Search = decode(NAME, &body)?;
            let got = result.items.len();
            listing.items.extend(result.items);
            let fetched = listing.items.len() as u64;
            if got == 0 || fetched >= result.total_count {
                return Ok(listing);
            }
            if listing.items.len() >= MAX_ITEMS {
                break;
            }
        }
        listing.truncated = true;
        Ok(listing)
    }
}

impl GitHub {
    /// Start a `workflow_dispatch` run. Returns the run's page when GitHub says (200 with run
    /// details), None for the classic 204.
    pub async fn dispatch_workflow(
        &self,
        repo: &str,
        workflow: &str,
        git_ref: &str,
        inputs: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<String>, VendorError> {
        let url = self
            .base
            .join(&format!(
                "repos/{repo}/actions/workflows/{workflow}/dispatches"
            ))
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        let body =
            serde_json::json!({"ref": git_ref, "inputs": inputs, "return_run_details": true});
        let resp = self
            .out
            .send_once(|c| {
                self.request(c, reqwest::Method::POST, url.clone())
                    .json(&body)
            })
            .await
            .map_err(|e| VendorError::transport(NAME, e))?;
        let (_, body) = checked::<Gh>(resp, &format!("workflow {workflow} in {repo}")).await?;
        if body.is_empty() {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Run {
            #[serde(default)]
            html_url: Option<String>,
        }
        Ok(decode::<Run>(NAME, &body)?.html_url)
    }
}

impl GitHub {
    /// Record a deploy of `git_ref` to `environment` in `repo` (`owner/name`) as a GitHub
    /// Deployment; its id. Not repeated after a timeout or a 5xx (it creates something).
    pub async fn create_deployment(
        &self,
        repo: &str,
        git_ref: &str,
        environment: &str,
        description: &str,
    ) -> Result<i64, VendorError> {
        let url = self
            .base
            .join(&format!("repos/{repo}/deployments"))
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        // No merge of the default branch and no status checks: the deploy already happened
        // (or is happening) through the runbook; this records it.
        let body = serde_json::json!({
            "ref": git_ref,
            "environment": environment,
            "description": description,
            "auto_merge": false,
            "required_contexts": [],
        });
        let body = self
            .post_once(url, &body, &format!("deployments of {repo}"))
            .await?;
        #[derive(Deserialize)]
        struct Created {
            id: i64,
        }
        Ok(decode::<Created>(NAME, &body)?.id)
    }

    /// Set the state (`in_progress`, `success`, `failure`, `error`) of deployment `id`.
    pub async fn deployment_status(
        &self,
        repo: &str,
        id: i64,
        state: &str,
        environment: &str,
        description: &str,
    ) -> Result<(), VendorError> {
        let url = self
            .base
            .join(&format!("repos/{repo}/deployments/{id}/statuses"))
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        let body = serde_json::json!({
            "state": state,
            "environment": environment,
            "description": description,
        });
        self.post_once(url, &body, &format!("deployment {id} of {repo}"))
            .await?;
        Ok(())
    }

    /// POST `body` once (it creates something: not repeated after a timeout or a 5xx); the
    /// answer's body.
    async fn post_once(
        &self,
        url: Url,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<bytes::Bytes, VendorError> {
        let resp = self
            .out
            .send_once(|c| {
                self.request(c, reqwest::Method::POST, url.clone())
                    .json(body)
            })
            .await
            .map_err(|e| VendorError::transport(NAME, e))?;
        Ok(checked::<Gh>(resp, what).await?.1)
    }
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<Url> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| Url::parse(target.trim().trim_start_matches('<').trim_end_matches('>')).ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_the_next_page() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            "<https://api.github.com/repositories/1/pulls?page=2>; rel=\"next\", <https://api.github.com/repositories/1/pulls?page=5>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers).unwrap().as_str(),
            "https://api.github.com/repositories/1/pulls?page=2"
        );
        headers.insert(
            "link",
            "<https://api.github.com/x?page=1>; rel=\"prev\""
                .parse()
                .unwrap(),
        );
        assert!(next_link(&headers).is_none());
    }

    #[test]
    fn search_results_name_their_repository() {
        let pull = Pull {
            number: 1,
            title: "t".into(),
            html_url: "h".into(),
            user: None,
            draft: None,
            created_at: None,
            repository_url: Some("https://api.github.com/repos/acme/api".into()),
        };
        assert_eq!(pull.repository().as_deref(), Some("acme/api"));
    }
}
