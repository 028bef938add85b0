// The Vercel AI SDK (`ai` with its OpenAI-compatible provider) against Nagare's
// /v1/chat/completions: a streamed chat with usage, and a streamed answer with two parallel tool
// calls the SDK assembles. Usage: node tests/js/vercel_chat.mjs BASE_URL TOKEN. Prints one JSON
// object of what the SDK saw, for tests/tests/end_to_end/openai_dialect.rs.
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { streamText, tool } from 'ai';
import { z } from 'zod';

const [baseURL, apiKey] = process.argv.slice(2);
const nagare = createOpenAICompatible({ name: 'nagare', baseURL, apiKey, includeUsage: true });

const chat = streamText({ model: nagare('fake'), prompt: 'What is a stream?', maxOutputTokens: 64 });
let text = '';
let pieces = 0;
for await (const piece of chat.textStream) {
  text += piece;
  pieces += 1;
}
const usage = await chat.usage;

const tools = streamText({
  model: nagare('fake.parallel-tools'),
  prompt: 'Weather and time?',
  tools: {
    get_weather: tool({ description: 'The weather in a city', inputSchema: z.object({ city: z.string() }) }),
    get_time: tool({ inputSchema: z.object({ zone: z.string() }) }),
  },
});
const calls = (await tools.toolCalls).map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input }));

console.log(JSON.stringify({
  chat: { text, pieces, finishReason: await chat.finishReason, inputTokens: usage.inputTokens, outputTokens: usage.outputTokens },
  tools: { calls, finishReason: await tools.finishReason },
}));
