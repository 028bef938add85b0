"""The official OpenAI Python SDK's agent features against Nagare's /v1/chat/completions: a
streamed tool loop with two parallel calls the SDK assembles, an image, structured output parsed
into a pydantic model, and reasoning sent back in a tool loop.

Usage: openai_agent.py BASE_URL TOKEN. Prints one JSON object of what the SDK saw, for
tests/tests/end_to_end/openai_dialect.rs to check against what reached the fake Bedrock.
"""
import json
import sys

import openai
import pydantic

base, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
out = {}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}

# A streamed tool loop: the SDK's stream helper assembles the parallel calls from their deltas.
messages = [{"role": "user", "content": "Weather and time?"}]
order = []
with client.chat.completions.stream(model="fake.parallel-tools", messages=messages,
                                    tools=[WEATHER, TIME]) as stream:
    for event in stream:
        if event.type == "chunk" and event.chunk.choices:
            for call in event.chunk.choices[0].delta.tool_calls or []:
                order.append({"index": call.index, "id": call.id,
                              "arguments": call.function.arguments if call.function else None})
    final = stream.get_final_completion()
choice = final.choices[0]
calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
         for c in choice.message.tool_calls]
out["parallel"] = {"finish_reason": choice.finish_reason, "calls": calls, "order": order,
                   "content": choice.message.content}

messages.append(choice.message.model_dump(exclude_none=True))
for call in choice.message.tool_calls:
    result = "sunny" if call.function.name == "get_weather" else "09:00"
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
text = ""
for chunk in client.chat.completions.create(model="fake.parallel-tools", messages=messages,
                                            tools=[WEATHER, TIME], stream=True):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
out["loop"] = text

# An image, as a data URL (a 1x1 PNG).
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
r = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": [
    {"type": "text", "text": "What is in this picture?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}}]}])
out["image"] = r.choices[0].message.content


# Structured output: the SDK sends the model's JSON schema and parses the answer into it.
class Answer(pydantic.BaseModel):
    answer: str


parsed = client.chat.completions.parse(model="fake.json", response_format=Answer,
                                       messages=[{"role": "user", "content": "The answer?"}])
out["parsed"] = parsed.choices[0].message.parsed.model_dump()

# Reasoning in a tool loop: the thinking blocks go back with the call, signed.
messages = [{"role": "user", "content": "Think, then check the weather"}]
r = client.chat.completions.create(model="fake.reasoning", messages=messages, tools=[WEATHER],
                                   reasoning_effort="low", max_completion_tokens=4096)
message = r.choices[0].message
out["reasoning"] = {"reasoning_content": getattr(message, "reasoning_content", None),
                    "thinking_blocks": getattr(message, "thinking_blocks", None),
                    "finish_reason": r.choices[0].finish_reason}
messages.append(message.model_dump(exclude_none=True))
messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "sunny"})
reasoned = ""
for chunk in client.chat.completions.create(model="fake.reasoning", messages=messages, tools=[WEATHER],
                                            reasoning_effort="low", max_completion_tokens=4096,
                                            stream=True):
    if chunk.choices:
        delta = chunk.choices[0].delta
        reasoned += getattr(delta, "reasoning_content", None) or ""
        out.setdefault("streamed_thinking", []).extend(getattr(delta, "thinking_blocks", None) or [])
        out["after_tools"] = out.get("after_tools", "") + (delta.content or "")
out["streamed_reasoning"] = reasoned

try:
    client.chat.completions.create(model="fake", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    out["url_image"] = None
except openai.BadRequestError as e:
    out["url_image"] = e.body.get("param")
print(json.dumps(out))
