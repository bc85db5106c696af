// Prints the size of the demo's browser bundle (the wasm and the JS glue of the release build),
// raw, gzip (level 9) and brotli (quality 11), as a Markdown table.
//   node scripts/bundle-size.mjs [site/pkg dir]   (default: $CARGO_TARGET_DIR/site/pkg)
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, gzipSync, constants } from 'node:zlib';

const dir = process.argv[2] ?? join(process.env.CARGO_TARGET_DIR ?? 'target', 'site', 'pkg');
const files = ['app.wasm', 'app.js'];
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
const rows = [];
const total = { raw: 0, gzip: 0, brotli: 0 };
for (const f of files) {
  const data = readFileSync(join(dir, f));
  const size = {
    raw: data.length,
    gzip: gzipSync(data, { level: 9 }).length,
    brotli: brotliCompressSync(data, {
      params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: data.length },
    }).length,
  };
  for (const k of Object.keys(total)) total[k] += size[k];
  rows.push([f, size]);
}
rows.push(['wasm + js', total]);
console.log('| file | raw | gzip -9 | brotli 11 |');
console.log('|---|---|---|---|');
for (const [f, s] of rows) console.log(`| ${f} | ${kb(s.raw)} | ${kb(s.gzip)} | ${kb(s.brotli)} |`);
