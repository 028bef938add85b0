"""The official OpenAI Python SDK against /v1/chat/completions on a gateway that records the
dialects' chats ([memory] record_dialects): the first answer names its new conversation in the
`nagare-conversation-id` header, the next requests send it back (unary and streamed), and an id
that is not the caller's is a NotFoundError.

Usage: openai_memory.py BASE_URL TOKEN. Prints one JSON object, for
tests/tests/end_to_end/openai_dialect.rs.
"""
import json
import sys
import uuid

import openai

base, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
out = {}
HEADER = "nagare-conversation-id"

messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a stream?"}]
raw = client.chat.completions.with_raw_response.create(model="fake", messages=messages)
conversation = raw.headers.get(HEADER)
answer = raw.parse().choices[0].message.content
out["first"] = conversation

messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "And in computing?"}]
raw = client.chat.completions.with_raw_response.create(model="fake", messages=messages,
                                                       extra_headers={HEADER: conversation})
out["second"] = raw.headers.get(HEADER)
messages += [{"role": "assistant", "content": raw.parse().choices[0].message.content},
             {"role": "user", "content": "Thanks"}]
with client.chat.completions.with_streaming_response.create(
        model="fake", messages=messages, stream=True, extra_headers={HEADER: conversation}) as response:
    out["streamed"] = response.headers.get(HEADER)
    out["streamed_text"] = "".join(
        chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)

try:
    client.chat.completions.create(model="fake", messages=messages, extra_headers={HEADER: str(uuid.uuid4())})
    out["not_mine"] = None
except openai.NotFoundError as e:
    out["not_mine"] = e.status_code
print(json.dumps(out))
