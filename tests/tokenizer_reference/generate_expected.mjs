// Encodes every line of tests/data/tokenizer_corpus.jsonl (one JSON string per line) with
// llama3-tokenizer-js and writes one JSON array of ids per line. Options match HF's Llama 3
// tokenizer: <|begin_of_text|> first, no <|end_of_text|>.
// Usage: node generate_expected.mjs [corpus.jsonl] [expected.jsonl]
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import llama3Tokenizer from 'llama3-tokenizer-js';

const dataDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'data');
const corpusPath = process.argv[2] ?? join(dataDir, 'tokenizer_corpus.jsonl');
const expectedPath = process.argv[3] ?? join(dataDir, 'tokenizer_expected_llama3.jsonl');

const lines = readFileSync(corpusPath, 'utf8').split('\n').filter((line) => line.length > 0);
const output = lines.map((line) => {
  const text = JSON.parse(line);
  return JSON.stringify(llama3Tokenizer.encode(text, { bos: true, eos: false }));
});
writeFileSync(expectedPath, output.join('\n') + '\n');
console.log(`wrote ${output.length} lines to ${expectedPath}`);
