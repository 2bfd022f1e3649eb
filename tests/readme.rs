//! The README shows text kept elsewhere: its first program is
//! `examples/quickstart.rs`, which CI builds and runs, so the README never
//! shows code that does not compile; its tables of metrics and traces are
//! docs/telemetry.md, which the crate's documentation includes.

#[test]
fn the_readme_shows_the_quickstart_example_as_it_is() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/examples/quickstart.rs")).unwrap();
    let block = readme
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .expect("the README has a rust block");
    assert_eq!(
        block, example,
        "the README's first rust block differs from examples/quickstart.rs"
    );
}

/// The README's "Watching it run" holds docs/telemetry.md as it is, the
/// same text the crate's documentation includes: one table of series and
/// events, shown in both places.
#[test]
fn the_readme_shows_the_telemetry_tables_as_they_are() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let tables = std::fs::read_to_string(format!("{root}/docs/telemetry.md")).unwrap();
    assert!(
        readme.contains(&format!("## Watching it run\n\n{tables}")),
        "README.md's \"Watching it run\" differs from docs/telemetry.md"
    );
}
