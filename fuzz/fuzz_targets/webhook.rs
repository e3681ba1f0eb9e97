//! Each webhook body format, parsed and formatted. The first byte picks the source (and, for
//! GitHub, the event and whether it came as a form); the rest is the body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pantheon::notify::webhook::Webhook;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    // One of the events we have a message for, or one we do not.
    let known = pantheon::notify::format::GITHUB_KNOWN;
    let event = known
        .get(usize::from(pick >> 3) % (known.len() + 1))
        .copied()
        .unwrap_or("discussion");
    let form = pick & 4 != 0;
    let headers = |name: &str| match name {
        "x-github-event" => Some(event),
        "x-github-delivery" | "x-webhook-id" | "x-zendesk-webhook-invocation-id" => Some("d1"),
        "content-type" if form => Some("application/x-www-form-urlencoded"),
        _ => None,
    };
    let parsed = match pick % 3 {
        0 => Webhook::github(headers, body),
        1 => Webhook::pagerduty(headers, body),
        _ => Webhook::zendesk(headers, body),
    };
    if let Ok(Some(webhook)) = parsed {
        let formatted =
            webhook.format(|id| Some(format!("https://acme.zendesk.com/agent/tickets/{id}")));
        // Payload text is escaped: nothing in a message can ping a whole channel.
        assert!(!formatted.text.contains("<!"), "{}", formatted.text);
    }
});
