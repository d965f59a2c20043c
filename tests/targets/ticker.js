// ticker.js TICKS [INTERVAL_MS]: a node setInterval loop with growing state (a Map, an
// array, a string and a closure), one line per tick. Nothing printed depends on times
// or addresses, so an uninterrupted run and a checkpointed and restored one print the
// same bytes. node is multi-threaded (V8 platform workers, the libuv thread pool).
'use strict';

const ticks = parseInt(process.argv[2] || '60', 10);
const interval = parseInt(process.argv[3] || '30', 10);

function makeCounter() {
  let n = 0;
  return (by) => (n += by);
}

const bump = makeCounter();
const seen = new Map();
const items = [];
let text = '';
let acc = 0;
let i = 0;

const t = setInterval(() => {
  acc = (acc * 31 + i + bump(i % 7)) % 1000003;
  seen.set(`k${i % 13}`, (seen.get(`k${i % 13}`) || 0) + acc);
  items.push(acc.toString(16));
  text = (text + String.fromCharCode(97 + (acc % 26))).slice(-24);
  let sum = 0;
  for (const v of seen.values()) sum = (sum + v) % 1000003;
  console.log(`tick ${i} acc ${acc} keys ${seen.size} sum ${sum} items ${items.length} ` +
    `last ${items[items.length - 1]} text ${text}`);
  if (++i >= ticks) {
    clearInterval(t);
    console.log(`done after ${i} ticks, counter ${bump(0)}`);
  }
}, interval);
