"""The mutants (tests/mutants.py) in the normal suite: the list still applies to the tree, and the CI subset
is caught. The whole list runs with `make mutants` (see README, "The isolation tests, tested")."""

from __future__ import annotations

from pathlib import Path

import pytest

import mutants


def test_every_mutant_applies_to_the_current_tree() -> None:
    """Each mutant's old text occurs exactly once in its file: a changed file fails here, in milliseconds,
    instead of turning its mutant into a silent no-op."""
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names)), "duplicate mutant names"
    for m in mutants.MUTANTS:
        texts = mutants.mutated_texts(m, mutants.PROJECT)
        assert texts and all(text != (p.read_text()) for p, text in texts.items()), f"{m.name} changes nothing"
    assert sum(m.fast for m in mutants.MUTANTS) >= 5, "the CI subset should have a handful of mutants"


def test_catching_tests_exist() -> None:
    """Every test a mutant names as its catcher is a test function of the suite (parametrised ids aside)."""
    for m in mutants.MUTANTS:
        for node in m.caught_by:
            file, _, name = node.partition("::")
            source = (mutants.PROJECT / "tests" / file).read_text()
            assert f"def {name.split('[')[0]}(" in source, f"{m.name}: {node} does not exist"


def test_a_mutant_that_no_longer_applies_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "x.sql").write_text("GRANT SELECT ON t TO app_user;\nGRANT SELECT ON t TO app_user;\n")
    twice = mutants.Mutant("twice", "ambiguous", (mutants.replace("sql/x.sql", "GRANT SELECT ON t TO app_user;", "GRANT ALL ON t TO app_user;"),))
    gone = mutants.Mutant("gone", "missing", (mutants.replace("sql/x.sql", "REVOKE", "GRANT"),))
    for m, times in ((twice, 2), (gone, 0)):
        with pytest.raises(mutants.MutantRot, match=f"occurs {times} times"):
            mutants.apply(m, tmp_path)
    mutants.apply(mutants.Mutant("appended", "append", (mutants.append("sql/x.sql", "SELECT 1;"),)), tmp_path)
    assert (tmp_path / "sql" / "x.sql").read_text().endswith("SELECT 1;\n")


@pytest.mark.slow
def test_the_ci_subset_of_mutants_is_caught(server_dsn: str) -> None:
    """The fast mutants, each in a scratch copy of the project, two at a time: every one is caught by the
    test it names (about a minute; the whole list is `make mutants`)."""
    fast = [m for m in mutants.MUTANTS if m.fast]
    outcomes = mutants.run(fast, dsn=server_dsn, jobs=2, baseline=False)
    report = mutants.report(outcomes, sum(o.seconds for o in outcomes), 2)
    assert all(o.status == "caught" for o in outcomes), report
    assert all(o.as_expected for o in outcomes), report
