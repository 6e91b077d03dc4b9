"""The reader fuzzer (tests/fuzz.py) in make test: every crafted hostile kind and random
mutations of valid files, seeded. Longer runs: python tests/fuzz.py --trials 10000."""

from fuzz import CRAFTED, OUTCOMES, run


def test_fuzz_finds_nothing_against_the_reader():
    table = run(600, seed=2026)
    bad = {kind: {o: c[o] for o in OUTCOMES[2:] if c[o]} for kind, c in table.items()}
    assert not any(bad.values()), bad
    assert set(CRAFTED) <= set(table)
    # Both ways out are exercised: refusals and right reads.
    assert sum(c["DcqError"] for c in table.values()) > 300 and sum(c["read right"] for c in table.values()) > 50
