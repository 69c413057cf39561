"""teleo serve from Python with httpx: the client a Python program would use.

Run by the Rust test `python_httpx_client_talks_to_the_server` (tests/serve.rs) against a
running server with the small test schema:
    python server_client.py URL ADMIN_KEY CONFINED_KEY
where CONFINED_KEY is a write key confined to namespace "mine".
"""

import base64
import struct
import sys

import httpx

DENSE = {1: 16, 2: 8, 3: 8, 4: 8, 5: 12, 7: 8, 8: 8, 10: 8, 11: 8}


def b64_floats(values):
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def array(n, namespace):
    emb = {}
    for slot, dims in DENSE.items():
        emb[f"E{slot}"] = {"dense": b64_floats([((n * 31 + slot * 7 + i) % 17) / 17.0 + 0.05 for i in range(dims)])}
    for slot in (6, 13):
        emb[f"E{slot}"] = {"sparse": {"indices": [n % 64, (n + 5) % 64 if (n + 5) % 64 > n % 64 else 63], "values": [1.0, 0.5]}}
    emb["E12"] = {"tokens": {"dims": 4, "data": [0.1 * (n % 7), 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}}
    emb["E9"] = {"binary": base64.b64encode(bytes([n % 256] * 8 + [n % 64])).decode()}
    return {
        "id": f"00000000-0000-4000-9000-{n:012x}",
        "metadata": {"namespace": namespace, "tags": ["py"]},
        "content": f"python memory {n}",
        "embeddings": emb,
    }


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)


def main():
    url, admin, confined = sys.argv[1], sys.argv[2], sys.argv[3]
    with httpx.Client(base_url=url, timeout=30.0) as c:
        auth = {"Authorization": f"Bearer {admin}"}
        mine = {"Authorization": f"Bearer {confined}"}
        check(c.get("/healthz").status_code == 200, "healthz")
        check(c.post("/v1/arrays/count", json={}).status_code == 401, "no key is refused")

        batch = [array(n, "mine" if n < 6 else "theirs") for n in range(1, 11)]
        r = c.post("/v1/arrays/batch", json={"arrays": batch}, headers=auth)
        check(r.status_code == 200 and r.json()["count"] == 10, f"batch put: {r.text}")

        r = c.get(f"/v1/arrays/{batch[0]['id']}", params={"slots": "E1", "encoding": "base64"}, headers=auth)
        check(r.status_code == 200, f"get: {r.text}")
        check(r.json()["embeddings"]["E1"]["dense"] == batch[0]["embeddings"]["E1"]["dense"], "base64 round trip is exact")
        check(r.headers.get("x-request-id"), "a request id in every response")

        q = batch[2]["embeddings"]
        r = c.post("/v1/search", json={"embedder": "E1", "query": q["E1"], "limit": 3}, headers=auth)
        check(r.status_code == 200 and r.json()["hits"][0]["id"] == batch[2]["id"], f"search: {r.text}")
        r = c.post("/v1/search/fused", json={"query": q, "comparison": {"type": "rrf"}, "limit": 5}, headers=auth)
        check(r.status_code == 200 and len(r.json()["hits"]) == 5, f"fused: {r.text}")

        # The confined key sees its namespace only, and a foreign id is simply not there.
        r = c.post("/v1/arrays/count", json={}, headers=mine)
        check(r.json()["count"] == 5, f"confined count: {r.text}")
        r = c.get(f"/v1/arrays/{batch[8]['id']}", headers=mine)
        check(r.status_code == 404 and r.json()["error"]["code"] == "not_found", f"foreign id: {r.text}")
        r = c.post("/v1/arrays", json=array(50, "theirs"), headers=mine)
        check(r.status_code == 422, f"confined put elsewhere: {r.text}")

        # Errors are JSON with a stable code and the slot concerned.
        bad = array(60, "mine")
        bad["embeddings"]["E1"] = {"dense": [1.0]}
        r = c.post("/v1/arrays", json=bad, headers=auth)
        err = r.json()["error"]
        check(r.status_code == 422 and err["code"] == "validation" and err["embedder"] == "E1", f"validation: {r.text}")
        r = c.post("/v1/arrays/delete_by_filter", json={"filter": {"tags": ["py"], "namespace": "theirs"}}, headers=auth)
        check(r.json()["count"] == 5, f"delete by filter: {r.text}")
        check(c.post("/v1/arrays/count", json={}, headers=auth).json()["count"] == 5, "five left")
    print("all checks passed")


if __name__ == "__main__":
    main()
