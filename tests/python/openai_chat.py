"""The official OpenAI Python SDK against Nagare's /v1/chat/completions and /v1/models.

Usage: openai_chat.py BASE_URL TOKEN. Prints one JSON object of what the SDK saw, for
tests/tests/end_to_end/openai_dialect.rs to check.
"""
import json
import sys

import openai

base, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
out = {}

messages = [
    {"role": "developer", "content": "Answer briefly."},
    {"role": "user", "content": "What is a stream?"},
    {"role": "assistant", "content": [{"type": "text", "text": "Water that flows."}]},
    {"role": "user", "content": [{"type": "text", "text": "And in computing?"}]},
]
r = client.chat.completions.create(model="fake", messages=messages, max_completion_tokens=64, user="u-1")
out["unary"] = {
    "id": r.id,
    "object": r.object,
    "model": r.model,
    "content": r.choices[0].message.content,
    "role": r.choices[0].message.role,
    "finish_reason": r.choices[0].finish_reason,
    "usage": r.usage.model_dump(),
}

chunks, text, finish, usage = 0, "", None, None
first_role = None
stream = client.chat.completions.create(
    model="fake", messages=messages, max_completion_tokens=64, stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    chunks += 1
    if chunk.choices:
        delta = chunk.choices[0].delta
        if first_role is None and delta.role:
            first_role = delta.role
        text += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage.model_dump()
out["stream"] = {"chunks": chunks, "content": text, "finish_reason": finish, "usage": usage, "role": first_role}

out["models"] = [m.id for m in client.models.list()]


def refused(**kwargs):
    try:
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}], **kwargs)
    except openai.BadRequestError as e:
        return {"status": e.status_code, "param": e.body.get("param"), "type": e.body.get("type")}
    return None


out["n2"] = refused(n=2)
out["logprobs"] = refused(logprobs=True)
out["too_long"] = refused(max_completion_tokens=10_000_000)

try:
    openai.OpenAI(base_url=base, api_key="not-a-token", max_retries=0).models.list()
    out["auth"] = None
except openai.AuthenticationError as e:
    out["auth"] = e.status_code

limited = []
for _ in range(4):
    try:
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "count me"}])
        limited.append("ok")
    except openai.RateLimitError as e:
        limited.append({"status": e.status_code, "retry_after": e.response.headers.get("retry-after"),
                        "type": e.body.get("type")})
out["limited"] = limited
print(json.dumps(out))
