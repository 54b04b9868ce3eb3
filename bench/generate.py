"""A seeded generator of conversation and summary folders of realistic shape.

Benchmarks need data that looks like the real thing: conversations of a few
to a few hundred messages, short questions and long answers, French and
English, with L1 summaries every few messages and one L2 per conversation.
The same seed always gives the same tree, byte for byte.

    python bench/generate.py OUT_DIR --conversations 1000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import date, timedelta
from pathlib import Path

_EN_SUBJECTS = ["the agent", "my script", "the database", "this model", "the summary", "our pipeline", "the index"]
_EN_VERBS = ["stores", "retrieves", "embeds", "summarises", "rewrites", "indexes", "forgets", "compares"]
_EN_OBJECTS = [
    "every conversation",
    "the long transcripts",
    "hierarchical summaries",
    "vectors of 384 dimensions",
    "the storm poem",
    "user preferences",
    "yesterday's experiment",
    "the sourdough recipe",
]
_EN_TAILS = ["before lunch.", "without touching production.", "in a few seconds.", "when the folder changes.", "again."]
_FR_SUBJECTS = ["l'agent", "mon script", "la base", "ce modèle", "le résumé", "notre pipeline", "l'index"]
_FR_VERBS = ["stocke", "retrouve", "encode", "résume", "réécrit", "indexe", "oublie", "compare"]
_FR_OBJECTS = [
    "chaque conversation",
    "les longues transcriptions",
    "les résumés hiérarchiques",
    "des vecteurs de 384 dimensions",
    "le poème de l'orage",
    "les préférences de l'utilisateur",
    "l'expérience d'hier",
    "la recette du levain",
]
_FR_TAILS = ["avant midi.", "sans toucher à la prod.", "en quelques secondes.", "quand le dossier change.", "encore."]
_TOPICS = ["agents", "postgres", "pgvector", "poésie", "cuisine", "embeddings", "systemd", "tests"]


def sentence(rng: random.Random, french: bool) -> str:
    if french:
        parts = (_FR_SUBJECTS, _FR_VERBS, _FR_OBJECTS, _FR_TAILS)
    else:
        parts = (_EN_SUBJECTS, _EN_VERBS, _EN_OBJECTS, _EN_TAILS)
    words = [rng.choice(p) for p in parts]
    words[0] = words[0][0].upper() + words[0][1:]
    return " ".join(words) + f" ({rng.randint(1, 9999)})"


def message_text(rng: random.Random, french: bool, *, long: bool) -> str:
    sentences = rng.randint(8, 40) if long else rng.randint(1, 4)
    paragraphs: list[str] = []
    while sentences > 0:
        n = min(sentences, rng.randint(2, 6))
        paragraphs.append(" ".join(sentence(rng, french) for _ in range(n)))
        sentences -= n
    return "\n\n".join(paragraphs)


def conversation(rng: random.Random, n: int, *, messages: int | None = None) -> tuple[str, list[dict[str, str]]]:
    french = rng.random() < 0.4
    day = date(2025, 1, 1) + timedelta(days=rng.randint(0, 330))
    slug = f"{day.isoformat()}__{'conv' if not french else 'conv_fr'}_{n:06d}"
    count = messages if messages is not None else max(2, int(rng.lognormvariate(2.6, 0.8)))
    turns = []
    for i in range(count):
        role = "user" if i % 2 == 0 else "assistant"
        turns.append({"role": role, "content": message_text(rng, french, long=role == "assistant")})
    return slug, turns


def write_tree(out: Path, conversations: int, *, seed: int = 1, messages: int | None = None) -> list[str]:
    """Write ``conversations/`` and ``summaries/`` under ``out``; returns the slugs."""
    rng = random.Random(seed)
    conv_root = out / "conversations"
    sum_root = out / "summaries"
    slugs: list[str] = []
    for n in range(conversations):
        slug, turns = conversation(rng, n, messages=messages)
        slugs.append(slug)
        folder = conv_root / slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "messages.jsonl").write_text(
            "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in turns), encoding="utf-8"
        )
        summaries = []
        for start in range(0, len(turns), 10):
            covers = list(range(start, min(start + 10, len(turns))))
            summaries.append(
                {
                    "level": 1,
                    "covers": covers,
                    "content": " ".join(sentence(rng, False) for _ in range(3)),
                    "topics": rng.sample(_TOPICS, 2),
                }
            )
        summaries.append(
            {"level": 2, "covers": list(range(len(turns))), "content": sentence(rng, False), "key": "overview"}
        )
        (sum_root / slug).mkdir(parents=True, exist_ok=True)
        (sum_root / slug / "summaries.jsonl").write_text(
            "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in summaries), encoding="utf-8"
        )
    return slugs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    slugs = write_tree(args.out, args.conversations, seed=args.seed)
    print(f"wrote {len(slugs)} conversations under {args.out}")


if __name__ == "__main__":
    main()
