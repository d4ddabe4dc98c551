"""Drives a running `bitnet serve` from Python with the standard library only:
    python3 client_test.py http://127.0.0.1:PORT
A chat completion, then the same request streamed (server-sent events): the streamed deltas
must add up to the same text and usage (the repeated prompt served from the cache). Exits non-zero
on the first failure.
"""
import json
import sys
import urllib.request


def post(url, body):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    return urllib.request.urlopen(request, timeout=30)


def stream_events(response):
    """The JSON payload of each `data:` line, up to `data: [DONE]`."""
    for raw in response:
        line = raw.decode().rstrip("\r\n")
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            return
        yield json.loads(line[len("data: "):])
    raise AssertionError("stream ended without data: [DONE]")


def main():
    base = sys.argv[1] + "/v1"
    with urllib.request.urlopen(base + "/models", timeout=30) as response:
        model = json.load(response)["data"][0]["id"]
    request = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "seed": 42,
        "temperature": 0.7,
    }
    with post(base + "/chat/completions", request) as response:
        whole = json.load(response)
    assert whole["object"] == "chat.completion", whole
    text = whole["choices"][0]["message"]["content"]
    assert whole["choices"][0]["finish_reason"] in ("stop", "length"), whole

    streamed, usage = "", None
    with post(base + "/chat/completions",
              dict(request, stream=True, stream_options={"include_usage": True})) as response:
        for event in stream_events(response):
            assert event["object"] == "chat.completion.chunk", event
            if event.get("usage"):
                usage = event["usage"]
            for choice in event["choices"]:
                streamed += choice["delta"].get("content") or ""
    assert streamed == text, (streamed, text)
    # The same prompt again: the server reuses its cache entries for all but the last token.
    repeated = dict(whole["usage"],
                    prompt_tokens_details={"cached_tokens": whole["usage"]["prompt_tokens"] - 1})
    assert usage == repeated, (usage, repeated)
    print("all checks passed")


if __name__ == "__main__":
    main()
