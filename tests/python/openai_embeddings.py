"""The official OpenAI Python SDK against Nagare's /v1/embeddings (Bedrock Titan through the fake):
vectors as the SDK decodes them (it asks for base64), the cache on repeat, the caller's token
limit, and refusals as BadRequestError and RateLimitError.

Usage: openai_embeddings.py BASE_URL TOKEN. Prints one JSON object of what the SDK saw, for
tests/tests/end_to_end/openai_dialect.rs.
"""
import json
import math
import sys

import openai

base, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
out = {}


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


texts = ["How do I reset my password?", "How can I reset a forgotten password?", "Volcanoes erupt molten basalt lava"]
r = client.embeddings.create(model="embed", input=texts, dimensions=256)
vectors = [d.embedding for d in r.data]
out["first"] = {"model": r.model, "lengths": [len(v) for v in vectors], "indexes": [d.index for d in r.data],
                "similar": cosine(vectors[0], vectors[1]), "unrelated": cosine(vectors[0], vectors[2]),
                "usage": r.usage.model_dump()}

raw = client.embeddings.with_raw_response.create(model="embed", input=texts[0], dimensions=256,
                                                 encoding_format="float")
again = raw.parse()
out["again"] = {"same": again.data[0].embedding == vectors[0], "cached": raw.headers.get("nagare-cached-inputs")}


def refused(kind, **kwargs):
    try:
        client.embeddings.create(**kwargs)
    except kind as e:
        return {"status": e.status_code, "param": e.body.get("param"), "message": e.body.get("message")}
    return None


out["dimensions"] = refused(openai.BadRequestError, model="embed", input="x", dimensions=300)
out["model"] = refused(openai.BadRequestError, model="text-embedding-3-small", input="x")
out["empty"] = refused(openai.BadRequestError, model="embed", input=[])
out["too_big"] = refused(openai.BadRequestError, model="embed", input="word " * 40)
out["limited"] = refused(openai.RateLimitError, model="embed", input="a fresh sentence " * 5)
out["models"] = [m.id for m in client.models.list()]
print(json.dumps(out))
