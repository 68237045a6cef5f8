"""`ratelimit-service validate --config PATH`."""

import pytest

from conftest import DEMO_LIMITS, dedent, run_rls

FULL = """
    # every key of the reference format plus the extensions
    domain: full
    descriptors:
      - key: tenant
        value: acme
        detailed_metric: true
        rate_limit: {unit: second, requests_per_unit: 5, name: acme-rps, algorithm: sliding}
        descriptors:
          - key: kind
            value: tokens
            rate_limit: {unit: minute, requests_per_unit: 10000, kind: tokens, algorithm: fixed}
      - key: tenant
        value: beta
        shadow_mode: true
        rate_limit: {unit: hour, requests_per_unit: 100, kind: requests}
      - key: tenant
        value: big
        rate_limit:
          unit: day
          requests_per_unit: 1000
          replaces:
            - name: acme-rps
      - key: tenant
        value: free
        rate_limit: {unlimited: true}
      - key: generic_key
        value: model
        descriptors:
          - key: model
            rate_limit: {unit: month, requests_per_unit: 1000000}
          - key: region
            rate_limit: {unit: year, requests_per_unit: 1000000}
"""


def validate(path):
    r = run_rls("validate", "--config", str(path))
    return r.returncode, r.stdout + r.stderr


def test_demo_config_is_valid():
    code, out = validate(DEMO_LIMITS)
    assert code == 0, out


def test_full_reference_format_is_valid(tmp_path):
    p = tmp_path / "full.yaml"
    p.write_text(dedent(FULL))
    code, out = validate(p)
    assert code == 0, out


BAD = {
    "unit": ("""
        domain: bad
        descriptors:
          - key: tenant
            rate_limit: {unit: fortnight, requests_per_unit: 1}
     """, ["descriptors[0].rate_limit.unit", "fortnight"]),
    "nested-algorithm": ("""
        domain: bad
        descriptors:
          - key: tenant
            value: a
            descriptors:
              - key: kind
                value: x
                rate_limit: {unit: hour, requests_per_unit: 1}
              - key: kind
                value: y
                rate_limit: {unit: hour, requests_per_unit: 1, algorithm: leaky_bucket}
     """, ["descriptors[0].descriptors[1].rate_limit.algorithm", "leaky_bucket"]),
    "kind": ("""
        domain: bad
        descriptors:
          - key: a
            rate_limit: {unit: hour, requests_per_unit: 1}
          - key: b
            rate_limit: {unit: hour, requests_per_unit: 1, kind: bytes}
     """, ["descriptors[1].rate_limit.kind", "bytes"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_config_names_file_place_and_value(tmp_path, case):
    text, needles = BAD[case]
    p = tmp_path / f"bad-{case}.yaml"
    p.write_text(dedent(text))
    code, out = validate(p)
    assert code != 0, f"accepted an invalid config:\n{out}"
    for n in [p.name, *needles]:
        assert n in out, f"message should contain {n!r}:\n{out}"


def test_yaml_syntax_error_names_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("domain: x\ndescriptors:\n  - key: [unclosed\n")
    code, out = validate(p)
    assert code != 0, out
    assert "broken.yaml" in out, out


def test_missing_path_fails(tmp_path):
    code, out = validate(tmp_path / "nope.yaml")
    assert code != 0, out
    assert "nope.yaml" in out, out


def test_directory_with_one_bad_file_names_it(tmp_path):
    (tmp_path / "good.yaml").write_text(dedent(FULL))
    (tmp_path / "zzz-bad.yaml").write_text(dedent(BAD["unit"][0]))
    code, out = validate(tmp_path)
    assert code != 0, out
    assert "zzz-bad.yaml" in out and "fortnight" in out, out


def test_duplicate_domain_in_directory_fails(tmp_path):
    (tmp_path / "a.yaml").write_text("domain: same\ndescriptors: []\n")
    (tmp_path / "b.yaml").write_text("domain: same\ndescriptors: []\n")
    code, out = validate(tmp_path)
    assert code != 0, out
    assert "same" in out, out
