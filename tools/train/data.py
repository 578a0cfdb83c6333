#!/usr/bin/env python3
"""Training and evaluation data for Capsule's default models.

Two sources, both available offline:

* plain text from Debian packages (`fortunes`, `fortunes-min`, `debian-faq`), fetched with
  `apt-get download` and unpacked with `dpkg -x` (`fetch` sub-command);
* synthetic agent transcripts in ChatML that exercise memory: facts stated early (names, numbers,
  key -> value settings), distractor turns (pasted text, tool results), and later questions whose
  answer is one of those facts, including two-hop questions (a -> b, b -> c; ask about a).

Everything is deterministic given a seed. Pure Python (no third-party packages), so the generator
runs on a machine without torch; train.py imports it on the GPU machine.

Usage:
  python3 tools/train/data.py fetch                       # .cache/train-data/corpus/
  python3 tools/train/data.py sample --seed 1 --chars 3000 # print one training transcript
  python3 tools/train/data.py eval --out tools/train/eval.jsonl.gz [--tokenizer tokenizer.json]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DIR = os.path.join(REPO, ".cache", "train-data")

# Special tokens of the tokenizer, in id order (0, 1, 2).
EOT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [EOT, IM_START, IM_END]

# The seed of the shipped evaluation set. Training seeds are derived from --seed in train.py
# (1000 + ...); this one is never used for training data.
EVAL_SEED = 777_001
EVAL_DISTANCES = (1000, 2000, 4000, 8000)
EVAL_KINDS = ("recall", "two_hop")

# ---------------------------------------------------------------------------------------------
# Debian text

PACKAGES = ("fortunes", "fortunes-min", "debian-faq")

# Fortune files used as text. Left out: ascii-art (pictures, not prose) and the collections whose
# jokes are about ethnicity, gender, drugs or politics, which a default assistant should not echo.
FORTUNE_FILES = (
    "art", "computers", "cookie", "debian", "definitions", "disclaimer", "education", "food",
    "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie",
    "literature", "love", "magic", "medicine", "miscellaneous", "news", "paradoxum", "people",
    "perl", "pets", "platitudes", "pratchett", "riddles", "science", "songs-poems", "sports",
    "startrek", "tao", "translate-me", "wisdom", "work", "zippy",
)

LICENSES = {
    "fortunes": "BSD licence (University of California, 1991) for fortune-mod and its data files as stated in "
    "/usr/share/doc/fortunes/copyright; the cookies are quotations collected from many public sources",
    "fortunes-min": "same package source and copyright file as fortunes (a subset of its files)",
    "debian-faq": "Copyright (C) 1996-2003 Software in the Public Interest; permission to make and distribute "
    "verbatim and modified copies (notice in /usr/share/doc/debian-faq/copyright)",
}


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _clean(text: str) -> str:
    text = re.sub(r".\x08", "", text)  # old terminal overstrike ("_\bx" underline, "x\bx" bold)
    text = text.replace("\r", "").replace("\t", "    ")
    text = "".join(ch for ch in text if ch == "\n" or ch >= " ")
    return text.strip("\n")


def _faq_paragraphs(text: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.strip("\n").split("\n")]
        if not lines or not lines[0]:
            continue
        if re.match(r"^\d+(\.\d+)*\.\s", lines[0]) and len(lines) <= 3 and len(" ".join(lines)) < 120:
            continue  # section headings and table-of-contents lines
        joined = " ".join(lines)
        letters = sum(ch.isalpha() or ch == " " for ch in joined)
        if len(joined) < 60 or letters < 0.75 * len(joined):
            continue
        out.append(joined)
    return out


def fetch(data_dir: str = DEFAULT_DIR) -> dict:
    """Download the Debian packages, unpack them and write corpus/passages.jsonl + corpus/SOURCES.json."""
    debs = os.path.join(data_dir, "debs")
    root = os.path.join(data_dir, "root")
    corpus = os.path.join(data_dir, "corpus")
    for d in (debs, corpus):
        os.makedirs(d, exist_ok=True)
    if not all(any(f.startswith(p + "_") for f in os.listdir(debs)) for p in PACKAGES):
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    shutil.rmtree(root, ignore_errors=True)
    sources = []
    for name in sorted(os.listdir(debs)):
        if not name.endswith(".deb") or name.split("_")[0] not in PACKAGES:
            continue
        path = os.path.join(debs, name)
        subprocess.run(["dpkg", "-x", path, root], check=True)
        pkg = name.split("_")[0]
        version = subprocess.run(["dpkg-deb", "-f", path, "Version"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        sources.append({"package": pkg, "version": version, "deb": name,
                        "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
                        "license": LICENSES.get(pkg, "see the package copyright file")})
    passages: list[dict] = []
    fdir = os.path.join(root, "usr", "share", "games", "fortunes")
    for fname in FORTUNE_FILES:
        p = os.path.join(fdir, fname)
        if not os.path.isfile(p):
            continue
        for cookie in re.split(r"\n%\n", _decode(open(p, "rb").read()) + "\n"):
            cookie = _clean(cookie).strip()
            if cookie and cookie != "%" and len(cookie) <= 1500:
                passages.append({"source": "fortunes/" + fname, "text": cookie})
    faq = os.path.join(root, "usr", "share", "doc", "debian", "FAQ", "debian-faq.en.txt.gz")
    for para in _faq_paragraphs(_clean(_decode(gzip.open(faq).read()))):
        passages.append({"source": "debian-faq", "text": para})
    with open(os.path.join(corpus, "passages.jsonl"), "w") as f:
        for p in passages:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    summary = {"packages": sources, "passages": len(passages),
               "chars": sum(len(p["text"]) for p in passages),
               "by_source": {}}
    for p in passages:
        key = p["source"].split("/")[0]
        summary["by_source"][key] = summary["by_source"].get(key, 0) + 1
    json.dump(summary, open(os.path.join(corpus, "SOURCES.json"), "w"), indent=1)
    return summary


@dataclass
class Corpus:
    """Text passages split deterministically into a training part and a held-out part (1 in 20)."""

    train: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)

    @staticmethod
    def load(data_dir: str = DEFAULT_DIR) -> "Corpus":
        path = os.path.join(data_dir, "corpus", "passages.jsonl")
        if not os.path.exists(path):
            raise SystemExit(f"{path} missing: run `python3 tools/train/data.py fetch` first")
        c = Corpus()
        for line in open(path):
            text = json.loads(line)["text"]
            (c.held_out if zlib.crc32(text.encode()) % 20 == 0 else c.train).append(text)
        return c

    def pool(self, held_out: bool) -> list[str]:
        return self.held_out if held_out else self.train


# ---------------------------------------------------------------------------------------------
# Fact vocabulary

NAMES = """Aiko Alba Amara Anders Anika Arjun Astrid Aurelio Bastian Beatriz Bilal Bjorn Bruno Camila Carmen
Cedric Chiara Dalia Damian Dario Diego Dmitri Elif Elena Emeka Emil Enzo Esther Fatima Felix Freya Gaspard
Greta Hana Hassan Helga Hugo Ibrahim Ida Ines Ingrid Irene Isak Ivan Jana Jasper Javier Joana Jonas Juno Kai
Kamal Karin Kenji Lara Leila Lena Leon Liam Lina Lorenzo Luca Lucia Magnus Maia Malik Marek Marta Mateo
Maya Mei Milan Mira Nadia Naveen Nico Nina Noor Oda Olga Omar Oskar Paola Pavel Petra Priya Quentin Rafael
Rania Ravi Rosa Ruben Sami Sana Selma Sergei Silvia Soren Stella Tariq Teresa Tilde Tomas Ulla Uma Valeria
Viktor Wanda Yara Yusuf Zara Zoran""".split()
CITIES = """Aarhus Accra Adelaide Antwerp Athens Bergen Bilbao Bologna Bordeaux Bremen Brno Cairo Calgary Cork
Dakar Delft Dublin Dundee Faro Galway Geneva Ghent Gdansk Graz Hanoi Havana Helsinki Kyoto Lagos Leeds Lille
Lima Linz Lisbon Ljubljana Lyon Madrid Malmo Marseille Montreal Mumbai Munich Nairobi Nantes Naples Nice Oslo
Osaka Ottawa Oulu Porto Prague Quito Riga Rome Rotterdam Salzburg Santiago Seoul Seville Sofia Split Tallinn
Tampere Toledo Toronto Turin Turku Utrecht Valencia Verona Vienna Vilnius Warsaw Zagreb Zurich""".split()
COLOURS = "amber black blue bronze brown crimson cyan gold green grey indigo ivory lime magenta orange pink " \
    "purple red silver teal violet white yellow".split()
ADJECTIVES = "big small old new red blue green black white yellow round square heavy light wooden metal " \
    "glass paper silver golden narrow wide tall short".split()
OBJECTS = "door box lamp safe locker drawer gate chest cabinet window trunk suitcase crate shed garage " \
    "mailbox bike case vault cupboard".split()
ROOMS = "kitchen library attic basement garage hallway office studio workshop cellar lobby pantry " \
    "bedroom greenhouse".split()
THINGS = "umbrella kettle notebook scarf mug backpack helmet blanket clock vase jacket teapot lantern " \
    "guitar camera".split()
WORDS = """acorn anchor apple arrow aspen badger banjo basil beacon birch bison breeze brook cactus canyon
cedar cherry cinder clover cobalt comet copper coral cricket crystal daisy delta dune ember falcon fern fig
fjord flint forest garnet ginger glacier granite harbor hazel heron hickory island ivy jasmine juniper kayak
kiwi lagoon lantern lemon lilac lotus maple marble meadow meteor mint mosaic nectar nova oak olive onyx opal
orbit orchid otter panda pebble pepper pine plum poppy quartz quill raven reef river robin saffron sage
sapphire sierra spruce summit thistle thunder tiger topaz tulip tundra velvet violet walnut willow zephyr""".split()
SERVICES = "email bank wifi router laptop server database vpn calendar backup forum wiki printer phone " \
    "tablet cloud console gateway".split()
SETTINGS = """max_retries timeout_seconds batch_size cache_size port worker_count log_level_id buffer_kb
queue_depth pool_size retry_delay_ms page_size shard_count replica_count thread_count max_connections
window_size chunk_size flush_interval heartbeat_ms""".split()
PROJECTS = "Apollo Beacon Cascade Dynamo Ember Falcon Granite Horizon Icarus Juniper Kestrel Lumen " \
    "Meridian Nimbus Orion Polaris Quasar Rainier Sierra Tempest Umbra Vortex Willow Zenith".split()
ANIMALS = "cat dog parrot rabbit hamster turtle goldfish ferret tortoise canary".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


class Pools:
    """Draws entities without replacement within one transcript, so every key is unambiguous."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: dict[str, set] = {}

    def take(self, kind: str, make: Callable[[], str]) -> str:
        used = self.used.setdefault(kind, set())
        for _ in range(200):
            v = make()
            if v not in used:
                used.add(v)
                return v
        raise RuntimeError(f"pool {kind} exhausted")

    def name(self) -> str:
        return self.take("name", lambda: self.rng.choice(NAMES))

    def num(self, digits: int) -> str:
        lo = 10 ** (digits - 1)
        return self.take("num", lambda: str(self.rng.randrange(lo, lo * 10)))


@dataclass
class Fact:
    """One question-answer pair and the statements it needs (one for recall, two for two-hop)."""

    kind: str  # "recall" | "two_hop"
    statements: list[str]
    question: str
    answer: str


def single_fact(rng: random.Random, p: Pools) -> Fact:
    t = rng.randrange(9)
    if t == 0:
        obj = p.take("obj", lambda: f"{rng.choice(ADJECTIVES)} {rng.choice(OBJECTS)}")
        code = p.num(4)
        return Fact("recall", [f"The code of the {obj} is {code}."], f"What is the code of the {obj}?", code)
    if t == 1:
        n, c = p.name(), rng.choice(CITIES)
        return Fact("recall", [f"{n} lives in {c}."], f"Where does {n} live?", c)
    if t == 2:
        n, a = p.name(), str(rng.randrange(18, 90))
        return Fact("recall", [f"{n} is {a} years old."], f"How old is {n}?", a)
    if t == 3:
        thing = p.take("thing", lambda: f"{rng.choice(THINGS)} in the {rng.choice(ROOMS)}")
        col = rng.choice(COLOURS)
        return Fact("recall", [f"The {thing} is {col}."], f"What colour is the {thing}?", col)
    if t == 4:
        key, val = p.take("setting", lambda: rng.choice(SETTINGS)), p.num(rng.choice((2, 3, 4)))
        return Fact("recall", [f"Set {key} to {val}."], f"What is {key} set to?", val)
    if t == 5:
        svc = p.take("service", lambda: rng.choice(SERVICES))
        pw = f"{rng.choice(WORDS)}-{p.num(2)}"
        return Fact("recall", [f"The password for the {svc} is {pw}."], f"What is the password for the {svc}?", pw)
    if t == 6:
        n, pet = p.name(), p.take("word", lambda: rng.choice(WORDS).capitalize())
        animal = rng.choice(ANIMALS)
        return Fact("recall", [f"{n} has a {animal} called {pet}."], f"What is the name of {n}'s {animal}?", pet)
    if t == 7:
        n = p.name()
        when = f"{rng.choice(DAYS)} at {rng.randrange(7, 19)}:{rng.choice(('00', '15', '30', '45'))}"
        return Fact("recall", [f"The meeting with {n} is on {when}."], f"When is the meeting with {n}?", when)
    n, num = p.name(), p.num(rng.choice((5, 6)))
    return Fact("recall", [f"{n}'s ticket number is {num}."], f"What is {n}'s ticket number?", num)


def two_hop_fact(rng: random.Random, p: Pools) -> Fact:
    t = rng.randrange(5)
    if t == 0:
        n, room, code = p.name(), p.num(3), p.num(4)
        return Fact("two_hop", [f"{n} works in room {room}.", f"Room {room} has the door code {code}."],
                    f"What is the door code of the room where {n} works?", code)
    if t == 1:
        a, b, c = p.name(), p.name(), rng.choice(CITIES)
        return Fact("two_hop", [f"{a}'s manager is {b}.", f"{b} lives in {c}."],
                    f"Where does {a}'s manager live?", c)
    if t == 2:
        proj = p.take("project", lambda: rng.choice(PROJECTS))
        server = p.take("server", lambda: f"{rng.choice(WORDS)}-{rng.randrange(1, 10)}")
        c = rng.choice(CITIES)
        return Fact("two_hop", [f"Project {proj} runs on server {server}.", f"Server {server} is located in {c}."],
                    f"In which city is the server of project {proj}?", c)
    if t == 3:
        obj = p.take("obj", lambda: f"{rng.choice(ADJECTIVES)} {rng.choice(OBJECTS)}")
        box, room = p.num(2), rng.choice(ROOMS)
        return Fact("two_hop", [f"The key to the {obj} is in box {box}.", f"Box {box} is kept in the {room}."],
                    f"In which room is the key to the {obj}?", room)
    a, b = p.name(), p.name()
    pw = f"{rng.choice(WORDS)}-{p.num(2)}"
    return Fact("two_hop", [f"{a} shares a laptop with {b}.", f"The password of {b}'s laptop is {pw}."],
                f"What is the password of the laptop that {a} uses?", pw)


# ---------------------------------------------------------------------------------------------
# ChatML transcripts

SYSTEMS = (
    "You are Capsule, a helpful assistant. Keep track of the facts the user tells you.",
    "You are a helpful assistant with a good memory.",
    "You are an agent. Remember what you are told and answer questions briefly.",
    "You are a careful assistant. Answer with the exact value when asked about a fact.",
)
ACKS = ("Noted.", "Got it.", "OK, I will remember that.", "Understood.", "Saved.", "OK.")
FACT_LEADS = ("", "", "Remember this: ", "Note: ", "Please remember: ", "For later: ", "FYI: ")
READ_LEADS = ("Here is some text:\n", "Read this:\n", "Some background:\n", "Quote of the day:\n", "",
              "Please read the following.\n")
READ_ACKS = ("OK.", "Done.", "I have read it.", "Thanks.", "Interesting.", "Understood.")
QUESTION_LEADS = ("", "", "", "Quick question: ", "One more thing. ", "Tell me: ")
TOOL_PATHS = ("notes/quotes.txt", "docs/faq.txt", "README", "notes/today.md", "inbox/latest.txt",
              "docs/handbook.txt")
FORTUNE_ASKS = ("Tell me a fortune.", "Give me a quote.", "Say something wise.", "Tell me something funny.",
                "Any words of wisdom?")


def msg(role: str, content: str) -> str:
    """One ChatML message, exactly as the shipped chat template renders it."""
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def _passages(rng: random.Random, pool: list[str], max_chars: int) -> str:
    out, total = [], 0
    for _ in range(rng.choice((1, 1, 2, 3))):
        t = rng.choice(pool)
        if out and total + len(t) > max_chars:
            break
        out.append(t)
        total += len(t)
    return "\n\n".join(out)


def distractor_turn(rng: random.Random, pool: list[str], max_chars: int = 1200) -> list[str]:
    """A turn that carries text to remember nothing from: pasted text or a tool result."""
    text = _passages(rng, pool, max_chars)
    r = rng.random()
    if r < 0.55:
        return [msg("user", rng.choice(READ_LEADS) + text), msg("assistant", rng.choice(READ_ACKS))]
    if r < 0.85:
        call = json.dumps({"name": "read_file", "arguments": {"path": rng.choice(TOOL_PATHS)}})
        turns = [msg("assistant", f"<tool_call>\n{call}\n</tool_call>"), msg("tool", text)]
        if rng.random() < 0.5:
            turns.append(msg("assistant", rng.choice(READ_ACKS)))
        return turns
    return [msg("user", rng.choice(FORTUNE_ASKS)), msg("assistant", rng.choice(pool))]


def fact_turn(rng: random.Random, statements: list[str]) -> list[str]:
    return [msg("user", rng.choice(FACT_LEADS) + " ".join(statements)), msg("assistant", rng.choice(ACKS))]


def question_prefix(rng: random.Random, question: str) -> str:
    """The question turn up to the point where the answer starts."""
    return msg("user", rng.choice(QUESTION_LEADS) + question) + f"{IM_START}assistant\n"


@dataclass
class Sample:
    """A training text and the character spans [start, end) of the answers in it."""

    text: str
    answers: list[tuple[int, int]]


def training_transcript(rng: random.Random, corpus: Corpus, target_chars: int,
                        two_hop_rate: float = 0.3) -> Sample:
    """One ChatML transcript of about target_chars characters.

    Facts are stated throughout; questions about any earlier fact are interleaved with distractor
    turns, so fact-to-question distances spread from a few tokens to the whole transcript. Two-hop
    facts put their two statements in separate turns, often far apart.
    """
    pool = corpus.train
    pools = Pools(rng)
    parts: list[str] = []
    answers: list[tuple[int, int]] = []
    size = 0

    def add(chunks: list[str]):
        nonlocal size
        for c in chunks:
            parts.append(c)
            size += len(c)

    if rng.random() < 0.75:
        add([msg("system", rng.choice(SYSTEMS))])
    known: list[Fact] = []   # facts fully stated and not yet asked
    pending: list[tuple[Fact, int]] = []  # two-hop facts whose second statement is still to come
    asked = 0
    while size < target_chars:
        r = rng.random()
        if r < 0.25 or not known and not pending and r < 0.6:
            if rng.random() < two_hop_rate:
                f = two_hop_fact(rng, pools)
                add(fact_turn(rng, [f.statements[0]]))
                pending.append((f, 1))
            else:
                batch = [single_fact(rng, pools) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
                add(fact_turn(rng, [s for f in batch for s in f.statements]))
                known.extend(batch)
        elif r < 0.35 and pending:
            f, _ = pending.pop(rng.randrange(len(pending)))
            add(fact_turn(rng, [f.statements[1]]))
            known.append(f)
        elif r < 0.68 and known:
            f = known.pop(rng.randrange(len(known)))
            prefix = question_prefix(rng, f.question)
            add([prefix])
            answers.append((size, size + len(f.answer)))
            add([f.answer + IM_END + "\n"])
            asked += 1
            if rng.random() < 0.25:  # asking again later is fine: the fact is still true
                known.append(f)
        else:
            add(distractor_turn(rng, pool, max_chars=max(200, min(1000, target_chars // 6))))
    return Sample("".join(parts), answers)


def recall_transcript(rng: random.Random, corpus: Corpus, target_chars: int,
                      two_hop_rate: float = 0.3) -> Sample:
    """Facts first, a long stretch of distractors with a few more facts, then questions about them.

    This is the shape of the evaluation prompts. In `training_transcript` a question usually follows
    its fact within a few turns; here most fact-to-question distances are a large part of the whole
    transcript, which is what recall over thousands of tokens needs to be trained on.
    """
    pool = corpus.train
    pools = Pools(rng)
    parts: list[str] = []
    answers: list[tuple[int, int]] = []
    size = 0

    def add(chunks: list[str]):
        nonlocal size
        for c in chunks:
            parts.append(c)
            size += len(c)

    if rng.random() < 0.75:
        add([msg("system", rng.choice(SYSTEMS))])
    known: list[Fact] = []
    pending: list[Fact] = []
    for _ in range(rng.randint(2, 5)):
        if rng.random() < two_hop_rate:
            f = two_hop_fact(rng, pools)
            add(fact_turn(rng, [f.statements[0]]))
            pending.append(f)
        else:
            f = single_fact(rng, pools)
            add(fact_turn(rng, f.statements))
            known.append(f)
    questions_at = target_chars * rng.uniform(0.7, 0.85)
    while size < questions_at:
        r = rng.random()
        if r < 0.08 and pending:
            f = pending.pop(rng.randrange(len(pending)))
            add(fact_turn(rng, [f.statements[1]]))
            known.append(f)
        elif r < 0.14:
            f = single_fact(rng, pools)
            add(fact_turn(rng, f.statements))
            known.append(f)
        else:
            add(distractor_turn(rng, pool, max_chars=max(200, min(1500, target_chars // 5))))
    for f in pending:  # a second link must be stated before its question
        add(fact_turn(rng, [f.statements[1]]))
        known.append(f)
    rng.shuffle(known)
    for f in known:
        add([question_prefix(rng, f.question)])
        answers.append((size, size + len(f.answer)))
        add([f.answer + IM_END + "\n"])
        if rng.random() < 0.3:
            add(distractor_turn(rng, pool, max_chars=400))
    return Sample("".join(parts), answers)


def answer_weights(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], first: float,
                   later: float) -> list[float]:
    """Per-token loss weights: 1, or `first` for the first token overlapping an answer span and
    `later` for the answer's other tokens. Offsets are the tokens' (start, end) characters; spans and
    offsets are both in text order."""
    w = [1.0] * len(offsets)
    j = 0
    for s, e in spans:
        while j < len(offsets) and offsets[j][1] <= s:
            j += 1
        k = j
        while k < len(offsets) and offsets[k][0] < e:
            w[k] = first if k == j else later
            k += 1
    return w


def plain_text(rng: random.Random, corpus: Corpus, target_chars: int) -> Sample:
    """Passages separated by blank lines, documents separated by <|endoftext|>."""
    parts, size = [], 0
    while size < target_chars:
        t = rng.choice(corpus.train)
        sep = EOT if rng.random() < 0.3 else "\n\n"
        parts.append(t + sep)
        size += len(t) + len(sep)
    return Sample("".join(parts), [])


def training_sample(rng: random.Random, corpus: Corpus, target_chars: int, plain_rate: float = 0.2,
                    two_hop_rate: float = 0.3, long_rate: float = 0.0) -> Sample:
    """Plain text with probability plain_rate; otherwise a transcript, of the long-recall shape
    (`recall_transcript`) with probability long_rate."""
    r = rng.random()
    if r < plain_rate:
        return plain_text(rng, corpus, target_chars)
    if r < plain_rate + long_rate * (1 - plain_rate):
        return recall_transcript(rng, corpus, target_chars, two_hop_rate)
    return training_transcript(rng, corpus, target_chars, two_hop_rate)


# ---------------------------------------------------------------------------------------------
# Evaluation items

def estimate_tokens(text: str) -> int:
    """Fallback token count when no tokenizer is given (about 3.2 characters per token)."""
    return max(1, round(len(text) / 3.2))


def eval_item(rng: random.Random, corpus: Corpus, kind: str, distance: int,
              count_tokens: Callable[[str], int] = estimate_tokens) -> dict:
    """One evaluation prompt: the queried fact, then `distance` tokens of other turns, then the question.

    `distance` counts the tokens between the end of the turn that states the (first) fact and the start
    of the question turn. Other facts are stated before and in between as interference; for two-hop
    items the second statement sits at a random point of the first half of that stretch. Distractor text
    comes from the held-out passages (never used in training).
    """
    pool = corpus.held_out
    pools = Pools(rng)
    target = two_hop_fact(rng, pools) if kind == "two_hop" else single_fact(rng, pools)
    head = msg("system", rng.choice(SYSTEMS)) if rng.random() < 0.75 else ""
    if rng.random() < 0.5:  # an unrelated fact before the target one
        head += "".join(fact_turn(rng, single_fact(rng, pools).statements))
    head += "".join(fact_turn(rng, [target.statements[0]]))
    others = [single_fact(rng, pools) for _ in range(rng.randrange(1, 4))]
    hop_at = distance * rng.uniform(0.05, 0.5) if kind == "two_hop" else None
    fact_at = sorted(rng.uniform(0.0, 0.9) * distance for _ in others)
    middle: list[str] = []
    used = 0
    while used < distance:
        if hop_at is not None and used >= hop_at:
            turn = fact_turn(rng, [target.statements[1]])
            hop_at = None
        elif fact_at and used >= fact_at[0]:
            fact_at.pop(0)
            turn = fact_turn(rng, others.pop(0).statements)
        else:
            room = distance - used
            turn = distractor_turn(rng, pool, max_chars=max(150, min(1500, int(room * 3.5))))
        t = "".join(turn)
        middle.append(t)
        used += count_tokens(t)
    if hop_at is not None:  # distance shorter than planned: state the second hop now
        t = "".join(fact_turn(rng, [target.statements[1]]))
        middle.append(t)
        used += count_tokens(t)
    prompt = head + "".join(middle) + question_prefix(rng, target.question)
    return {"kind": kind, "distance": distance, "distance_tokens": used, "prompt": prompt,
            "answer": target.answer}


def eval_set(corpus: Corpus, seed: int = EVAL_SEED, per_cell: int = 20,
             count_tokens: Callable[[str], int] = estimate_tokens) -> list[dict]:
    """The evaluation set: per_cell items for every (kind, distance), in a fixed order."""
    items = []
    for kind in EVAL_KINDS:
        for distance in EVAL_DISTANCES:
            rng = random.Random(f"{seed}/{kind}/{distance}")
            for i in range(per_cell):
                item = eval_item(rng, corpus, kind, distance, count_tokens)
                items.append({"id": f"{kind}-{distance}-{i:02d}", **item})
    return items


def write_jsonl(items: Iterable[dict], path: str) -> None:
    opener = gzip.open if path.endswith(".gz") else open
    # mtime=0 keeps the gzip bytes identical across runs
    if path.endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            for it in items:
                f.write((json.dumps(it, ensure_ascii=False) + "\n").encode())
        return
    with opener(path, "w") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")


def read_jsonl(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def tokenizer_counter(path: str) -> Callable[[str], int]:
    from tokenizers import Tokenizer  # only on the machine that has it

    tok = Tokenizer.from_file(path)
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and unpack the Debian packages, write the corpus")
    f.add_argument("--dir", default=DEFAULT_DIR)
    s = sub.add_parser("sample", help="print one training sample")
    s.add_argument("--dir", default=DEFAULT_DIR)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--chars", type=int, default=3000)
    e = sub.add_parser("eval", help="write the evaluation set")
    e.add_argument("--dir", default=DEFAULT_DIR)
    e.add_argument("--seed", type=int, default=EVAL_SEED)
    e.add_argument("--per-cell", type=int, default=20)
    e.add_argument("--tokenizer", help="tokenizer.json used to measure distances (else estimated)")
    e.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "fetch":
        print(json.dumps(fetch(a.dir), indent=1))
    elif a.cmd == "sample":
        smp = training_transcript(random.Random(a.seed), Corpus.load(a.dir), a.chars)
        print(smp.text)
        print("answers:", [smp.text[s:e] for s, e in smp.answers], file=sys.stderr)
    elif a.cmd == "eval":
        counter = tokenizer_counter(a.tokenizer) if a.tokenizer else estimate_tokens
        items = eval_set(Corpus.load(a.dir), a.seed, a.per_cell, counter)
        write_jsonl(items, a.out)
        print(f"wrote {len(items)} items to {a.out}")


if __name__ == "__main__":
    main()
