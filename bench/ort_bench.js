// bench/ort_bench.js - ONNX Runtime (npm onnxruntime-node) side of `make bench B=onnx`: times one
// model at one batch size and thread count, and optionally checks kiln's output file against
// ORT's. Prints one line: "raw ort model=... batch=... threads=... p50_ms=... iters=...".
//   node bench/ort_bench.js MODEL.onnx NAME BATCH THREADS [TARGET_S]
//   node bench/ort_bench.js --check MODEL.onnx INPUT.bin OUTPUT.bin SHAPE   (see tests)
'use strict';
const path = require('path');
const ort = require(path.join(__dirname, 'ort', 'node_modules', 'onnxruntime-node'));

async function bench(model, name, batch, threads, targetS) {
  const s = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all'});
  const feeds = {};
  for (const inName of s.inputNames) {
    const meta = s.inputMetadata.find ? s.inputMetadata.find((m) => m.name === inName) : null;
    const dims = meta && meta.shape ? meta.shape.map((d) => (typeof d === 'number' ? d : batch)) : null;
    if (!dims) throw new Error('no input shape for ' + inName);
    const n = dims.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = Math.sin(i * 12.9898) * 0.5;
    feeds[inName] = new ort.Tensor('float32', data, dims);
  }
  for (let i = 0; i < 20; i++) await s.run(feeds);
  const times = [];
  const t0 = process.hrtime.bigint();
  while (times.length < 20 || (times.length < 5000 &&
         Number(process.hrtime.bigint() - t0) / 1e9 < targetS)) {
    const a = process.hrtime.bigint();
    await s.run(feeds);
    times.push(Number(process.hrtime.bigint() - a) / 1e6);
  }
  times.sort((a, b) => a - b);
  const p50 = times[Math.floor((times.length - 1) / 2)];
  console.log(`raw ort model=${name} batch=${batch} threads=${threads} p50_ms=${p50.toFixed(4)} iters=${times.length}`);
}

async function check(model, input, output) {
  // input/output: .npy float32 files written by the test (C order)
  const fs = require('fs');
  const readNpy = (f) => {
    const b = fs.readFileSync(f);
    const hlen = b.readUInt16LE(8);
    const header = b.slice(10, 10 + hlen).toString();
    const shape = header.match(/\(([^)]*)\)/)[1].split(',').filter((x) => x.trim()).map(Number);
    const off = 10 + hlen;
    return {shape, data: new Float32Array(b.buffer.slice(b.byteOffset + off, b.byteOffset + b.length))};
  };
  const x = readNpy(input), e = readNpy(output);
  const s = await ort.InferenceSession.create(model);
  const r = await s.run({[s.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape)});
  const y = r[s.outputNames[0]].data;
  let bad = 0, maxd = 0;
  for (let i = 0; i < e.data.length; i++) {
    const d = Math.abs(y[i] - e.data[i]);
    maxd = Math.max(maxd, d);
    if (!(d <= 1e-4 + 1e-3 * Math.abs(e.data[i]))) bad++;
  }
  if (y.length !== e.data.length) bad = -1;
  console.log(`ort check ${path.basename(model)}: ${bad === 0 ? 'ok' : 'MISMATCH'} (max |diff| ${maxd.toExponential(2)}, ${y.length} values)`);
  process.exit(bad === 0 ? 0 : 1);
}

const a = process.argv.slice(2);
(a[0] === '--check' ? check(a[1], a[2], a[3])
                    : bench(a[0], a[1], Number(a[2]), Number(a[3]), Number(a[4] || 0.4)))
  .catch((e) => { console.error('ort_bench: ' + e.message); process.exit(1); });
