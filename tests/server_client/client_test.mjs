// Drives a running `bitnet serve` with the official OpenAI Node client:
//   node client_test.mjs http://127.0.0.1:PORT
// Checks chat and text completions, streamed and not, their usage counts and finish reasons,
// seeded determinism, and the error a bad request gets. Exits non-zero on the first failure.
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = `${process.argv[2]}/v1`;
const client = new OpenAI({ baseURL, apiKey: "test-key", maxRetries: 0, timeout: 30_000 });

const models = await client.models.list();
const model = models.data[0].id;
assert.equal(models.data.length, 1);

// Chat, not streamed.
const chat = await client.chat.completions.create({
  model,
  messages: [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Say hello." },
  ],
  max_tokens: 8,
  seed: 42,
  temperature: 0.7,
});
assert.equal(chat.object, "chat.completion");
assert.equal(chat.choices.length, 1);
assert.equal(chat.choices[0].message.role, "assistant");
assert.equal(typeof chat.choices[0].message.content, "string");
assert.ok(["stop", "length"].includes(chat.choices[0].finish_reason));
assert.ok(chat.usage.prompt_tokens > 0);
assert.ok(chat.usage.completion_tokens >= 1 && chat.usage.completion_tokens <= 8);
assert.equal(chat.usage.total_tokens, chat.usage.prompt_tokens + chat.usage.completion_tokens);

// A request repeating the previous one's prompt: the server reuses its cache entries for all but
// the last prompt token, and says so in usage.
const repeated = (usage) => ({ ...usage, prompt_tokens_details: { cached_tokens: usage.prompt_tokens - 1 } });

// Chat, streamed with usage: the concatenated deltas equal the non-streamed text (same seed).
const stream = await client.chat.completions.create({
  model,
  messages: [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Say hello." },
  ],
  max_tokens: 8,
  seed: 42,
  temperature: 0.7,
  stream: true,
  stream_options: { include_usage: true },
});
let streamed = "";
let finish = null;
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  assert.equal(chunk.object, "chat.completion.chunk");
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  if (chunk.choices.length === 0) continue;
  streamed += chunk.choices[0].delta.content ?? "";
  if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
}
assert.ok(chunks >= 2);
assert.equal(streamed, chat.choices[0].message.content);
assert.equal(finish, chat.choices[0].finish_reason);
assert.deepEqual(usage, repeated(chat.usage));

// Log-probabilities: one entry per content token, each with the asked-for alternatives.
const withLogprobs = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Say hello." }],
  max_tokens: 6,
  temperature: 0,
  logprobs: true,
  top_logprobs: 2,
});
const entries = withLogprobs.choices[0].logprobs.content;
assert.ok(entries.length >= 1 && entries.length <= 6);
for (const entry of entries) {
  assert.equal(typeof entry.token, "string");
  assert.ok(entry.logprob <= 0);
  assert.equal(entry.top_logprobs.length, 2);
}

// Text completion, not streamed and streamed.
const completion = await client.completions.create({
  model,
  prompt: "Once upon a time",
  max_tokens: 10,
  seed: 7,
});
assert.equal(completion.object, "text_completion");
if (completion.choices[0].finish_reason === "length") assert.equal(completion.usage.completion_tokens, 10);
let text = "";
let completionUsage = null;
const completionStream = await client.completions.create({
  model,
  prompt: "Once upon a time",
  max_tokens: 10,
  seed: 7,
  stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of completionStream) {
  if (chunk.usage) completionUsage = chunk.usage;
  if (chunk.choices.length > 0) text += chunk.choices[0].text;
}
assert.equal(text, completion.choices[0].text);
assert.deepEqual(completionUsage, repeated(completion.usage));

// Stop strings cut the text before the match.
const stopped = await client.completions.create({
  model,
  prompt: "Once upon a time",
  max_tokens: 10,
  seed: 7,
  stop: [completion.choices[0].text.slice(3, 5) || "zzzz"],
});
assert.ok(completion.choices[0].text.startsWith(stopped.choices[0].text));

// A bad request surfaces as the client's BadRequestError with OpenAI's error shape.
await assert.rejects(
  client.chat.completions.create({ model, messages: "not an array" }),
  (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && err.param === "messages",
);
await assert.rejects(
  client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
  (err) => err instanceof OpenAI.NotFoundError && err.code === "model_not_found",
);
console.log("openai client: all checks passed");
