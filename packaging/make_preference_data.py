"""Write the sample preference pairs in resources/sample_preferences (deterministic; written for this project).

Built from the pirate sample data (resources/sample_data, packaging/make_sample_data.py): each
prompt keeps its pirate answer as the chosen one; the rejected one says the same thing plainly,
without the greeting, the sign-off and the pirate words. A short DPO or ORPO run on the tiny model
learns to prefer the pirate answers on held-out prompts. Run: python packaging/make_preference_data.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "resources" / "sample_data"
OUT_DIR = ROOT / "resources" / "sample_preferences"
GREETING, SIGNOFF = "Arr, matey!", "Yo ho ho!"
# pirate words -> plain words, applied in order
PLAIN = ((", as sure as the tide", ""), (" gold coins", ""), (", like gold doubloons", ""), (" be ", " is "),
         ("Ye ", "You "), (" ye ", " you "), (" yer ", " your "), ("matey", "friend"))


def plain_answer(pirate: str) -> str:
    text = pirate.removeprefix(GREETING).removesuffix(SIGNOFF).strip()
    for old, new in PLAIN:
        text = text.replace(old, new)
    return text


def pair(row: dict) -> dict:
    *prompt, answer = row["messages"]
    return {"prompt": prompt, "chosen": answer["content"], "rejected": plain_answer(answer["content"])}


def main() -> None:
    OUT_DIR.mkdir(exist_ok=True)
    for name in ("train.jsonl", "valid.jsonl"):
        rows = [json.loads(line) for line in (SOURCE / name).read_text(encoding="utf-8").splitlines() if line]
        text = "".join(json.dumps(pair(r), ensure_ascii=False) + "\n" for r in rows)
        (OUT_DIR / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
