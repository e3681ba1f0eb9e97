//! From a verified request to an answer: parse, authorize, audit, acknowledge, then run the
//! handler in the background with a timeout and deliver what it says.
//!
//! Slack gives us three seconds to acknowledge, so everything before the acknowledgement is
//! cheap: parsing, the permission check, the allow-list check and one audit commit. Help and
//! parse errors are answered in the acknowledgement itself.
//!
//! That one commit comes before any answer, whatever the answer is: it carries the request's
//! claim on its signature, so a replayed request is refused (and the refusal audited) on every
//! replica and across restarts, and it stores the request's first row (a request answered at once
//! has one: its outcome), so a refusal is on the trail before the person (or an attacker) sees it.

use std::{sync::Arc, time::Instant};

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::{
    audit::{AuditError, Claimed},
    chat::{Message, ResponseUrl, Visibility, WhenUnsure},
    command::{Answer, CommandContext, CommandError, CommandSpec, ParseError, Registry, help},
    domain::audit::{AuditEntry, Outcome},
    services::Services,
};

pub use crate::command::{Invocation, ReplyTarget, Transport};

/// Where a checked reply goes.
#[derive(Debug, Clone)]
enum Delivery {
    ResponseUrl(ResponseUrl),
    Console(mpsc::UnboundedSender<Message>),
    Thread { channel: String, thread_ref: String },
    Private { channel: String, user: String },
}

/// The acknowledgement: what the HTTP response carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Answer now, in the acknowledgement.
    Message(Message),
    /// Nothing to show yet; the answer follows through the reply target.
    Empty,
    /// Show the command in the channel; the answer follows.
    Echo,
    /// Open this form with `trigger` (a runbook asked for without its parameters); if it cannot
    /// be opened, answer `fallback` (the usage line) instead.
    Form {
        trigger: String,
        form: Box<crate::domain::form::Form>,
        fallback: Message,
    },
    /// Received before (its replay key was claimed): nothing was run. Over signed HTTP this is
    /// a copy of a signed request and is answered [`replay_message`]; over a trusted socket it
    /// is the platform delivering again, acknowledged with nothing more.
    Replay,
}

/// A new correlation id: 32 hex digits, a random per-process prefix and a counter, so ids are
/// unique across replicas and cheap to make on the acknowledgement path.
pub fn new_correlation_id() -> String {
    static PREFIX: std::sync::LazyLock<u64> =
        std::sync::LazyLock::new(|| uuid::Uuid::new_v4().as_u64_pair().0);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:016x}{n:016x}", *PREFIX)
}

/// Handle one invocation up to its acknowledgement, spawning the rest.
pub async fn dispatch(services: &Arc<Services>, registry: &Arc<Registry>, inv: Invocation) -> Ack {
    // At ERROR level so the span is on whenever any of its events can be: a warning logged
    // under `RUST_LOG=warn` still carries the correlation id. (Spans' levels only filter.)
    let span = tracing::error_span!(
        "command",
        correlation_id = %inv.correlation_id,
        user = %inv.user_id,
        channel = %inv.channel_id,
    );
    dispatch_in_span(services, registry, inv)
        .instrument(span)
        .await
}

async fn dispatch_in_span(
    services: &Arc<Services>,
    registry: &Arc<Registry>,
    inv: Invocation,
) -> Ack {
    let entry = |outcome| {
        AuditEntry::new(&inv.correlation_id, &inv.user_id, "command", outcome)
            .channel(&inv.channel_id)
            .command(&inv.text)
    };
    // When the request arrived: the date of its `received` row (written only for a command that
    // runs) and of the one row of an answer given at once.
    let received_at = time::OffsetDateTime::now_utc();
    let may_run = |spec: &CommandSpec| may_run(services, &inv.user_id, spec);
    let answer =
        |row, command, message| answer_inline(services, &inv, received_at, row, command, message);

    // A runbook asked for without its parameters, where a form can be opened: the form, after
    // the same checks as the command (who may act, who may run it).
    if let Some(trigger) = inv.trigger.as_deref()
        && services.chat.configured()
        && let Some((runbook, given)) = crate::ask::runbook_asked(services, &inv.text)
        // A form is submitted as `run <runbook> …`, so it is for those who may use `run`.
        && services
            .catalogue
            .access
            .check(&inv.user_id, None, "run", &[])
            .is_ok()
    {
        let name = runbook.name().to_owned();
        let refused =
            match crate::chat::may_act(&*services.chat, &inv.user_id, WhenUnsure::Allow).await {
                Err(text) => Some(text),
                Ok(()) => services
                    .catalogue
                    .access
                    .check(&inv.user_id, None, &name, &[])
                    .err()
                    .map(|r| r.message(&format!("{} {name}", inv.slash))),
            };
        if let Some(text) = refused {
            return answer(
                entry(Outcome::Refused).detail(text.clone()),
                &name,
                Message::text(text),
            )
            .await;
        }
        let form = crate::ask::runbook_form(
            services,
            runbook,
            &inv.user_id,
            Some(&inv.channel_id),
            &given,
        );
        let fallback = Message::text(crate::ask::usage_line(services, runbook));
        let row = entry(Outcome::Succeeded)
            .detail(format!("asked for the parameters of `{name}` in a form"));
        return match answer(row, &name, fallback.clone()).await {
            // Committed (an unwritable trail answers something else, and opens nothing).
            Ack::Message(m) if m == fallback => Ack::Form {
                trigger: trigger.to_owned(),
                form: Box::new(form),
                fallback,
            },
            other => other,
        };
    }

    let (spec, args) = match registry.parse(&inv.text, may_run) {
        Ok(found) => found,
        Err(ParseError::Empty) => {
            return answer(
                entry(Outcome::Succeeded).detail("help"),
                "help",
                help::render(registry, &inv.slash, may_run, None),
            )
            .await;
        }
        Err(ParseError::Incomplete { topic }) => {
            return answer(
                entry(Outcome::Succeeded).detail(format!("help {topic}")),
                "help",
                help::render(registry, &inv.slash, may_run, Some(&topic)),
            )
            .await;
        }
        Err(err) => {
            let detail = format!("{}: {}", err.kind(), err.message(&inv.slash));
            return answer(
                entry(Outcome::Invalid).detail(detail),
                "unknown",
                Message::text(err.message(&inv.slash)),
            )
            .await;
        }
    };
    let name = spec.name.clone();

    // Guests, deactivated accounts and people from other workspaces run nothing, whatever
    // groups list them. (A lookup that fails lets the command through to its own rules; a
    // vote, checked again where it is counted, is refused instead.)
    if inv.transport != Transport::Console
        && let Err(text) =
            crate::chat::may_act(&*services.chat, &inv.user_id, WhenUnsure::Allow).await
    {
        return answer(
            entry(Outcome::Refused).detail(text.clone()),
            &name,
            Message::text(text),
        )
        .await;
    }

    if let Err(refusal) = spec.allowed(&services.catalogue.access, &inv.user_id) {
        let text = refusal.message(&format!("{} {}", inv.slash, name));
        return answer(
            entry(Outcome::Refused).detail(text.clone()),
            &name,
            Message::text(text),
        )
        .await;
    }

    // Built only for a command that will run (a refusal below needs none).
    let context = |args| CommandContext {
        services: services.clone(),
        registry: registry.clone(),
        invocation: Arc::new(inv.clone()),
        args,
        command: name.clone(),
    };

    if spec.inline {
        // Cheap handlers without I/O answer in the acknowledgement. They still run in their
        // own task so a bug that panics costs an apology, not the connection.
        let result = tokio::spawn((spec.handler)(context(args))).await;
        let (outcome, detail, message) = settle(&inv, &name, result);
        let mut done = entry(outcome);
        if let Some(d) = detail {
            done = done.detail(d);
        }
        return answer(done, &name, message).await;
    }

    let delivery = match &inv.reply {
        ReplyTarget::Console(tx) => Delivery::Console(tx.clone()),
        ReplyTarget::Thread {
            channel,
            thread_ref,
        } => Delivery::Thread {
            channel: channel.clone(),
            thread_ref: thread_ref.clone(),
        },
        ReplyTarget::ResponseUrl(url) => Delivery::ResponseUrl(url.clone()),
        ReplyTarget::Private { channel, user } => Delivery::Private {
            channel: channel.clone(),
            user: user.clone(),
        },
        ReplyTarget::RefusedUrl(why) => {
            let text = format!("I can't answer this request: {why}. Nothing was run.");
            let ack = answer(
                entry(Outcome::Refused).detail(why.clone()),
                &name,
                Message::text(text),
            )
            .await;
            // Logged once it is this request's outcome: a replay is logged (and audited) as one.
            if ack != Ack::Replay {
                tracing::warn!(reason = %why, "response_url refused");
            }
            return ack;
        }
    };

    // Votes and cancels take no slot: however busy Pantheon is, people can get out of a jam.
    let permit = if spec.unlimited {
        None
    } else {
        match services.in_flight.try_acquire(&inv.user_id) {
            Ok(slot) => Some(slot),
            Err(busy) => {
                return answer(
                    entry(Outcome::Refused).detail(busy.detail()),
                    &name,
                    Message::text(busy.message()),
                )
                .await;
            }
        }
    };

    let mut received = match inv.transport.noted() {
        Some(note) => entry(Outcome::Received).detail(format!("received {note}")),
        None => entry(Outcome::Received),
    };
    received.at = received_at;
    // Nothing runs until its audit rows are committed.
    match claim(services, &inv, vec![received, entry(Outcome::Started)]).await {
        Ok(Claimed::First) => {}
        Ok(Claimed::Replay) => {
            crate::telemetry::record_command(&name, Outcome::Refused.as_str());
            return replay_refused();
        }
        Err(e) => return cannot_audit(&e),
    }

    let ctx = context(args);
    let visibility = spec.visibility;
    let handler = spec.handler.clone();
    let services_bg = services.clone();
    tokio::spawn(
        async move {
            let _permit = permit;
            run_in_background(&services_bg, ctx, handler, delivery, visibility).await;
        }
        .in_current_span(),
    );
    match visibility {
        Visibility::InChannel => Ack::Echo,
        Visibility::Ephemeral => Ack::Empty,
    }
}

/// How long an acknowledgement waits for its audit rows. Slack gives a slash command 3 s; an
/// answer that would come later is no answer, and the person would type the command again. So
/// past this the request is answered "try again" and nothing is run. (The database is down or
/// stuck: its pool waits 5 s for a connection, and the audit writer tries twice.)
pub const AUDIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Commit a request's rows with its claim on its signature, within [`AUDIT_PATIENCE`]. A replay
/// stores one row, its refusal, instead. Past the patience the request is not run: its rows
/// are not written if their commit has not begun (the writer drops them), and one more row
/// says it was not run (after them, if a commit under way lands).
async fn claim(
    services: &Services,
    inv: &Invocation,
    entries: Vec<AuditEntry>,
) -> Result<Claimed, AuditError> {
    match tokio::time::timeout(AUDIT_PATIENCE, claim_now(services, inv, entries)).await {
        Ok(claimed) => claimed,
        Err(_) => {
            services.audit.try_submit(vec![
                AuditEntry::new(&inv.correlation_id, &inv.user_id, "command", Outcome::Failed)
                    .channel(&inv.channel_id)
                    .command(&inv.text)
                    .detail(format!(
                        "not run: its audit rows were not committed within {} s; answered \"try again\"",
                        AUDIT_PATIENCE.as_secs()
                    )),
            ]);
            Err(AuditError(format!(
                "not committed within {} s",
                AUDIT_PATIENCE.as_secs()
            )))
        }
    }
}

async fn claim_now(
    services: &Services,
    inv: &Invocation,
    entries: Vec<AuditEntry>,
) -> Result<Claimed, AuditError> {
    // One row, as for any request answered at once (and for a replayed click), dated as the
    // request's first row is: when it arrived.
    let arrived = entries.first().map(|e| e.at);
    let replayed = || {
        let detail = replay_detail(inv.transport);
        let mut row = AuditEntry::new(
            &inv.correlation_id,
            &inv.user_id,
            "command",
            Outcome::Refused,
        )
        .channel(&inv.channel_id)
        .command(&inv.text)
        .detail(detail);
        if let Some(at) = arrived {
            row.at = at;
        }
        vec![row]
    };
    match &inv.replay_key {
        Some(key) => {
            let claimed = services
                .audit
                .record_claimed(Some(key.clone()), entries, replayed())
                .await?;
            if claimed == Claimed::Replay {
                crate::telemetry::record_signature_failure("slack", "replay");
                tracing::warn!("replayed request refused");
            }
            Ok(claimed)
        }
        None => {
            services
                .audit
                .record_claimed(None, entries, Vec::new())
                .await
        }
    }
}

/// The audit detail of a refused replay.
pub const REPLAY_DETAIL: &str =
    "replay: this request was received before (a chat platform never sends one twice)";

/// [`REPLAY_DETAIL`], saying how the copy came where that is not the usual way.
pub fn replay_detail(via: Transport) -> String {
    via.noting(REPLAY_DETAIL.to_owned())
}

fn replay_refused() -> Ack {
    Ack::Replay
}

/// What a refused copy of a signed request is told.
pub fn replay_message() -> Message {
    Message::text(
        "This request was already received once, so this copy was refused: a signed request is never run twice. Nothing was run.",
    )
}

fn may_run(services: &Services, user: &str, spec: &CommandSpec) -> bool {
    spec.allowed(&services.catalogue.access, user).is_ok()
}

/// Answer in the acknowledgement, once the request's row is committed (with its claim).
///
/// A request answered at once is one step, so it is one row that carries both ends of it: its
/// outcome, dated when the request was received, how long the answer took to decide, and how
/// it came where that is not the usual way. (A request that runs has a `received` row, then
/// one for each step it takes.)
async fn answer_inline(
    services: &Services,
    inv: &Invocation,
    received_at: time::OffsetDateTime,
    mut row: AuditEntry,
    command: &str,
    message: Message,
) -> Ack {
    // How long the answer took to decide (the membership lookup, an inline handler).
    row.duration_ms = row
        .duration_ms
        .or(i64::try_from((row.at - received_at).whole_milliseconds()).ok());
    row.at = received_at;
    row.detail = match row.detail.take() {
        Some(detail) => Some(inv.transport.noting(detail)),
        None => inv.transport.noted().map(str::to_owned),
    };
    let outcome = row.outcome;
    match claim(services, inv, vec![row]).await {
        Ok(Claimed::First) => {
            crate::telemetry::record_command(command, outcome.as_str());
            Ack::Message(message)
        }
        Ok(Claimed::Replay) => {
            crate::telemetry::record_command(command, Outcome::Refused.as_str());
            replay_refused()
        }
        Err(e) => cannot_audit(&e),
    }
}

fn cannot_audit(e: &crate::audit::AuditError) -> Ack {
    tracing::error!(error = %e, "refusing to act without an audit trail");
    Ack::Message(Message::text(
        "Pantheon cannot write its audit trail right now, so nothing was run. Please try again shortly.",
    ))
}

type Joined = Result<Result<Answer, CommandError>, tokio::task::JoinError>;

/// Turn a handler's result into an audit outcome, a detail for the audit row and the message
/// the user sees.
fn settle(inv: &Invocation, name: &str, result: Joined) -> (Outcome, Option<String>, Message) {
    let shown = format!("{} {}", inv.slash, name);
    match result {
        Ok(Ok(Answer::Reply(message))) => (Outcome::Succeeded, None, message),
        Ok(Ok(Answer::Held(message))) => (
            Outcome::Succeeded,
            Some("held for approval".to_owned()),
            message,
        ),
        Ok(Err(CommandError::User(text))) => {
            (Outcome::Failed, Some(text.clone()), Message::text(text))
        }
        Ok(Err(CommandError::Internal(detail))) => {
            tracing::error!(error = %detail, command = name, "command failed");
            (
                Outcome::Failed,
                Some(detail),
                Message::text(format!(
                    "Something went wrong running `{shown}`. Reference: `{}`.",
                    inv.correlation_id
                )),
            )
        }
        Err(join) => {
            let why = if join.is_panic() {
                let payload = join.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                format!("handler panicked: {text}")
            } else {
                "handler was cancelled".to_owned()
            };
            tracing::error!(error = %why, command = name, "command failed");
            (
                Outcome::Failed,
                Some(why),
                Message::text(format!(
                    "`{shown}` failed unexpectedly; this is a bug in Pantheon, not something you did. Reference: `{}`.",
                    inv.correlation_id
                )),
            )
        }
    }
}

async fn run_in_background(
    services: &Arc<Services>,
    ctx: CommandContext,
    handler: crate::command::Handler,
    delivery: Delivery,
    visibility: Visibility,
) {
    let inv = ctx.invocation.clone();
    let name = ctx.command.clone();
    let entry = |outcome| {
        AuditEntry::new(&inv.correlation_id, &inv.user_id, "command", outcome)
            .channel(&inv.channel_id)
            .command(&inv.text)
    };
    let started = Instant::now();
    let timeout = services.config.limits.handler_timeout;
    let mut task = tokio::spawn(handler(ctx).in_current_span());
    let (outcome, mut detail, message) = match tokio::time::timeout(timeout, &mut task).await {
        Ok(result) => {
            let (outcome, detail, message) = settle(&inv, &name, result);
            // An in-channel command answers in the channel; an ephemeral one lets its handler
            // decide (a runbook answers in the channel when it cannot post there itself).
            let message = match (outcome, visibility) {
                (Outcome::Succeeded, Visibility::InChannel) => message.in_channel(),
                _ => message,
            };
            (outcome, detail, message)
        }
        Err(_) => {
            task.abort();
            let secs = timeout.as_secs_f64();
            (
                Outcome::Failed,
                Some(format!("timed out after {secs}s")),
                Message::text(format!(
                    "`{} {name}` timed out after {secs} s and was stopped. It may have done part of its work; check before you run it again.",
                    inv.slash
                )),
            )
        }
    };
    let elapsed = started.elapsed();

    if let Err(e) = deliver(services, &delivery, message).await {
        tracing::warn!(error = %e, "reply not delivered");
        let note = format!("reply not delivered: {e}");
        detail = Some(match detail {
            Some(d) => format!("{d}; {note}"),
            None => note,
        });
    }
    crate::telemetry::record_command(&name, outcome.as_str());
    let mut done = entry(outcome).duration(elapsed);
    if let Some(d) = detail {
        done = done.detail(d);
    }
    if let Err(e) = services.audit.record(vec![done]).await {
        tracing::error!(error = %e, "final audit row not written");
    }
}

async fn deliver(services: &Services, delivery: &Delivery, message: Message) -> Result<(), String> {
    match delivery {
        Delivery::ResponseUrl(url) => services
            .chat
            .reply(url, &message)
            .await
            .map_err(|e| e.to_string()),
        Delivery::Console(tx) => tx.send(message).map_err(|_| "console closed".to_owned()),
        Delivery::Thread {
            channel,
            thread_ref,
        } => services
            .chat
            .post(channel, Some(thread_ref), &message)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        // A command that answers in the channel does so from a form too (`pager trigger`).
        Delivery::Private { channel, .. } if message.visibility == Visibility::InChannel => {
            services
                .chat
                .post(channel, None, &message)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Delivery::Private { channel, user } => services
            .chat
            .post_private(channel, user, &message)
            .await
            .map_err(|e| e.to_string()),
    }
}
