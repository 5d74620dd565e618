#!/usr/bin/env node
// Looks at the provider console (spec/HTTP.md §11) the way its operator does: in a real
// browser (Debian's Chromium driven by puppeteer-core, pinned in tools/package-lock.json).
//
// Usage: TALLY_ADMIN_TOKEN=<token> node tools/browser/console-check.mjs <console url> <screenshot dir>
// The token comes from the environment, never argv (argv is visible to every local user).
// The browser is $TALLY_CHROMIUM or /usr/bin/chromium; without it this fails (exit 2).
//
// It (1) loads the console without credentials and records what the login page shows,
// (2) signs in through the form, (3) reads what the console shows, (4) saves login.png and
// console.png into the screenshot directory, and prints one JSON line on stdout:
//   { login: { status, hasForm, channelRows, text },
//     console: { status, url, channels: [{ id, size, cumulative, cumulativeText, deposit,
//                withdraw }], metered, charts, callBars: [titles], refusals: [titles],
//                settlement, credits, styled },
//     cspViolations: [...] }

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const [url, shots] = process.argv.slice(2);
const token = process.env.TALLY_ADMIN_TOKEN;
if (!url || !shots || !token) {
  console.error("usage: TALLY_ADMIN_TOKEN=… console-check.mjs <console url> <screenshot dir>");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const executablePath = process.env.TALLY_CHROMIUM || "/usr/bin/chromium";

/** What the login page shows: a form, and no channel data at all. */
async function readLogin(page) {
  return page.evaluate(() => ({
    hasForm: !!document.querySelector("form#login input[name=token]"),
    channelRows: document.querySelectorAll("tr[data-channel]").length,
    text: document.body.innerText,
  }));
}

/** What the console shows: the channels table, the totals, the charts and the claims. */
async function readConsole(page) {
  return page.evaluate(() => {
    const field = (row, name) => row.querySelector(`[data-field="${name}"]`);
    const channels = [...document.querySelectorAll("#channels tr[data-channel]")].map((r) => ({
      id: r.dataset.channel,
      size: Number(field(r, "size")?.textContent),
      cumulative: field(r, "cumulative")?.dataset.base,
      cumulativeText: field(r, "cumulative")?.textContent,
      deposit: field(r, "deposit")?.dataset.base ?? null,
      withdraw: field(r, "withdraw")?.textContent ?? null,
    }));
    const titles = (sel) => [...document.querySelectorAll(sel)].map((t) => t.textContent);
    return {
      channels,
      metered: Number(document.querySelector('#totals [data-field="metered"]')?.textContent),
      charts: document.querySelectorAll("svg.tally-chart").length,
      callBars: titles("#activity svg.tally-chart:first-of-type rect.bar title"),
      refusals: titles("#refusals rect.bar title"),
      settlement: document.querySelector('[data-field="settlement"]')?.textContent ?? null,
      credits: document.querySelectorAll('#credits [data-field="credit"]').length,
      // The inline <style> applies only if the CSP nonce let it through.
      styled: getComputedStyle(document.body).fontFamily.includes("system-ui"),
    };
  });
}

let browser;
try {
  browser = await puppeteer.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--headless=new"],
  });
} catch (e) {
  console.error(`cannot start the browser at ${executablePath}: ${e.message}`);
  process.exit(2);
}
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 900 });
  const cspViolations = [];
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });

  const first = await page.goto(url, { waitUntil: "load" });
  const login = { status: first.status(), ...(await readLogin(page)) };
  await page.screenshot({ path: join(shots, "login.png") });

  await page.type("#token", token);
  const [after] = await Promise.all([
    page.waitForNavigation({ waitUntil: "load" }),
    page.click("form#login button[type=submit]"),
  ]);
  const shown = await readConsole(page);
  await page.screenshot({ path: join(shots, "console.png"), fullPage: true });
  const result = {
    login,
    console: { status: after.status(), url: page.url(), ...shown },
    cspViolations,
  };
  process.stdout.write(JSON.stringify(result) + "\n");
} finally {
  await browser.close();
}
