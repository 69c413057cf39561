"""An agent's view of teleo's MCP server, through the official MCP Python SDK (`mcp` on
PyPI): list the tools, remember a dozen texts in two namespaces, recall them by paraphrase,
get, update, list, forget, and the errors an agent must be able to read. Run by
tests/mcp.rs:

    mcp_client.py stdio TELEO DB [--read-only]
    mcp_client.py http URL ADMIN_KEY ALICE_KEY READ_KEY
    mcp_client.py timeout URL KEY     (the server's request timeout is 1 s, its embedder slow)

Prints one JSON line of latencies (milliseconds) and "all checks passed"; any failed check
raises, and the exit code is not 0.
"""
import asyncio
import json
import statistics
import sys
import time

import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared._httpx_utils import create_mcp_http_client

TOOLS = {"remember", "recall", "get", "update", "forget", "list", "stats"}

# Six memories of each namespace, each on its own topic, and for some a paraphrased question
# that shares almost no words with it.
ALICE = [
    "Alice's dog Rex loves peanut butter treats.",
    "Alice is allergic to shellfish and avoids shrimp.",
    "Alice runs a marathon every April in Boston.",
    "Alice prefers short answers in the morning.",
    "Alice's daughter starts university in Lisbon this autumn.",
    "Alice plays the cello in a community orchestra.",
]
BOB = [
    "Bob's laptop battery drains quickly when the GPU is busy.",
    "Bob deploys the billing service every Tuesday night.",
    "Bob is learning Japanese with flashcards.",
    "Bob's favourite pizza topping is anchovies.",
    "Bob moved from Chicago to Denver last spring.",
    "Bob keeps his passwords in a hardware key.",
]
PARAPHRASES = [
    ("alice", "What snack does her pet enjoy?", ALICE[0]),
    ("alice", "Which seafood must she not eat?", ALICE[1]),
    ("alice", "What musical instrument does she perform with?", ALICE[5]),
    ("bob", "Which weekday are releases of the payments system pushed?", BOB[1]),
    ("bob", "What language is he studying?", BOB[2]),
    ("bob", "Where did he relocate?", BOB[4]),
]


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def data(result):
    """The structured answer of a successful tool call."""
    check(not result.is_error, f"the tool failed: {text(result)}")
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(text(result))


def text(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def call(session, name, **arguments):
    return await session.call_tool(name, arguments)


async def expect_error(session, name, needle, **arguments):
    result = await call(session, name, **arguments)
    check(result.is_error, f"{name}({arguments}) should fail, got {text(result)}")
    check(needle in text(result), f"{name}: {needle!r} not in {text(result)!r}")
    return text(result)


def ms(samples):
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(round(0.99 * (len(samples) - 1))))]
    return {"p50": round(statistics.median(samples) * 1000, 2), "p99": round(p99 * 1000, 2), "n": len(samples)}


async def scenario(session, read_only=False):
    await session.initialize()
    listed = {t.name: t for t in (await session.list_tools()).tools}
    if read_only:
        check(set(listed) == TOOLS - {"remember", "update", "forget"}, f"read-only tools: {sorted(listed)}")
        # A tool that is not listed does not exist: the protocol's "tool not found".
        try:
            await call(session, "remember", text="x", namespace="alice")
            raise AssertionError("remember answered in read-only mode")
        except MCPError as e:
            check("tool not found" in str(e), f"read-only remember: {e}")
        stats = data(await call(session, "stats"))
        check(stats["read_only"] is True, stats)
        return {}
    check(set(listed) == TOOLS, f"tools: {sorted(listed)}")
    for tool in listed.values():
        check(len(tool.description or "") > 40, f"{tool.name} has a description an agent can act on")
        check(tool.input_schema.get("type") == "object", f"{tool.name} schema")
    check({"text", "namespace"} <= set(listed["remember"].input_schema["properties"]), "remember's fields")
    check({"query", "namespace", "k"} <= set(listed["recall"].input_schema["properties"]), "recall's fields")

    ids = {}
    remember_times = []
    for ns, texts in (("alice", ALICE), ("bob", BOB)):
        for i, t in enumerate(texts):
            started = time.perf_counter()
            got = data(await call(session, "remember", text=t, namespace=ns, memory_type="fact",
                                  tags=["seed"], metadata={"n": i, "source": "test"}))
            remember_times.append(time.perf_counter() - started)
            check(got["namespace"] == ns, got)
            ids[t] = got["id"]

    recall_times = []
    for ns, query, expected in PARAPHRASES:
        started = time.perf_counter()
        got = data(await call(session, "recall", query=query, namespace=ns, k=3))
        recall_times.append(time.perf_counter() - started)
        memories = got["memories"]
        check(memories and memories[0]["content"] == expected,
              f"{query!r}: expected {expected!r} first, got {[m['content'] for m in memories]}")
        check(all(m["namespace"] == ns for m in memories), "recall stays in its namespace")
        first = memories[0]
        check(first["scores"]["E1_Semantic"] > 0.2 and len(first["scores"]) == 13, first["scores"])
        check(first["rank"] == 1 and first["metadata"] == {"n": str(ALICE.index(expected) if ns == "alice" else BOB.index(expected)), "source": "test"}, first)

    # One embedder, and weighted fusion, with filters.
    got = data(await call(session, "recall", query="What language is he studying?", namespace="bob",
                          embedders=["E1"], k=1))
    check(got["memories"][0]["content"] == BOB[2] and set(got["memories"][0]["scores"]) == {"E1_Semantic"}, got)
    got = data(await call(session, "recall", query="dog treats", fusion="weighted", embedders=["E1", "E13"],
                          tags=["seed"], metadata={"source": "test"}, k=2))
    check(got["memories"][0]["content"] == ALICE[0], got)

    # get, update (text: embedded again; tags), list, forget.
    rex = ids[ALICE[0]]
    got = data(await call(session, "get", id=rex))
    check(got["content"] == ALICE[0] and got["tags"] == ["seed"], got)
    new_text = "Alice's dog Rex now only eats salmon kibble."
    got = data(await call(session, "update", id=rex, text=new_text, tags=["seed", "updated"]))
    check(got["content"] == new_text and got["tags"] == ["seed", "updated"], got)
    got = data(await call(session, "recall", query="What fish food does her pet get?", namespace="alice", k=1))
    check(got["memories"][0]["id"] == rex, got)
    got = data(await call(session, "recall", query="anything", tags=["updated"], k=5))
    check([m["id"] for m in got["memories"]] == [rex], got)

    seen, cursor = [], None
    while True:
        args = {"namespace": "alice", "limit": 4}
        if cursor:
            args["cursor"] = cursor
        page = data(await call(session, "list", **args))
        seen += [m["id"] for m in page["memories"]]
        cursor = page.get("next")
        if not cursor:
            break
    check(sorted(seen) == sorted(ids[t] for t in ALICE), f"list pages: {len(seen)}")

    got = data(await call(session, "forget", id=ids[BOB[5]]))
    check(got["forgotten"] == 1, got)
    await expect_error(session, "get", "no memory with id", id=ids[BOB[5]])
    await expect_error(session, "forget", "5 memories match", namespace="bob")
    check(data(await call(session, "stats"))["memories"] == 11, "nothing forgotten without confirm")
    got = data(await call(session, "forget", namespace="bob", confirm=True))
    check(got["forgotten"] == 5, got)
    got = data(await call(session, "recall", query="Where did he relocate?", namespace="bob", k=5))
    check(got["memories"] == [], got)

    # Errors an agent can read, and a server that keeps serving after them.
    await expect_error(session, "recall", "k must be in 1..=100", query="x", k=0)
    await expect_error(session, "remember", "text is empty", text="   ", namespace="alice")
    await expect_error(session, "get", "is not a memory id", id="not-a-uuid")
    await expect_error(session, "recall", "fusion must be", query="x", fusion="borda", embedders=["E1", "E2"])
    await expect_error(session, "recall", "unknown embedder", query="x", embedders=["E99"])
    await expect_error(session, "remember", "metadata field", text="x", metadata={"deep": {"a": 1}})
    await expect_error(session, "forget", "give an id, or a filter", confirm=True)
    await expect_error(session, "recall", "the limit is 16384", query="word " * 4000)
    await expect_error(session, "recall", "fusion must be", query="x", fusion="borda", embedders=["E1"])
    bad = await session.call_tool("remember", {"text": "x", "colour": "red"})
    check(bad.is_error, "an unknown argument is refused")
    stats = data(await call(session, "stats"))
    check(stats["memories"] == 6 and len(stats["slots"]) == 13, stats)
    check(any("stand-in" in (s["note"] or "") for s in stats["slots"]), "stats says what fills each slot")

    # Latency: more memories and more recalls, one at a time, as an agent makes them.
    for i in range(20):
        started = time.perf_counter()
        data(await call(session, "remember", text=f"Note {i}: the meeting about topic {i * 7} moved to room {i}.",
                        namespace="alice"))
        remember_times.append(time.perf_counter() - started)
    for i in range(30):
        started = time.perf_counter()
        data(await call(session, "recall", query=f"which room is the meeting about topic {i * 7}?",
                        namespace="alice", k=5))
        recall_times.append(time.perf_counter() - started)
    return {"remember_ms": ms(remember_times), "recall_ms": ms(recall_times)}


async def confined(url, alice_key, read_key, admin_key):
    """What keys may do over HTTP: alice's key sees and changes only namespace alice; a read
    key changes nothing; no key gets 401."""
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {admin_key}"}) as client:
        async with streamable_http_client(url, http_client=client) as (r, w):
            async with ClientSession(r, w) as admin:
                await admin.initialize()
                bob_id = data(await call(admin, "remember", text="Bob's secret: the vault code is 4711.",
                                         namespace="bob"))["id"]
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {alice_key}"}) as client:
        async with streamable_http_client(url, http_client=client) as (r, w):
            async with ClientSession(r, w) as alice:
                await alice.initialize()
                got = data(await call(alice, "recall", query="What is the vault code?", namespace="bob", k=5))
                check(got["memories"] == [], f"alice's key recalled bob's memory: {got}")
                got = data(await call(alice, "recall", query="What is the vault code?", k=10))
                check(all(m["namespace"] == "alice" for m in got["memories"]), got)
                absent = "01900000-0000-7000-8000-000000000000"
                foreign_msg = await expect_error(alice, "get", "no memory with id", id=bob_id)
                absent_msg = await expect_error(alice, "get", "no memory with id", id=absent)
                check(foreign_msg.replace(bob_id, "ID") == absent_msg.replace(absent, "ID"),
                      "a foreign id answers exactly as an absent one")
                await expect_error(alice, "forget", "", id=bob_id)
                await expect_error(alice, "update", "no memory with id", id=bob_id, text="changed")
                await expect_error(alice, "remember", "", text="sneaky", namespace="bob")
                got = data(await call(alice, "remember", text="Alice writes with her own key."))
                check(got["namespace"] == "alice", "a key confined to one namespace writes there")
                check(data(await call(alice, "forget", namespace="bob", confirm=True))["forgotten"] == 0,
                      "forget by filter stays in the key's namespaces")
                stats = data(await call(alice, "stats"))
                check(stats["namespaces"] == ["alice"], stats)
                check(all(s["source"] is None for s in stats["slots"]), "model paths are not shown to a confined key")
                got = data(await call(alice, "list", namespace="bob"))
                check(got["memories"] == [] and "next" not in got, got)
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {read_key}"}) as client:
        async with streamable_http_client(url, http_client=client) as (r, w):
            async with ClientSession(r, w) as reader:
                await reader.initialize()
                await expect_error(reader, "remember", "role", text="x", namespace="alice")
                data(await call(reader, "recall", query="vault", k=1))
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {admin_key}"}) as client:
        async with streamable_http_client(url, http_client=client) as (r, w):
            async with ClientSession(r, w) as admin:
                await admin.initialize()
                got = await call(admin, "get", id=bob_id)
                check(data(got)["content"].startswith("Bob's secret"), "bob's memory is untouched")
    # No key: the server answers 401 before MCP is reached.
    async with httpx2.AsyncClient() as raw:
        response = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                  headers={"Accept": "application/json, text/event-stream"})
        check(response.status_code == 401, f"no key: {response.status_code}")


async def main():
    mode = sys.argv[1]
    if mode == "stdio":
        teleo, db = sys.argv[2], sys.argv[3]
        read_only = "--read-only" in sys.argv[4:]
        args = ["--db", db, "mcp"] + (["--read-only"] if read_only else [])
        params = StdioServerParameters(command=teleo, args=args)
        async with stdio_client(params) as (r, w):
            async with ClientSession(r, w) as session:
                figures = await scenario(session, read_only)
    elif mode == "timeout":
        url, key = sys.argv[2:4]
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}) as client:
            async with streamable_http_client(url, http_client=client) as (r, w):
                async with ClientSession(r, w) as session:
                    await session.initialize()
                    started = time.perf_counter()
                    try:
                        result = await call(session, "remember", text="slow", namespace="x")
                        failed = result.is_error
                        why = text(result)
                    except Exception as e:  # the SDK raises on an HTTP 503
                        failed, why = True, repr(e)
                    elapsed = time.perf_counter() - started
                    check(failed, "a call over the request timeout fails")
                    check(elapsed < 2.5, f"the call was cut at the server's 1 s timeout, not after {elapsed:.2f} s: {why}")
                    figures = {"timed_out_after_s": round(elapsed, 2), "why": why[:200]}
    else:
        url, admin_key, alice_key, read_key = sys.argv[2:6]
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {admin_key}"}) as client:
            async with streamable_http_client(url, http_client=client) as (r, w):
                async with ClientSession(r, w) as session:
                    figures = await scenario(session)
        await confined(url, alice_key, read_key, admin_key)
    print(json.dumps(figures))
    print("all checks passed")


asyncio.run(main())
