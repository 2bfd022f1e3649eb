//! The README's first program is `examples/quickstart.rs`, which CI builds
//! and runs: this keeps the two the same, so the README never shows code
//! that does not compile.

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
