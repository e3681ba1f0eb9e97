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

/// A second chat platform is an edge folder and its wiring: nothing in the registry, domain,
/// jobs, store or any other module names Mattermost or branches on it. The only files that
/// say the word are its own folder, the wiring (`app`, `cli`, `lib`) and the configuration.
#[test]
fn only_the_edge_and_the_wiring_know_mattermost() {
    let graph = graph();
    let knows: Vec<&str> = graph
        .lines()
        .filter(|l| {
            l.contains(" -> ")
                && l.split(" -> ")
                    .nth(1)
                    .is_some_and(|d| d.split(", ").any(|m| m == "mattermost"))
        })
        .map(|l| l.split(" -> ").next().unwrap_or_default())
        .collect();
    assert_eq!(knows, ["app", "cli"], "{graph}");
    // Nor does the edge lean on Slack's.
    let mattermost = graph
        .lines()
        .find(|l| l.starts_with("mattermost -> "))
        .expect("the edge is in the graph");
    assert!(!mattermost.contains("slack"), "{mattermost}");

    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut naming = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                if text.to_ascii_lowercase().contains("mattermost") {
                    let rel = path.strip_prefix(&src).expect("under src");
                    naming.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    let outside: Vec<&String> = naming
        .iter()
        .filter(|f| {
            !f.starts_with("mattermost/")
                && !["app.rs", "cli.rs", "lib.rs", "config.rs"].contains(&f.as_str())
        })
        .collect();
    assert!(
        outside.is_empty(),
        "Mattermost named outside its edge: {outside:?}"
    );
    assert!(
        naming.iter().any(|f| f == "mattermost/mod.rs"),
        "the scan found the edge: {naming:?}"
    );
}
