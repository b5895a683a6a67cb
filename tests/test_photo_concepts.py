"""The photo model's concept table (issue 17): committed data that loads, with names, facts and siblings."""

import pytest

from nscvf.concepts import load_table, table


def test_table_has_at_least_100_concepts_with_two_facts_and_known_siblings():
    t = table()
    assert len(t.concepts) >= 100
    names = set(t.names)
    assert len(names) == len(t.concepts)
    seen_classes = set()
    for c in t.concepts:
        assert c.name.startswith(("a ", "an ")) and c.classes
        assert not seen_classes & set(c.classes)  # a class belongs to one concept
        seen_classes |= set(c.classes)
        assert all(0 <= k < 1000 for k in c.classes)
        facts = t.text_qa(c)
        assert len(facts) >= 2 and all(a.endswith(".") and len(a) > 3 for _, a in facts)
        assert set(c.siblings) <= names - {c.name}
    cat = t.get("A cat")
    assert t.name_answer(cat) == "This is a cat."
    assert "a tiger" in cat.siblings and "a lynx" in cat.siblings
    assert t.image_qa(None)[0][1] == "I don't know what this is."


def test_unknown_concept_has_a_clear_message():
    with pytest.raises(KeyError, match="unknown concept 'a unicorn'"):
        table().get("a unicorn")


def test_table_loads_from_a_path(tmp_path):
    from nscvf.concepts import CONCEPTS_FILE

    p = tmp_path / "c.json"
    p.write_text(CONCEPTS_FILE.read_text())
    assert load_table(p).names == table().names
