// Opens an HTML bill (spec/BILL.md) in Debian's headless Chromium and reports, as one JSON
// line on stdout, what the page shows: the verdict, the record counts, and for each record
// asked about, the mark the page's own proof check gives it. Used by tests/tests/bill.rs.
//
//   node tools/browser/bill-check.mjs BILL.html SCREENSHOT.png [--record N]... [--check-all]
//
// Chromium is /usr/bin/chromium unless TALLY_CHROMIUM names another; a missing browser is
// an error, never a skip.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { existsSync } from 'node:fs';

const require = createRequire(new URL('../package.json', import.meta.url));
const puppeteer = require('puppeteer-core');

const [bill, screenshot, ...rest] = process.argv.slice(2);
if (!bill || !screenshot) {
  console.error('usage: bill-check.mjs BILL.html SCREENSHOT.png [--record N]... [--check-all]');
  process.exit(2);
}
const records = [];
let checkAll = false;
for (let k = 0; k < rest.length; k++) {
  if (rest[k] === '--record') records.push(Number(rest[++k]));
  else if (rest[k] === '--check-all') checkAll = true;
  else { console.error(`unknown argument ${rest[k]}`); process.exit(2); }
}
const executablePath = process.env.TALLY_CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`no Chromium at ${executablePath} (apt-get install chromium, or set TALLY_CHROMIUM)`);
  process.exit(2);
}

const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1600 });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const started = Date.now();
  await page.goto(pathToFileURL(bill).href, { waitUntil: 'load', timeout: 120000 });
  await page.waitForSelector('body[data-ready]', { timeout: 120000 });
  const loadMs = Date.now() - started;
  const out = await page.evaluate(() => {
    const v = document.getElementById('verdict');
    return {
      ready: document.body.dataset.ready,
      verdict: v.dataset.verdict,
      headline: v.querySelector('h2').textContent,
      records: Number(v.dataset.records),
      discrepancies: Number(v.dataset.discrepancies),
      discrepantRecords: [...document.querySelectorAll('#discrepancies a[data-index]')].map((a) => Number(a.dataset.index)),
      shown: document.getElementById('f-count').textContent,
      rowsDrawn: document.querySelectorAll('#table-window .row').length,
      charts: document.querySelectorAll('#charts svg').length,
    };
  });
  out.loadMs = loadMs;
  // Responsiveness: a filter change over every row, timed in the page.
  out.filterMs = await page.evaluate(() => {
    const t = performance.now();
    const sel = document.getElementById('f-kind');
    sel.value = '0';
    sel.dispatchEvent(new Event('change'));
    sel.value = '';
    sel.dispatchEvent(new Event('change'));
    return performance.now() - t;
  });
  out.records_checked = [];
  for (const n of records) {
    await page.evaluate((n) => { location.hash = `record=${n}`; }, n);
    await page.waitForFunction((n) => document.querySelector('#detail h3')?.textContent.startsWith(`Record ${n} `) || document.querySelector('#detail h3')?.textContent === `Record ${n}`, { timeout: 30000 }, n);
    out.records_checked.push(await page.evaluate(() => {
      const d = document.getElementById('detail');
      return {
        verdict: d.dataset.verdict,
        mark: d.querySelector('#mark')?.textContent ?? null,
        markColor: d.querySelector('#mark') ? getComputedStyle(d.querySelector('#mark')).backgroundColor : null,
        failedSteps: [...d.querySelectorAll('.steps li.bad')].map((li) => li.textContent),
      };
    }));
  }
  if (records.length) await page.screenshot({ path: screenshot, fullPage: false });
  if (checkAll) {
    await page.click('#check-all');
    await page.waitForSelector('#check-all-result[data-done]', { timeout: 600000 });
    out.checkAll = await page.evaluate(() => {
      const r = document.getElementById('check-all-result');
      return { checked: Number(r.dataset.checked), verified: Number(r.dataset.verified), unproved: Number(r.dataset.unproved), failed: Number(r.dataset.failed), text: r.textContent };
    });
  }
  if (!records.length) await page.screenshot({ path: screenshot, fullPage: false });
  out.errors = errors;
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
