"""How often the `rules` judge agrees with GPT-4 on the CUT authors' released rounds.

    python scripts/rules_agreement.py [--data ../shared/data/cut_online]

Each row of iterK.json is one LLaMA2-chat-13b response with GPT-4's judgment (null: acceptable,
else a critique). The rules judge sees the same instruction, input and response, with
`truncated=False` (the release does not say which responses hit the token limit). Printed:
precision and recall of "unacceptable" against GPT-4 per round and overall, then per check
(which critique sentence fired), so a check that mostly disagrees with GPT-4 stands out.

Informational only: the rules judge is built to be conservative (high precision, low recall);
most of GPT-4's critiques are about correctness, which no rule can see.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from cut_loop.judging.base import JudgeItem
from cut_loop.judging.rules import RulesJudge

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cut_online"
# The first words of each check's critique sentence (rules.py) -> a short name.
CHECKS = {
    "The response is empty": "empty",
    "The response is cut off": "truncated",
    "The response refuses": "refusal",
    "The response only repeats": "echo",
    "The response repeats the sentence": "sentence loop",
    "The response falls into a loop": "phrase loop",
    "The instruction asks for a single word": "one word",
    "The instruction asks for": "list count / sentence count",
}


def check_names(findings: list[str]) -> list[str]:
    return [next(name for start, name in CHECKS.items() if f.startswith(start)) for f in findings]


def ratio(num: int, den: int) -> str:
    return f"{num / den:.3f} ({num}/{den})" if den else "n/a (0/0)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    judge = RulesJudge()
    total = Counter()
    per_check: dict[str, Counter] = {}
    examples: dict[str, str] = {}
    print(f"rules judge vs GPT-4 on {args.data} (positive class: unacceptable)")
    print(f"{'round':>5}  {'GPT-4 unacc.':>12}  {'rules unacc.':>12}  {'precision':>18}  recall")
    for k in range(1, 5):
        rows = json.loads((args.data / f"iter{k}.json").read_text(encoding="utf-8"))
        c = Counter()
        for row in rows:
            item = JudgeItem(str(row["id"]), row["instruction"], row["input"] or "", row["output"])
            found = judge.findings(item)
            gpt4 = row["judgment"] is not None
            c["gpt4"] += gpt4
            c["rules"] += bool(found)
            c["both"] += gpt4 and bool(found)
            for name in set(check_names(found)):
                per_check.setdefault(name, Counter())["fired"] += 1
                per_check[name]["agree"] += gpt4
                if not gpt4:
                    examples.setdefault(name, f"iter{k} id {row['id']}")
        total.update(c)
        print(
            f"{k:>5}  {c['gpt4']:>12}  {c['rules']:>12}  {ratio(c['both'], c['rules']):>18}  "
            f"{ratio(c['both'], c['gpt4'])}"
        )
    print(
        f"{'all':>5}  {total['gpt4']:>12}  {total['rules']:>12}  "
        f"{ratio(total['both'], total['rules']):>18}  {ratio(total['both'], total['gpt4'])}"
    )
    print("\nper check: how often GPT-4 also found the response unacceptable")
    for name, c in sorted(per_check.items(), key=lambda kv: -kv[1]["fired"]):
        first_disagreement = examples.get(name, "-")
        print(
            f"  {name:<28} fired {c['fired']:>3}  precision {ratio(c['agree'], c['fired'])}"
            f"  first disagreement: {first_disagreement}"
        )


if __name__ == "__main__":
    main()
