#!/usr/bin/env node
// Counts the demo's sync plumbing: the code lines (not blank, not comments) that declare,
// register, serve or wire a query or an event, as opposed to the app's rules and markup.
//
//   node scripts/plumbing-lines.mjs [git-rev] [--list]
//
// It prints two numbers: the whole items below, and the plumbing proper, which leaves out the
// bodies of the handlers, queries and predictions (the app's own logic: the same SQL and the
// same edits of the rows whatever the API; the lines that wrap them, a `Box::pin(async move {`
// say, still count).
//
// With a git revision (007a7e0, say) it counts that revision's files; --list prints each item
// counted. What counts, in demo-app/src/{model,sync,api,app,server}.rs:
// - items that declare or implement a query or an event: `impl Query/SyncQueryDef/Event/
//   ServerQuery/ServerEvent for …`, items under `#[sync_query]`, `#[sync_event]`,
//   `#[sync_apply]`, `#[server]` (those that apply an event), the event structs (those an `impl Event for X` or a
//   `#[sync_event]` declares), the query's args struct and marker, the predictions (`impl X`
//   blocks holding `fn predict`) and their helper (`fn on_list`);
// - the engine's wiring: `DemoEngine`, `fn declare`, `fn engine`, `fn start`, and the
//   `#[sync_sql]` boilerplate lines (the attribute; a helper's body is the app's SQL and
//   counts only when it sits inside a handler);
// - the no-JavaScript adapter: `mod form`, `async fn apply`, the flash cookie's reading;
// - in the components: every `<form>` or `<ActionForm>` element that posts an event, the
//   `Writes` struct and its impl, the closures that send or dispatch events, and the lines
//   that call `.send(`, `.dispatch(` or `use_sync_event`.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const list = args.includes('--list');
const rev = args.find((a) => !a.startsWith('--'));
const files = ['model', 'sync', 'api', 'app', 'server'].map((f) => `demo-app/src/${f}.rs`);

function read(path) {
  if (!rev) return readFileSync(path, 'utf8');
  return execFileSync('git', ['show', `${rev}:${path}`], { encoding: 'utf8' });
}

const isCode = (l) => {
  const t = l.trim();
  return t !== '' && !t.startsWith('//');
};

// The end (inclusive line index) of the item or block starting at line i: braces balanced,
// or a `;` at depth 0 for a unit struct.
function itemEnd(lines, i) {
  let depth = 0;
  let opened = false;
  for (let j = i; j < lines.length; j++) {
    const code = lines[j].replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\/\/.*$/, '');
    for (const c of code) {
      if (c === '{') {
        depth++;
        opened = true;
      } else if (c === '}') depth--;
    }
    if (opened && depth <= 0) return j;
    if (!opened && /;\s*$/.test(code)) return j;
  }
  return lines.length - 1;
}

// The end of a view element opened at line i (`<form`, `<ActionForm`).
function elementEnd(lines, i, tag) {
  let depth = 0;
  for (let j = i; j < lines.length; j++) {
    depth += (lines[j].match(new RegExp(`<${tag}\\b`, 'g')) || []).length;
    depth -= (lines[j].match(new RegExp(`</${tag}>`, 'g')) || []).length;
    if (depth <= 0 && j > i) return j;
  }
  return lines.length - 1;
}

let total = 0;
let logic = 0;

// The lines of the bodies of the functions that hold app logic inside the item [from, to]:
// handlers (`apply`), queries (`run`, `authorize`, a `#[sync_query]` function), predictions.
function logicLines(lines, from, to) {
  const out = new Set();
  const query = /^#\[sync_query\b/.test(lines[from].trim());
  for (let i = from; i <= to; i++) {
    const t = lines[i].trim();
    if (!/\bfn (apply|run|authorize|predict)\b/.test(t) && !(query && /^pub async fn \w+\(/.test(t))) continue;
    let open = i;
    while (open <= to && !/\{\s*$/.test(lines[open])) open++;
    const close = itemEnd(lines, i);
    let a = open + 1;
    let b = close - 1;
    if (/^Box::pin\(async move \{$/.test((lines[a] || '').trim()) && /^\}\)$/.test((lines[b] || '').trim())) {
      a++;
      b--;
    }
    for (let k = a; k <= b; k++) out.add(k);
    i = close;
  }
  return out;
}
for (const path of files) {
  let text;
  try {
    text = read(path);
  } catch {
    continue;
  }
  const lines = text.split('\n');
  // The unit tests are not counted.
  const end = lines.length;
  const tests = new Set();
  lines.forEach((l, i) => {
    if (/^#\[cfg\(test\)\]/.test(l)) for (let k = i; k <= itemEnd(lines, i + 1); k++) tests.add(k);
  });
  const events = new Set(
    [...text.matchAll(/impl (?:sssync_leptos::)?Event for (\w+)/g)].map((m) => m[1]),
  );
  const counted = new Set();
  const bodies = new Set();
  const take = (from, to, why) => {
    let n = 0;
    const body = logicLines(lines, from, to);
    for (let k = from; k <= to; k++) {
      if (!counted.has(k) && isCode(lines[k])) {
        counted.add(k);
        if (body.has(k)) bodies.add(k);
        n++;
      }
    }
    if (list && n) console.log(`${path}:${from + 1} ${why} (${n}, of which logic ${[...body].filter((k) => isCode(lines[k])).length})`);
  };
  for (let i = 0; i < end; i++) {
    if (tests.has(i)) continue;
    const t = lines[i].trim();
    // The first line of the item the attributes above it belong to.
    const item = () => {
      let j = i;
      while (j < end && (lines[j].trim().startsWith('#[') || !isCode(lines[j]) || /^\)\]$|^[a-z_]+ = /.test(lines[j].trim()))) j++;
      return j;
    };
    let m;
    if (/^#\[(sync_query|sync_event|sync_apply|server)\b/.test(t)) {
      const j = item();
      const to = itemEnd(lines, j);
      // A server function counts when it applies an event (not the pages' own reads).
      const reads = t.startsWith('#[server') && !/apply\(/.test(lines.slice(j, to + 1).join('\n'));
      if (!reads) take(i, to, t.slice(0, 20));
      i = Math.max(i, to);
    } else if (/^#\[sync_sql\]/.test(t)) {
      take(i, i, '#[sync_sql]');
    } else if ((m = t.match(/^impl(?:<[^>]*>)? (?:sssync_leptos::)?(SyncQueryDef|Query|Event|ServerQuery<\w+>|ServerEvent<\w+>) for/))) {
      take(i, itemEnd(lines, i), m[1]);
    } else if ((m = t.match(/^pub struct (\w+)/)) && (events.has(m[1]) || /^(ListArgs|Todos|MyLists)$/.test(m[1]))) {
      // The derive line above a hand-written event or args struct.
      const from = i > 0 && lines[i - 1].trim().startsWith('#[derive') ? i - 1 : i;
      take(from, itemEnd(lines, i), `struct ${m[1]}`);
    } else if ((m = t.match(/^impl (\w+) \{/)) && /fn predict\b/.test(lines.slice(i, itemEnd(lines, i) + 1).join('\n'))) {
      take(i, itemEnd(lines, i), `prediction of ${m[1]}`);
    } else if (/^(pub )?(async )?fn (on_list|declare|engine|start|apply)\b/.test(t) && !/fn apply\(&self/.test(t)) {
      take(i, itemEnd(lines, i), t.slice(0, 30));
    } else if (/^(pub )?(enum|struct) (DemoEngine|Writes)\b|^impl (DemoEngine|Writes)\b|^(pub )?mod form\b/.test(t)) {
      const from = i > 0 && lines[i - 1].trim().startsWith('#[derive') ? i - 1 : i;
      take(from, itemEnd(lines, i), t.slice(0, 30));
    } else if (/^<(form|ActionForm)\b/.test(t)) {
      const tag = t.startsWith('<ActionForm') ? 'ActionForm' : 'form';
      const to = elementEnd(lines, i, tag);
      const body = lines.slice(i, to + 1).join('\n');
      // A form that posts an event (not the account forms' own posts).
      if (tag === 'ActionForm' || /Form::url\(\)|::url\(\)/.test(body)) take(i, to, `<${tag}>`);
    } else if (/^let (on_add|toggle_all|toggle|clear|delete|save) = move/.test(t)) {
      take(i, itemEnd(lines, i), t.slice(0, 30));
    } else if (/\.send\(|\.dispatch\(|use_sync_event|take_flash|writes\.(last_rejection|failure)/.test(t)) {
      take(i, i, t.slice(0, 40));
    }
  }
  if (list) console.log(`${path}: ${counted.size} (logic ${bodies.size})`);
  total += counted.size;
  logic += bodies.size;
}
const at = rev ? ` at ${rev}` : '';
console.log(`whole items${at}: ${total} lines, of which handler, query and prediction bodies: ${logic}`);
console.log(`sync plumbing lines${at}: ${total - logic}`);
