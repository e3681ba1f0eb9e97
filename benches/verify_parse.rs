//! Verify + parse of one slash command, the work done before every acknowledgement.
//!
//! `cargo bench --bench verify_parse`. The body is the acknowledgement benchmark's own
//! (`../shared/bench/sign.py`), so the figures line up with the load test.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pantheon::{
    config::{FileConfig, Source},
    signature::{HmacKey, sign_slack, verify_slack},
    slack::request::{Request, SlashCommand},
};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BODY: &str = "token=x&team_id=T1&team_domain=acme&channel_id=C1&channel_name=ops\
&user_id=U1&user_name=alice&command=%2Fops&text=pager+incidents\
&response_url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&trigger_id=1.2.3&api_app_id=A1";

fn bench(c: &mut Criterion) {
    let key = HmacKey::new(SECRET.as_bytes());
    let ts = "1700000000";
    let now = 1_700_000_000;
    let sig = sign_slack(&key, ts, BODY.as_bytes());
    // The registry `serve` builds with no configuration file: every built-in command.
    let registry = pantheon::app::build_registry(&FileConfig::default(), &Source::default())
        .expect("registry");

    c.bench_function("verify_slack_signature", |b| {
        b.iter(|| {
            verify_slack(
                black_box(&key),
                Some(black_box(ts.as_bytes())),
                Some(black_box(sig.as_bytes())),
                black_box(BODY.as_bytes()),
                now,
            )
        })
    });

    c.bench_function("verify_and_parse_slash_command", |b| {
        b.iter(|| {
            verify_slack(
                &key,
                Some(ts.as_bytes()),
                Some(sig.as_bytes()),
                black_box(BODY.as_bytes()),
                now,
            )
            .expect("valid");
            let Request::Command(SlashCommand { text, .. }) =
                Request::command_form(black_box(BODY.as_bytes())).expect("form")
            else {
                unreachable!()
            };
            let (spec, _) = registry
                .parse(&text, |_| true)
                .expect("`pager incidents` is a command");
            black_box(spec.name.len())
        })
    });

    c.bench_function("parse_known_command", |b| {
        b.iter(|| black_box(registry.parse(black_box("audit 20"), |_| true).is_ok()))
    });

    c.bench_function("parse_unknown_command_with_suggestions", |b| {
        b.iter(|| {
            black_box(
                registry
                    .parse(black_box("pager incidnets"), |_| true)
                    .is_err(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
