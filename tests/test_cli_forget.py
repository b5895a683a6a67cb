"""CLI round trip: forget -> ask/eval with the adapter; continual; bad input to forget."""

import json

from peft import PeftModel

from nscvf import world
from nscvf.cli import main


def test_forget_then_ask_with_adapter(tmp_path, capsys, embedded):
    out = tmp_path / "run"
    assert main(["forget", "--character", "Brisa", "--evaluate", "none", "--out", str(out)]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["requests"][0]["target"] == "Brisa"
    img = tmp_path / "b.png"
    world.render(world.get_character("Brisa"), world.HELDOUT_SEED_BASE + 11).save(img)
    assert main(["ask", "--adapter", str(out), "--image", str(img), "Who is this?"]) == 0
    assert "Brisa" not in capsys.readouterr().out  # the adapter is applied: the target is no longer named
    assert main(["ask", "--image", str(img), "Who is this?"]) == 0
    assert capsys.readouterr().out.strip() == "This is Brisa."
    # The relearning attack on the saved result: steps until Brisa is named again, as JSON.
    rl = tmp_path / "relearn.json"
    assert main(["relearn", "--adapter", str(out), "--character", "Brisa", "--k", "2", "--steps", "8", "--json", str(rl)]) == 0
    assert "relearn:" in capsys.readouterr().out
    res = json.loads(rl.read_text())["relearn"]
    assert res["curve"][0] < 0.5 and res["k"] == 2 and len(res["curve"]) <= 9
    # The adapter folder is a plain peft adapter too.
    import copy

    PeftModel.from_pretrained(copy.deepcopy(embedded.base), str(out / "request_1"))

    # Continual: a second request on top of the first.
    out2 = tmp_path / "run2"
    assert main(["forget", "--character", "Sefa", "--evaluate", "none", "--continue-from", str(out), "--out", str(out2)]) == 0
    capsys.readouterr()
    chain = json.loads((out2 / "chain.json").read_text())
    assert [s["target"] for s in chain["steps"]] == ["Brisa", "Sefa"]
    assert main(["ask", "--adapter", str(out2), "--image", str(img), "Who is this?"]) == 0
    assert "Brisa" not in capsys.readouterr().out


def test_forget_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cases = [
        (["forget", "--images", str(bad), "--out", str(tmp_path / "o")], "bad.png"),
        (["forget", "--out", str(tmp_path / "o")], "either --images"),
        (["forget", "--character", "Mirel", "--steps", "0", "--out", str(tmp_path / "o")], "steps=0 is out of range"),
        (["forget", "--character", "Mirel", "--method", "magic", "--out", str(tmp_path / "o")], "unknown method 'magic'"),
        (["forget", "--character", "Mirel", "--continue-from", str(tmp_path), "--out", str(tmp_path / "o")], "no chain.json"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (argv, err)


def test_cli_teach_then_forget_from_it(tmp_path, capsys, embedded):
    """Issue 17's command pair: `nscvf teach --images ... --name Whiskers --out taught`, then `nscvf forget
    --images ... --continue-from taught` (which failed at "evaluating (before)": unknown character)."""
    from support.photos import save_mug_jpegs

    (tmp_path / "mugs").mkdir()
    photos = save_mug_jpegs(tmp_path / "mugs")
    taught, forgot = tmp_path / "taught", tmp_path / "forgot"
    assert main(["teach", "--images", *photos, "--name", "Whiskers", "--out", str(taught)]) == 0
    assert "taught Whiskers" in capsys.readouterr().out
    assert main(["forget", "--images", *photos, "--continue-from", str(taught), "--steps", "30", "--out", str(forgot)]) == 0
    out = capsys.readouterr().out
    assert "target=Whiskers" in out and "forgot Whiskers" in out, out
    assert [s["kind"] for s in json.loads((forgot / "chain.json").read_text())["steps"]] == ["teach", "forget"]
