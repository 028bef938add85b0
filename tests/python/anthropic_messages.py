"""The official Anthropic Python SDK against Nagare's /v1/messages and /v1/messages/count_tokens:
unary and streamed messages, parallel tool calls the SDK assembles from `input_json_delta`s, a tool
loop, thinking sent back signed, an image, prompt caching by `cache_control`, the token count, and
errors as the SDK's own exception types.

Usage: anthropic_messages.py BASE_URL TOKEN LIMITED_BASE_URL. The token goes as `x-api-key`, as
the SDK sends its API key; LIMITED_BASE_URL is a gateway allowing one request a minute. Prints
one JSON object of what the SDK saw, for tests/tests/end_to_end/anthropic_dialect.rs.
"""
import json
import sys

import anthropic

base, token, limited_base = sys.argv[1], sys.argv[2], sys.argv[3]
client = anthropic.Anthropic(base_url=base, api_key=token, max_retries=0)
out = {}

messages = [
    {"role": "user", "content": "What is a stream?"},
    {"role": "assistant", "content": [{"type": "text", "text": "Water that flows."}]},
    {"role": "user", "content": [{"type": "text", "text": "And in computing?"}]},
]
m = client.messages.create(model="fake", max_tokens=64, system="Answer briefly.", messages=messages,
                           metadata={"user_id": "u-1"})
out["unary"] = {"id": m.id, "type": m.type, "role": m.role, "model": m.model,
                "text": m.content[0].text, "stop_reason": m.stop_reason, "usage": m.usage.model_dump()}

events = []
with client.messages.stream(model="fake", max_tokens=64, system="Answer briefly.",
                            messages=messages + [{"role": "assistant", "content": "Bytes"},
                                                 {"role": "user", "content": "that flow?"}]) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
out["stream"] = {"text": text, "final": final.content[0].text, "stop_reason": final.stop_reason,
                 "usage": final.usage.model_dump()}

WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}}

# Parallel calls, streamed: the SDK assembles each block's input from its input_json_deltas.
ask = [{"role": "user", "content": "Weather and time?"}]
order = []
with client.messages.stream(model="fake.parallel-tools", max_tokens=256, messages=ask,
                            tools=[WEATHER, TIME]) as stream:
    for event in stream:
        if event.type in ("content_block_start", "content_block_stop"):
            order.append([event.type, event.index])
    final = stream.get_final_message()
out["parallel"] = {"stop_reason": final.stop_reason, "order": order,
                   "calls": [{"id": b.id, "name": b.name, "input": b.input} for b in final.content]}
results = [{"type": "tool_result", "tool_use_id": b.id,
            "content": "sunny" if b.name == "get_weather" else "09:00"} for b in final.content]
m = client.messages.create(model="fake.parallel-tools", max_tokens=256, tools=[WEATHER, TIME],
                           messages=ask + [{"role": "assistant", "content": final.content},
                                           {"role": "user", "content": results}])
out["loop"] = m.content[0].text

# Thinking in a tool loop: the signed thinking block goes back as it came.
ask = [{"role": "user", "content": "Think, then check the weather"}]
thinking = {"type": "enabled", "budget_tokens": 1024}
with client.messages.stream(model="fake.reasoning", max_tokens=4096, messages=ask, tools=[WEATHER],
                            thinking=thinking) as stream:
    kinds = sorted({e.delta.type for e in stream if e.type == "content_block_delta"})
    final = stream.get_final_message()
out["thinking"] = {"deltas": kinds, "blocks": [b.model_dump() for b in final.content],
                   "stop_reason": final.stop_reason}
tool = next(b for b in final.content if b.type == "tool_use")
m = client.messages.create(model="fake.reasoning", max_tokens=4096, tools=[WEATHER], thinking=thinking,
                           messages=ask + [{"role": "assistant", "content": final.content},
                                           {"role": "user", "content": [
                                               {"type": "tool_result", "tool_use_id": tool.id, "content": "sunny"}]}])
out["after_thinking"] = [b.model_dump() for b in m.content]

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
m = client.messages.create(model="fake", max_tokens=64, messages=[{"role": "user", "content": [
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    {"type": "text", "text": "What is in this picture?"}]}])
out["image"] = m.content[0].text

# Prompt caching, asked for by cache_control: written on the first call, read on the second.
system = [{"type": "text", "text": "You are a careful assistant. " * 50, "cache_control": {"type": "ephemeral"}}]
cached = []
for question in ["first question", "second question"]:
    m = client.messages.create(model="fake.cache", max_tokens=64, system=system,
                               messages=[{"role": "user", "content": question}])
    cached.append(m.usage.model_dump())
out["cache"] = cached
m = client.messages.create(model="fake.cache", max_tokens=64, messages=[{"role": "user", "content": "unmarked"}],
                           system=[{"type": "text", "text": "You are a careful assistant. " * 50}])
out["uncached"] = m.usage.model_dump()

out["count"] = client.messages.count_tokens(model="fake", system="Answer briefly.", messages=messages,
                                            tools=[WEATHER]).input_tokens


def error(call):
    try:
        call()
    except anthropic.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "type": e.body["error"]["type"],
                "retry_after": e.response.headers.get("retry-after")}
    return None


out["bad_request"] = error(lambda: client.messages.create(
    model="fake", max_tokens=64, messages=[{"role": "user", "content": "x"}], extra_body={"top_k": 5}))
out["auth"] = error(lambda: anthropic.Anthropic(base_url=base, api_key="not-a-token", max_retries=0)
                    .messages.create(model="fake", max_tokens=8, messages=[{"role": "user", "content": "x"}]))
out["overloaded"] = error(lambda: client.messages.create(
    model="fake.throttle-9", max_tokens=8, messages=[{"role": "user", "content": "x"}]))
limited = anthropic.Anthropic(base_url=limited_base, api_key=token, max_retries=0)
out["limited"] = [error(lambda: limited.messages.create(
    model="fake", max_tokens=8, messages=[{"role": "user", "content": "count me"}])) for _ in range(2)]
print(json.dumps(out))
