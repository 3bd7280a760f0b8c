//! `choreo saga diagram` prints the reference order saga as the saga crate draws it (the same
//! Mermaid the operator API answers), and the README shows that very diagram.

#[test]
fn saga_diagram_prints_the_definitions_mermaid_as_the_readme_shows_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["saga", "diagram"])
        .output()
        .expect("choreo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    let catalog = choreo_schemas::Catalog::reference();
    let order = choreo_saga::Definition::reference_order_saga(&catalog).expect("order saga");
    assert_eq!(printed, choreo_saga::diagram::mermaid(&order));
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let block = readme
        .split("```mermaid\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a mermaid block in the README");
    assert_eq!(block, printed, "the README's diagram is what choreo prints");
}
