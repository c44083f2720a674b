"""Rewrites the ```cpp blocks of docs/config.md and docs/modules.md from the regions marked
`// [docs] <name>` ... `// [docs] end` in the docs example tests, in order (dedented), so the
docs quote exactly what the tests compile. Run after editing an example:
    python3 tests/module/sync_doc_blocks.py
The tests' CodeBlocksAreThisFile cases fail when the two drift apart.
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAIRS = [
    ("docs/config.md", "tests/config/docs_example_test.cc"),
    ("docs/modules.md", "tests/module/docs_example_test.cc"),
]


def regions(source):
    out, cur = [], None
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == "// [docs] end":
            out.append(cur)
            cur = None
        elif stripped.startswith("// [docs] "):
            cur = []
        elif cur is not None:
            cur.append(line)
    blocks = []
    for lines in out:
        while lines and not lines[-1].strip():
            lines.pop()
        indent = min(len(l) - len(l.lstrip(" ")) for l in lines if l.strip())
        blocks.append("\n".join(l[indent:] for l in lines))
    return blocks


def main():
    for doc_rel, src_rel in PAIRS:
        doc_path = os.path.join(ROOT, doc_rel)
        with open(os.path.join(ROOT, src_rel)) as f:
            blocks = regions(f.read())
        with open(doc_path) as f:
            doc = f.read()
        found = len(re.findall(r"```cpp\n", doc))
        if found != len(blocks):
            raise SystemExit(f"{doc_rel}: {found} cpp blocks, {src_rel}: {len(blocks)} regions")
        it = iter(blocks)
        doc = re.sub(r"```cpp\n.*?```", lambda m: "```cpp\n" + next(it) + "\n```", doc, flags=re.S)
        with open(doc_path, "w") as f:
            f.write(doc)


if __name__ == "__main__":
    main()
