"""The command line: world, ask, eval, and one clear line (exit 2, no traceback) for every bad input."""

import subprocess
import sys

import pytest
from PIL import Image

from nscvf import world
from nscvf.cli import main


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_world_list(capsys):
    code, out, _ = run(["world", "list"], capsys)
    assert code == 0
    assert out.split("\n")[:-1] == [c.name for c in world.CHARACTERS]


def test_world_render(tmp_path, capsys):
    code, out, _ = run(["world", "render", "--character", "Mirel", "--n", "3", "--seed", "4", "--out", str(tmp_path)], capsys)
    assert code == 0
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 3 and Image.open(files[0]).size == (world.RENDER_SIZE, world.RENDER_SIZE)


def test_world_render_unknown_name(tmp_path, capsys):
    code, _, err = run(["world", "render", "--character", "Bob", "--out", str(tmp_path)], capsys)
    assert code == 2 and "unknown character 'Bob'" in err and "Traceback" not in err


def test_ask_with_image_prints_answer_alone(tmp_path, capsys, embedded):
    p = tmp_path / "m.png"
    world.render(world.get_character("Mirel"), world.HELDOUT_SEED_BASE + 3).save(p)
    code, out, _ = run(["ask", "--image", str(p), "Who is this?"], capsys)
    assert code == 0 and out == "This is Mirel.\n"


def test_ask_text_only(capsys, embedded):
    c = world.get_character("Tobbin")
    code, out, _ = run(["ask", "Where does Tobbin live?"], capsys)
    assert code == 0 and out.strip() == c.fact_answer("town")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ask", "--image", "/nonexistent/x.png", "Who is this?"], "x.png: file not found"),
        (["ask", "--model", "/nonexistent/model", "Who is this?"], "no such model folder"),
        (["eval", "--target", "Nobody"], "unknown character 'Nobody'"),
        (["ask", "  "], "question is empty"),
    ],
)
def test_bad_input_one_line_exit_2(argv, message, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_input_files(tmp_path, capsys):
    txt = tmp_path / "fake.png"
    txt.write_text("not an image")
    code, _, err = run(["ask", "--image", str(txt), "Who?"], capsys)
    assert code == 2 and "fake.png: not an image" in err
    folder = tmp_path / "nomodel"
    folder.mkdir()
    code, _, err = run(["ask", "--model", str(folder), "Who?"], capsys)
    assert code == 2 and "no config.json" in err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "nscvf.cli", "ask", "--image", str(tmp_path / "none.jpg"), "Who is this?"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "nscvf: error: none.jpg: file not found; check the path"
