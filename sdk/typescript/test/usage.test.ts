/** Reading units (crates/tally-http usage.rs): the same cases the gateway's reader is held to. */
import { test } from "node:test";
import assert from "node:assert/strict";

import { utf8 } from "../src/bytes.js";
import { JsonNumber, parseJson, pointer } from "../src/json.js";
import type { Meter } from "../src/terms.js";
import { MAX_EVENT_BYTES, UsageReader, jsonUnits, parseUnits } from "../src/usage.js";

const meter = (name: string, from: Meter["from"]): Meter => ({ name, unit_price: "1", from });
const openai = [meter("input", { sse: "/usage/prompt_tokens" }), meter("output", { sse: "/usage/completion_tokens" })];
const none = () => null;

const STREAM = utf8(
  'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
  + ": a comment\r\n\r\n"
  + 'event: message\ndata: {"usage":{"prompt_tokens":7,\ndata: "completion_tokens":12}}\n\n'
  + "data: [DONE]\n\n",
);

test("sse: the last usage event wins in any chunking (data lines joined with LF)", () => {
  for (let cut = 0; cut < STREAM.length; cut++) {
    for (const split of [cut, cut >> 1]) {
      const r = new UsageReader(openai);
      r.headers(none);
      r.chunk(STREAM.subarray(0, split));
      r.chunk(STREAM.subarray(split, cut));
      r.chunk(STREAM.subarray(cut));
      assert.deepEqual(r.finish(), [7n, 12n, 0n, 0n], `cut at ${split}/${cut}`);
    }
  }
});

test("sse: CR and CRLF end lines, also across chunks", () => {
  const text = utf8('data: {"usage":{"prompt_tokens":1}}\r\rdata: {"usage":{"prompt_tokens":2}}\r\n\r\n');
  for (let cut = 0; cut < text.length; cut++) {
    const r = new UsageReader(openai);
    r.chunk(text.subarray(0, cut));
    r.chunk(text.subarray(cut));
    assert.equal(r.finish()[0], 2n, `cut at ${cut}`);
  }
});

test("sse: an unfinished event or one over 64 KiB reports nothing", () => {
  const r = new UsageReader(openai);
  r.chunk(utf8('data: {"usage":{"prompt_tokens":5}}\n'));
  assert.deepEqual(r.finish(), [0n, 0n, 0n, 0n], "no blank line: never dispatched");
  const big = utf8(`data: {"usage":{"prompt_tokens":5},"pad":"${"x".repeat(MAX_EVENT_BYTES)}"}\n\ndata: {"usage":{"completion_tokens":3}}\n\n`);
  const r2 = new UsageReader(openai);
  r2.chunk(big);
  assert.deepEqual(r2.finish(), [0n, 3n, 0n, 0n]);
});

test("sse: a later event without the pointer keeps the count; data must be a JSON object", () => {
  const r = new UsageReader(openai);
  r.chunk(utf8('data: {"usage":{"prompt_tokens":4}}\n\ndata: {"usage":null}\n\ndata: 9\n\ndata: {"usage":{"prompt_tokens":-1}}\n\n'));
  assert.deepEqual(r.finish(), [4n, 0n, 0n, 0n]);
});

test("headers and JSON bodies (chunked), a body over the limit is not read", () => {
  const meters = [meter("h", { header: "x-units" }), meter("t", { trailer: "x-units" }), meter("j", { json: "/usage/total_tokens" })];
  const r = new UsageReader(meters, 1024);
  r.headers((n) => (n === "x-units" ? "4" : null));
  r.chunk(utf8('{"usage":{"total_'));
  r.chunk(utf8('tokens":33}}'));
  assert.deepEqual(r.finish(), [4n, 0n, 33n, 0n], "fetch cannot see trailers");
  assert.equal(r.seesAll, false);
  const small = new UsageReader(meters, 8);
  small.chunk(utf8('{"usage":{"total_tokens":33}}'));
  assert.deepEqual(small.finish(), [0n, 0n, 0n, 0n]);
});

test("garbage reads as no report; counts are exact up to u64", () => {
  for (const t of ["", "-1", "1.5", "0x10", "1e3", "99999999999999999999", "7 7", "+3"]) assert.equal(parseUnits(t), undefined, t);
  assert.equal(parseUnits(" 42 "), 42n);
  assert.equal(parseUnits("18446744073709551615"), 18446744073709551615n);
  for (const d of ['{"n":-1}', '{"n":1.5}', '{"n":"1"}', "not json", '{"n":1e40}', '{"n":1.0}', '{"n":-0}', '{"n":18446744073709551616}', '{"n":true}']) {
    assert.equal(jsonUnits(utf8(d), "/n"), undefined, d);
  }
  assert.equal(jsonUnits(utf8('{"n":18446744073709551615}'), "/n"), 18446744073709551615n, "no rounding above 2^53");
  assert.equal(jsonUnits(utf8('{"n":9007199254740993}'), "/n"), 9007199254740993n);
  assert.equal(jsonUnits(utf8('{"n":1,"n":2}'), "/n"), 2n, "the last duplicate key wins, as serde_json");
});

test("json: what serde_json refuses is refused (so the whole document reports nothing)", () => {
  const bad = [
    '{"n":1,"x":1e400}', '{"n":1,"x":"\\ud800"}', '{"n":1,"x":"\\udc00"}', '{"n":1,"x":"a\u0001"}', '{"n":01}',
    '{"n":1} x', '\ufeff{"n":1}', '{"n":1,}', "[1,]", '{"n":1,"x":' + "[".repeat(127) + "]".repeat(127) + "}",
  ];
  for (const d of bad) assert.equal(jsonUnits(utf8(d), "/n"), undefined, d.slice(0, 40));
  assert.equal(jsonUnits(Uint8Array.of(0x7b, 0x22, 0x6e, 0x22, 0x3a, 0x31, 0x2c, 0x22, 0x78, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d), "/n"), undefined, "invalid UTF-8");
  assert.equal(jsonUnits(utf8('{"n":1,"x":' + "[".repeat(126) + "]".repeat(126) + "}"), "/n"), 1n, "depth 127 is fine");
  assert.equal(jsonUnits(utf8(' {"n" : 5 ,"s":"\\ud83d\\ude00\\n"} \r\n'), "/n"), 5n);
});

test("json pointers (RFC 6901, as serde_json): escapes, array indexes, the whole document", () => {
  const doc = parseJson(utf8('{"a/b":{"m~n":[10,20,{"c":3}]},"":7}'));
  assert.deepEqual(pointer(doc, "/a~1b/m~0n/1"), new JsonNumber("20"));
  assert.deepEqual(pointer(doc, "/a~1b/m~0n/2/c"), new JsonNumber("3"));
  assert.deepEqual(pointer(doc, "/"), new JsonNumber("7"));
  for (const p of ["/a~1b/m~0n/01", "/a~1b/m~0n/+1", "/a~1b/m~0n/3", "a", "/x"]) assert.equal(pointer(doc, p), undefined, p);
  assert.equal(jsonUnits(utf8("12"), ""), 12n);
});
