/**
 * Answers whose usage is easy to read wrongly, served by the e2e upstream through the real
 * gateway: the gateway meters them with crates/tally-http usage.rs and the client checks the
 * receipt with src/usage.ts, so any disagreement between the two readers stops the client.
 * `units` is what both must read (input, output for the event streams; tokens for JSON).
 */
const U64_MAX = "18446744073709551615";
const usage = (p: string | number, c?: string | number) =>
  `{"usage":{"prompt_tokens":${p}${c === undefined ? "" : `,"completion_tokens":${c}`}}}`;

export interface Tricky { why: string; body: string; units: [bigint, bigint] }

export const TRICKY_SSE: Tricky[] = [
  { why: "CR line ends, data lines joined", body: `data: {"usage":{"prompt_tokens":3,\rdata: "completion_tokens":4}}\r\r`, units: [3n, 4n] },
  { why: "counts above 2^53 and at u64::MAX, read exactly", body: `data: ${usage(U64_MAX, "9007199254740993")}\n\n`, units: [BigInt(U64_MAX), 9007199254740993n] },
  {
    why: "negative, fractional, exponent, text, -0 and above u64 are no report",
    body: `data: ${usage(5, 6)}\n\ndata: ${usage(-1, 1.5)}\n\ndata: ${usage("1e3", '"7"')}\n\ndata: ${usage("-0", "18446744073709551616")}\n\n`,
    units: [5n, 6n],
  },
  { why: "an unfinished last event is not counted", body: `data: ${usage(2, 2)}\r\n\r\ndata: ${usage(50, 50)}\n`, units: [2n, 2n] },
  {
    why: "the last duplicate key wins; a lone surrogate makes an event unreadable",
    body: `data: {"usage":{"prompt_tokens":1,"prompt_tokens":8,"completion_tokens":1}}\n\ndata: {"x":"\\ud800","usage":{"prompt_tokens":99,"completion_tokens":99}}\n\n`,
    units: [8n, 1n],
  },
  {
    why: "an event over 64 KiB is skipped; `data:` without a space",
    body: `data: {"usage":{"prompt_tokens":77},"pad":"${"x".repeat(70_000)}"}\n\ndata:{"usage":{"completion_tokens":3}}\n\n`,
    units: [0n, 3n],
  },
  {
    why: "a BOM is not stripped; data joined after an empty `data` line does not start with {",
    body: `\ufeffdata: ${usage(40)}\n\ndata\ndata: ${usage(4)}\n\n`,
    units: [0n, 0n],
  },
  {
    why: "nesting 127 deep is read, 128 is refused (serde_json's recursion limit)",
    body: `data: {"usage":{"prompt_tokens":6},"d":${"[".repeat(126)}${"]".repeat(126)}}\n\n`
      + `data: {"usage":{"prompt_tokens":60},"d":${"[".repeat(127)}${"]".repeat(127)}}\n\n`,
    units: [6n, 0n],
  },
];

export const TRICKY_JSON: Tricky[] = [
  { why: "a count above 2^53", body: `{"usage":{"total_tokens":9007199254740993}}`, units: [9007199254740993n, 0n] },
  { why: "trailing bytes make the body unreadable", body: `{"usage":{"total_tokens":12}} x`, units: [0n, 0n] },
  { why: "whitespace and escapes are fine", body: ` {"s":"\\ud83d\\ude00","usage" : {"total_tokens" : 12 } }\r\n`, units: [12n, 0n] },
];
