#!/usr/bin/env python3
"""Checks of the data generator: python3 tools/train/data_test.py (no corpus download needed)."""
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402

CORPUS = data.Corpus(
    train=[f"Training passage number {i}. " + "Some words to read and forget. " * (1 + i % 7) for i in range(200)],
    held_out=[f"Held-out passage {i}. " + "Other words, also to forget. " * (1 + i % 5) for i in range(40)],
)


class TranscriptTest(unittest.TestCase):
    def test_same_seed_gives_the_same_transcript(self):
        a = data.training_transcript(random.Random(7), CORPUS, 4000)
        b = data.training_transcript(random.Random(7), CORPUS, 4000)
        self.assertEqual(a, b)
        self.assertNotEqual(a.text, data.training_transcript(random.Random(8), CORPUS, 4000).text)

    def test_answer_spans_are_assistant_replies_to_earlier_facts(self):
        for seed in range(30):
            s = data.training_transcript(random.Random(seed), CORPUS, 6000)
            for start, end in s.answers:
                self.assertTrue(s.text[:start].endswith(data.IM_START + "assistant\n"))
                self.assertTrue(s.text[end:].startswith(data.IM_END))
                answer = s.text[start:end]
                # the value was stated before the question that asks for it
                question_at = s.text.rfind(data.IM_START + "user\n", 0, start)
                self.assertIn(answer, s.text[:question_at], f"seed {seed}: {answer!r} never stated")

    def test_long_recall_transcripts_ask_late_about_earlier_facts(self):
        for seed in range(30):
            s = data.recall_transcript(random.Random(seed), CORPUS, 8000)
            self.assertGreaterEqual(len(s.answers), 2)
            for start, end in s.answers:
                self.assertTrue(s.text[:start].endswith(data.IM_START + "assistant\n"))
                self.assertTrue(s.text[end:].startswith(data.IM_END))
                question_at = s.text.rfind(data.IM_START + "user\n", 0, start)
                self.assertIn(s.text[start:end], s.text[:question_at], f"seed {seed}")
            # questions come after the long stretch: the first one past 60 % of the text
            self.assertGreater(s.answers[0][0], 0.6 * 8000)

    def test_sample_mixture_follows_its_rates(self):
        kinds = {"plain": 0, "long": 0, "short": 0}
        for seed in range(300):
            smp = data.training_sample(random.Random(seed), CORPUS, 3000, plain_rate=0.2, long_rate=0.5)
            if not smp.answers and data.IM_START not in smp.text:
                kinds["plain"] += 1
            elif smp.answers and smp.answers[0][0] > 0.6 * 3000:
                kinds["long"] += 1
            else:
                kinds["short"] += 1
        self.assertTrue(40 <= kinds["plain"] <= 80, kinds)
        self.assertTrue(90 <= kinds["long"] <= 150, kinds)

    def test_answer_weights_mark_first_and_later_answer_tokens(self):
        # "ab|cd|ef|gh" with answers "cdef" (tokens 1, 2) and "h" (inside token 3)
        offs = [(0, 2), (2, 4), (4, 6), (6, 8)]
        self.assertEqual(data.answer_weights(offs, [(2, 6), (7, 8)], 5.0, 9.0), [1.0, 5.0, 9.0, 5.0])
        self.assertEqual(data.answer_weights(offs, [], 5.0, 9.0), [1.0] * 4)
        self.assertEqual(data.answer_weights(offs, [(0, 8)], 2.0, 3.0), [2.0, 3.0, 3.0, 3.0])

    def test_transcript_reaches_the_requested_size(self):
        s = data.training_transcript(random.Random(3), CORPUS, 5000)
        self.assertGreaterEqual(len(s.text), 5000)
        self.assertTrue(s.text.endswith(data.IM_END + "\n"))


class EvalTest(unittest.TestCase):
    def test_items_end_where_the_answer_begins_and_keep_their_distance(self):
        for kind in data.EVAL_KINDS:
            for distance in (500, 1000):
                it = data.eval_item(random.Random(f"{kind}{distance}"), CORPUS, kind, distance)
                self.assertTrue(it["prompt"].endswith(data.IM_START + "assistant\n"))
                self.assertGreaterEqual(it["distance_tokens"], distance)
                self.assertLess(it["distance_tokens"], distance + 600)
                self.assertNotIn(it["answer"] + data.IM_END, it["prompt"])

    def test_two_hop_items_state_both_links_before_the_question(self):
        it = data.eval_item(random.Random(1), CORPUS, "two_hop", 1000)
        question_at = it["prompt"].rfind(data.IM_START + "user\n")
        self.assertIn(it["answer"], it["prompt"][:question_at])

    def test_eval_set_is_deterministic_and_uses_held_out_text_only(self):
        a = data.eval_set(CORPUS, per_cell=2)
        self.assertEqual(a, data.eval_set(CORPUS, per_cell=2))
        self.assertEqual(len(a), 2 * len(data.EVAL_KINDS) * len(data.EVAL_DISTANCES))
        self.assertTrue(all("Training passage" not in it["prompt"] for it in a))
        self.assertEqual({k for it in a for k in it},
                         {"id", "kind", "distance", "distance_tokens", "prompt", "answer"})


if __name__ == "__main__":
    unittest.main()
