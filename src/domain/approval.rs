//! Approval requests: the rules of a peer's approval, with no I/O.
//!
//! A request is pending until enough distinct, qualified people other than the requester
//! approve it (`required` of them), a qualified person denies it, the requester withdraws it, or
//! it expires. The store applies [`decide`] inside one transaction, so any number of
//! simultaneous clicks give exactly one decision.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::runbook::Definition;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
    Expired,
    Withdrawn,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Expired => "expired",
            RequestStatus::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RequestStatus::Pending,
            "approved" => RequestStatus::Approved,
            "denied" => RequestStatus::Denied,
            "expired" => RequestStatus::Expired,
            "withdrawn" => RequestStatus::Withdrawn,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
    /// The requester takes the request back.
    Withdraw,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
            Decision::Withdraw => "withdraw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "approve" => Decision::Approve,
            "deny" => Decision::Deny,
            "withdraw" => Decision::Withdraw,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vote {
    pub voter: String,
    pub decision: Decision,
    pub at: OffsetDateTime,
    /// Cast by a member of the request's `override_group` (break-glass).
    pub overrider: bool,
    /// What the voter said with it ("with comment…"), at most [`crate::domain::form::MAX_COMMENT`]
    /// characters.
    pub comment: Option<String>,
}

/// One vote as cast: who, what, what they said with it, and their standing.
#[derive(Debug, Clone, Copy)]
pub struct Ballot<'a> {
    pub voter: &'a str,
    pub decision: Decision,
    pub comment: Option<&'a str>,
    pub standing: Standing,
}

/// A request for a runbook run that waits for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRequest {
    pub id: i64,
    pub runbook: String,
    pub params: BTreeMap<String, String>,
    /// What was approved: see [`binding`].
    pub binding: String,
    pub target: String,
    pub requester: String,
    pub channel: String,
    pub approver_group: String,
    pub required: u32,
    pub status: RequestStatus,
    pub plan_output: Option<String>,
    pub message_ref: Option<String>,
    pub correlation_id: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub decided_at: Option<OffsetDateTime>,
    pub decided_by: Option<String>,
    pub job_id: Option<i64>,
    pub votes: Vec<Vote>,
    /// What this run overrides (a lock, a freeze), said plainly; `None` for an ordinary run.
    pub overrides: Option<String>,
    /// With `overrides`: one of the approvers must be of this group.
    pub override_group: Option<String>,
}

impl ApprovalRequest {
    pub fn approvers(&self) -> Vec<&str> {
        self.votes
            .iter()
            .filter(|v| v.decision == Decision::Approve)
            .map(|v| v.voter.as_str())
            .collect()
    }
}

/// A request to create.
#[derive(Debug, Clone)]
pub struct NewApprovalRequest {
    pub runbook: String,
    pub params: BTreeMap<String, String>,
    pub binding: String,
    pub target: String,
    pub requester: String,
    pub channel: String,
    pub approver_group: String,
    pub required: u32,
    pub plan_output: Option<String>,
    pub correlation_id: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub retry_safe: bool,
    pub overrides: Option<String>,
    pub override_group: Option<String>,
}

/// Why a click or command did not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    OwnRequest,
    NotInGroup {
        group: String,
    },
    NotRequester,
    AlreadyVoted,
    AlreadyDecided(RequestStatus),
    Expired,
    /// The request overrides a lock or freeze, every other approval is in, and this voter is
    /// not of the override group: the last approval must be.
    NeedsOverride {
        group: String,
    },
}

impl Refusal {
    /// The explanation the person who clicked sees.
    pub fn message(&self, id: i64) -> String {
        match self {
            Refusal::Unknown => format!("There is no approval request #{id}."),
            Refusal::OwnRequest => {
                "You cannot approve or deny your own request; ask a peer.".to_owned()
            }
            Refusal::NotInGroup { group } => {
                format!("Only members of the `{group}` group can decide request #{id}.")
            }
            Refusal::NotRequester => format!("Only the requester can withdraw request #{id}."),
            Refusal::AlreadyVoted => format!("You have already voted on request #{id}."),
            Refusal::AlreadyDecided(status) => {
                format!("Request #{id} is already {}.", status.as_str())
            }
            Refusal::Expired => format!("Request #{id} has expired; ask for it again."),
            Refusal::NeedsOverride { group } => format!(
                "Request #{id} overrides a lock or freeze: its last approval must come from the `{group}` group."
            ),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown request",
            Refusal::OwnRequest => "own request",
            Refusal::NotInGroup { .. } => "not in group",
            Refusal::NotRequester => "not the requester",
            Refusal::AlreadyVoted => "already voted",
            Refusal::AlreadyDecided(_) => "already decided",
            Refusal::Expired => "expired",
            Refusal::NeedsOverride { .. } => "needs the override group",
        }
    }
}

/// What a vote does to a pending request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Counted; still waiting for `required - approvals` more.
    Counted {
        approvals: u32,
        required: u32,
    },
    /// Enough approvals: approve and enqueue the job.
    Approve,
    Deny,
    Withdraw,
    /// Too late: mark the request expired.
    Expire,
}

/// Which of a request's groups a voter is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// In the request's approver group.
    pub approver: bool,
    /// In the override group (`[deploy] override_group`).
    pub overrider: bool,
}

impl From<bool> for Standing {
    /// In the approver group or not, and not an overrider.
    fn from(approver: bool) -> Self {
        Self {
            approver,
            overrider: false,
        }
    }
}

/// Whether a vote by someone of `standing` on `request` is its override approval: the request
/// overrides something, the voter is of its override group, and no override approval is in yet.
/// Only one approval counts as the override; the others must come from the approver group.
pub fn counts_as_override(request: &ApprovalRequest, standing: Standing) -> bool {
    request.override_group.is_some()
        && standing.overrider
        && !request
            .votes
            .iter()
            .any(|v| v.decision == Decision::Approve && v.overrider)
}

/// Apply the rules. `standing` says which of the request's groups the voter is in. A request
/// that overrides a lock or freeze also takes votes from its override group, and is approved
/// only once one of its approvals came from there.
pub fn decide(
    request: &ApprovalRequest,
    voter: &str,
    decision: Decision,
    standing: impl Into<Standing>,
    now: OffsetDateTime,
) -> Result<Transition, Refusal> {
    let standing = standing.into();
    let overrider = counts_as_override(request, standing);
    // Once the override approval is in, the override group counts for nothing more: the
    // runbook's own approvals come from its own approvers.
    let qualified = standing.approver || overrider;
    if request.status != RequestStatus::Pending {
        return Err(Refusal::AlreadyDecided(request.status));
    }
    if decision == Decision::Withdraw {
        return if voter == request.requester {
            Ok(Transition::Withdraw)
        } else {
            Err(Refusal::NotRequester)
        };
    }
    if now >= request.expires_at {
        return Ok(Transition::Expire);
    }
    if voter == request.requester {
        return Err(Refusal::OwnRequest);
    }
    if !qualified {
        return Err(Refusal::NotInGroup {
            group: request.approver_group.clone(),
        });
    }
    if request.votes.iter().any(|v| v.voter == voter) {
        return Err(Refusal::AlreadyVoted);
    }
    match decision {
        Decision::Deny => Ok(Transition::Deny),
        Decision::Approve => {
            let approvals = request.approvers().len() as u32 + 1;
            if let Some(group) = &request.override_group {
                let overridden = overrider
                    || request
                        .votes
                        .iter()
                        .any(|v| v.decision == Decision::Approve && v.overrider);
                // The last approval is the override's.
                if approvals >= request.required && !overridden {
                    return Err(Refusal::NeedsOverride {
                        group: group.clone(),
                    });
                }
            }
            if approvals >= request.required {
                Ok(Transition::Approve)
            } else {
                Ok(Transition::Counted {
                    approvals,
                    required: request.required,
                })
            }
        }
        Decision::Withdraw => unreachable!("handled above"),
    }
}

/// Who must approve a runbook's runs, how many of them, and for how long the request stands.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    pub group: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default = "default_expiry", with = "crate::domain::duration")]
    pub expires: Duration,
    /// Approval is needed only when every listed parameter matches the given expression (in
    /// full, ignoring case: `production` also catches `PRODUCTION`).
    #[serde(default)]
    pub when: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

fn default_expiry() -> Duration {
    Duration::from_secs(3600)
}

impl Default for ApprovalPolicy {
    /// One approver of the `approvers` group within an hour: the policy of held PagerDuty
    /// writes when `[pagerduty] approval` says nothing.
    fn default() -> Self {
        Self {
            group: "approvers".to_owned(),
            count: 1,
            expires: default_expiry(),
            when: BTreeMap::new(),
        }
    }
}

/// The binding of an approval: SHA-256 over the runbook's definition (as configured now) and
/// the exact parameters. A job checks it again when it starts, so a changed runbook or changed
/// parameters cannot ride on an old approval.
pub fn binding(runbook: &Definition, params: &BTreeMap<String, String>) -> String {
    // serde_json writes map keys in order (BTreeMap), so this is canonical.
    let definition = serde_json::to_string(runbook).unwrap_or_default();
    let params = serde_json::to_string(params).unwrap_or_default();
    let mut hash = Sha256::new();
    hash.update(b"pantheon-approval-v1\0");
    hash.update(definition.as_bytes());
    hash.update(b"\0");
    hash.update(params.as_bytes());
    hex::encode(hash.finalize())
}

/// What a vote did, once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteResult {
    Counted { approvals: u32, required: u32 },
    Approved { job_id: i64 },
    Denied,
    Withdrawn,
    Expired,
    Refused(Refusal),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(required: u32) -> ApprovalRequest {
        let now = time::macros::datetime!(2026-11-24 12:00 UTC);
        ApprovalRequest {
            id: 7,
            runbook: "deploy".into(),
            params: BTreeMap::new(),
            binding: "b".into(),
            target: "api/production".into(),
            requester: "U1ALICE".into(),
            channel: "C1".into(),
            approver_group: "approvers".into(),
            required,
            status: RequestStatus::Pending,
            plan_output: None,
            message_ref: None,
            correlation_id: "c".into(),
            created_at: now,
            expires_at: now + time::Duration::hours(1),
            decided_at: None,
            decided_by: None,
            job_id: None,
            votes: Vec::new(),
            overrides: None,
            override_group: None,
        }
    }

    fn at(minutes: i64) -> OffsetDateTime {
        time::macros::datetime!(2026-11-24 12:00 UTC) + time::Duration::minutes(minutes)
    }

    #[test]
    fn one_qualified_peer_approves() {
        let r = request(1);
        assert_eq!(
            decide(&r, "U2JANE", Decision::Approve, true, at(5)),
            Ok(Transition::Approve)
        );
        assert_eq!(
            decide(&r, "U2JANE", Decision::Deny, true, at(5)),
            Ok(Transition::Deny)
        );
    }

    #[test]
    fn the_requester_and_outsiders_cannot_decide() {
        let r = request(1);
        assert_eq!(
            decide(&r, "U1ALICE", Decision::Approve, true, at(5)),
            Err(Refusal::OwnRequest)
        );
        assert_eq!(
            decide(&r, "U1ALICE", Decision::Deny, true, at(5)),
            Err(Refusal::OwnRequest)
        );
        assert_eq!(
            decide(&r, "U9BOB", Decision::Approve, false, at(5)),
            Err(Refusal::NotInGroup {
                group: "approvers".into()
            })
        );
    }

    #[test]
    fn several_approvers_are_counted_once_each() {
        let mut r = request(2);
        assert_eq!(
            decide(&r, "U2JANE", Decision::Approve, true, at(1)),
            Ok(Transition::Counted {
                approvals: 1,
                required: 2
            })
        );
        r.votes.push(Vote {
            voter: "U2JANE".into(),
            decision: Decision::Approve,
            at: at(1),
            overrider: false,
            comment: None,
        });
        assert_eq!(
            decide(&r, "U2JANE", Decision::Approve, true, at(2)),
            Err(Refusal::AlreadyVoted)
        );
        assert_eq!(
            decide(&r, "U3JOE", Decision::Approve, true, at(2)),
            Ok(Transition::Approve)
        );
    }

    #[test]
    fn expiry_withdrawal_and_decided_requests() {
        let r = request(1);
        assert_eq!(
            decide(&r, "U2JANE", Decision::Approve, true, at(60)),
            Ok(Transition::Expire)
        );
        assert_eq!(
            decide(&r, "U1ALICE", Decision::Withdraw, false, at(5)),
            Ok(Transition::Withdraw)
        );
        assert_eq!(
            decide(&r, "U2JANE", Decision::Withdraw, true, at(5)),
            Err(Refusal::NotRequester)
        );
        let mut done = request(1);
        done.status = RequestStatus::Approved;
        assert_eq!(
            decide(&done, "U2JANE", Decision::Approve, true, at(5)),
            Err(Refusal::AlreadyDecided(RequestStatus::Approved))
        );
    }

    #[test]
    fn an_override_needs_one_approval_from_the_override_group() {
        let mut r = request(2);
        r.overrides = Some("lock on api/production".into());
        r.override_group = Some("sre".into());
        let plain = Standing {
            approver: true,
            overrider: false,
        };
        let sre = Standing {
            approver: false,
            overrider: true,
        };
        assert_eq!(
            decide(&r, "U2JANE", Decision::Approve, plain, at(1)),
            Ok(Transition::Counted {
                approvals: 1,
                required: 2
            })
        );
        r.votes.push(Vote {
            voter: "U2JANE".into(),
            decision: Decision::Approve,
            at: at(1),
            overrider: false,
            comment: None,
        });
        // The last approval must be the override's.
        assert_eq!(
            decide(&r, "U3JOE", Decision::Approve, plain, at(2)),
            Err(Refusal::NeedsOverride {
                group: "sre".into()
            })
        );
        assert_eq!(
            decide(&r, "U4SRE", Decision::Approve, sre, at(2)),
            Ok(Transition::Approve)
        );
        // The override approval is one: a second member of the override group who is not an
        // approver does not count for the runbook's own approvals.
        let mut first_sre = request(2);
        first_sre.override_group = Some("sre".into());
        first_sre.votes.push(Vote {
            voter: "U4SRE".into(),
            decision: Decision::Approve,
            at: at(1),
            overrider: true,
            comment: None,
        });
        assert!(matches!(
            decide(&first_sre, "U5SRE", Decision::Approve, sre, at(2)),
            Err(Refusal::NotInGroup { .. })
        ));
        assert_eq!(
            decide(&first_sre, "U2JANE", Decision::Approve, plain, at(2)),
            Ok(Transition::Approve)
        );
        // Outside both groups: refused. Without an override, the override group counts for
        // nothing.
        assert!(matches!(
            decide(&r, "U9OUT", Decision::Approve, Standing::default(), at(2)),
            Err(Refusal::NotInGroup { .. })
        ));
        let ordinary = request(1);
        assert!(matches!(
            decide(&ordinary, "U4SRE", Decision::Approve, sre, at(2)),
            Err(Refusal::NotInGroup { .. })
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// What the store does with a transition (see `store::tx::vote`): a counted or
        /// deciding vote is kept; a decision closes the request.
        fn apply(
            r: &mut ApprovalRequest,
            voter: &str,
            d: Decision,
            t: Transition,
            now: OffsetDateTime,
        ) {
            let status = match t {
                Transition::Counted { .. } => None,
                Transition::Approve => Some(RequestStatus::Approved),
                Transition::Deny => Some(RequestStatus::Denied),
                Transition::Withdraw => Some(RequestStatus::Withdrawn),
                Transition::Expire => Some(RequestStatus::Expired),
            };
            if !matches!(t, Transition::Expire) {
                r.votes.push(Vote {
                    voter: voter.into(),
                    decision: d,
                    at: now,
                    overrider: false,
                    comment: None,
                });
            }
            if let Some(status) = status {
                r.status = status;
                r.decided_at = Some(now);
                r.decided_by = Some(voter.into());
            }
        }

        fn decision() -> impl Strategy<Value = Decision> {
            prop_oneof![
                6 => Just(Decision::Approve),
                1 => Just(Decision::Deny),
                1 => Just(Decision::Withdraw),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            // Any sequence of votes, by the requester, qualified peers and outsiders, early or
            // late: at most one decision; an approval only with `required` distinct qualified
            // approvers, none of them the requester; a withdrawal only by the requester; an
            // expiry only once the request's time is up.
            #[test]
            fn no_sequence_of_votes_gives_two_decisions_or_a_self_approval(
                required in 1u32..4,
                votes in proptest::collection::vec((0usize..6, decision(), 0i64..90), 0..24),
            ) {
                // Voter 0 is the requester; 1-3 are in the group; 4-5 are not.
                let people = ["U1ALICE", "U2JANE", "U3JOE", "U4ANN", "U5OUT", "U6OUT"];
                let qualified = |v: usize| (1..=3).contains(&v) || v == 0;
                let mut r = request(required);
                let mut decisions = 0;
                for (who, d, minute) in votes {
                    let voter = people[who];
                    let before = r.status;
                    let now = at(minute);
                    match decide(&r, voter, d, qualified(who), now) {
                        Ok(t) => {
                            prop_assert_eq!(before, RequestStatus::Pending);
                            apply(&mut r, voter, d, t, now);
                            match t {
                                Transition::Approve => {
                                    let approvers = r.approvers();
                                    let mut distinct = approvers.clone();
                                    distinct.sort_unstable();
                                    distinct.dedup();
                                    prop_assert_eq!(distinct.len(), approvers.len());
                                    prop_assert_eq!(approvers.len() as u32, required);
                                    prop_assert!(!approvers.contains(&"U1ALICE"));
                                    prop_assert!(approvers.iter().all(|a| ["U2JANE", "U3JOE", "U4ANN"].contains(a)));
                                    prop_assert!(now < r.expires_at);
                                }
                                Transition::Deny => {
                                    prop_assert!(voter != "U1ALICE" && qualified(who));
                                    prop_assert!(now < r.expires_at);
                                }
                                Transition::Withdraw => prop_assert_eq!(voter, "U1ALICE"),
                                Transition::Expire => prop_assert!(now >= r.expires_at),
                                Transition::Counted { approvals, required: of } => {
                                    prop_assert!(approvals < of);
                                    prop_assert_eq!(approvals as usize, r.approvers().len());
                                }
                            }
                            if r.status != RequestStatus::Pending {
                                decisions += 1;
                            }
                        }
                        Err(refusal) => {
                            if before != RequestStatus::Pending {
                                prop_assert_eq!(refusal, Refusal::AlreadyDecided(before));
                            }
                        }
                    }
                    prop_assert!(decisions <= 1);
                }
            }
        }
    }
}
