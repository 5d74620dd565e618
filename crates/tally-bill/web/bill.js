// The bill page's script (spec/BILL.md): reads the data blocks the page carries, shows every
// record in a virtual table with filters, and checks a picked record's proof in the page.
// It fetches nothing: the page's Content-Security-Policy allows no source at all.
import { checkEntry, hex, unhex, verifyNote } from './verify.js';

const $ = (id) => document.getElementById(id);
const METERS = 4;
const ROW_H = 24;
const MAX_SCROLL_PX = 8e6; // below every browser's element height limit

function base64(text) {
  const s = atob(text.trim());
  const out = new Uint8Array(s.length);
  for (let k = 0; k < s.length; k++) out[k] = s.charCodeAt(k);
  return out;
}

async function gunzip(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The table's columns over one buffer (spec/BILL.md §3). */
function columns(buf, n) {
  const b = buf.buffer;
  return {
    time: new Float64Array(b, 0, n),
    amount: new Float64Array(b, 8 * n, n),
    seq: new Uint32Array(b, 16 * n, n),
    units: [0, 1, 2, 3].map((m) => new Uint32Array(b, 20 * n + 4 * n * m, n)),
    lane: new Uint16Array(b, 36 * n, n),
    cls: new Uint8Array(b, 38 * n, n),
  };
}

/** Where each evidence entry starts (spec/BILL.md §4): index → entry. */
function evidence(bytes, count) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const byIndex = new Map();
  let at = 8 * count;
  for (let k = 0; k < count; k++) {
    const index = view.getFloat64(8 * k, true);
    const len = view.getUint32(at, true);
    const record = bytes.subarray(at + 4, at + 4 + len);
    const signature = bytes.subarray(at + 4 + len, at + 68 + len);
    const plen = bytes[at + 68 + len];
    at += 69 + len;
    let proof = null;
    if (plen !== 0xff) {
      proof = [];
      for (let j = 0; j < plen; j++) proof.push(bytes.subarray(at + 32 * j, at + 32 * j + 32));
      at += 32 * plen;
    }
    byIndex.set(index, { index, record, signature, proof });
  }
  return byIndex;
}

const kindOf = (amount) => (amount > 0 ? 0 : amount === 0 ? 1 : 2);
const KINDS = ['charged', 'uncharged', 'credited'];
// A provider time beyond what a Date holds (±8.64e15 ms) is shown as the number it is.
const when = (ms) => (ms > 0 && ms <= 8.64e15 ? new Date(ms).toISOString().replace('T', ' ').replace('Z', '') : ms > 0 ? `${ms} ms` : '—');
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

class Bill {
  constructor(meta, cols, ev, ctx) {
    Object.assign(this, { meta, cols, ev, ctx });
    this.n = meta.records;
    this.view = new Uint32Array(0);
  }

  /** Recomputes the rows the filters let through. */
  filter() {
    const cls = $('f-class').value;
    const kind = $('f-kind').value;
    const lane = $('f-lane').value;
    const c = this.cols;
    const keep = new Uint32Array(this.n);
    let m = 0;
    for (let i = 0; i < this.n; i++) {
      if (cls !== '' && c.cls[i] !== +cls) continue;
      if (kind !== '' && kindOf(c.amount[i]) !== +kind) continue;
      if (lane !== '' && c.lane[i] !== +lane) continue;
      keep[m++] = i;
    }
    this.view = keep.subarray(0, m);
    $('f-count').textContent = `${m.toLocaleString('en')} of ${this.n.toLocaleString('en')} records`;
    const h = Math.min(m * ROW_H, MAX_SCROLL_PX);
    $('table-spacer').style.height = `${h}px`;
    $('table-body').scrollTop = 0;
    this.draw();
  }

  /** Draws the rows in sight; the scroll bar maps onto the view even past MAX_SCROLL_PX. */
  draw() {
    const body = $('table-body');
    const visible = Math.ceil(body.clientHeight / ROW_H) + 1;
    const max = Math.max(1, body.scrollHeight - body.clientHeight);
    const first = Math.max(0, Math.min(this.view.length - visible,
      Math.floor((body.scrollTop / max) * Math.max(0, this.view.length - visible + 1))));
    let win = $('table-window');
    if (!win) {
      win = document.createElement('div');
      win.id = 'table-window';
      body.appendChild(win);
    }
    win.style.top = `${body.scrollTop}px`;
    const c = this.cols;
    const html = [];
    for (let k = first; k < Math.min(this.view.length, first + visible); k++) {
      const i = this.view[k];
      const units = c.units.map((u) => u[i]).filter((u) => u).join(' / ') || '—';
      const mark = this.ev.has(i) ? ' proof' : '';
      html.push(`<div class="row${mark}${i === this.selected ? ' sel' : ''}" data-index="${i}"><span>${i}</span><span>${when(c.time[i])}</span><span>${c.lane[i]}/${c.seq[i]}</span><span>${esc(this.meta.classes[c.cls[i]] ?? '')}</span><span>${units}</span><span class="k${kindOf(c.amount[i])}">${c.amount[i]}</span></div>`);
    }
    win.innerHTML = html.join('');
  }

  /** Shows record `i` and checks its proof in the page. */
  select(i) {
    if (!(i >= 0 && i < this.n)) return;
    this.selected = i;
    history.replaceState(null, '', `#record=${i}`);
    this.draw();
    const d = $('detail');
    const entry = this.ev.get(i);
    if (!entry) {
      d.dataset.verdict = 'absent';
      d.innerHTML = `<h3>Record ${i}</h3><p>This bill carries proofs for ${this.ev.size.toLocaleString('en')} of ${this.n.toLocaleString('en')} records, not this one. <code>tally prove --index ${i}</code> makes its proof bundle, and <code>tally bill --evidence all</code> a bill with every proof.</p>`;
      return;
    }
    const res = checkEntry(entry, this.ctx);
    const unproved = !res.ok && entry.proof === null && res.steps.slice(0, -1).every((s) => s.ok);
    const verdict = res.ok ? 'verified' : unproved ? 'unproved' : 'failed';
    const title = { verified: '\u2713 verified', failed: '\u2717 failed', unproved: 'signed, not yet in a checkpoint' }[verdict];
    const r = res.record;
    const fields = r ? [
      ['index', r.index], ['time (UTC)', when(Number(r.timeMs))], ['lane / seq', `${r.lane} / ${r.seq}`],
      ['amount', r.amount], ['authorized at most', r.maxAmount], ['units per meter', r.units.join(', ')],
      ['cumulative after', r.cumulative], ['acknowledged state', `size ${r.ackSize}, cumulative ${r.ackCumulative}`],
      ['request hash', r.requestHash], ['response hash', r.responseHash], ['terms hash', r.termsHash],
    ] : [['bytes', hex(entry.record)]];
    d.innerHTML = `<h3>Record ${i} <span class="mark ${verdict}" id="mark">${title}</span></h3>
      <ol class="steps">${res.steps.map((s) => `<li class="${s.ok ? 'ok' : 'bad'}">${s.ok ? '\u2713' : '\u2717'} ${esc(s.name)}${s.why ? `: ${esc(s.why)}` : ''}</li>`).join('')}</ol>
      <dl>${fields.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>`;
    d.dataset.verdict = verdict;
  }

  /** Checks every record the bill carries, a slice at a time so the page stays responsive. */
  checkAll() {
    const out = $('check-all-result');
    const entries = [...this.ev.values()];
    // Three groups, never merged: a record past the checkpoint is signed by both parties,
    // but its amount is not yet in a state the client signed, so it is not "verified".
    let ok = 0;
    let unproved = 0;
    const failed = [];
    let k = 0;
    const slice = () => {
      const stop = Math.min(entries.length, k + 25);
      for (; k < stop; k++) {
        const e = entries[k];
        const res = checkEntry(e, this.ctx);
        if (res.ok) ok++;
        else if (e.proof === null && res.steps.slice(0, -1).every((s) => s.ok)) unproved++;
        else failed.push(e.index);
      }
      Object.assign(out.dataset, { checked: k, verified: ok, unproved, failed: failed.length });
      out.textContent = `${k.toLocaleString('en')} of ${entries.length.toLocaleString('en')} checked: ${ok.toLocaleString('en')} verified, ${unproved} signed but not yet in a checkpoint, ${failed.length} failed${failed.length ? ` (records ${failed.slice(0, 20).join(', ')}${failed.length > 20 ? ', …' : ''})` : ''}`;
      if (k < entries.length) setTimeout(slice, 0);
      else out.dataset.done = 'true';
    };
    slice();
  }
}

function context(meta) {
  const ctx = { channel: meta.channel_id, clientKey: unhex(meta.client_key), providerKey: unhex(meta.provider_key), checkpoint: null, checkpointError: null };
  if (meta.checkpoint) {
    try { ctx.checkpoint = verifyNote(meta.checkpoint, ctx.clientKey, ctx.providerKey); } catch (e) { ctx.checkpointError = e.message; }
  } else {
    ctx.checkpointError = 'the statement has no checkpoint of this channel that both parties signed';
  }
  return ctx;
}

async function main() {
  const meta = JSON.parse($('bill-meta').textContent);
  const rows = await gunzip(base64($('bill-rows').textContent));
  const expected = meta.records * (16 + 4 * (1 + METERS) + 2 + 1);
  if (rows.length !== expected) throw new Error(`the table holds ${rows.length} bytes, not ${expected}`);
  const bill = new Bill(meta, columns(rows, meta.records), evidence(base64($('bill-evidence').textContent), meta.evidence_count), context(meta));
  const sel = $('f-class');
  meta.classes.forEach((name, k) => sel.add(new Option(name, String(k))));
  for (const id of ['f-class', 'f-kind', 'f-lane']) $(id).addEventListener('change', () => bill.filter());
  $('f-goto').addEventListener('change', (e) => bill.select(+e.target.value));
  $('filters').addEventListener('submit', (e) => e.preventDefault());
  $('table-body').addEventListener('scroll', () => requestAnimationFrame(() => bill.draw()));
  $('table-body').addEventListener('click', (e) => {
    const row = e.target.closest('.row');
    if (row) bill.select(+row.dataset.index);
  });
  const button = document.createElement('button');
  button.type = 'button';
  button.id = 'check-all';
  button.textContent = `Check all ${meta.evidence_count.toLocaleString('en')} proofs in this page`;
  button.addEventListener('click', () => bill.checkAll());
  const result = document.createElement('span');
  result.id = 'check-all-result';
  $('filters').append(button, result);
  bill.filter();
  const goto = /^#record=(\d+)$/.exec(location.hash);
  if (goto) bill.select(+goto[1]);
  window.addEventListener('hashchange', () => {
    const m = /^#record=(\d+)$/.exec(location.hash);
    if (m && +m[1] !== bill.selected) bill.select(+m[1]);
  });
  document.body.dataset.ready = 'true';
}

main().catch((e) => {
  document.body.dataset.ready = 'error';
  $('detail').innerHTML = `<p class="bad">The page could not read its data: ${esc(e.message)}</p>`;
});
