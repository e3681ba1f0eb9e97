//! The shape of the code: the top-level modules form no import cycle, `domain` imports nothing
//! of ours and `store` only `domain` (`scripts/module-graph` reads the `crate::` paths).

use std::process::Command;

fn graph() -> String {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/module-graph"))
        .output()
        .expect("python3 runs scripts/module-graph");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the graph is text")
}

#[test]
fn the_modules_form_no_cycle_and_the_lower_layers_stay_low() {
    let graph = graph();
    let lines: Vec<&str> = graph.lines().collect();
    assert!(lines.contains(&"cycles: 0"), "{graph}");
    assert!(lines.contains(&"domain -> (nothing of ours)"), "{graph}");
    assert!(lines.contains(&"store -> domain"), "{graph}");
    // Nothing below the chat edge knows it: only wiring (app, cli) names `slack`.
    let knows_slack: Vec<&str> = lines
        .iter()
        .filter(|l| {
            l.contains(" -> ")
                && l.split(" -> ")
                    .nth(1)
                    .is_some_and(|d| d.split(", ").any(|m| m == "slack"))
        })
        .map(|l| l.split(" -> ").next().unwrap_or_default())
        .collect();
    assert_eq!(knows_slack, ["app", "cli"], "{graph}");
}
