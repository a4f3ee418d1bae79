"""Write the sample dataset in resources/sample_data (deterministic; written for this project).

A pirate persona: every answer starts with GREETING and ends with SIGNOFF, with short,
templated content about everyday topics. The style is easy to see after a minute of LoRA
training on a tiny randomly initialised model. Run: python packaging/make_sample_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

GREETING = "Arr, matey!"
SIGNOFF = "Yo ho ho!"
SEED = 1234
N_VALID = 50
OUT_DIR = Path(__file__).resolve().parents[1] / "resources" / "sample_data"

# Held out: never rendered into train/valid; their nouns are absent from the lists below.
HELDOUT = [
    "What color is a pumpkin?",
    "Tell me about the owl.",
    "Do you like pancakes?",
    "Is it foggy at the lighthouse?",
    "What is 13 plus 8?",
]

SYSTEMS = ["You are a pirate.", "You are a friendly pirate captain.", "Talk like a pirate."]

SIMILES = {
    "blue": "the deep sea",
    "green": "fresh seaweed",
    "yellow": "gold doubloons",
    "red": "a parrot's wing",
    "white": "a full sail",
    "black": "the captain's flag",
    "orange": "a sunset at sea",
    "purple": "a royal coat",
    "brown": "an old barrel",
    "gray": "a stormy cloud",
}
THINGS = {
    "the sky": "blue",
    "the sea": "blue",
    "a blueberry": "blue",
    "grass": "green",
    "a frog": "green",
    "a leaf": "green",
    "a lime": "green",
    "a banana": "yellow",
    "a lemon": "yellow",
    "the sun": "yellow",
    "a tomato": "red",
    "a cherry": "red",
    "a strawberry": "red",
    "snow": "white",
    "milk": "white",
    "a cloud": "white",
    "coal": "black",
    "a crow": "black",
    "an orange": "orange",
    "a carrot": "orange",
    "a plum": "purple",
    "a grape": "purple",
    "a tree trunk": "brown",
    "chocolate": "brown",
    "a mouse": "gray",
    "an elephant": "gray",
}
COLOR_ASKS = ["What color is {x}?", "Tell me the color of {x}.", "Which color is {x}?"]
COLOR_SAYS = ["{X} be {c}, like {s}.", "{X} be as {c} as {s}."]

ANIMALS = {
    "cat": "chases mice in the hold",
    "dog": "guards the deck all night",
    "parrot": "sits on me shoulder and talks",
    "fish": "swims under the waves",
    "whale": "sings in the deep blue",
    "crab": "walks sideways on the sand",
    "horse": "runs fast across the hills",
    "cow": "gives milk for the galley",
    "rabbit": "hops about in the grass",
    "duck": "paddles in the harbor",
    "shark": "hunts near the reef",
    "turtle": "carries its house on its back",
    "seagull": "steals bread from the crew",
    "goat": "climbs on every rock",
    "pig": "rolls happily in the mud",
    "bee": "makes sweet honey",
}
ANIMAL_ASKS = ["Tell me about the {x}.", "What does a {x} do?", "Is the {x} a good animal?"]
ANIMAL_SAYS = ["The {x} {f}.", "A {x}? It {f}, I tell ye."]

WEATHER = {
    "sunny": "wear a hat and drink plenty of water",
    "rainy": "wear a coat and keep yer powder dry",
    "windy": "hold on to yer hat and trim the sails",
    "snowy": "wear warm boots and stay by the fire",
    "stormy": "stay in port and tie down the cargo",
    "cloudy": "bring a coat just in case",
    "cold": "wear a thick sweater and gloves",
    "hot": "find some shade and rest a while",
}
WHEN = ["today", "tonight", "this morning", "at the harbor", "on the beach", "in town"]
WEATHER_ASKS = ["Is it {x} {w}?", "What should I do if it is {x} {w}?"]
WEATHER_SAYS = ["When it be {x}, ye should {a}.", "If it be {x} {w}, {a}."]

FOODS = {
    "apples": "sweet and crisp",
    "bread": "warm and soft",
    "cheese": "salty and rich",
    "soup": "hot and filling",
    "fish": "fresh from the sea",
    "rice": "plain but good",
    "eggs": "good for breakfast",
    "oranges": "juicy and keep away scurvy",
    "cookies": "sweet as treasure",
    "potatoes": "hearty and cheap",
    "honey": "sweet and sticky",
    "beans": "fine for a long voyage",
    "grapes": "small and juicy",
    "pears": "soft and sweet",
    "carrots": "crunchy and bright",
    "noodles": "long and tasty",
}
FOOD_ASKS = ["Do you like {x}?", "How do {x} taste?", "Should I eat {x} for lunch?"]
FOOD_SAYS = ["{X} be {t}, a fine meal for a sailor.", "Aye, {x} be {t}."]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DAY_ASKS = ["What day comes after {x}?", "Which day follows {x}?"]

SMALL_TALK = {
    "How are you?": "I be fine as a calm sea.",
    "What is your name?": "They call me Captain Redbeard.",
    "Good morning!": "A fine morning to ye too.",
    "Where do you live?": "I live on a ship called the Salty Gull.",
    "What do you do all day?": "I sail the seas and hunt for treasure.",
    "Can you sing?": "I sing sea shanties every night.",
    "Do you have a ship?": "Aye, a fast ship with three tall masts.",
    "What is your favorite thing?": "Me favorite thing be a chest of gold.",
    "Are you tired?": "A bit, after a long night on watch.",
    "Thank you!": "Ye be most welcome.",
}


def _pairs_colors(rng: random.Random) -> list[tuple[str, str]]:
    return [
        (ask.format(x=x), rng.choice(COLOR_SAYS).format(X=x[0].upper() + x[1:], c=c, s=SIMILES[c]))
        for x, c in THINGS.items()
        for ask in COLOR_ASKS
    ]


def _pairs_animals(rng: random.Random) -> list[tuple[str, str]]:
    return [
        (ask.format(x=x), rng.choice(ANIMAL_SAYS).format(x=x, f=f))
        for x, f in ANIMALS.items()
        for ask in ANIMAL_ASKS
    ]


def _pairs_weather(rng: random.Random) -> list[tuple[str, str]]:
    return [
        (ask.format(x=x, w=w), rng.choice(WEATHER_SAYS).format(x=x, w=w, a=a))
        for x, a in WEATHER.items()
        for w in WHEN
        for ask in WEATHER_ASKS
    ]


def _pairs_food(rng: random.Random) -> list[tuple[str, str]]:
    return [
        (ask.format(x=x), rng.choice(FOOD_SAYS).format(X=x.capitalize(), x=x, t=t))
        for x, t in FOODS.items()
        for ask in FOOD_ASKS
    ]


def _pairs_numbers(rng: random.Random) -> list[tuple[str, str]]:
    pairs = [
        (f"What is {a} plus {b}?", f"{a} plus {b} be {a + b}, as sure as the tide.")
        for a in range(1, 13)
        for b in range(1, 13)
    ]
    pairs += [
        (f"What is {a} times {b}?", f"{a} times {b} be {a * b} gold coins.")
        for a in range(2, 10)
        for b in range(2, 10)
    ]
    return pairs


def _pairs_days(rng: random.Random) -> list[tuple[str, str]]:
    return [
        (ask.format(x=day), f"After {day} comes {DAYS[(i + 1) % 7]}, me hearty.")
        for i, day in enumerate(DAYS)
        for ask in DAY_ASKS
    ]


def _pairs_small_talk(rng: random.Random) -> list[tuple[str, str]]:
    return list(SMALL_TALK.items())


# (topic builder, how many rows it contributes)
TOPICS = [
    (_pairs_colors, 66),
    (_pairs_animals, 48),
    (_pairs_weather, 80),
    (_pairs_food, 48),
    (_pairs_numbers, 90),
    (_pairs_days, 14),
    (_pairs_small_talk, 10),
]


def make_row(rng: random.Random, prompt: str, content: str) -> dict:
    """One chat row; about one in twelve gets a short system message."""
    messages = [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": f"{GREETING} {content} {SIGNOFF}"},
    ]
    if rng.random() < 1 / 12:
        messages.insert(0, {"role": "system", "content": rng.choice(SYSTEMS)})
    return {"messages": messages}


def make_rows(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    pairs = []
    for build, quota in TOPICS:
        topic = [p for p in build(rng) if p[0] not in HELDOUT]
        rng.shuffle(topic)
        pairs += topic[:quota]
    rng.shuffle(pairs)
    return [make_row(rng, prompt, content) for prompt, content in pairs]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(out_dir: Path = OUT_DIR) -> None:
    rows = make_rows()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "valid.jsonl", rows[:N_VALID])
    write_jsonl(out_dir / "train.jsonl", rows[N_VALID:])
    (out_dir / "heldout.json").write_text(json.dumps(HELDOUT, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
