#!/usr/bin/env python3
"""Builds the token-estimation test corpora in this directory (outputs are committed).

Every input belongs to this project; no text or code of other projects is used. Deterministic
(fixed seeds, frozen inputs), so running it again rewrites the same bytes.

  english.txt  the project's own English prose, frozen in src/:
                 docs_design.txt      the design brief shared by the project's engineers (DESIGN.md);
                 docs_readme.txt      README.md;
                 english_extra.txt    an operator's guide to rate limiting LLM traffic, written
                                      for this corpus;
                 docs_mock_provider.txt  tests/mock-provider/README.md;
                 docs_estimation.txt  wasm-filter/ESTIMATION.md;
                 docs_rustdoc.txt     the `//!` and `///` doc comments of the repository's Rust
                                      sources (paragraphs of six words or more, first 32 KiB);
               in that order, cut at a paragraph boundary at 64 KiB. The docs_*.txt files are a
               snapshot (markdown code blocks and tables dropped, heading marks removed) taken by
               `make_corpora.py snapshot`; the corpus does not follow later edits of the docs
               unless someone runs that on purpose and re-checks the numbers in ESTIMATION.md.
  code.txt     source of this repository at commit CODE_COMMIT (read with `git show`, so later
               edits do not change the corpus): the Rust files in CODE_RUST, from
               ratelimit-service, tests/mock-provider and wasm-filter/src (cut at 40 KiB), then
               the end-to-end tests in CODE_PYTHON, from tests/e2e (cut at 24 KiB).
  json.txt     synthetic JSON (orders, issues, tool-call transcripts), pretty and compact.
  cjk.txt      Chinese, Japanese and Korean sections; sentences of src/cjk_*.txt (written for
               this project) shuffled, so windows are not periodic.
  mixed.txt    a long RAG-style chat prompt: English instructions, code fences, JSON, service
               logs, CJK paragraphs, German/French/Spanish/Russian/Greek/Polish paragraphs
               (src/european.txt, written for this project), markdown tables and emoji, in chunks of random size.

Usage: `python3 make_corpora.py` (build the corpora from the frozen inputs);
`python3 make_corpora.py snapshot` (re-extract src/docs_*.txt from the working tree and
$DESIGN_MD, default /work/shared/DESIGN.md; then rebuild and update ESTIMATION.md's numbers).
"""
import json
import os
import random
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DESIGN_MD = os.environ.get("DESIGN_MD", "/work/shared/DESIGN.md")
KIB = 1024

# The repository state code.txt is cut from.
CODE_COMMIT = "e6888bdd66073eb4179c22e8d43f019276534685"
CODE_RUST = ["ratelimit-service/src/window.rs", "tests/mock-provider/src/tokens.rs",
             "wasm-filter/src/translate/sse.rs", "ratelimit-service/src/keys.rs",
             "wasm-filter/src/health.rs", "tests/mock-provider/src/faults.rs",
             "ratelimit-service/src/store/memory.rs"]
CODE_PYTHON = ["tests/e2e/test_limits.py", "tests/e2e/test_reload.py",
               "tests/e2e/test_redis.py", "tests/e2e/test_http.py"]

# (snapshot file in src/, markdown source in the repository or None for DESIGN_MD).
DOCS = [("docs_design.txt", None), ("docs_readme.txt", "README.md"),
        ("docs_mock_provider.txt", "tests/mock-provider/README.md"),
        ("docs_estimation.txt", "wasm-filter/ESTIMATION.md")]
RUSTDOC = "docs_rustdoc.txt"
# Order of the rustdoc snapshot: crate by crate, files sorted within each.
RUSTDOC_ROOTS = ["wasm-filter/src/", "ratelimit-service/src/", "tests/mock-provider/src/",
                 "wasm-filter/", "ratelimit-service/", "bench/", "proto/"]
ENGLISH_ORDER = ["docs_design.txt", "docs_readme.txt", "english_extra.txt",
                 "docs_mock_provider.txt", "docs_estimation.txt", RUSTDOC]


def cut(text, limit, sep="\n\n"):
    """Longest prefix of `text` not over `limit` bytes that ends at `sep`."""
    data = text.encode()
    if len(data) <= limit:
        return text
    prefix = data[:limit].decode(errors="ignore")
    i = prefix.rfind(sep)
    return prefix[: i + len(sep)] if i > 0 else prefix


def write(name, text):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{name}: {len(text.encode())} bytes", file=sys.stderr)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---- snapshot of the project's prose (run on purpose only) ----

def md_prose(text):
    """Markdown without fenced code blocks and tables; headings become plain paragraphs."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence or line.lstrip().startswith("|"):
            continue
        m = re.match(r"#+\s+(.*)", line)
        if m:
            out += ["", m.group(1), ""]
            continue
        out.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def doc_comment_paragraphs(text):
    """Paragraphs of the `//!` / `///` comments of a Rust file (at least six words each)."""
    blocks, cur = [], []
    for line in text.splitlines():
        m = re.match(r"\s*//[/!](?: (.*)|$)", line)
        if m:
            cur.append(m.group(1) or "")
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return [p for b in blocks for p in md_prose("\n".join(b)).strip().split("\n\n")
            if len(p.split()) >= 6]


def snapshot():
    for name, rel in DOCS:
        path = DESIGN_MD if rel is None else os.path.join(REPO, rel)
        write(os.path.join("src", name), md_prose(read(path)))
    files = subprocess.run(["git", "-C", REPO, "ls-files", "*.rs"], check=True,
                           capture_output=True, text=True).stdout.split()
    rank = lambda f: (next(i for i, r in enumerate(RUSTDOC_ROOTS + [""]) if f.startswith(r)), f)
    paras = [p for f in sorted(files, key=rank)
             for p in doc_comment_paragraphs(read(os.path.join(REPO, f)))]
    write(os.path.join("src", RUSTDOC), cut("\n\n".join(paras) + "\n", 32 * KIB))


# ---- corpora ----

def english():
    parts = [read(os.path.join(HERE, "src", name)).strip() for name in ENGLISH_ORDER]
    return cut("\n\n".join(parts) + "\n", 64 * KIB)


def at_commit(rel):
    return subprocess.run(["git", "-C", REPO, "show", f"{CODE_COMMIT}:{rel}"], check=True,
                          capture_output=True, text=True).stdout


def code():
    rust = cut("".join(at_commit(f) + "\n" for f in CODE_RUST), 40 * KIB, "\n}\n")
    py = cut("".join(at_commit(f) + "\n" for f in CODE_PYTHON), 24 * KIB, "\n\n")
    return rust + "\n" + py


WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
PRODUCTS = ["USB-C cable 2m", "Mechanical keyboard (ISO, brown switches)", "27\" 4K monitor",
            "Noise-cancelling headphones", "Ergonomic mouse", "Laptop stand, aluminium",
            "Webcam 1080p", "Thunderbolt dock", "Desk lamp with USB charging", "Office chair"]
CITIES = ["Berlin", "São Paulo", "Toronto", "Lyon", "Osaka", "Nairobi", "Melbourne", "Kraków",
          "Austin", "Reykjavík"]
ISSUE_TITLES = ["Crash when config file is empty", "429 responses lack retry-after",
                "Streaming response cut off after 30s", "Support Redis Cluster failover",
                "Metrics label cardinality explodes with per-user tenants",
                "Typo in README quick start", "Token estimate too high for JSON prompts",
                "Envoy 1.40: filter fails to load with V8", "Add budget limits per tenant"]
SENTENCES = ["Steps to reproduce are below.", "This started after upgrading to the latest release.",
             "I attached the relevant log lines.", "Expected a 200 but got a 503 from the gateway.",
             "Happy to send a PR if the approach sounds right.", "Works fine with the memory store.",
             "The same request succeeds when sent directly to the provider.",
             "We run three replicas behind one Redis instance."]


def rid(rng, n=24):
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def order(rng, i):
    items = [{"sku": f"SKU-{rng.randint(10000, 99999)}", "name": rng.choice(PRODUCTS),
              "qty": rng.randint(1, 5), "unit_price": round(rng.uniform(5, 900), 2),
              "currency": rng.choice(["EUR", "USD", "GBP", "JPY"])}
             for _ in range(rng.randint(1, 4))]
    return {"id": f"ord_{rid(rng, 16)}", "number": 100000 + i,
            "created_at": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                          f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
            "customer": {"id": rng.randint(1, 10 ** 6), "email": f"{rng.choice(WORDS)}.{rng.choice(WORDS)}@example.com",
                         "city": rng.choice(CITIES), "vip": rng.random() < 0.1},
            "items": items, "total": round(sum(x["qty"] * x["unit_price"] for x in items), 2),
            "status": rng.choice(["paid", "shipped", "refunded", "pending"]),
            "tags": rng.sample(WORDS, rng.randint(0, 3)), "notes": None if rng.random() < 0.7 else rng.choice(SENTENCES)}


def issue(rng, i):
    return {"number": 1000 + i, "title": rng.choice(ISSUE_TITLES), "state": rng.choice(["open", "closed"]),
            "user": {"login": f"{rng.choice(WORDS)}{rng.randint(1, 999)}", "id": rng.randint(10 ** 5, 10 ** 8)},
            "labels": [{"name": n, "color": rid(rng, 6)} for n in rng.sample(["bug", "enhancement", "docs", "good first issue", "wontfix"], rng.randint(0, 2))],
            "comments": rng.randint(0, 40), "body": " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 5))),
            "reactions": {"+1": rng.randint(0, 20), "-1": rng.randint(0, 3), "heart": rng.randint(0, 5)},
            "url": f"https://git.example.com/acme/gateway/issues/{1000 + i}"}


def tool_transcript(rng):
    return {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a logistics assistant. Use the tools."},
        {"role": "user", "content": f"Where is order {100000 + rng.randint(0, 999)} and can you refund item 2?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{rid(rng, 20)}", "type": "function",
            "function": {"name": "get_order", "arguments": json.dumps({"order_id": f"ord_{rid(rng, 16)}", "include": ["items", "shipments"]})}}]},
        {"role": "tool", "tool_call_id": f"call_{rid(rng, 20)}", "content": json.dumps(order(rng, rng.randint(0, 999)))}],
        "tools": [{"type": "function", "function": {"name": "get_order", "description": "Fetch an order by id",
                   "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}, "include": {"type": "array", "items": {"type": "string"}}}, "required": ["order_id"]}}}],
        "temperature": round(rng.uniform(0, 1), 2), "max_tokens": rng.choice([256, 512, 1024])}


def json_corpus():
    rng = random.Random(7)
    out = []
    out.append(json.dumps({"orders": [order(rng, i) for i in range(40)]}, indent=2, ensure_ascii=False))
    out.append(json.dumps([issue(rng, i) for i in range(30)], ensure_ascii=False))
    out.append(json.dumps([tool_transcript(rng) for _ in range(8)], indent=1))
    out.append(json.dumps({"orders": [order(rng, i) for i in range(40, 80)]}, ensure_ascii=False))
    return cut("\n".join(out), 64 * KIB, "\n")


def sentences(text):
    return [s for s in re.findall(r"[^。！？.!?\n]+[。！？.!?」”\"]*", text) if s.strip()]


def cjk_corpus():
    rng = random.Random(11)
    out = []
    for lang, budget in [("zh", 28 * KIB), ("ja", 14 * KIB), ("ko", 7 * KIB)]:
        with open(os.path.join(HERE, "src", f"cjk_{lang}.txt"), encoding="utf-8") as f:
            sents = sentences(f.read())
        section, size = [], 0
        while size < budget:
            para = "".join(rng.choice(sents).strip() for _ in range(rng.randint(2, 6)))
            section.append(para)
            size += len(para.encode()) + 2
        out.append("\n\n".join(section))
    return "\n\n".join(out) + "\n"


def logs(rng, n):
    lines = []
    for i in range(n):
        lvl = rng.choices(["INFO", "WARN", "ERROR", "DEBUG"], [70, 15, 5, 10])[0]
        lines.append(
            f"2025-03-14T09:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z {lvl:5} "
            f"ratelimit_service::service: decision tenant={rng.choice(WORDS)} model={rng.choice(['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4'])} "
            f"code={rng.choice(['OK', 'OK', 'OK', 'OVER_LIMIT'])} hits={rng.randint(1, 9000)} remaining={rng.randint(0, 10 ** 6)} "
            f"latency_us={rng.randint(80, 5000)} request_id={rid(rng, 32)}")
    return "\n".join(lines)


def mixed_corpus(eng, src, js, cjk):
    rng = random.Random(13)
    with open(os.path.join(HERE, "src", "european.txt"), encoding="utf-8") as f:
        euro = [p for p in f.read().split("\n\n") if p.strip()]
    emoji_chat = ["User: this is great 🎉🎉 thanks!", "User: still failing 😞 see logs below 👇",
                  "Assistant: ✅ fixed in v1.2 — please retry.", "User: 👍👍 works now 🚀",
                  "User: can you explain the 429s? 🤔", "Assistant: ⚠️ your tier allows 10k TPM."]
    out = ["You are a senior SRE assistant. Answer using only the context documents below. "
           "Cite the document number for every claim. If the answer is not in the context, say so.\n"]
    size, doc = 0, 1
    while size < 64 * KIB:
        kind = rng.choice(["eng", "code", "json", "logs", "cjk", "table", "chat", "euro"])
        n = rng.randint(1 * KIB, 6 * KIB)
        if kind == "eng":
            s = rng.randrange(0, len(eng) - n); body = eng[s:s + n]
        elif kind == "code":
            s = rng.randrange(0, len(src) - n); body = "```\n" + src[s:s + n] + "\n```"
        elif kind == "json":
            s = rng.randrange(0, len(js) - n); body = "```json\n" + js[s:s + n] + "\n```"
        elif kind == "logs":
            body = logs(rng, n // 220)
        elif kind == "cjk":
            s = rng.randrange(0, len(cjk) - n // 3); body = cjk[s:s + n // 3]
        elif kind == "table":
            rows = ["| deployment | region | p50 ms | p99 ms | errors |", "| --- | --- | ---: | ---: | ---: |"]
            rows += [f"| {rng.choice(WORDS)}-{rng.randint(1, 9)} | {rng.choice(['eu-west-1', 'us-east-2', 'ap-northeast-1'])} | "
                     f"{rng.randint(80, 900)} | {rng.randint(900, 9000)} | {rng.randint(0, 500)} |" for _ in range(n // 70)]
            body = "\n".join(rows)
        elif kind == "euro":
            body = "\n\n".join(rng.sample(euro, min(len(euro), max(1, n // 600))))
        else:
            body = "\n".join(rng.choice(emoji_chat) for _ in range(n // 40))
        chunk = f"\n### Document {doc} ({kind})\n\n{body}\n"
        out.append(chunk)
        size += len(chunk.encode())
        doc += 1
    out.append("\nQuestion: Which deployments had the most errors, and why were requests rate limited?\n")
    return "".join(out)


def main():
    if sys.argv[1:] == ["snapshot"]:
        snapshot()
    elif sys.argv[1:]:
        sys.exit(__doc__)
    eng = english(); write("english.txt", eng)
    src = code(); write("code.txt", src)
    js = json_corpus(); write("json.txt", js)
    cjk = cjk_corpus(); write("cjk.txt", cjk)
    write("mixed.txt", mixed_corpus(eng, src, js, cjk))


if __name__ == "__main__":
    main()
