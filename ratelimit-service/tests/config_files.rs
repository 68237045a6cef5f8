//! Every config error a user can meet, one fixture each, with its exact message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ratelimit_service::config::{Kind, Unit, load_path};
use ratelimit_service::store::Mode;
use ratelimit_service::window::Algorithm;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config")
        .join(name)
}

fn error_of(name: &str) -> String {
    let path = fixture(&format!("bad/{name}.yaml"));
    let err = load_path(&path).expect_err(name).to_string();
    let prefix = format!("{}: ", path.display());
    assert!(err.starts_with(&prefix), "{err} names the file");
    err[prefix.len()..].to_string()
}

#[test]
fn each_bad_fixture_has_its_exact_message() {
    let cases = [
        ("empty_domain", "domain: must not be empty"),
        ("empty_key", "descriptors[0].key: must not be empty"),
        (
            "duplicate",
            "descriptors[1]: duplicate descriptor: key 'a' with value 'x' is already at descriptors[0]",
        ),
        (
            "duplicate_nested",
            "descriptors[0].descriptors[1]: duplicate descriptor: key 'b' without a value is already at descriptors[0].descriptors[0]",
        ),
        (
            "bad_unit",
            "descriptors[0].rate_limit.unit: invalid unit 'minutes' (expected second, minute, hour, day, week, month or year)",
        ),
        (
            "unlimited_with_unit",
            "descriptors[0].rate_limit.unit: must not be set when unlimited is true (found 'minute')",
        ),
        (
            "missing_unit",
            "descriptors[0].rate_limit.unit: missing (or set unlimited: true)",
        ),
        (
            "missing_requests",
            "descriptors[0].rate_limit.requests_per_unit: missing (or set budget for a spend limit)",
        ),
        (
            "budget_and_requests",
            "descriptors[0].rate_limit.budget: set either requests_per_unit or budget, not both",
        ),
        (
            "budget_negative",
            "descriptors[0].rate_limit.budget: must be a positive amount of currency, got -1",
        ),
        (
            "budget_kind_without_amount",
            "descriptors[0].rate_limit.budget: missing: a budget limit takes `budget: AMOUNT` (currency per unit)",
        ),
        (
            "budget_with_tokens_kind",
            "descriptors[0].rate_limit.kind: must be budget (or left out) when budget is set",
        ),
        (
            "empty_replaces",
            "descriptors[0].rate_limit.replaces[0].name: must not be empty",
        ),
        (
            "replaces_self",
            "descriptors[0].rate_limit.replaces[0].name: a limit cannot replace itself ('lim')",
        ),
        (
            "share_threshold_no_wildcard",
            "descriptors[0].share_threshold: needs a wildcard value such as 'prefix*' (value is 'exact')",
        ),
        (
            "bad_algorithm",
            "descriptors[0].rate_limit.algorithm: invalid algorithm 'leaky' (expected sliding or fixed)",
        ),
        (
            "bad_kind",
            "descriptors[0].rate_limit.kind: invalid kind 'dollars' (expected requests, tokens or budget)",
        ),
        (
            "duplicate_name",
            "descriptors[1].rate_limit.name: duplicate limit name 'n', already used at descriptors[0].rate_limit",
        ),
    ];
    for (name, want) in cases {
        assert_eq!(error_of(name), want, "fixture {name}");
    }
}

#[test]
fn yaml_errors_name_the_place_and_line() {
    let unknown = error_of("unknown_key");
    assert!(
        unknown.starts_with("descriptors[0].rate_limit: unknown field `burst`, expected one of"),
        "{unknown}"
    );
    assert!(unknown.contains("line 7 column 7"), "{unknown}");
    let top = error_of("unknown_top_key");
    assert!(
        top.starts_with("unknown field `descriptor`, expected `domain` or `descriptors`"),
        "{top}"
    );
    let negative = error_of("negative");
    assert!(negative.starts_with("descriptors[0].rate_limit.requests_per_unit: invalid type: integer `-3`, expected u64 at line 6"), "{negative}");
    let not_yaml = error_of("not_yaml");
    assert!(not_yaml.contains("line "), "{not_yaml}");
}

#[test]
fn every_bad_fixture_is_covered() {
    let covered = 22;
    let count = std::fs::read_dir(fixture("bad")).unwrap().count();
    assert_eq!(
        count, covered,
        "add the new fixture's message to the tests above"
    );
}

#[test]
fn reference_config_loads_unchanged() {
    let loaded = load_path(&fixture("good/reference.yaml")).unwrap();
    let c = &loaded.config;
    let m = c.lookup("mongo_cps", &[("database", "users")]).unwrap();
    assert_eq!((m.limit.per_unit, m.limit.unit), (500, Unit::Second));
    let m = c
        .lookup("mongo_cps", &[("remote_address", "10.0.0.1")])
        .unwrap();
    assert_eq!(m.limit.mode, Mode::Shadow);
    assert_eq!(
        m.metric_key, "mongo_cps.remote_address_10.0.0.1",
        "detailed_metric shows values"
    );
    let m = c
        .lookup(
            "mongo_cps",
            &[("source_cluster", "proxy"), ("destination_cluster", "bar")],
        )
        .unwrap();
    assert_eq!((m.limit.per_unit, m.limit.unit), (10, Unit::Hour));
    let m = c
        .lookup(
            "mongo_cps",
            &[("source_cluster", "proxy"), ("destination_cluster", "baz")],
        )
        .unwrap();
    assert_eq!(
        (m.limit.unit, m.limit.name.as_deref()),
        (Unit::Week, Some("dest_default"))
    );
    assert_eq!(
        m.metric_key,
        "mongo_cps.source_cluster_proxy.destination_cluster"
    );
    let m = c
        .lookup(
            "mongo_cps",
            &[("source_cluster", "proxy"), ("path", "/foo/bar")],
        )
        .unwrap();
    assert_eq!(
        m.values,
        vec!["proxy", "/foo*"],
        "share_threshold counts all matches together"
    );
    assert!(
        c.lookup(
            "mongo_cps",
            &[("source_cluster", "proxy"), ("path", "/bar")]
        )
        .is_none()
    );
    assert!(
        c.lookup("mongo_cps", &[("source_cluster", "proxy")])
            .is_none(),
        "no limit at depth 1"
    );
    assert!(
        c.lookup("mongo_cps", &[("database", "users"), ("extra", "x")])
            .is_none(),
        "deeper than the limit"
    );
    assert!(
        c.lookup("mongo_cps", &[("client_id", "internal")])
            .unwrap()
            .limit
            .unlimited
    );
    assert_eq!(
        c.lookup("mongo_cps", &[("quota", "q")]).unwrap().limit.mode,
        Mode::Quota
    );
    let t = c.lookup("mongo_cps", &[("tokens", "t")]).unwrap();
    assert_eq!(
        (t.limit.kind, t.limit.window.algorithm, t.limit.unit),
        (Kind::Tokens, Algorithm::Fixed, Unit::Year)
    );
    assert!(c.lookup("other", &[("database", "users")]).is_none());
}

#[test]
fn a_directory_loads_every_yaml_file_and_rejects_duplicate_domains() {
    let dir = tempdir();
    std::fs::write(dir.join("a.yaml"), "domain: a\ndescriptors: []\n").unwrap();
    std::fs::write(dir.join("b.yml"), "domain: b\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "not: [valid").unwrap();
    let loaded = load_path(&dir).unwrap();
    assert_eq!(loaded.files.len(), 2);
    std::fs::write(dir.join("c.yaml"), "domain: a\n").unwrap();
    let err = load_path(&dir).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: domain: duplicate domain 'a', already defined in {}",
            dir.join("c.yaml").display(),
            dir.join("a.yaml").display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn metadata_is_accepted_with_one_warning() {
    let dir = tempdir();
    let file = dir.join("m.yaml");
    std::fs::write(
        &file,
        "domain: m\ndescriptors:\n  - key: a\n    metadata: {x: 1}\n  - key: b\n    metadata: {y: 2}\n",
    )
    .unwrap();
    let loaded = load_path(&file).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("descriptors[0].metadata: accepted but not emitted"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rls-config-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
