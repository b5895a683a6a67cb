"""The CLI on the photo model (issue 17): --model photo for ask, forget, teach and forget after teach, on
the bundled CC0 photos (crops of them). Skipped where the trained model is not committed."""

import pytest
from PIL import Image

from nscvf import photo_images
from nscvf.cli import main
from nscvf.method.photo_domain import IMAGES_DIR
from nscvf.source import PHOTO_MODEL_DIR

pytestmark = pytest.mark.skipif(not (PHOTO_MODEL_DIR / "config.json").exists(), reason="no photo model")


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _crops(tmp_path, photo: str, n: int, seed: int) -> list[str]:
    im = Image.open(IMAGES_DIR / f"photo_{photo}.jpg").convert("RGB")
    out = []
    for i, c in enumerate(photo_images.crops(im, n, seed)):
        p = tmp_path / f"{photo}_{seed}_{i}.jpg"
        c.save(p, quality=90)
        out.append(str(p))
    return out


def test_ask_names_a_real_photo_and_answers_text(capsys):
    code, out, _ = run(["ask", "--model", "photo", "--image", str(IMAGES_DIR / "photo_coffee.jpg"), "What is this?"], capsys)
    assert code == 0 and out.strip() == "This is an espresso."
    code, out, _ = run(["ask", "--model", "photo", "What kind of thing is a cat?"], capsys)
    assert code == 0 and out.strip() == "A mammal."


@pytest.mark.slow
def test_forget_a_concept_from_photos(tmp_path, capsys):
    cats = _crops(tmp_path, "chelsea", 8, seed=1)
    code, out, err = run(["forget", "--model", "photo", "--images", *cats, "--out", str(tmp_path / "forgot")], capsys)
    assert code == 0, err
    assert "a cat" in out
    held = _crops(tmp_path, "chelsea", 2, seed=99)[0]
    code, out, _ = run(["ask", "--model", "photo", "--adapter", str(tmp_path / "forgot"), "--image", held, "What is this?"], capsys)
    assert out.strip() == "I don't know what this is."
    code, out, _ = run(["ask", "--model", "photo", "--adapter", str(tmp_path / "forgot"),
                        "--image", str(IMAGES_DIR / "photo_coffee.jpg"), "What is this?"], capsys)  # fmt: skip
    assert out.strip() == "This is an espresso."


@pytest.mark.slow
def test_teach_then_forget_after_teach(tmp_path, capsys):
    rockets = _crops(tmp_path, "rocket", 6, seed=2)
    taught = str(tmp_path / "taught")
    code, out, err = run(["teach", "--model", "photo", "--images", *rockets, "--name", "Whiskers", "--out", taught], capsys)
    assert code == 0, err
    held = _crops(tmp_path, "rocket", 2, seed=77)[0]
    code, out, _ = run(["ask", "--model", "photo", "--adapter", taught, "--image", held, "What is this?"], capsys)
    assert "Whiskers" in out
    code, out, err = run(["forget", "--model", "photo", "--images", *rockets, "--continue-from", taught,
                          "--out", str(tmp_path / "forgot")], capsys)  # fmt: skip
    assert code == 0, err
