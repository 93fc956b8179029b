//! `docs/bad-input.md` cannot rot: every test it names (`path::name`) exists as a test function,
//! every row names at least one, every section is there, and every test in `tests/mysql/bad_input.rs`
//! (the hostile-input suite) has a row.

use std::collections::BTreeSet;
use std::path::Path;

const SECTIONS: &[&str] = &[
    "## From clients",
    "## From the upstream",
    "## From the SSM service",
    "## From the AWS credentials chain",
    "## Config files and flags",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn catalogue() -> String {
    std::fs::read_to_string(root().join("docs/bad-input.md")).expect("docs/bad-input.md")
}

/// The table rows: lines of `| … |` that are neither a header nor a separator.
fn rows(doc: &str) -> Vec<&str> {
    doc.lines()
        .filter(|l| l.starts_with('|'))
        .filter(|l| !l.starts_with("| Input") && !l.starts_with("|---"))
        .collect()
}

/// The `path::name` references in a row's last cell.
fn references(row: &str) -> Vec<(String, String)> {
    let cells: Vec<&str> = row.trim_matches('|').split('|').collect();
    let last = cells.last().copied().unwrap_or_default();
    last.split('`')
        .skip(1)
        .step_by(2)
        .map(|r| {
            let (path, name) = r
                .split_once(".rs::")
                .unwrap_or_else(|| panic!("`{r}` is not path.rs::test_name in: {row}"));
            (format!("{path}.rs"), name.to_owned())
        })
        .collect()
}

/// Names of the test functions in `source`: `fn` items whose attributes include `#[test]` or
/// `#[tokio::test…]` (inside `proptest!` blocks too).
fn test_functions(source: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    let mut found = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line
            .strip_prefix("async fn ")
            .or_else(|| line.strip_prefix("fn "))
        else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let is_test = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
            .any(|l| l.starts_with("#[test]") || l.starts_with("#[tokio::test"));
        if is_test {
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_test_the_catalogue_names_exists() {
    let doc = catalogue();
    for section in SECTIONS {
        assert!(
            doc.lines().any(|l| l.starts_with(section)),
            "section {section:?} missing"
        );
    }
    let rows = rows(&doc);
    assert!(
        rows.len() >= 60,
        "only {} rows: the table lost rows",
        rows.len()
    );
    let mut checked = 0;
    for row in &rows {
        let refs = references(row);
        assert!(!refs.is_empty(), "a row without a test: {row}");
        for (path, name) in refs {
            let file = root().join(&path);
            let source = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{path} (named in the catalogue): {e}"));
            assert!(
                test_functions(&source).contains(&name),
                "{path} has no test `{name}` (named in docs/bad-input.md)"
            );
            checked += 1;
        }
    }
    assert!(checked >= rows.len());
}

#[test]
fn every_hostile_input_test_has_a_row() {
    let doc = catalogue();
    let named: BTreeSet<String> = rows(&doc)
        .iter()
        .flat_map(|r| references(r))
        .filter(|(path, _)| path == "tests/mysql/bad_input.rs")
        .map(|(_, name)| name)
        .collect();
    let source = std::fs::read_to_string(root().join("tests/mysql/bad_input.rs")).unwrap();
    let tests = test_functions(&source);
    assert!(tests.len() >= 30, "found only {} tests", tests.len());
    let missing: Vec<&String> = tests.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "tests/mysql/bad_input.rs tests without a row in docs/bad-input.md: {missing:?}"
    );
}

#[test]
fn the_reference_parser_sees_tests_and_only_tests() {
    let source = "#[test]\nfn a() {}\n/// doc\n#[tokio::test(flavor = \"x\")]\nasync fn b() {}\nfn helper() {}\n#[test]\n#[should_panic]\nfn c() {}\n";
    let found: Vec<String> = test_functions(source).into_iter().collect();
    assert_eq!(found, ["a", "b", "c"]);
    let row = "| x | client | y | `tests/a.rs::one`, `src/b/c.rs::two` |";
    assert_eq!(
        references(row),
        [
            ("tests/a.rs".to_owned(), "one".to_owned()),
            ("src/b/c.rs".to_owned(), "two".to_owned())
        ]
    );
}
